//! virt-controller for VirtualMachines: `runStrategy` (Always, Halted, Manual,
//! RerunOnFailure, Once) and `status.stateChangeRequests` → a VMI of the same name owned by
//! the VM; DataVolumes from `dataVolumeTemplates`; `status.printableStatus`, `ready`,
//! `created` and conditions.

use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::util::{
    self, condition_status, conditions, ok_unless_conflict, patch_status, set_condition, str_at,
};
use super::{ANN_IGNORE_ACPI, Ctx};
use crate::error::{Error, Result};

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let ar = util::vm();
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &ar);
    let vmi_ar = util::vmi();
    let vmis = Api::<DynamicObject>::all_with(ctx.client.clone(), &vmi_ar);
    Controller::new_with(api, watcher::Config::default(), ar)
        .owns_with(vmis, vmi_ar, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<DynamicObject>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("vm: {e}");
    Action::requeue(std::time::Duration::from_millis(500))
}

/// The VM's run strategy (`spec.running` is the deprecated spelling).
pub fn run_strategy(vm: &DynamicObject) -> String {
    match (
        str_at(&vm.data, "/spec/runStrategy"),
        vm.data.pointer("/spec/running"),
    ) {
        (Some(s), _) => s.to_owned(),
        (None, Some(Value::Bool(true))) => "Always".into(),
        _ => "Halted".into(),
    }
}

