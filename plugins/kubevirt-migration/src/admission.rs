//! KubeVirt's migration admission (`migration-create-admitter.go`): a migration object is
//! refused *at create* when the VMI is missing or finished, not live-migratable, or already
//! migrating. The plugin checks the same before it asks ([`refusal`]); a denial it could
//! not foresee comes back as a failed apply, and the host records it in the Wukong's
//! `StepFailed` condition (`apply VirtualMachineInstanceMigration <name>: … admission
//! webhook "…" denied the request: <reason>`). The next call reads it there ([`denial`])
//! and finishes the request as `Refused` with the webhook's reason, instead of applying
//! the same object again and again.

use serde_json::Value;
use wukong_plugin_sdk::{Call, StepError};

use crate::record::status_text;
use crate::{KUBEVIRT, VMIM};

/// The host's condition for a failed step.
const STEP_FAILED: &str = "StepFailed";
/// What the apiserver says when a validating webhook denies a request.
const DENIED: &str = "denied the request: ";

/// Why KubeVirt's admission would refuse a migration of the Wukong's VMI now, in its
/// words; `None` when it would admit one. Not refused: a VMI that is not `Running` yet
/// (the migration waits `Pending` for it).
pub fn refusal<C>(call: &Call<'_, C>, vmi: Option<&Value>) -> Result<Option<String>, StepError> {
    let (namespace, name) = (&call.wukong.namespace, &call.wukong.name);
    let Some(vmi) = vmi else {
        return Ok(Some(format!(
            "the VMI \"{namespace}/{name}\" does not exist"
        )));
    };
    let phase = status_text(vmi, "phase").unwrap_or_default();
    if matches!(phase.as_str(), "Succeeded" | "Failed") {
        return Ok(Some("Cannot migrate VMI in finalized state.".into()));
    }
    let not_migratable = vmi["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "LiveMigratable" && c["status"] == "False")
        })
        .map(|c| {
            let text = |key: &str| c[key].as_str().unwrap_or_default();
            format!(
                "Cannot migrate VMI, Reason: {}, Message: {}",
                text("reason"),
                text("message")
            )
        });
    if not_migratable.is_some() {
        return Ok(not_migratable);
    }
    let migrations: Vec<Value> = call.list_as(KUBEVIRT, VMIM, Some(namespace), None)?;
    let in_flight = migrations.iter().find(|m| {
        m["spec"]["vmiName"] == name.as_str()
            && !matches!(m["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    Ok(in_flight.map(|m| {
        format!(
            "in-flight migration detected. Active migration job ({}) is currently already in progress for VMI {name}.",
            m["metadata"]["uid"].as_str().unwrap_or_default()
        )
    }))
}

/// The reason admission denied the migration object the last call applied, read from the
/// Wukong's `StepFailed` condition, when that object's name passes `ours`. Returns the
/// object's name and the webhook's reason. A failure that is not a denial (the apiserver
/// unreachable, a conflict) is `None`: the apply is simply tried again.
pub fn denial<C>(call: &Call<'_, C>, ours: impl Fn(&str) -> bool) -> Option<(String, String)> {
    let wukong = call.wukong_json();
    let message = wukong["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == STEP_FAILED && c["status"] == "True")?["message"]
        .as_str()?;
    parse(message).filter(|(name, _)| ours(name))
}

/// `(object name, reason)` from `… apply VirtualMachineInstanceMigration <name>: …
/// denied the request: <reason>[: <StatusReason>] [(<debug dump>)]`.
fn parse(message: &str) -> Option<(String, String)> {
    let marker = format!("apply {VMIM} ");
    let after = &message[message.find(&marker)? + marker.len()..];
    let (name, rest) = after.split_once(':')?;
    let reason = &rest[rest.find(DENIED)? + DENIED.len()..];
    // kube's error text repeats the status as a debug dump in parentheses.
    let reason = [" (Status {", " (ErrorResponse {"]
        .iter()
        .filter_map(|dump| reason.find(dump))
        .min()
        .map_or(reason, |end| &reason[..end]);
    // ... and ends the message with the status reason (`: BadRequest`).
    let reason = match reason.rsplit_once(": ") {
        Some((text, word)) if !word.is_empty() && word.chars().all(char::is_alphanumeric) => text,
        _ => reason,
    };
    Some((name.trim().to_owned(), reason.trim().to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn reads_the_webhook_s_reason_out_of_the_host_s_step_failure() {
        let message = "migration step, plugin kubevirt-migration@0.1.0: apply VirtualMachineInstanceMigration vm1-0a1b2c3d: \
            ApiError: admission webhook \"migration-create-validator.kubevirt.io\" denied the request: \
            Cannot migrate VMI, Reason: DisksNotLiveMigratable, Message: PVC root is not shared: BadRequest \
            (Status { status: Some(\"Failure\"), message: \"admission webhook ...\", reason: \"BadRequest\", code: 400 })";
        assert_eq!(
            parse(message).unwrap(),
            (
                "vm1-0a1b2c3d".to_owned(),
                "Cannot migrate VMI, Reason: DisksNotLiveMigratable, Message: PVC root is not shared"
                    .to_owned()
            )
        );
        let plain = "apply VirtualMachineInstanceMigration vm1-x: admission webhook \"w\" denied the request: Cannot migrate VMI in finalized state.";
        assert_eq!(
            parse(plain).unwrap().1,
            "Cannot migrate VMI in finalized state."
        );
        // Not a denial: tried again.
        assert!(parse("apply VirtualMachineInstanceMigration vm1-x: connection refused").is_none());
        assert!(parse("apply MigrationPolicy p: denied the request: no").is_none());
    }
}
