//! The VM's state as users see it, read from the VirtualMachine and its instance (VMI) the
//! way KubeVirt sets them (`pkg/virt-controller/watch/vm/vm.go`): the instance's phase
//! first (a migration before a pause, as `printableStatus` orders them), and with no
//! instance the VM's `printableStatus`, which says why none runs (`Provisioning`: the VM
//! controller creates the instance only once its DataVolumes are ready).
//!
//! Ready follows the instance's `Ready` condition, and never while paused (KubeVirt turns
//! the pod's readiness gate off then) or while it is being deleted.

use serde_json::Value;
use wukong_plugin_sdk::objects::{condition_status, lookup_str};
use wukong_plugin_sdk::{LifecyclePhase, LifecycleStatus};

/// The lifecycle status from what the cluster holds. `vm` is `None` before the VM exists
/// (it is being applied now); `run_strategy` is the one in effect.
pub fn status(
    name: &str,
    run_strategy: &str,
    vm: Option<&Value>,
    vmi: Option<&Value>,
) -> LifecycleStatus {
    let text =
        |o: Option<&Value>, path: &[&str]| o.and_then(|o| lookup_str(o, path)).map(str::to_owned);
    let printable_status = text(vm, &["status", "printableStatus"]);
    let vmi_phase = text(vmi, &["status", "phase"]);
    let is = |condition: &str| vmi.and_then(|v| condition_status(v, condition)) == Some("True");
    let migrating = text(vmi, &["status", "migrationState", "startTimestamp"]).is_some()
        && text(vmi, &["status", "migrationState", "endTimestamp"]).is_none();
    let deleted =
        |o: Option<&Value>| o.is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null());
    let paused = is("Paused");
    let phase = match (vmi, vmi_phase.as_deref()) {
        _ if deleted(vm) || deleted(vmi) => LifecyclePhase::Stopping,
        (Some(_), Some("Running")) if migrating => LifecyclePhase::Migrating,
        (Some(_), Some("Running")) if paused => LifecyclePhase::Suspended,
        (Some(_), Some("Running")) => LifecyclePhase::Running,
        (Some(_), None | Some("" | "Pending" | "Scheduling" | "Scheduled")) => {
            LifecyclePhase::Starting
        }
        (Some(_), Some("Failed")) => LifecyclePhase::Failed,
        (Some(_), Some("Succeeded")) => LifecyclePhase::Stopped,
        (Some(_), _) => LifecyclePhase::Unknown,
        // No instance: nothing should run it, or why none runs yet.
        (None, _) if run_strategy == "Halted" => LifecyclePhase::Stopped,
        (None, _) => match printable_status.as_deref() {
            Some("Stopped") => LifecyclePhase::Stopped,
            Some(
                "Provisioning" | "WaitingForVolumeBinding" | "DataVolumeError" | "ErrorPvcNotFound",
            ) => LifecyclePhase::Pending,
            Some("CrashLoopBackOff") => LifecyclePhase::Failed,
            Some("Terminating" | "Stopping") => LifecyclePhase::Stopping,
            Some("Unknown") => LifecyclePhase::Unknown,
            Some("Starting") => LifecyclePhase::Starting,
            _ if run_strategy == "Manual" => LifecyclePhase::Stopped,
            _ => LifecyclePhase::Starting,
        },
    };
    let mut ip_addresses: Vec<String> = vmi
        .and_then(|v| v["status"]["interfaces"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i["ipAddress"]
                .as_str()
                .filter(|ip| !ip.is_empty())
                .map(str::to_owned)
        })
        .collect();
    ip_addresses.dedup();
    let ready = is("Ready")
        && !paused
        && matches!(phase, LifecyclePhase::Running | LifecyclePhase::Migrating);
    let message = match vm {
        None => "creating the VirtualMachine".to_owned(),
        Some(vm) => describe(vm, vmi, phase, ready),
    };
    LifecycleStatus {
        phase,
        vm_name: name.to_owned(),
        printable_status,
        vmi_phase,
        node_name: text(vmi, &["status", "nodeName"]),
        ready,
        live_migratable: is("LiveMigratable"),
        ip_addresses,
        current_action: None,
        history: Vec::new(),
        message,
    }
}

