//! CDI (`pkg/controller/datavolume/`, `pkg/controller/populators/import-populator.go`,
//! `pkg/controller/import-controller.go`): a DataVolume gets a target PVC; with the
//! default populator flow the PVC stays Pending until the import ends (then it binds), a
//! WaitForFirstConsumer class with no consumer is `PendingPopulation`; with
//! `cdi.kubevirt.io/storage.usePopulator: "false"` the PVC binds first (`PVCBound`) and
//! the import follows. The importer pod lives in the PVC's annotations, as CDI keeps it:
//! a failing import restarts (`restartCount` rises, `Running=False` with the error, phase
//! still `ImportInProgress`) unless the error is fatal.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::storage::SELECTED_NODE;
use super::util::{
    self, annotation, conditions, ok_unless_conflict, patch_status, set_condition, str_at,
};
use super::{ANN_FAIL_IMPORT, Ctx, storage};
use crate::error::{Error, Result};

/// The importer pod's phase, kept on the PVC (`AnnPodPhase`).
pub const ANN_POD_PHASE: &str = "cdi.kubevirt.io/storage.pod.phase";
/// How often the importer pod restarted (`AnnPodRestarts`).
pub const ANN_POD_RESTARTS: &str = "cdi.kubevirt.io/storage.pod.restarts";
/// The PVC is filled by a populator (`AnnUsePopulator`); on a DataVolume, `"false"`
/// asks for the legacy flow.
pub const ANN_USE_POPULATOR: &str = "cdi.kubevirt.io/storage.usePopulator";
/// Import even when the class waits for a first consumer (`AnnImmediateBinding`).
pub const ANN_IMMEDIATE_BINDING: &str = "cdi.kubevirt.io/storage.bind.immediate.requested";
const ANN_FATAL: &str = "cdi.kubevirt.io/storage.import.fatalError";
const ANN_RUNNING: &str = "cdi.kubevirt.io/storage.condition.running";
const ANN_RUNNING_MESSAGE: &str = "cdi.kubevirt.io/storage.condition.running.message";
const ANN_RUNNING_REASON: &str = "cdi.kubevirt.io/storage.condition.running.reason";
const ANN_PROGRESS: &str = "cdi.kubevirt.io/storage.populator.progress";

/// Subscribes to the informers at once (before they start), then runs.
pub(crate) fn run(ctx: Arc<Ctx>) -> BoxFuture<'static, ()> {
    let informers = &ctx.informers;
    let controller = Controller::for_stream_with(
        informers.dvs.subscribe(),
        informers.dvs.store.clone(),
        util::dv(),
    )
    .trigger_backoff(util::TriggerBackoff::default())
    // A DataVolume's claim has its name (and is owned by it).
    .watches_stream(informers.pvcs.subscribe(), |pvc: PersistentVolumeClaim| {
        let ns = pvc.namespace().unwrap_or_default();
        pvc.owner_references()
            .iter()
            .find(|o| o.kind == "DataVolume")
            .map(|o| ObjectRef::new_with(&o.name, util::dv()).within(&ns))
    });
    Box::pin(async move {
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    })
}

fn error_policy(_: Arc<DynamicObject>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("cdi: {e}");
    Action::requeue(std::time::Duration::from_millis(500))
}

