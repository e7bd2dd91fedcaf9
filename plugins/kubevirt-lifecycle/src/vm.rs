//! The KubeVirt VirtualMachine built from the Wukong's spec and the earlier steps'
//! results: disks and volumes from the storage step, interfaces and networks from the
//! network step.

use serde_json::{Value, json};
use wukong_plugin_sdk::{Call, NetworkAttachment, StepError, StepResult, Volume, quantity};

use crate::Config;
use crate::run_strategy::APPLIED_ANNOTATION;

/// KubeVirt's VirtualMachine.
pub const VM_API_VERSION: &str = "kubevirt.io/v1";
/// KubeVirt's VirtualMachine.
pub const VM_KIND: &str = "VirtualMachine";

/// The VirtualMachine, named after the Wukong. Its template carries the Wukong's labels,
/// so the VMI (and its pod) carry them too. `run_strategy` is the one to apply (see
/// [`crate::run_strategy`]); the spec's value is recorded in an annotation.
pub fn build(call: &Call<'_, Config>, run_strategy: &str) -> StepResult<Value> {
    let wukong = call.wukong;
    if quantity::to_bytes(&wukong.memory).is_none() {
        return Err(StepError::InvalidSpec(format!(
            "memory {:?} is not a quantity (e.g. 4Gi)",
            wukong.memory
        )));
    }
    let volumes = &call.upstream.volumes;
    let attachments = &call.upstream.networks;
    let mut domain = json!({
        "cpu": {"cores": wukong.cpu},
        "memory": {"guest": wukong.memory},
        "resources": {"requests": {"memory": wukong.memory}},
        "devices": {"disks": volumes.iter().map(disk).collect::<Vec<_>>()},
    });
    let mut spec = json!({
        "domain": {},
        "terminationGracePeriodSeconds": call.config.termination_grace_period_seconds,
        "volumes": volumes.iter().map(volume).collect::<Vec<_>>(),
    });
    if !attachments.is_empty() {
        // With no networks KubeVirt attaches the pod network by itself; with some, the
        // list is exactly what the spec asks for.
        let interfaces = attachments
            .iter()
            .map(interface)
            .collect::<StepResult<Vec<_>>>()?;
        domain["devices"]["interfaces"] = json!(interfaces);
        spec["networks"] = json!(attachments.iter().map(network).collect::<Vec<_>>());
    }
    spec["domain"] = domain;
    // Drain moves the VM only if every disk can be shared between two nodes.
    if !volumes.is_empty()
        && volumes
            .iter()
            .all(|v| v.access_modes.iter().any(|m| m == "ReadWriteMany"))
    {
        spec["evictionStrategy"] = json!("LiveMigrate");
    }
    let mut metadata = serde_json::to_value(call.metadata(&wukong.name))
        .map_err(|e| StepError::Internal(format!("metadata: {e}")))?;
    metadata["annotations"] = json!({APPLIED_ANNOTATION: wukong.run_strategy});
    Ok(json!({
        "apiVersion": VM_API_VERSION,
        "kind": VM_KIND,
        "metadata": metadata,
        "spec": {
            "runStrategy": run_strategy,
            "template": {"metadata": {"labels": call.labels()}, "spec": spec},
        },
    }))
}

fn disk(volume: &Volume) -> Value {
    let mut disk = json!({"name": volume.name, "disk": {"bus": volume.bus}});
    if let Some(order) = volume.boot_order {
        disk["bootOrder"] = json!(order);
    }
    disk
}

fn volume(volume: &Volume) -> Value {
    if volume.data_volume {
        json!({"name": volume.name, "dataVolume": {"name": volume.claim_name}})
    } else {
        json!({"name": volume.name, "persistentVolumeClaim": {"claimName": volume.claim_name}})
    }
}

fn interface(attachment: &NetworkAttachment) -> StepResult<Value> {
    let binding = attachment.binding.as_str();
    if !matches!(binding, "bridge" | "masquerade" | "sriov") {
        return Err(StepError::InvalidSpec(format!(
            "network {}: unknown binding {binding:?}; use bridge, masquerade or sriov",
            attachment.name
        )));
    }
    let mut interface = json!({"name": attachment.name, binding: {}});
    if let Some(mac) = &attachment.mac_address {
        interface["macAddress"] = json!(mac);
    }
    Ok(interface)
}

fn network(attachment: &NetworkAttachment) -> Value {
    if attachment.network_name == "pod" {
        json!({"name": attachment.name, "pod": {}})
    } else {
        json!({"name": attachment.name, "multus": {"networkName": attachment.network_name}})
    }
}
