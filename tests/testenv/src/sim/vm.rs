//! virt-controller for VirtualMachines (upstream `pkg/virt-controller/watch/vm/vm.go`):
//! the VM finalizer, DataVolumes from `dataVolumeTemplates` (the VMI waits for them), the
//! run strategies and `status.stateChangeRequests` → a VMI of the same name owned by the VM;
//! the status itself is `vm_status`.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::util::{self, ok_unless_conflict, patch_object, set_finalizer, str_at};
use super::vm_status::{self, Pass};
use super::{ANN_IGNORE_ACPI, Ctx};
use crate::error::{Error, Result};

/// Upstream's `VirtualMachineControllerFinalizer` (NB: its spelling, without the final "r").
pub const FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";

/// Subscribes to the informers at once (before they start), then runs.
pub(crate) fn run(ctx: Arc<Ctx>) -> BoxFuture<'static, ()> {
    let informers = &ctx.informers;
    let controller = Controller::for_stream_with(
        informers.vms.subscribe(),
        informers.vms.store.clone(),
        util::vm(),
    )
    .trigger_backoff(util::TriggerBackoff::default())
    .watches_stream_with(informers.vmis.subscribe(), controlling_vm, util::vmi())
    // The VM waits for the DataVolumes of its templates, which it owns.
    .watches_stream_with(informers.dvs.subscribe(), controlling_vm, util::dv())
    // Its status says whether its claims are bound (upstream's PVC handlers).
    .watches_stream(informers.pvcs.subscribe(), {
        let ctx = Arc::clone(&ctx);
        move |pvc: PersistentVolumeClaim| {
            let ns = pvc.namespace().unwrap_or_default();
            ctx.informers
                .vms
                .using_claim(&ns, &pvc.name_any())
                .into_iter()
                .map(|vm| ObjectRef::new_with(&vm, util::vm()).within(&ns))
                .collect::<Vec<_>>()
        }
    });
    Box::pin(async move {
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    })
}

/// The VM that controls `object` (its owner reference with `controller: true`).
fn controlling_vm(object: DynamicObject) -> Option<ObjectRef<DynamicObject>> {
    let ns = object.namespace().unwrap_or_default();
    object
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "VirtualMachine")
        .map(|o| ObjectRef::new_with(&o.name, util::vm()).within(&ns))
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

/// True for a VMI in phase Succeeded or Failed (upstream `IsFinal`).
pub fn is_final(vmi: &DynamicObject) -> bool {
    matches!(
        str_at(&vmi.data, "/status/phase"),
        Some("Succeeded" | "Failed")
    )
}

/// The first state-change request is a Stop for this VMI (upstream `hasStopRequestForVMI`).
pub fn has_stop_request_for(requests: &[Value], vmi: &DynamicObject) -> bool {
    requests.first().is_some_and(|r| {
        str_at(r, "/action") == Some("Stop") && str_at(r, "/uid") == vmi.metadata.uid.as_deref()
    })
}

/// The first state-change request is a Start (upstream `hasStartRequest`).
pub fn has_start_request(requests: &[Value]) -> bool {
    requests
        .first()
        .is_some_and(|r| str_at(r, "/action") == Some("Start"))
}

async fn reconcile(vm: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let vms = util::api(&ctx.client, &util::vm(), &ns);
    let vmis = util::api(&ctx.client, &util::vmi(), &ns);
    // A VMI of this name that another VM (or nobody) controls is not ours.
    let vmi = ctx
        .informers
        .vmis
        .get(Some(&ns), &name)
        .map(|v| (*v).clone())
        .filter(|v| {
            v.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == vm.metadata.uid.as_ref())
        });
    let mut pass = Pass {
        requests: vm
            .data
            .pointer("/status/stateChangeRequests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        ..Pass::default()
    };

    // As upstream's sync: a VM being deleted stops its VMI, then drops its finalizer.
    if vm.metadata.deletion_timestamp.is_some() {
        let orphan = vm.finalizers().iter().any(|f| f == "orphan");
        match &vmi {
            Some(v) if !orphan => pass.stopping = stop_vmi(&vmis, v).await?,
            _ => {
                set_finalizer(&vms, &vm, FINALIZER, false).await?;
                return Ok(Action::await_change());
            }
        }
        vm_status::write(&ctx, &vms, &vm, vmi.as_ref(), &mut pass).await?;
        return Ok(Action::await_change());
    }
    if !vm.finalizers().iter().any(|f| f == FINALIZER) {
        set_finalizer(&vms, &vm, FINALIZER, true).await?;
        return Ok(Action::await_change());
    }

    let strategy = run_strategy(&vm);
    let dvs_ready = handle_data_volumes(&ctx, &vm, &mut pass.dvs).await?;
    // As upstream: "not sure why we allow to proceed when halted but preserving legacy
    // behavior" — any other strategy waits here for its DataVolumes.
    if dvs_ready || strategy == "Halted" {
        sync_run_strategy(&ctx, &vm, vmi.as_ref(), &strategy, &mut pass).await?;
    }
    if pass.spec_written {
        return Ok(Action::await_change());
    }
    vm_status::write(&ctx, &vms, &vm, vmi.as_ref(), &mut pass).await?;
    Ok(Action::await_change())
}