/// What the VM's `printableStatus` means, with KubeVirt's own words where it gives some
/// (the instance's `Synchronized`, `PodScheduled` or `Ready` condition, the VM's
/// `Failure`).
fn describe(vm: &Value, vmi: Option<&Value>, phase: LifecyclePhase, ready: bool) -> String {
    let Some(printable) = lookup_str(vm, &["status", "printableStatus"]) else {
        return String::new();
    };
    let why = |object: Option<&Value>, condition: &str| {
        object
            .and_then(|o| condition_of(o, condition))
            .filter(|c| c["status"] != "True")
            .and_then(|c| {
                let text = |key: &str| c[key].as_str().filter(|m| !m.is_empty());
                text("message").or_else(|| text("reason"))
            })
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    };
    let detail = match printable {
        "Provisioning" => {
            "waiting for its DataVolumes; KubeVirt creates the instance once they are ready"
                .to_owned()
        }
        "WaitingForVolumeBinding" => "waiting for its PersistentVolumeClaims to bind".to_owned(),
        "DataVolumeError" => format!(
            "a DataVolume is failing and CDI retries it (see status.volumes){}",
            why(Some(vm), "Failure")
        ),
        "ErrorPvcNotFound" => format!(
            "a PersistentVolumeClaim it uses does not exist{}",
            why(vmi, "Synchronized")
        ),
        "ErrImagePull" | "ImagePullBackOff" => format!(
            "an image of the VM cannot be pulled{}",
            why(vmi, "Synchronized")
        ),
        "ErrorUnschedulable" => format!("no node can run the VM{}", why(vmi, "PodScheduled")),
        "CrashLoopBackOff" => {
            "the VM keeps failing to start; KubeVirt retries with a back-off".to_owned()
        }
        "Terminating" => "the VirtualMachine is being deleted".to_owned(),
        "Unknown" => "KubeVirt cannot tell the VM's state".to_owned(),
        _ if phase == LifecyclePhase::Running && !ready => {
            format!("not ready yet{}", why(vmi, "Ready"))
        }
        _ => return format!("VirtualMachine is {printable}"),
    };
    format!("VirtualMachine is {printable}: {detail}")
}

fn condition_of<'a>(object: &'a Value, condition_type: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition_type)
}

