//! `spec.migration`: the checks before a requested migration starts, as KubeVirt would
//! refuse it (a refusal is a finished record, so the Wukong converges instead of retrying),
//! then the MigrationPolicy with the tuning options and the migration object.

use serde_json::Value;
use wukong_plugin_sdk::{Call, Effects, MigrationRequest, MigrationStatus, ObjectRef, StepError};

use crate::objects::{self, Start};
use crate::record::{new_record, status_text};
use crate::{admission, nodes};

/// Why the request cannot start now: what KubeVirt's admission would refuse
/// ([`admission::refusal`]), a VMI being deleted, or a target node that cannot take it.
fn refusal<C>(
    call: &Call<'_, C>,
    request: &MigrationRequest,
    vmi: Option<&Value>,
) -> Result<Option<String>, StepError> {
    let name = &call.wukong.name;
    if let Some(why) = admission::refusal(call, vmi)? {
        return Ok(Some(why));
    }
    let Some(vmi) = vmi else {
        return Ok(None);
    };
    if !vmi["metadata"]["deletionTimestamp"].is_null() {
        return Ok(Some(format!("the VM instance {name} is being deleted")));
    }
    let Some(target) = request.target_node.as_deref() else {
        return Ok(None);
    };
    let current = status_text(vmi, "nodeName").unwrap_or_default();
    if target == current {
        return Ok(Some(format!("the VM already runs on node {target}")));
    }
    let node: Option<Value> = call.get_as(&ObjectRef {
        api_version: "v1".into(),
        kind: "Node".into(),
        namespace: None,
        name: target.into(),
    })?;
    let Some(node) = node else {
        return Ok(Some(format!("target node {target} does not exist")));
    };
    if let Some(why) = nodes::unschedulable(&node) {
        return Ok(Some(format!(
            "target {why}: nothing can be scheduled there"
        )));
    }
    if !nodes::ready(&node) {
        return Ok(Some(format!("target node {target} is not Ready")));
    }
    Ok(None)
}

/// Handles a request not yet done: refuse it, or start it.
pub fn handle<C>(
    call: &Call<'_, C>,
    request: &MigrationRequest,
    previous: Option<&MigrationStatus>,
    vmi: Option<&Value>,
    effects: &mut Effects,
) -> Result<MigrationStatus, StepError> {
    let source = vmi.and_then(|v| status_text(v, "nodeName"));
    let base = MigrationStatus {
        source_node: source.clone(),
        target_node: request.target_node.clone(),
        ..new_record("Refused", &request.request_id, false)
    };
    if request.abort {
        let message = "abort requested, but no migration was running".to_owned();
        effects.event("MigrationAborted", &message);
        return Ok(MigrationStatus {
            phase: "Aborted".into(),
            message,
            ..base
        });
    }
    let expected = expected_name(call, request, previous);
    if let Some((_, why)) = admission::denial(call, |name| name == expected) {
        // The last call's migration object was denied at create: done, with the reason.
        let message = format!("migration refused by KubeVirt: {why}");
        effects.warning("MigrationRefused", &message);
        return Ok(MigrationStatus {
            failure_reason: Some(why),
            message,
            ..base
        });
    }
    if let Some(why) = refusal(call, request, vmi)? {
        let message = format!("migration refused: {why}");
        effects.warning("MigrationRefused", &message);
        return Ok(MigrationStatus {
            failure_reason: Some(why),
            message,
            ..base
        });
    }
    effects.apply(&objects::policy(call, request)?)?;
    let salt = previous
        .and_then(|p| p.migration_name.as_deref())
        .unwrap_or_default();
    objects::start(
        call,
        &Start {
            request_id: &request.request_id,
            automatic: false,
            trigger: None,
            source: source.as_deref().unwrap_or_default(),
            target: request.target_node.as_deref(),
            salt,
        },
        effects,
    )
}

/// The migration object name the pending request gets, to pick it up after a crash.
pub fn expected_name<C>(
    call: &Call<'_, C>,
    request: &MigrationRequest,
    previous: Option<&MigrationStatus>,
) -> String {
    objects::migration_name(
        call,
        &Start {
            request_id: &request.request_id,
            automatic: false,
            trigger: None,
            source: "",
            target: None,
            salt: previous
                .and_then(|p| p.migration_name.as_deref())
                .unwrap_or_default(),
        },
    )
}
