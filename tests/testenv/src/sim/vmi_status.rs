//! A VMI's status: its `Ready` condition in every phase (virt-controller's side; the
//! volumes are `vmi_volumes`), and virt-handler's side: the status of a running guest
//! (interfaces, LiveMigratable, AgentConnected, volume status) and graceful shutdown.

use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::storage::claims;
use super::util::{
    self, condition_status, conditions, flag, patch_status, set_condition, set_finalizer, str_at,
};
use super::vmi::FINALIZER;
use super::{ANN_IGNORE_ACPI, Ctx};
use crate::error::Result;

/// The readiness gate KubeVirt puts on the virt-launcher pod; pausing turns it off.
pub const UNPAUSED_GATE: &str = "kubevirt.io/virtual-machine-unpaused";

/// The VMI's `Ready` condition, as upstream's `syncReadyConditionFromPod` derives it from
/// the virt-launcher pod (which the simulator does not create: the phase stands for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// No pod yet (phase Pending).
    PodNotExists,
    /// A pod, no running guest (Scheduling, Scheduled; a lost node).
    GuestNotRunning,
    /// The pod is going down (deletion, guest exit, final phases).
    PodTerminating,
    /// Running and not paused: the pod is Ready.
    Ready,
    /// Running and paused: the pod's readiness gate is False, so the pod is not Ready.
    Paused,
}

/// Sets the `Ready` condition (the transition time kept while the status holds).
pub fn set_ready(conds: &mut Vec<Value>, readiness: Readiness) {
    let gate =
        format!("the status of pod readiness gate \"{UNPAUSED_GATE}\" is not \"True\", but False");
    let (ready, reason, message) = match readiness {
        Readiness::PodNotExists => (
            false,
            "PodNotExists",
            "virt-launcher pod has not yet been scheduled",
        ),
        Readiness::GuestNotRunning => (
            false,
            "GuestNotRunning",
            "Guest VM is not reported as running",
        ),
        Readiness::PodTerminating => (false, "PodTerminating", "virt-launcher pod is terminating"),
        Readiness::Ready => (true, "", ""),
        // The kubelet's words for a readiness gate that is not True.
        Readiness::Paused => (false, "ReadinessGatesNotReady", gate.as_str()),
    };
    set_condition(conds, "Ready", ready, reason, message);
}

/// True when `conds` differ from the VMI's own (nulls, which the API server drops, aside):
/// a write of equal conditions changes nothing and brings no watch event.
pub fn changed(vmi: &DynamicObject, conds: &[Value]) -> bool {
    let mine: Vec<Value> = conds.iter().cloned().map(without_nulls).collect();
    let theirs: Vec<Value> = conditions(&vmi.data)
        .into_iter()
        .map(without_nulls)
        .collect();
    mine != theirs
}

/// The value with every null object member removed, as the API server stores it.
pub fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// A Running VMI's readiness: not Ready while paused.
pub fn running_readiness(conds: &[Value]) -> Readiness {
    if condition_status(conds, "Paused") == Some("True") {
        Readiness::Paused
    } else {
        Readiness::Ready
    }
}

/// As upstream's `VerifyVMIMigratable` (`pkg/network/vmispec/interface.go`): the pod
/// network must be bound with masquerade or passt (bridge only with
/// `kubevirt.io/allow-pod-bridge-network-live-migration`); no binding plugins here.
fn interface_migratable(vmi: &DynamicObject) -> std::result::Result<(), String> {
    let ifaces = vmi
        .data
        .pointer("/spec/domain/devices/interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ifaces.is_empty() {
        return Ok(());
    }
    let networks = vmi
        .data
        .pointer("/spec/networks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(pod_net) = networks
        .iter()
        .find(|n| n.get("pod").is_some())
        .and_then(|n| str_at(n, "/name"))
    else {
        return Ok(());
    };
    let Some(primary) = ifaces.iter().find(|i| str_at(i, "/name") == Some(pod_net)) else {
        return Err(format!("no primary interface found for network {pod_net}"));
    };
    let allowed_bridge =
        util::annotation(vmi, "kubevirt.io/allow-pod-bridge-network-live-migration").is_some();
    if primary.get("masquerade").is_some()
        || primary.get("passtBinding").is_some()
        || (primary.get("bridge").is_some() && allowed_bridge)
    {
        return Ok(());
    }
    Err("cannot migrate VMI which does not use masquerade or a migratable plugin to connect to the pod network".into())
}

/// KubeVirt's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

/// Whether the VMI can live-migrate, as upstream's virt-handler
/// `calculateLiveMigrationCondition` judges it: the pod network's binding first, then the
/// volumes (every claim ReadWriteMany, no host disks).
pub async fn live_migratable(ctx: &Ctx, vmi: &DynamicObject) -> Result<(bool, String, String)> {
    if let Err(message) = interface_migratable(vmi) {
        return Ok((false, "InterfaceNotLiveMigratable".into(), message));
    }
    let ns = vmi.namespace().unwrap_or_default();
    for claim in claims(&vmi.data) {
        let modes = ctx
            .informers
            .pvcs
            .get(Some(&ns), &claim)
            .and_then(|p| p.spec.as_ref().and_then(|s| s.access_modes.clone()))
            .unwrap_or_default();
        if !modes.iter().any(|m| m == "ReadWriteMany") {
            return Ok((
                false,
                "DisksNotLiveMigratable".into(),
                format!(
                    "cannot migrate VMI: PVC {claim} is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"
                ),
            ));
        }
    }
    let host_disk = vmi
        .data
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| vs.iter().any(|v| v.get("hostDisk").is_some()));
    if host_disk {
        return Ok((
            false,
            "DisksNotLiveMigratable".into(),
            "cannot migrate VMI with host disk".into(),
        ));
    }
    Ok((true, String::new(), String::new()))
}