async fn reconcile(vm: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action> {
    if vm.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let vms = util::api(&ctx.client, &util::vm(), &ns);
    let vmis = util::api(&ctx.client, &util::vmi(), &ns);
    let retry = Action::requeue(ctx.cfg().retry_interval);
    create_data_volumes(&ctx, &vm).await?;
    let vmi = vmis.get_opt(&name).await?;
    let deleting = vmi
        .as_ref()
        .is_some_and(|v| v.metadata.deletion_timestamp.is_some());
    let vmi_phase = vmi
        .as_ref()
        .and_then(|v| str_at(&v.data, "/status/phase"))
        .unwrap_or("")
        .to_owned();
    let final_phase = matches!(vmi_phase.as_str(), "Succeeded" | "Failed");
    let mut requests = vm
        .data
        .pointer("/status/stateChangeRequests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    if let Some(first) = requests.first().cloned() {
        match str_at(&first, "/action") {
            Some("Stop") => {
                let wanted_uid = str_at(&first, "/uid");
                match &vmi {
                    Some(v) if wanted_uid.is_none_or(|u| Some(u) == v.metadata.uid.as_deref()) => {
                        if !deleting {
                            ok_unless_conflict(vmis.delete(&name, &DeleteParams::default()).await)?;
                        }
                        return Ok(Action::await_change());
                    }
                    _ => {
                        requests.remove(0);
                    }
                }
            }
            Some("Start") => {
                if vmi.is_some() {
                    if deleting {
                        return Ok(retry);
                    }
                } else {
                    create_vmi(&ctx, &vm).await?;
                }
                requests.remove(0);
            }
            _ => {
                requests.remove(0);
            }
        }
    } else {
        let strategy = run_strategy(&vm);
        let start = match strategy.as_str() {
            "Always" | "RerunOnFailure" | "Once" => vmi.is_none(),
            _ => false,
        };
        let stop = match strategy.as_str() {
            "Halted" => vmi.is_some(),
            "Always" => final_phase,
            "RerunOnFailure" => vmi_phase == "Failed",
            _ => false,
        };
        if start {
            if !create_vmi(&ctx, &vm).await? {
                return Ok(retry);
            }
        } else if stop && !deleting {
            ok_unless_conflict(vmis.delete(&name, &DeleteParams::default()).await)?;
        }
    }

    let status = status_for(&vm, vmi.as_ref(), &requests);
    let mut current = vm.data.get("status").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = current.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    let mut wanted = status.clone();
    if let Some(m) = wanted.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    if current != wanted {
        patch_status(&vms, &vm, status).await?;
    }
    Ok(Action::await_change())
}

fn status_for(vm: &DynamicObject, vmi: Option<&DynamicObject>, requests: &[Value]) -> Value {
    let vmi_conds = vmi.map(|v| conditions(&v.data)).unwrap_or_default();
    let phase = vmi
        .and_then(|v| str_at(&v.data, "/status/phase"))
        .unwrap_or("");
    let paused = condition_status(&vmi_conds, "Paused") == Some("True");
    let migrating = vmi.is_some_and(|v| {
        v.data.pointer("/status/migrationState").is_some()
            && v.data.pointer("/status/migrationState/completed") != Some(&Value::Bool(true))
    });
    let ready = phase == "Running" && condition_status(&vmi_conds, "Ready") == Some("True");
    let printable = match vmi {
        None => "Stopped",
        Some(v) if v.metadata.deletion_timestamp.is_some() => "Stopping",
        Some(_) => match phase {
            "Running" if paused => "Paused",
            "Running" if migrating => "Migrating",
            "Running" => "Running",
            "Succeeded" | "Failed" => "Stopped",
            _ => {
                let waiting = vmi_conds.iter().find(|c| {
                    c.get("status").and_then(Value::as_str) == Some("False")
                        && matches!(
                            c.get("type").and_then(Value::as_str),
                            Some("PodScheduled" | "DataVolumesReady")
                        )
                });
                match waiting.and_then(|c| c.get("reason").and_then(Value::as_str)) {
                    Some("Unschedulable") => "ErrorUnschedulable",
                    Some("WaitingForVolumeBinding") => "WaitingForVolumeBinding",
                    Some("Provisioning") => "Provisioning",
                    _ => "Starting",
                }
            }
        },
    };
    let mut conds = conditions(&vm.data);
    if ready {
        set_condition(&mut conds, "Ready", true, "", "");
    } else if vmi.is_none() {
        set_condition(
            &mut conds,
            "Ready",
            false,
            "VMINotExists",
            "VMI does not exist",
        );
    } else {
        set_condition(
            &mut conds,
            "Ready",
            false,
            "VMINotReady",
            "VMI is not ready",
        );
    }
    if paused {
        set_condition(
            &mut conds,
            "Paused",
            true,
            "PausedByUser",
            "VMI was paused by user",
        );
    } else {
        util::remove_condition(&mut conds, "Paused");
    }
    let generation = vm.metadata.generation;
    json!({
        "printableStatus": printable,
        "ready": if ready { json!(true) } else { Value::Null },
        "created": if vmi.is_some() { json!(true) } else { Value::Null },
        "conditions": conds,
        "observedGeneration": generation,
        "desiredGeneration": generation,
        "stateChangeRequests": if requests.is_empty() { Value::Null } else { json!(requests) },
    })
}

/// Creates the VMI from `spec.template`; `Ok(false)` when the old one is still there.
async fn create_vmi(ctx: &Ctx, vm: &DynamicObject) -> Result<bool> {
    let ns = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let template = vm
        .data
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels["vm.kubevirt.io/name"] = json!(name);
    let mut annotations = template
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(v) = util::annotation(vm, ANN_IGNORE_ACPI) {
        annotations[ANN_IGNORE_ACPI] = json!(v);
    }
    let body = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                "uid": vm.uid(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    let obj: DynamicObject = serde_json::from_value(body)?;
    let vmis = util::api(&ctx.client, &util::vmi(), &ns);
    match vmis.create(&PostParams::default(), &obj).await {
        Ok(_) => {
            tracing::info!(vm = %format!("{ns}/{name}"), "created VMI");
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn create_data_volumes(ctx: &Ctx, vm: &DynamicObject) -> Result<()> {
    let Some(templates) = vm
        .data
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
    else {
        return Ok(());
    };
    let ns = vm.namespace().unwrap_or_default();
    let dvs = util::api(&ctx.client, &util::dv(), &ns);
    for t in templates {
        let Some(name) = str_at(t, "/metadata/name") else {
            continue;
        };
        if dvs.get_opt(name).await?.is_some() {
            continue;
        }
        let mut meta = t.get("metadata").cloned().unwrap_or_else(|| json!({}));
        meta["namespace"] = json!(ns);
        meta["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "name": vm.name_any(), "uid": vm.uid(), "controller": true, "blockOwnerDeletion": true}]);
        let body = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": meta, "spec": t.get("spec").cloned().unwrap_or_else(|| json!({}))});
        let obj: DynamicObject = serde_json::from_value(body)?;
        match dvs.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
