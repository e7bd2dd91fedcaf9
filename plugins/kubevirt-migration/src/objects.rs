//! The KubeVirt objects a migration is made of: the `MigrationPolicy` carrying the tuning
//! options, and the `VirtualMachineInstanceMigration` that moves the VMI.

use serde_json::{Value, json};
use wukong_plugin_sdk::{Call, Effects, MigrationRequest, MigrationStatus, ObjectRef, StepError};

use crate::record::{new_record, short_hash};
use crate::{AUTOMATIC_LABEL, KUBEVIRT, OWNER_UID_ANNOTATION, REQUEST_ANNOTATION, VMIM};

pub const POLICY_API_VERSION: &str = "migrations.kubevirt.io/v1alpha1";
pub const POLICY_KIND: &str = "MigrationPolicy";
/// The label the lifecycle plugin puts on the VM template, so every VMI of the Wukong has it.
pub const WUKONG_LABEL: &str = "vm.novasphere.dev/wukong";
/// Set by the apiserver on every namespace: with the Wukong's label it makes the policy
/// match this VM only, not a namesake in another namespace.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy's name: cluster-scoped, so the namespace is part of it.
pub fn policy_name<C>(call: &Call<'_, C>) -> String {
    format!("{}-{}", call.wukong.namespace, call.wukong.name)
}

pub fn policy_ref<C>(call: &Call<'_, C>) -> ObjectRef {
    ObjectRef {
        api_version: POLICY_API_VERSION.into(),
        kind: POLICY_KIND.into(),
        namespace: None,
        name: policy_name(call),
    }
}

/// The MigrationPolicy with the request's tuning. Cluster-scoped objects cannot carry an
/// owner reference to a namespaced Wukong: the owner-uid annotation is what lets the host
/// accept its deletion on finalize.
pub fn policy<C>(call: &Call<'_, C>, request: &MigrationRequest) -> Value {
    let mut spec = json!({
        "allowAutoConverge": request.allow_auto_converge,
        "allowPostCopy": request.allow_post_copy,
        "selectors": {
            "virtualMachineInstanceSelector": {WUKONG_LABEL: call.wukong.name},
            "namespaceSelector": {NAMESPACE_NAME_LABEL: call.wukong.namespace},
        },
    });
    if let Some(timeout) = request.completion_timeout_per_gi_b {
        spec["completionTimeoutPerGiB"] = json!(timeout);
    }
    json!({
        "apiVersion": POLICY_API_VERSION,
        "kind": POLICY_KIND,
        "metadata": {
            "name": policy_name(call),
            "annotations": {OWNER_UID_ANNOTATION: call.wukong.uid},
        },
        "spec": spec,
    })
}

/// What a new migration is for.
pub struct Start<'r> {
    pub request_id: &'r str,
    pub automatic: bool,
    pub trigger: Option<&'r str>,
    pub source: &'r str,
    /// None lets KubeVirt's scheduler choose.
    pub target: Option<&'r str>,
    /// Mixed into the name: the previous record's migration (so asking again for a request
    /// id used before makes a new object) or the time (automatic ones).
    pub salt: &'r str,
}

/// The migration object's deterministic name.
pub fn migration_name<C>(call: &Call<'_, C>, start: &Start<'_>) -> String {
    let kind = if start.automatic { "auto-" } else { "" };
    format!(
        "{}-{kind}{}",
        call.wukong.name,
        short_hash(&[start.request_id, start.salt])
    )
}

/// Adds the migration object to `effects` and returns the record of the started migration.
pub fn start<C>(
    call: &Call<'_, C>,
    start: &Start<'_>,
    effects: &mut Effects,
) -> Result<MigrationStatus, StepError> {
    let name = migration_name(call, start);
    let mut spec = json!({"vmiName": call.wukong.name});
    if let Some(target) = start.target {
        spec["addedNodeSelector"] = json!({"kubernetes.io/hostname": target});
    }
    let migration = json!({
        "apiVersion": KUBEVIRT,
        "kind": VMIM,
        "metadata": {
            "name": name,
            "namespace": call.wukong.namespace,
            "labels": {AUTOMATIC_LABEL: start.automatic.to_string()},
            "annotations": {REQUEST_ANNOTATION: start.request_id},
        },
        "spec": spec,
    });
    effects.apply(&migration)?;
    let towards = start.target.map_or_else(
        || "a node the scheduler picks".to_owned(),
        |t| format!("node {t}"),
    );
    let why = start.trigger.map(|t| format!(" ({t})")).unwrap_or_default();
    let message = format!("migrating from node {} to {towards}{why}", start.source);
    effects.event("MigrationStarted", &message);
    Ok(MigrationStatus {
        trigger: start.trigger.map(str::to_owned),
        migration_name: Some(name),
        source_node: Some(start.source.to_owned()),
        target_node: start.target.map(str::to_owned),
        started_at: Some(call.now.to_owned()),
        message,
        ..new_record("Pending", start.request_id, start.automatic)
    })
}