/// `ReconcilerBase.syncDvPvcState` + `updateStatus`, with the importer pod one step per call.
async fn reconcile(dv: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = dv.namespace().unwrap_or_default();
    let name = dv.name_any();
    let phase = str_at(&dv.data, "/status/phase").unwrap_or("").to_owned();
    if dv.metadata.deletion_timestamp.is_some() || matches!(phase.as_str(), "Succeeded" | "Failed")
    {
        return Ok(Action::await_change());
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pvc) = ctx.informers.pvcs.get(Some(&ns), &name) else {
        let claim = claim_for(&dv)?;
        match pvcs.create(&PostParams::default(), &claim).await {
            Ok(_) => write(&ctx, &dv, status(&dv, &claim, "Pending")).await?,
            // Made by an earlier pass the cache has not shown yet: its event comes.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    };
    let pvc = (*pvc).clone();
    let anno = pvc.annotations().clone();
    let populator = anno.get(ANN_USE_POPULATOR).map(String::as_str) == Some("true");
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    let sc = storage::storage_class(&ctx, class.as_deref()).await?;
    let wffc =
        sc.as_ref().and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer");
    if !bound && sc.is_none() && class.as_deref().is_some_and(|c| !c.is_empty()) {
        // No such class: nothing can provision the claim, the importer never runs.
        write(&ctx, &dv, status(&dv, &pvc, "Pending")).await?;
        return Ok(Action::requeue(
            ctx.cfg()
                .retry_interval
                .max(std::time::Duration::from_secs(2)),
        ));
    }
    let immediate = annotation(&dv, ANN_IMMEDIATE_BINDING) == Some("true");
    let waits_for_consumer = wffc && !anno.contains_key(SELECTED_NODE) && !immediate;
    let pod_phase = anno.get(ANN_POD_PHASE).cloned().unwrap_or_default();

    let next = if bound {
        if populator || pod_phase == "Succeeded" {
            "Succeeded"
        } else if pod_phase.is_empty() {
            // The PVC bound first: PVCBound, then the importer starts.
            if phase == "PVCBound" {
                return importer(&ctx, &pvcs, &dv, &pvc).await;
            }
            "PVCBound"
        } else {
            pod_status_phase(&anno, &phase)
        }
    } else if waits_for_consumer {
        // shouldBeMarkedPendingPopulation / shouldBeMarkedWaitForFirstConsumer
        if populator {
            "PendingPopulation"
        } else {
            "WaitForFirstConsumer"
        }
    } else if populator {
        if pod_phase != "Succeeded" && anno.get(ANN_FATAL).map(String::as_str) != Some("true") {
            let action = importer(&ctx, &pvcs, &dv, &pvc).await?;
            write(
                &ctx,
                &dv,
                status(&dv, &pvc, pod_status_phase(&anno, &phase)),
            )
            .await?;
            return Ok(action);
        }
        pod_status_phase(&anno, &phase)
    } else {
        if wffc && immediate && !anno.contains_key(SELECTED_NODE) {
            // The importer pod is the first consumer: the scheduler picks its node.
            let node = format!("{}0", ctx.cfg().node_prefix);
            let body = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
            pvcs.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await?;
        }
        "Pending"
    };
    write(&ctx, &dv, status(&dv, &pvc, next)).await?;
    if bound && !populator && !matches!(next, "Succeeded" | "PVCBound" | "Failed") {
        return importer(&ctx, &pvcs, &dv, &pvc).await;
    }
    Ok(Action::await_change())
}

/// `ImportReconciler.updateStatusPhase`: the DataVolume phase the importer pod gives.
/// A failed pod keeps the phase (it is retried) unless the error is fatal.
fn pod_status_phase<'a>(
    anno: &std::collections::BTreeMap<String, String>,
    current: &'a str,
) -> &'a str {
    match anno.get(ANN_POD_PHASE).map(String::as_str) {
        Some("Running") => "ImportInProgress",
        Some("Failed") if anno.get(ANN_FATAL).map(String::as_str) == Some("true") => "Failed",
        Some("Failed" | "Succeeded") if !current.is_empty() => current,
        _ => "ImportScheduled",
    }
}