/// The status of a guest that just booted.
pub async fn running(ctx: &Ctx, vmi: &DynamicObject) -> Result<Value> {
    let cfg = ctx.cfg();
    let mut conds = conditions(&vmi.data);
    let readiness = running_readiness(&conds);
    set_ready(&mut conds, readiness);
    let (migratable, reason, message) = live_migratable(ctx, vmi).await?;
    set_condition(&mut conds, "LiveMigratable", migratable, &reason, &message);
    if cfg.guest_agent {
        set_condition(&mut conds, "AgentConnected", true, "", "");
    }
    let networks = vmi
        .data
        .pointer("/spec/networks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ifaces = vmi
        .data
        .pointer("/spec/domain/devices/interfaces")
        .and_then(Value::as_array)
        .map(|is| {
            is.iter()
                .filter_map(|i| str_at(i, "/name").map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if ifaces.is_empty() && networks.is_empty() {
        ifaces.push("default".into());
    }
    let interfaces: Vec<Value> = ifaces
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let ip = ctx.next_ip();
            let last: Vec<u8> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
            let mac = format!("52:54:00:{:02x}:{:02x}:{:02x}", i, last.get(2).unwrap_or(&0), last.get(3).unwrap_or(&0));
            let mut iface = json!({"name": name, "interfaceName": format!("eth{i}"), "ipAddress": ip,
                "ipAddresses": [ip], "mac": mac, "infoSource": "domain, guest-agent", "queueCount": 1});
            if let Some(net) = networks.iter().find(|n| str_at(n, "/name") == Some(name))
                && let Some(nad) = str_at(net, "/multus/networkName")
            {
                iface["podInterfaceName"] = json!(format!("pod{}", &nad.replace('/', "-")));
            }
            iface
        })
        .collect();
    let volume_status: Vec<Value> = vmi
        .data
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| {
            let target = format!("vd{}", char::from(b'a' + (i % 26) as u8));
            json!({"name": str_at(v, "/name"), "target": target, "phase": "Ready", "reason": "VolumeReady"})
        })
        .collect();
    let mut status = json!({
        "conditions": conds, "interfaces": interfaces, "volumeStatus": volume_status,
        "migrationMethod": if migratable { "LiveMigration" } else { "BlockMigration" },
        "launcherContainerImageVersion": "kubevirt-sim",
        "currentCPUTopology": {"cores": 1, "sockets": 1, "threads": 1},
    });
    if cfg.guest_agent {
        status["guestOSInfo"] = json!({"id": "fedora", "name": "Fedora Linux", "version": "39",
            "kernelRelease": "6.5.6", "prettyName": "Fedora Linux 39"});
    }
    Ok(status)
}

/// A VMI being deleted: ACPI shutdown, which a guest that honours it finishes within
/// `guest_shutdown_delay`; otherwise (or past the grace period) the guest is killed.
pub async fn shutdown(ctx: &Ctx, api: &Api<DynamicObject>, vmi: &DynamicObject) -> Result<Action> {
    let cfg = ctx.cfg();
    let phase = str_at(&vmi.data, "/status/phase").unwrap_or("");
    if phase == "Running" {
        let grace = vmi
            .data
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let grace = std::time::Duration::from_secs(grace);
        let hangs = cfg.guest_hangs_on_shutdown
            || super::util::annotation(vmi, ANN_IGNORE_ACPI) == Some("hang");
        let ignores = hangs || cfg.guest_ignores_acpi || flag(vmi, ANN_IGNORE_ACPI);
        let takes = if hangs && !grace.is_zero() {
            // Re-evaluated when a stop shortens the grace period to 0.
            std::time::Duration::from_secs(24 * 3600)
        } else if ignores {
            grace
        } else {
            cfg.guest_shutdown_delay.min(grace)
        };
        // As upstream: the launcher pod is going down from the start of the deletion.
        let mut conds = conditions(&vmi.data);
        set_ready(&mut conds, Readiness::PodTerminating);
        if changed(vmi, &conds) {
            patch_status(api, vmi, json!({"conditions": conds})).await?;
            return Ok(Action::await_change());
        }
        let key = format!("vmi/{}/shutdown", vmi.uid().unwrap_or_default());
        if let Some(rest) = ctx.wait(key, takes) {
            return Ok(Action::requeue(rest));
        }
        let forced = ignores && !grace.is_zero();
        let status =
            json!({"phase": if forced { "Failed" } else { "Succeeded" }, "conditions": conds});
        if !patch_status(api, vmi, status).await? {
            return Ok(Action::requeue(cfg.retry_interval));
        }
        tracing::info!(vmi = %vmi.name_any(), forced, "guest stopped");
        return Ok(Action::await_change());
    }
    set_finalizer(api, vmi, FINALIZER, false).await?;
    Ok(Action::await_change())
}
