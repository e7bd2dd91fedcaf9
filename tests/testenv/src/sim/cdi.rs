//! CDI's DataVolume controller: a PVC of the same name owned by the DataVolume, then the
//! import phases (Pending, ImportScheduled, ImportInProgress with progress, Succeeded or
//! Failed) and the Bound / Running / Ready conditions.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::util::{self, conditions, flag, patch_status, set_condition, str_at};
use super::{ANN_FAIL_IMPORT, Ctx, storage};
use crate::error::{Error, Result};

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let ar = util::dv();
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &ar);
    Controller::new_with(api, watcher::Config::default(), ar)
        .owns(
            Api::<PersistentVolumeClaim>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<DynamicObject>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("cdi: {e}");
    Action::requeue(std::time::Duration::from_millis(500))
}

async fn reconcile(dv: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = dv.namespace().unwrap_or_default();
    let name = dv.name_any();
    let cfg = ctx.cfg();
    let phase = str_at(&dv.data, "/status/phase").unwrap_or("").to_owned();
    if dv.metadata.deletion_timestamp.is_some() || matches!(phase.as_str(), "Succeeded" | "Failed")
    {
        return Ok(Action::await_change());
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pvc) = pvcs.get_opt(&name).await? else {
        pvcs.create(&PostParams::default(), &claim_for(&dv)?)
            .await?;
        let status = next_status(&dv, "Pending", "N/A", false);
        write(&ctx, &dv, status).await?;
        return Ok(Action::await_change());
    };
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !bound {
        let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
        let wffc = storage::storage_class(&ctx, class.as_deref())
            .await?
            .and_then(|c| c.volume_binding_mode)
            .as_deref()
            == Some("WaitForFirstConsumer");
        let phase = if wffc {
            "WaitForFirstConsumer"
        } else {
            "Pending"
        };
        write(&ctx, &dv, next_status(&dv, phase, "N/A", false)).await?;
        return Ok(Action::await_change());
    }
    let progress = str_at(&dv.data, "/status/progress")
        .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
        .unwrap_or(0.0);
    let key = format!("dv/{}/{phase}/{progress}", dv.uid().unwrap_or_default());
    if let Some(rest) = ctx.wait(key, cfg.import_step_delay) {
        return Ok(Action::requeue(rest));
    }
    let fail = cfg.import_fail || flag(&dv, ANN_FAIL_IMPORT);
    let status = match phase.as_str() {
        "" | "Pending" | "WaitForFirstConsumer" => next_status(&dv, "ImportScheduled", "N/A", true),
        "ImportScheduled" => next_status(&dv, "ImportInProgress", "0.0%", true),
        _ if fail && progress >= 50.0 / f64::from(cfg.import_steps.max(1)) => {
            next_status(&dv, "Failed", &format!("{progress:.1}%"), true)
        }
        _ => {
            let step = 100.0 / f64::from(cfg.import_steps.max(1));
            let next = if fail {
                step / 2.0
            } else {
                (progress + step).min(100.0)
            };
            if next >= 100.0 {
                next_status(&dv, "Succeeded", "100.0%", true)
            } else {
                next_status(&dv, "ImportInProgress", &format!("{next:.1}%"), true)
            }
        }
    };
    write(&ctx, &dv, status).await?;
    Ok(Action::await_change())
}

fn next_status(dv: &DynamicObject, phase: &str, progress: &str, bound: bool) -> Value {
    let name = dv.name_any();
    let mut conds = conditions(&dv.data);
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
    let (running, running_reason) = match phase {
        "ImportInProgress" => (true, "Pod is running"),
        "Succeeded" => (false, "Completed"),
        "Failed" => (false, "Error"),
        _ => (false, "Pending"),
    };
    set_condition(&mut conds, "Running", running, running_reason, "");
    let ready = phase == "Succeeded";
    set_condition(
        &mut conds,
        "Ready",
        ready,
        if ready { "" } else { phase },
        "",
    );
    let mut status =
        json!({"phase": phase, "progress": progress, "conditions": conds, "claimName": name});
    if phase == "Failed" {
        status["restartCount"] = json!(1);
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
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": dv.name_any(), "namespace": dv.namespace(),
            "labels": {"app": "containerized-data-importer", "app.kubernetes.io/component": "storage"},
            "annotations": {"cdi.kubevirt.io/storage.import.source": source,
                            "cdi.kubevirt.io/storage.contentType": "kubevirt"},
            "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                "name": dv.name_any(), "uid": dv.uid(), "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": claim,
    });
    Ok(serde_json::from_value(pvc)?)
}