/// The importer pod, one step: created (Pending), Running with progress, then Succeeded;
/// a failing import crashes and restarts (`setAnnotationsFromPodWithPrefix`), a fatal
/// one (`fail-import: fatal`, a checksum mismatch) fails the pod for good.
async fn importer(
    ctx: &Ctx,
    pvcs: &Api<PersistentVolumeClaim>,
    dv: &DynamicObject,
    pvc: &PersistentVolumeClaim,
) -> Result<Action> {
    let cfg = ctx.cfg();
    let anno = pvc.annotations();
    let get = |k: &str| anno.get(k).map(String::as_str).unwrap_or("");
    let (pod_phase, running) = (get(ANN_POD_PHASE), get(ANN_RUNNING) == "true");
    let restarts: u32 = get(ANN_POD_RESTARTS).parse().unwrap_or(0);
    let progress = get(ANN_PROGRESS)
        .trim_end_matches('%')
        .parse::<f64>()
        .unwrap_or(0.0);
    if !pod_phase.is_empty() {
        // A crashed importer restarts after the kubelet's back-off, doubling each time.
        let delay = if pod_phase == "Running" && !running {
            cfg.import_step_delay.max(cfg.retry_interval) * 2u32.pow(restarts.clamp(1, 6) - 1)
        } else {
            cfg.import_step_delay
        };
        let key = format!(
            "dv/{}/{pod_phase}/{progress}/{restarts}/{running}",
            dv.uid().unwrap_or_default()
        );
        if let Some(rest) = ctx.wait(key, delay) {
            return Ok(Action::requeue(rest));
        }
    }
    let failure = if cfg.import_fail {
        Some("true")
    } else {
        annotation(dv, ANN_FAIL_IMPORT).filter(|v| matches!(*v, "true" | "fatal"))
    };
    let step = 100.0 / f64::from(cfg.import_steps.max(1));
    let mut set = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        set.insert(k.to_owned(), v);
    };
    let mut crashed = None;
    match (pod_phase, failure) {
        ("", _) => {
            put(ANN_POD_PHASE, json!("Pending"));
            put(ANN_POD_RESTARTS, json!("0"));
            put(ANN_RUNNING, json!("false"));
            put(ANN_RUNNING_REASON, json!("ContainerCreating"));
            put(ANN_RUNNING_MESSAGE, json!(""));
        }
        ("Pending", _) => {
            put(ANN_POD_PHASE, json!("Running"));
            put(ANN_RUNNING, json!("true"));
            put(ANN_RUNNING_REASON, json!("Pod is running"));
            put(ANN_RUNNING_MESSAGE, json!(""));
        }
        ("Running", Some("fatal")) => {
            let message = "Unable to process data: checksum mismatch";
            put(ANN_POD_PHASE, json!("Failed"));
            put(ANN_FATAL, json!("true"));
            put(ANN_RUNNING, json!("false"));
            put(ANN_RUNNING_REASON, json!("Error"));
            put(ANN_RUNNING_MESSAGE, json!(message));
            crashed = Some(message.to_owned());
        }
        ("Running", Some(_)) if running && progress >= step / 2.0 => {
            // The importer exits with an error; the kubelet restarts it (CrashLoopBackOff).
            let message = import_error(dv);
            put(ANN_POD_RESTARTS, json!((restarts + 1).to_string()));
            put(ANN_RUNNING, json!("false"));
            put(ANN_RUNNING_REASON, json!("Error"));
            put(ANN_RUNNING_MESSAGE, json!(message));
            crashed = Some(message);
        }
        ("Running", Some(_)) if running => {
            put(ANN_PROGRESS, json!(format!("{:.2}%", step / 2.0)));
        }
        ("Running", Some(_)) => {
            // Restarted after the back-off: running again, from the start.
            put(ANN_RUNNING, json!("true"));
            put(ANN_RUNNING_REASON, json!("Pod is running"));
            put(ANN_RUNNING_MESSAGE, json!(""));
            put(ANN_PROGRESS, json!(format!("{:.2}%", 0.0)));
        }
        ("Running", None) => {
            let next = (progress + step).min(100.0);
            if next >= 100.0 {
                put(ANN_POD_PHASE, json!("Succeeded"));
                put(ANN_PROGRESS, json!("100.0%"));
                put(ANN_RUNNING, json!("false"));
                put(ANN_RUNNING_REASON, json!("Completed"));
                put(ANN_RUNNING_MESSAGE, json!("Import Complete"));
            } else {
                put(ANN_PROGRESS, json!(format!("{next:.2}%")));
            }
        }
        _ => return Ok(Action::await_change()),
    }
    let body = json!({"metadata": {"resourceVersion": pvc.resource_version(), "annotations": Value::Object(set)}});
    ok_unless_conflict(
        pvcs.patch(
            &pvc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await,
    )?;
    if let Some(message) = crashed {
        tracing::info!(dv = %dv.name_any(), %message, "import failed");
        warn(ctx, dv, &message).await;
    }
    Ok(Action::await_change())
}

/// What the importer reports for a source it cannot read (CDI's own wording).
fn import_error(dv: &DynamicObject) -> String {
    if dv.data.pointer("/spec/source/http").is_some() {
        "Unable to connect to http data source: expected status code 200, got 404. Status: 404 Not Found".into()
    } else if dv.data.pointer("/spec/source/registry").is_some() {
        "Unable to process data: Unable to transfer source data to scratch space: Failed to read registry image: Error retrieving image: manifest unknown".into()
    } else {
        "Unable to process data: simulated import failure".into()
    }
}

