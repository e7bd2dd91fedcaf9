//! The VM's state as users see it, read from the VirtualMachine and its instance (VMI).

use serde_json::Value;
use wukong_plugin_sdk::objects::{condition_status, lookup_str};
use wukong_plugin_sdk::{LifecyclePhase, LifecycleStatus};

/// The lifecycle status from what the cluster holds. `vm` is `None` before the VM exists
/// (it is being applied now); `run_strategy` is the spec's.
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
    let phase = match (vmi, vmi_phase.as_deref()) {
        (Some(vmi), _) if !vmi["metadata"]["deletionTimestamp"].is_null() => {
            LifecyclePhase::Stopping
        }
        (Some(_), _) if is("Paused") => LifecyclePhase::Suspended,
        (Some(_), Some("Running")) if migrating => LifecyclePhase::Migrating,
        (Some(_), Some("Running")) => LifecyclePhase::Running,
        (Some(_), Some("Pending" | "Scheduling" | "Scheduled")) => LifecyclePhase::Starting,
        (Some(_), Some("Failed")) => LifecyclePhase::Failed,
        (Some(_), Some("Succeeded")) => LifecyclePhase::Stopped,
        (Some(_), _) => LifecyclePhase::Unknown,
        // No instance: stopped when nothing should run it, else on its way.
        (None, _) if matches!(run_strategy, "Halted" | "Manual") => LifecyclePhase::Stopped,
        (None, _) if printable_status.as_deref() == Some("Stopped") => LifecyclePhase::Stopped,
        (None, _) => LifecyclePhase::Starting,
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
    let message = match (&printable_status, vm) {
        (_, None) => "creating the VirtualMachine".to_owned(),
        (Some(printable), _) => format!("VirtualMachine is {printable}"),
        (None, _) => String::new(),
    };
    LifecycleStatus {
        phase,
        vm_name: name.to_owned(),
        printable_status,
        vmi_phase,
        node_name: text(vmi, &["status", "nodeName"]),
        ready: is("Ready"),
        live_migratable: is("LiveMigratable"),
        ip_addresses,
        current_action: None,
        history: Vec::new(),
        message,
    }
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
        let starting = json!({"status": {"printableStatus": "Provisioning"}});
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
}
