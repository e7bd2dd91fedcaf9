//! The KubeVirt objects a migration is made of: the `MigrationPolicy` carrying the tuning
//! options, and the `VirtualMachineInstanceMigration` that moves the VMI.

use serde_json::{Value, json};
use wukong_plugin_sdk::objects::made_for;
use wukong_plugin_sdk::{
    Call, Effects, MigrationRequest, MigrationStatus, ObjectRef, StepError, names,
};

use crate::record::{new_record, short_hash};
use crate::{AUTOMATIC_LABEL, KUBEVIRT, REQUEST_ANNOTATION, VMIM};

pub const POLICY_API_VERSION: &str = "migrations.kubevirt.io/v1alpha1";
pub const POLICY_KIND: &str = "MigrationPolicy";
/// The label the lifecycle plugin puts on the VM template, so every VMI of the Wukong has it.
pub use wukong_plugin_sdk::marks::WUKONG_LABEL;
/// Set by the apiserver on every namespace: with the Wukong's label it makes the policy
/// match this VM only, not a namesake in another namespace.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy's name. Cluster-scoped, so the namespace is part of it:
/// [`names::derived`]`(namespace, name)`, injective (`<ns>-<name>` alone is not: `a-b`/`c`
/// and `a`/`b-c` meet). A Wukong whose policy has the name of before derived names keeps
/// it: `<ns>-<name>` when a policy of that name exists and was made for this Wukong (the
/// host's owner-uid mark on it is this Wukong's uid).
pub fn policy_name<C>(call: &Call<'_, C>) -> Result<String, StepError> {
    let (namespace, name) = (&call.wukong.namespace, &call.wukong.name);
    let legacy = format!("{namespace}-{name}");
    let existing: Option<Value> = call.get_as(&cluster_scoped(&legacy))?;
    Ok(
        match existing.is_some_and(|p| made_for(&p, &call.wukong.uid)) {
            true => legacy,
            false => names::derived(namespace, name),
        },
    )
}

pub fn policy_ref<C>(call: &Call<'_, C>) -> Result<ObjectRef, StepError> {
    Ok(cluster_scoped(&policy_name(call)?))
}

fn cluster_scoped(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: POLICY_API_VERSION.into(),
        kind: POLICY_KIND.into(),
        namespace: None,
        name: name.into(),
    }
}

/// The MigrationPolicy with the request's tuning. Cluster-scoped objects cannot carry an
/// owner reference to a namespaced Wukong: the host marks it with the Wukong's uid (and
/// refuses an object that carries the mark already), which is what lets it accept the
/// policy's deletion on finalize and this plugin recognise its policy.
pub fn policy<C>(call: &Call<'_, C>, request: &MigrationRequest) -> Result<Value, StepError> {
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
    Ok(json!({
        "apiVersion": POLICY_API_VERSION,
        "kind": POLICY_KIND,
        // The Wukong's labels say it is this Wukong's, not shared by the backend's.
        "metadata": {"name": policy_name(call)?, "labels": call.labels()},
        "spec": spec,
    }))
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
    let message = match start.source {
        // A VMI not running yet: KubeVirt keeps the migration Pending until it runs.
        "" => format!("migrating to {towards}{why} once the VM instance runs"),
        source => format!("migrating from node {source} to {towards}{why}"),
    };
    effects.event("MigrationStarted", &message);
    Ok(MigrationStatus {
        trigger: start.trigger.map(str::to_owned),
        migration_name: Some(name),
        source_node: Some(start.source.to_owned()).filter(|s| !s.is_empty()),
        target_node: start.target.map(str::to_owned),
        started_at: Some(call.now.to_owned()),
        message,
        ..new_record("Pending", start.request_id, start.automatic)
    })
}
