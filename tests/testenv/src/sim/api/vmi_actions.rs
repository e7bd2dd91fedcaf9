//! The VMI subresources (`pause`, `unpause`, `softreboot`, `guestosinfo`): virt-api's
//! validation, then virt-handler's effect on the VMI (the `Paused` condition).

use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};

use super::replies::{self, Reply, VM, VMI};
use crate::sim::Ctx;
use crate::sim::util::{self, condition_status, conditions, remove_condition, set_condition};

/// One VMI action; `Ok(None)` when a write lost an optimistic-concurrency race (retry).
pub(super) async fn act(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    action: &str,
) -> crate::Result<Option<Reply>> {
    // As upstream's UnpauseVMIRequestHandler: a VM with a snapshot in progress is
    // refused before the VMI is looked at.
    if action == "unpause"
        && let Some(vm) = util::api(&ctx.client, &util::vm(), ns)
            .get_opt(name)
            .await?
        && vm
            .data
            .pointer("/status/snapshotInProgress")
            .is_some_and(|s| !s.is_null())
    {
        return Ok(Some(replies::conflict(
            VM,
            name,
            "VM snapshot is in progress",
        )));
    }
    let api = util::api(&ctx.client, &util::vmi(), ns);
    let Some(vmi) = api.get_opt(name).await? else {
        return Ok(Some(replies::not_found(VMI, name)));
    };
    if let Some(refusal) = refusal(&vmi, name, action) {
        return Ok(Some(refusal));
    }
    let mut conds = conditions(&vmi.data);
    match action {
        // As virt-handler's pause: the domain is paused and it reports the condition.
        "pause" => set_condition(
            &mut conds,
            "Paused",
            true,
            "PausedByUser",
            "VMI was paused by user",
        ),
        "unpause" => remove_condition(&mut conds, "Paused"),
        _ => return Ok(Some(replies::ok())),
    }
    write(&api, &vmi, conds).await
}

/// What virt-api refuses (`validate` of each handler in `lifecycle.go`), or `None`.
fn refusal(vmi: &DynamicObject, name: &str, action: &str) -> Option<Reply> {
    let running = util::str_at(&vmi.data, "/status/phase") == Some("Running");
    let conds = conditions(&vmi.data);
    let has_paused = conds
        .iter()
        .any(|c| util::str_at(c, "/type") == Some("Paused"));
    let conflict = |m: &str| Some(replies::conflict(VMI, name, m));
    match action {
        // As upstream's PauseVMIRequestHandler: Running, no non-agent liveness probe,
        // not already paused.
        "pause" if !running => conflict("VM is not running"),
        "pause"
            if vmi
                .data
                .pointer("/spec/livenessProbe")
                .is_some_and(|p| p.is_object() && p.get("guestAgentPing").is_none()) =>
        {
            Some(replies::forbidden(
                VMI,
                name,
                "Pausing VMIs with a non-GuestAgentPing LivenessProbe is not supported",
            ))
        }
        "pause" if has_paused => conflict("VMI is already paused"),
        // As upstream's UnpauseVMIRequestHandler.
        "unpause" if !running => conflict("VMI is not running"),
        "unpause" if !has_paused => conflict("VMI is not paused"),
        // As upstream's SoftRebootVMIRequestHandler: without a guest agent the reboot is
        // an ACPI power-button press, impossible with ACPI disabled.
        "softreboot" if !running => conflict("VM is not running"),
        "softreboot" if condition_status(&conds, "Paused") == Some("True") => {
            conflict("VMI is paused")
        }
        "softreboot"
            if condition_status(&conds, "AgentConnected").is_none()
                && vmi.data.pointer("/spec/domain/features/acpi/enabled")
                    == Some(&json!(false)) =>
        {
            conflict("VMI neither have the agent connected nor the ACPI feature enabled")
        }
        "pause" | "unpause" | "softreboot" => None,
        other => Some(replies::no_route(&format!("unknown action {other}"))),
    }
}

async fn write(
    api: &Api<DynamicObject>,
    vmi: &DynamicObject,
    conds: Vec<Value>,
) -> crate::Result<Option<Reply>> {
    let written = util::patch_status(api, vmi, json!({"conditions": conds})).await?;
    Ok(written.then(replies::ok))
}

/// `GET …/guestosinfo`: what the guest agent reported.
pub(super) async fn guest_os_info(ctx: &Ctx, ns: &str, name: &str) -> crate::Result<Reply> {
    let api = util::api(&ctx.client, &util::vmi(), ns);
    let Some(vmi) = api.get_opt(name).await? else {
        return Ok(replies::not_found(VMI, name));
    };
    let info = vmi
        .data
        .pointer("/status/guestOSInfo")
        .cloned()
        .unwrap_or(json!({}));
    Ok((hyper::StatusCode::OK, info))
}
