//! virt-handler's side of a VMI: the status of a running guest (interfaces, conditions
//! Ready / LiveMigratable / AgentConnected, volume status) and graceful shutdown.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::storage::claims;
use super::util::{conditions, flag, patch_status, set_condition, set_finalizer, str_at};
use super::vmi::FINALIZER;
use super::{ANN_IGNORE_ACPI, Ctx};
use crate::error::Result;

/// KubeVirt's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

/// Whether the VMI can live-migrate: every claim must be ReadWriteMany, no host disks.
pub async fn live_migratable(ctx: &Ctx, vmi: &DynamicObject) -> Result<(bool, String, String)> {
    let ns = vmi.namespace().unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for claim in claims(&vmi.data) {
        let modes = pvcs
            .get_opt(&claim)
            .await?
            .and_then(|p| p.spec)
            .and_then(|s| s.access_modes)
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
    set_condition(&mut conds, "Ready", true, "", "");
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
        let key = format!("vmi/{}/shutdown", vmi.uid().unwrap_or_default());
        if let Some(rest) = ctx.wait(key, takes) {
            return Ok(Action::requeue(rest));
        }
        let forced = ignores && !grace.is_zero();
        let mut conds = conditions(&vmi.data);
        set_condition(
            &mut conds,
            "Ready",
            false,
            "Stopped",
            if forced {
                "killed after the grace period"
            } else {
                "shut down"
            },
        );
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