/// The DataVolume status for `phase`: `updateConditions` (Bound, Ready, Running from the
/// importer's annotations), `restartCount`, progress.
fn status(dv: &DynamicObject, pvc: &PersistentVolumeClaim, phase: &str) -> Value {
    let name = pvc.name_any();
    let anno = pvc.annotations();
    let get = |k: &str| anno.get(k).map(String::as_str).unwrap_or("");
    let mut conds = conditions(&dv.data);
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if bound {
        set_condition(
            &mut conds,
            "Bound",
            true,
            "Bound",
            &format!("PVC {name} Bound"),
        );
    } else {
        set_condition(
            &mut conds,
            "Bound",
            false,
            "Pending",
            &format!("PVC {name} Pending"),
        );
    }
    set_condition(&mut conds, "Ready", phase == "Succeeded", "", "");
    let running = get(ANN_RUNNING) == "true";
    if running {
        set_condition(&mut conds, "Ready", false, "TransferRunning", "");
    }
    set_condition(
        &mut conds,
        "Running",
        running,
        get(ANN_RUNNING_REASON),
        get(ANN_RUNNING_MESSAGE),
    );
    let progress = match (phase, get(ANN_PROGRESS)) {
        ("Succeeded", _) => "100.0%",
        (_, "") => "N/A",
        (_, p) => p,
    };
    let mut status =
        json!({"phase": phase, "progress": progress, "conditions": conds, "claimName": name});
    if let Ok(n @ 1..) = get(ANN_POD_RESTARTS).parse::<i64>() {
        status["restartCount"] = json!(n);
    }
    status
}

async fn write(ctx: &Ctx, dv: &DynamicObject, status: Value) -> Result<()> {
    if dv.data.get("status") == Some(&status) {
        return Ok(());
    }
    let api = util::api(
        &ctx.client,
        &util::dv(),
        &dv.namespace().unwrap_or_default(),
    );
    patch_status(&api, dv, status).await?;
    Ok(())
}

/// `emitFailureConditionEvent`: a Warning with the importer's error.
async fn warn(ctx: &Ctx, dv: &DynamicObject, message: &str) {
    let event = serde_json::from_value::<Event>(json!({
        "metadata": {"generateName": format!("{}.", dv.name_any()), "namespace": dv.namespace()},
        "involvedObject": {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "name": dv.name_any(), "namespace": dv.namespace(), "uid": dv.uid()},
        "reason": "Error", "message": message, "type": "Warning",
        "source": {"component": "datavolume-import-controller"},
        "firstTimestamp": util::now(), "lastTimestamp": util::now(), "count": 1,
    }));
    let Ok(event) = event else { return };
    let events: Api<Event> =
        Api::namespaced(ctx.client.clone(), &dv.namespace().unwrap_or_default());
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::debug!("event: {e}");
    }
}

/// The PVC a DataVolume asks for (`spec.storage`, or the older `spec.pvc`).
fn claim_for(dv: &DynamicObject) -> Result<PersistentVolumeClaim> {
    let spec = dv
        .data
        .pointer("/spec/storage")
        .or_else(|| dv.data.pointer("/spec/pvc"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut claim = json!({
        "accessModes": spec.get("accessModes").cloned().unwrap_or_else(|| json!(["ReadWriteOnce"])),
        "resources": spec.get("resources").cloned().unwrap_or_else(|| json!({"requests": {"storage": "1Gi"}})),
    });
    for key in ["volumeMode", "storageClassName", "selector"] {
        if let Some(v) = spec.get(key) {
            claim[key] = v.clone();
        }
    }
    let source = dv
        .data
        .pointer("/spec/source")
        .and_then(Value::as_object)
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_else(|| "blank".into());
    let populator = annotation(dv, ANN_USE_POPULATOR) != Some("false");
    let mut annotations = json!({"cdi.kubevirt.io/storage.import.source": source,
        "cdi.kubevirt.io/storage.contentType": "kubevirt",
        ANN_USE_POPULATOR: populator.to_string()});
    if let Some(v) = annotation(dv, ANN_IMMEDIATE_BINDING) {
        annotations[ANN_IMMEDIATE_BINDING] = json!(v);
    }
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": dv.name_any(), "namespace": dv.namespace(),
            "labels": {"app": "containerized-data-importer", "app.kubernetes.io/component": "storage"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                "name": dv.name_any(), "uid": dv.uid(), "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": claim,
    });
    Ok(serde_json::from_value(pvc)?)
}
