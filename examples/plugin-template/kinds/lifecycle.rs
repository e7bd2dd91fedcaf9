//! `example-lifecycle`: a Wukong lifecycle step. This skeleton applies a KubeVirt
//! VirtualMachine from the spec and the network and storage steps' results, and reports
//! the VM's and VMI's state; one-shot actions (`spec.lifecycleAction`) are left to you.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wukong_plugin_sdk::{
    Call, Effects, LifecycleOutcome, LifecyclePhase, LifecyclePlugin, LifecycleStatus, Manifest,
    Plugin, StepResult,
};

const KUBEVIRT: &str = "kubevirt.io/v1";

/// The plugin's config (none yet: add fields here); its JSON Schema is in the manifest.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {}

/// The plugin.
pub struct ExampleLifecycle;

impl Plugin for ExampleLifecycle {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("example-lifecycle", env!("CARGO_PKG_VERSION"))
            .description("A KubeVirt VirtualMachine per Wukong")
            .writes(KUBEVIRT, "VirtualMachine")
            .reads(KUBEVIRT, "VirtualMachineInstance")
    }
}

impl LifecyclePlugin for ExampleLifecycle {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<LifecycleOutcome> {
        let wukong = call.wukong;
        let volumes: Vec<Value> = call
            .upstream
            .volumes
            .iter()
            .map(|v| {
                let source = if v.data_volume {
                    "dataVolume"
                } else {
                    "persistentVolumeClaim"
                };
                let key = if v.data_volume { "name" } else { "claimName" };
                json!({"name": v.name, source: {key: v.claim_name}})
            })
            .collect();
        let disks: Vec<Value> = call
            .upstream
            .volumes
            .iter()
            .map(|v| json!({"name": v.name, "disk": {"bus": v.bus}}))
            .collect();
        let networks: Vec<Value> = call
            .upstream
            .networks
            .iter()
            .map(|n| match n.network_name.as_str() {
                "pod" => json!({"name": n.name, "pod": {}}),
                nad => json!({"name": n.name, "multus": {"networkName": nad}}),
            })
            .collect();
        let interfaces: Vec<Value> = call
            .upstream
            .networks
            .iter()
            .map(|n| {
                let mut interface = json!({"name": n.name, n.binding.as_str(): {}});
                if let Some(mac) = &n.mac_address {
                    interface["macAddress"] = json!(mac);
                }
                interface
            })
            .collect();
        let mut effects = Effects::default();
        effects.apply(&json!({
            "apiVersion": KUBEVIRT, "kind": "VirtualMachine", "metadata": call.metadata(&wukong.name),
            "spec": {"runStrategy": wukong.run_strategy, "template": {"spec": {
                "domain": {"cpu": {"cores": wukong.cpu}, "memory": {"guest": wukong.memory},
                    "devices": {"disks": disks, "interfaces": interfaces}},
                "networks": networks, "volumes": volumes}}},
        }))?;
        let vm: Option<Value> =
            call.get_as(&call.object_ref(KUBEVIRT, "VirtualMachine", &wukong.name))?;
        let vmi: Option<Value> =
            call.get_as(&call.object_ref(KUBEVIRT, "VirtualMachineInstance", &wukong.name))?;
        let printable = vm
            .as_ref()
            .and_then(|vm| vm["status"]["printableStatus"].as_str());
        let vmi_status = |field: &str| {
            vmi.as_ref()
                .and_then(|v| v["status"][field].as_str())
                .map(str::to_owned)
        };
        let phase = match (vmi_status("phase").as_deref(), printable) {
            (Some("Failed"), _) => LifecyclePhase::Failed,
            (_, Some("Paused")) => LifecyclePhase::Suspended,
            (Some("Running"), _) => LifecyclePhase::Running,
            (_, Some("Stopped")) => LifecyclePhase::Stopped,
            (Some(_), _) | (_, Some("Starting")) => LifecyclePhase::Starting,
            _ => LifecyclePhase::Pending,
        };
        let status = LifecycleStatus {
            phase,
            vm_name: wukong.name.clone(),
            printable_status: printable.map(str::to_owned),
            vmi_phase: vmi_status("phase"),
            node_name: vmi_status("nodeName"),
            ready: phase == LifecyclePhase::Running,
            live_migratable: false,
            ip_addresses: Vec::new(),
            current_action: None,
            history: Vec::new(),
            message: String::new(),
        };
        Ok(LifecycleOutcome { effects, status })
    }
}

wukong_plugin_sdk::export_lifecycle_plugin!(ExampleLifecycle);