/// `Running`, `Starting`, ... for condition reasons.
pub fn phase_name(phase: LifecyclePhase) -> &'static str {
    match phase {
        LifecyclePhase::Pending => "Pending",
        LifecyclePhase::Starting => "Starting",
        LifecyclePhase::Running => "Running",
        LifecyclePhase::Stopping => "Stopping",
        LifecyclePhase::Stopped => "Stopped",
        LifecyclePhase::Restarting => "Restarting",
        LifecyclePhase::Suspending => "Suspending",
        LifecyclePhase::Suspended => "Suspended",
        LifecyclePhase::Resuming => "Resuming",
        LifecyclePhase::Migrating => "Migrating",
        LifecyclePhase::Failed => "Failed",
        LifecyclePhase::Unknown => "Unknown",
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(phase: &str, conditions: Value) -> Value {
        json!({"metadata": {"name": "vm1"}, "status": {"phase": phase, "nodeName": "node-1", "conditions": conditions,
            "interfaces": [{"name": "default", "ipAddress": "10.244.0.7"}, {"name": "lan", "ipAddress": "192.168.1.20"}, {"name": "x"}]}})
    }

    #[test]
    fn vmi_phases_map_to_wukong_phases() {
        let vm = json!({"status": {"printableStatus": "Running"}});
        let cases = [
            ("Running", json!([]), LifecyclePhase::Running),
            ("Scheduling", json!([]), LifecyclePhase::Starting),
            ("Scheduled", json!([]), LifecyclePhase::Starting),
            ("Pending", json!([]), LifecyclePhase::Starting),
            ("Failed", json!([]), LifecyclePhase::Failed),
            (
                "Running",
                json!([{"type": "Paused", "status": "True"}]),
                LifecyclePhase::Suspended,
            ),
        ];
        for (vmi_phase, conditions, expected) in cases {
            let status = status(
                "vm1",
                "Always",
                Some(&vm),
                Some(&vmi(vmi_phase, conditions)),
            );
            assert_eq!(status.phase, expected, "{vmi_phase}");
        }
    }

    #[test]
    fn no_instance_is_stopped_when_halted_and_starting_otherwise() {
        let vm = json!({"status": {"printableStatus": "Stopped"}});
        assert_eq!(
            status("vm1", "Halted", Some(&vm), None).phase,
            LifecyclePhase::Stopped
        );
        let starting = json!({"status": {"printableStatus": "Starting"}});
        assert_eq!(
            status("vm1", "Always", Some(&starting), None).phase,
            LifecyclePhase::Starting
        );
        let new = status("vm1", "Always", None, None);
        assert_eq!(
            (new.phase, new.message.as_str()),
            (LifecyclePhase::Starting, "creating the VirtualMachine")
        );
    }

    #[test]
    fn reports_node_readiness_migratability_and_addresses() {
        let conditions = json!([{"type": "Ready", "status": "True"}, {"type": "LiveMigratable", "status": "True"}]);
        let vm = json!({"status": {"printableStatus": "Running"}});
        let status = status(
            "vm1",
            "Always",
            Some(&vm),
            Some(&vmi("Running", conditions)),
        );
        assert!(status.ready && status.live_migratable);
        assert_eq!(status.node_name.as_deref(), Some("node-1"));
        assert_eq!(status.printable_status.as_deref(), Some("Running"));
        assert_eq!(status.vmi_phase.as_deref(), Some("Running"));
        assert_eq!(status.ip_addresses, ["10.244.0.7", "192.168.1.20"]);
        assert!(status.current_action.is_none() && status.history.is_empty());
    }

    #[test]
    fn a_running_migration_and_a_deleted_instance_show() {
        let mut moving = vmi("Running", json!([]));
        moving["status"]["migrationState"] = json!({"startTimestamp": "2025-01-01T00:00:00Z"});
        assert_eq!(
            status("vm1", "Always", Some(&json!({})), Some(&moving)).phase,
            LifecyclePhase::Migrating
        );
        let mut going = vmi("Running", json!([]));
        going["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert_eq!(
            status("vm1", "Always", Some(&json!({})), Some(&going)).phase,
            LifecyclePhase::Stopping
        );
    }

    #[test]
    fn a_paused_instance_is_suspended_and_never_ready() {
        // The simulator of old kept Ready=True while paused; KubeVirt does not, and
        // neither does Wukong whatever the condition says.
        let conditions =
            json!([{"type": "Paused", "status": "True"}, {"type": "Ready", "status": "True"}]);
        let vm = json!({"status": {"printableStatus": "Paused"}});
        let got = status(
            "vm1",
            "Always",
            Some(&vm),
            Some(&vmi("Running", conditions)),
        );
        assert_eq!((got.phase, got.ready), (LifecyclePhase::Suspended, false));
        assert_eq!(got.message, "VirtualMachine is Paused");
    }

    #[test]
    fn a_migration_shows_before_a_pause_and_a_deleted_instance_is_not_ready() {
        let mut moving = vmi(
            "Running",
            json!([{"type": "Paused", "status": "True"}, {"type": "Ready", "status": "True"}]),
        );
        moving["status"]["migrationState"] = json!({"startTimestamp": "2025-01-01T00:00:00Z"});
        let vm = json!({"status": {"printableStatus": "Migrating"}});
        assert_eq!(
            status("vm1", "Always", Some(&vm), Some(&moving)).phase,
            LifecyclePhase::Migrating
        );
        let mut going = vmi("Running", json!([{"type": "Ready", "status": "True"}]));
        going["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        let got = status("vm1", "Always", Some(&vm), Some(&going));
        assert_eq!((got.phase, got.ready), (LifecyclePhase::Stopping, false));
    }

    #[test]
    fn printable_statuses_without_an_instance_map_to_phases_and_say_why() {
        let cases = [
            (
                "Provisioning",
                LifecyclePhase::Pending,
                "waiting for its DataVolumes",
            ),
            (
                "WaitingForVolumeBinding",
                LifecyclePhase::Pending,
                "to bind",
            ),
            ("DataVolumeError", LifecyclePhase::Pending, "CDI retries it"),
            (
                "ErrorPvcNotFound",
                LifecyclePhase::Pending,
                "does not exist",
            ),
            ("CrashLoopBackOff", LifecyclePhase::Failed, "back-off"),
            ("Terminating", LifecyclePhase::Stopping, "being deleted"),
            (
                "Stopped",
                LifecyclePhase::Stopped,
                "VirtualMachine is Stopped",
            ),
            (
                "Starting",
                LifecyclePhase::Starting,
                "VirtualMachine is Starting",
            ),
            ("Unknown", LifecyclePhase::Unknown, "cannot tell"),
        ];
        for (printable, phase, words) in cases {
            let vm = json!({"status": {"printableStatus": printable}});
            let got = status("vm1", "Always", Some(&vm), None);
            assert_eq!(got.phase, phase, "{printable}");
            assert!(!got.ready);
            assert!(got.message.contains(words), "{printable}: {}", got.message);
        }
        // The VM being deleted is Stopping, whatever its instance does.
        let vm = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"printableStatus": "Terminating"}});
        let running = vmi("Running", json!([{"type": "Ready", "status": "True"}]));
        let got = status("vm1", "Always", Some(&vm), Some(&running));
        assert_eq!((got.phase, got.ready), (LifecyclePhase::Stopping, false));
    }

    #[test]
    fn kubevirt_s_reasons_reach_the_message() {
        let unschedulable = vmi(
            "Scheduling",
            json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory."}]),
        );
        let vm = json!({"status": {"printableStatus": "ErrorUnschedulable"}});
        let got = status("vm1", "Always", Some(&vm), Some(&unschedulable));
        assert_eq!(got.phase, LifecyclePhase::Starting);
        assert_eq!(
            got.message,
            "VirtualMachine is ErrorUnschedulable: no node can run the VM: 0/3 nodes are available: 3 Insufficient memory."
        );
        let booting = vmi(
            "Running",
            json!([{"type": "Ready", "status": "False", "reason": "GuestNotRunning", "message": ""}]),
        );
        let vm = json!({"status": {"printableStatus": "Running"}});
        let got = status("vm1", "Always", Some(&vm), Some(&booting));
        assert_eq!((got.phase, got.ready), (LifecyclePhase::Running, false));
        assert_eq!(
            got.message,
            "VirtualMachine is Running: not ready yet: GuestNotRunning"
        );
    }
}
