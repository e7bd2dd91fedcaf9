//! A provisioner + PV binder: binds PVCs to PVs it creates (access and volume mode kept),
//! waits for the first consumer when the class says so, grows capacity when the request
//! grows, and releases the protection finalizers once no VMI uses the claim.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use wukong_model::Quantity;

use super::util::{self, ok_unless_conflict, str_at};
use super::{Ctx, cdi};
use crate::error::{Error, Result};

/// The annotation the scheduler sets on a WaitForFirstConsumer claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let api: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .trigger_backoff(util::TriggerBackoff::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<PersistentVolumeClaim>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("storage: {e}");
    Action::requeue(std::time::Duration::from_millis(500))
}

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let cfg = ctx.cfg();
    if pvc.metadata.deletion_timestamp.is_some() {
        return release(&ctx, &api, &pvc).await;
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Bound" {
        return grow(&ctx, &api, &pvc, &request).await;
    }
    let class = storage_class(&ctx, spec.storage_class_name.as_deref()).await?;
    let class_name = match (&class, spec.storage_class_name.as_deref()) {
        (Some(c), _) => c.name_any(),
        (None, Some(named)) if !named.is_empty() => return Ok(Action::await_change()),
        _ => String::new(),
    };
    let wffc = class
        .as_ref()
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    let selected = pvc.annotations().get(SELECTED_NODE).cloned();
    // CDI's import populator (import-populator.go): the target PVC stays Pending until
    // the import ends, then its volume is bound to it, consumer or not.
    let populated = pvc
        .annotations()
        .get(cdi::ANN_USE_POPULATOR)
        .map(String::as_str)
        == Some("true");
    if populated
        && pvc
            .annotations()
            .get(cdi::ANN_POD_PHASE)
            .map(String::as_str)
            != Some("Succeeded")
    {
        return Ok(Action::await_change());
    }
    if wffc && selected.is_none() && !populated {
        return Ok(Action::await_change());
    }
    let uid = pvc.uid().unwrap_or_default();
    if let Some(rest) = ctx.wait(format!("pvc/{uid}"), cfg.pvc_bind_delay) {
        return Ok(Action::requeue(rest));
    }
    let pv_name = format!("pvc-{uid}");
    let mut pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": "sim.kubevirt.io/hostpath"}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": class_name,
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
            "csi": {"driver": "sim.kubevirt.io", "volumeHandle": pv_name},
        },
    });
    if let Some(node) = &selected {
        pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}});
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv: PersistentVolume = serde_json::from_value(pv)?;
    match pvs.create(&Default::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let bound = json!({"status": {"phase": "Bound"}});
    pvs.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&bound))
        .await?;
    let claim = json!({
        "metadata": {"resourceVersion": pvc.resource_version(), "annotations": {
            "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.beta.kubernetes.io/storage-provisioner": "sim.kubevirt.io/hostpath"}},
        "spec": {"volumeName": pv_name},
    });
    if !ok_unless_conflict(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&claim))
            .await,
    )? {
        return Ok(Action::requeue(cfg.retry_interval));
    }
    let status = json!({"status": {"phase": "Bound", "accessModes": spec.access_modes,
        "capacity": {"storage": request}}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    tracing::info!(pvc = %format!("{ns}/{name}"), pv = %pv_name, "bound");
    Ok(Action::await_change())
}

/// Grows the PV and the claim's `status.capacity` to the requested size.
async fn grow(
    ctx: &Ctx,
    api: &Api<PersistentVolumeClaim>,
    pvc: &PersistentVolumeClaim,
    request: &str,
) -> Result<Action> {
    let capacity = pvc
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    let (Ok(want), have) = (
        Quantity::parse(request),
        Quantity::parse(&capacity).unwrap_or(Quantity::ZERO),
    ) else {
        return Ok(Action::await_change());
    };
    if want <= have {
        return Ok(Action::await_change());
    }
    if let Some(pv) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
        let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
        let body = json!({"spec": {"capacity": {"storage": request}}});
        pvs.patch(&pv, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    let status = json!({"status": {"capacity": {"storage": request}}});
    api.patch_status(
        &pvc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    tracing::info!(pvc = %pvc.name_any(), from = %capacity, to = %request, "expanded");
    Ok(Action::await_change())
}

/// Deletes the PV and drops the protection finalizers once no live VMI uses the claim.
async fn release(
    ctx: &Ctx,
    api: &Api<PersistentVolumeClaim>,
    pvc: &PersistentVolumeClaim,
) -> Result<Action> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let vmis = util::api(&ctx.client, &util::vmi(), &ns)
        .list(&ListParams::default())
        .await?;
    if vmis
        .iter()
        .any(|v| !is_final(v) && claims(&v.data).iter().any(|c| c == &name))
    {
        return Ok(Action::requeue(ctx.cfg().retry_interval));
    }
    if let Some(pv) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
        let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
        let _ = ok_unless_conflict(pvs.delete(&pv, &DeleteParams::default()).await)?;
        let body = json!({"metadata": {"finalizers": null}});
        let _ = ok_unless_conflict(
            pvs.patch(&pv, &PatchParams::default(), &Patch::Merge(&body))
                .await,
        )?;
    }
    let rest: Vec<String> = pvc
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != "kubernetes.io/pvc-protection")
        .cloned()
        .collect();
    let body = json!({"metadata": {"resourceVersion": pvc.resource_version(), "finalizers": rest}});
    ok_unless_conflict(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await,
    )?;
    Ok(Action::await_change())
}

/// The storage class a claim uses: the named one, or the default class.
pub async fn storage_class(ctx: &Ctx, name: Option<&str>) -> Result<Option<StorageClass>> {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    match name {
        Some(n) if !n.is_empty() => Ok(api.get_opt(n).await?),
        _ => Ok(api
            .list(&ListParams::default())
            .await?
            .into_iter()
            .find(|sc| {
                sc.annotations()
                    .get("storageclass.kubernetes.io/is-default-class")
                    .map(String::as_str)
                    == Some("true")
            })),
    }
}

/// The claim names a VMI's volumes use (`persistentVolumeClaim` and `dataVolume`).
pub fn claims(vmi: &Value) -> Vec<String> {
    vmi.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            str_at(v, "/persistentVolumeClaim/claimName")
                .or_else(|| str_at(v, "/dataVolume/name"))
                .map(str::to_owned)
        })
        .collect()
}

/// True for a VMI in phase Succeeded or Failed.
pub fn is_final(vmi: &DynamicObject) -> bool {
    matches!(
        str_at(&vmi.data, "/status/phase"),
        Some("Succeeded" | "Failed")
    )
}