/// As upstream's `syncRunStrategy`: what each strategy does with the VMI there is (or not).
async fn sync_run_strategy(
    ctx: &Ctx,
    vm: &DynamicObject,
    vmi: Option<&DynamicObject>,
    strategy: &str,
    pass: &mut Pass,
) -> Result<()> {
    let vmis = util::api(
        &ctx.client,
        &util::vmi(),
        &vm.namespace().unwrap_or_default(),
    );
    let phase = vmi
        .and_then(|v| str_at(&v.data, "/status/phase"))
        .unwrap_or("");
    let stop_requested = vmi.is_some_and(|v| has_stop_request_for(&pass.requests, v));
    match (strategy, vmi) {
        // Always: a stop request or a finished VMI is a restart (delete, then start).
        ("Always", Some(v)) if stop_requested || is_final(v) => {
            pass.stopping = stop_vmi(&vmis, v).await?;
        }
        ("Always" | "Once", None) => start_vmi(ctx, vm, pass).await?,
        // RerunOnFailure: a finished VMI is deleted; only a failed one is started again
        // (through a Start request); a Succeeded one stays stopped.
        ("RerunOnFailure", Some(v))
            if v.metadata.deletion_timestamp.is_none()
                && (stop_requested || matches!(phase, "Failed" | "Succeeded")) =>
        {
            pass.stopping = stop_vmi(&vmis, v).await?;
            if phase == "Failed" {
                // As upstream's addStartRequest: written at once and with no precondition,
                // so no lost race of the status write can drop it.
                pass.requests.push(json!({"action": "Start"}));
                let vms = util::api(
                    &ctx.client,
                    &util::vm(),
                    &vm.namespace().unwrap_or_default(),
                );
                let body = json!({"status": {"stateChangeRequests": pass.requests}});
                vms.patch_status(
                    &vm.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await?;
            }
        }
        // As upstream's shouldStartRerunOnFailure: a Start request, or a strategy just
        // switched to (status.runStrategy still differs: a new VM too).
        ("RerunOnFailure", None)
            if has_start_request(&pass.requests)
                || str_at(&vm.data, "/status/runStrategy") != Some(strategy) =>
        {
            start_vmi(ctx, vm, pass).await?;
        }
        ("Manual", Some(v)) if stop_requested => pass.stopping = stop_vmi(&vmis, v).await?,
        ("Manual", None) if has_start_request(&pass.requests) => {
            start_vmi(ctx, vm, pass).await?;
        }
        // Halted with a Start request (a paused start) becomes Always.
        ("Halted", None) if has_start_request(&pass.requests) => {
            let vms = util::api(
                &ctx.client,
                &util::vm(),
                &vm.namespace().unwrap_or_default(),
            );
            let spec = if vm.data.pointer("/spec/runStrategy").is_some() {
                json!({"runStrategy": "Always"})
            } else {
                json!({"running": true})
            };
            patch_object(&vms, vm, json!({"spec": spec})).await?;
            pass.spec_written = true;
        }
        ("Halted", Some(v)) => pass.stopping = stop_vmi(&vmis, v).await?,
        _ => {}
    }
    Ok(())
}

/// Deletes the VMI unless it is being deleted; true when this pass issued the delete
/// (upstream's stop expectation, which the printable status reads as `Stopping`).
async fn stop_vmi(vmis: &Api<DynamicObject>, vmi: &DynamicObject) -> Result<bool> {
    if vmi.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    let deleted = ok_unless_conflict(vmis.delete(&vmi.name_any(), &DeleteParams::default()).await)?;
    if deleted {
        tracing::info!(vmi = %vmi.name_any(), "VM controller deleted its VMI");
    }
    Ok(deleted)
}

/// As upstream's `startVMI`: creates the VMI from `spec.template`.
async fn start_vmi(ctx: &Ctx, vm: &DynamicObject, pass: &mut Pass) -> Result<()> {
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
            pass.start_expected = true;
            Ok(())
        }
        // The old VMI is still there (being deleted): the VMI watch brings us back. Or
        // the cache has not seen the one an earlier pass created: it is starting.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            pass.start_expected = true;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// As upstream's `handleDataVolumes`: creates the DataVolumes of `dataVolumeTemplates`
/// that do not exist; true when every one is Succeeded, WaitForFirstConsumer or
/// PendingPopulation. The DataVolumes read are kept in `seen` for the status.
async fn handle_data_volumes(
    ctx: &Ctx,
    vm: &DynamicObject,
    seen: &mut HashMap<String, Option<DynamicObject>>,
) -> Result<bool> {
    let Some(templates) = vm
        .data
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
    else {
        return Ok(true);
    };
    let ns = vm.namespace().unwrap_or_default();
    let dvs = util::api(&ctx.client, &util::dv(), &ns);
    let mut ready = true;
    for t in templates {
        let Some(name) = str_at(t, "/metadata/name") else {
            continue;
        };
        if let Some(dv) = ctx.informers.dvs.get(Some(&ns), name) {
            let dv = (*dv).clone();
            let phase = str_at(&dv.data, "/status/phase").unwrap_or("");
            ready &= matches!(
                phase,
                "Succeeded" | "WaitForFirstConsumer" | "PendingPopulation"
            );
            seen.insert(name.to_owned(), Some(dv));
            continue;
        }
        ready = false;
        let mut meta = t.get("metadata").cloned().unwrap_or_else(|| json!({}));
        meta["namespace"] = json!(ns);
        meta["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "name": vm.name_any(), "uid": vm.uid(), "controller": true, "blockOwnerDeletion": true}]);
        let body = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": meta, "spec": t.get("spec").cloned().unwrap_or_else(|| json!({}))});
        let obj: DynamicObject = serde_json::from_value(body)?;
        match dvs.create(&PostParams::default(), &obj).await {
            Ok(dv) => {
                seen.insert(name.to_owned(), Some(dv));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ready)
}
