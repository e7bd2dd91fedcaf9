//! virt-controller + virt-handler for VirtualMachineInstances: Pending → Scheduling →
//! Scheduled → Running on a node that fits, volumes bound first (WaitForFirstConsumer
//! claims get the scheduler's selected-node), graceful shutdown on deletion, and failure
//! when the node goes NotReady.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::storage::{SELECTED_NODE, claims};
use super::util::{
    self, annotation, conditions, patch_status, remove_condition, set_condition, set_finalizer,
    str_at,
};
use super::vmi_status::Readiness;
use super::vmi_volumes::{self, VolumesReady};
use super::{ANN_GUEST_EXIT, Ctx, scheduler, vmi_status};
use crate::error::{Error, Result};

/// The finalizer KubeVirt puts on VMIs.
pub const FINALIZER: &str = "foregroundDeleteVirtualMachine";

/// Subscribes to the informers at once (before they start), then runs.
pub(crate) fn run(ctx: Arc<Ctx>) -> BoxFuture<'static, ()> {
    let informers = &ctx.informers;
    let vmis = informers.vmis.store.clone();
    let controller =
        Controller::for_stream_with(informers.vmis.subscribe(), vmis.clone(), util::vmi())
            .trigger_backoff(util::TriggerBackoff::default())
            // A node change wakes the VMIs on it and those still waiting for a node.
            .watches_stream(informers.nodes.subscribe(), move |node: Node| {
                let name = node.name_any();
                vmis.state()
                    .into_iter()
                    .filter(|v| {
                        str_at(&v.data, "/status/nodeName") == Some(name.as_str())
                            || str_at(&v.data, "/status/phase") == Some("Scheduling")
                    })
                    .map(|v| ObjectRef::from_obj_with(v.as_ref(), util::vmi()))
                    .collect::<Vec<_>>()
            })
            // A claim's change wakes the VMIs that use it (upstream's PVC and DataVolume handlers,
            // through the informers' claim index); a DataVolume's claim has its name.
            .watches_stream(informers.pvcs.subscribe(), {
                let ctx = Arc::clone(&ctx);
                move |pvc: PersistentVolumeClaim| {
                    using_claim(&ctx, pvc.namespace(), &pvc.name_any())
                }
            })
            .watches_stream_with(
                informers.dvs.subscribe(),
                {
                    let ctx = Arc::clone(&ctx);
                    move |dv: DynamicObject| using_claim(&ctx, dv.namespace(), &dv.name_any())
                },
                util::dv(),
            );
    Box::pin(async move {
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    })
}

/// The VMIs of `ns` with a volume on `claim`.
fn using_claim(ctx: &Ctx, ns: Option<String>, claim: &str) -> Vec<ObjectRef<DynamicObject>> {
    let ns = ns.unwrap_or_default();
    ctx.informers
        .vmis
        .using_claim(&ns, claim)
        .into_iter()
        .map(|vmi| ObjectRef::new_with(&vmi, util::vmi()).within(&ns))
        .collect()
}

fn error_policy(_: Arc<DynamicObject>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("vmi: {e}");
    Action::requeue(std::time::Duration::from_millis(500))
}

async fn reconcile(vmi: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action> {
    let api = util::api(
        &ctx.client,
        &util::vmi(),
        &vmi.namespace().unwrap_or_default(),
    );
    let cfg = ctx.cfg();
    if vmi.metadata.deletion_timestamp.is_some() {
        return vmi_status::shutdown(&ctx, &api, &vmi).await;
    }
    let uid = vmi.uid().unwrap_or_default();
    let phase = str_at(&vmi.data, "/status/phase").unwrap_or("").to_owned();
    match phase.as_str() {
        "" => {
            if !vmi.finalizers().iter().any(|f| f == FINALIZER) {
                set_finalizer(&api, &vmi, FINALIZER, true).await?;
                return Ok(Action::await_change());
            }
            let mut conds = conditions(&vmi.data);
            vmi_status::set_ready(&mut conds, Readiness::PodNotExists);
            let status = json!({"phase": "Pending", "qosClass": "Burstable", "guestOSInfo": {},
                "conditions": conds,
                "phaseTransitionTimestamps": [{"phase": "Pending", "phaseTransitionTimestamp": util::now()}]});
            patch_status(&api, &vmi, status).await?;
        }
        "Pending" => {
            if let Some(rest) = ctx.wait(format!("vmi/{uid}/pending"), cfg.scheduling_delay) {
                return Ok(Action::requeue(rest));
            }
            // As upstream's lifecycle.go sync: no pod before the volumes are ready.
            let mut conds = conditions(&vmi.data);
            let volumes = vmi_volumes::volumes_ready(&ctx, &vmi, &mut conds).await?;
            if volumes == VolumesReady::Yes {
                vmi_status::set_ready(&mut conds, Readiness::GuestNotRunning);
                set_phase(&api, &vmi, "Scheduling", json!({"conditions": conds})).await?;
                return Ok(Action::await_change());
            }
            if vmi_status::changed(&vmi, &conds) {
                patch_status(&api, &vmi, json!({"conditions": conds})).await?;
            }
            if volumes == VolumesReady::WaitForFirstConsumer {
                // Upstream's temporary pod: the scheduler picks a node for the claims
                // (again later if none fits now).
                vmi_volumes::select_node_for_claims(&ctx, &vmi).await?;
                return Ok(Action::requeue(cfg.retry_interval));
            }
            // The claim and DataVolume watches bring the VMI back when they change.
            return Ok(Action::await_change());
        }
        "Scheduling" => {
            if let Some(rest) = ctx.wait(format!("vmi/{uid}/scheduling"), cfg.scheduling_delay) {
                return Ok(Action::requeue(rest));
            }
            return schedule(&ctx, &api, &vmi).await;
        }
        "Scheduled" => {
            if let Some(rest) = ctx.wait(format!("vmi/{uid}/boot"), cfg.boot_delay) {
                return Ok(Action::requeue(rest));
            }
            let extra = vmi_status::running(&ctx, &vmi).await?;
            set_phase(&api, &vmi, "Running", extra).await?;
        }
        "Running" => {
            if let Some(exit) = annotation(&vmi, ANN_GUEST_EXIT) {
                let phase = if exit == "failed" {
                    "Failed"
                } else {
                    "Succeeded"
                };
                let mut conds = conditions(&vmi.data);
                vmi_status::set_ready(&mut conds, Readiness::PodTerminating);
                set_phase(&api, &vmi, phase, json!({"conditions": conds})).await?;
                return Ok(Action::await_change());
            }
            // As upstream's syncPausedConditionToPod + syncReadyConditionFromPod: a paused
            // VMI turns its pod's readiness gate off, so the VMI is not Ready.
            let mut conds = conditions(&vmi.data);
            let readiness = vmi_status::running_readiness(&conds);
            vmi_status::set_ready(&mut conds, readiness);
            vmi_volumes::aggregate_data_volumes(&ctx, &vmi, &mut conds).await?;
            if vmi_status::changed(&vmi, &conds) {
                patch_status(&api, &vmi, json!({"conditions": conds})).await?;
                return Ok(Action::await_change());
            }
            let node = str_at(&vmi.data, "/status/nodeName").unwrap_or("");
            let ready = ctx.informers.nodes.get(None, node).is_some_and(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            if !ready {
                let key = format!("vmi/{uid}/node-failure/{node}");
                if let Some(rest) = ctx.wait(key, cfg.node_failure_delay) {
                    return Ok(Action::requeue(rest.min(cfg.retry_interval)));
                }
                // The launcher pod still looks alive to the API: the guest is not running.
                let mut conds = conditions(&vmi.data);
                vmi_status::set_ready(&mut conds, Readiness::GuestNotRunning);
                set_phase(
                    &api,
                    &vmi,
                    "Failed",
                    json!({"conditions": conds, "reason": "NodeUnresponsive"}),
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(Action::await_change())
}

/// Writes a new phase (and more status), appending to phaseTransitionTimestamps.
pub async fn set_phase(
    api: &Api<DynamicObject>,
    vmi: &DynamicObject,
    phase: &str,
    mut extra: Value,
) -> Result<bool> {
    let mut stamps = vmi
        .data
        .pointer("/status/phaseTransitionTimestamps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    stamps.push(json!({"phase": phase, "phaseTransitionTimestamp": util::now()}));
    extra["phase"] = json!(phase);
    extra["phaseTransitionTimestamps"] = json!(stamps);
    patch_status(api, vmi, extra).await
}

/// The Scheduling phase: a node for the launcher pod (the claims' selected node if one
/// was chosen), then, as kube-scheduler's volume binding does, unbound claims are given
/// that node and the pod waits until they are Bound.
async fn schedule(ctx: &Ctx, api: &Api<DynamicObject>, vmi: &DynamicObject) -> Result<Action> {
    let ns = vmi.namespace().unwrap_or_default();
    let again = Action::requeue(ctx.cfg().retry_interval);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut claims_now = Vec::new();
    for claim in claims(&vmi.data) {
        let pvc = ctx.informers.pvcs.get(Some(&ns), &claim);
        claims_now.push((claim.clone(), pvc));
    }
    let preselected = claims_now
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .find_map(|p| p.annotations().get(SELECTED_NODE).cloned());
    let node = match preselected {
        Some(n) => n,
        None => match scheduler::pick(ctx, vmi, None, &BTreeMap::new()).await? {
            Ok(n) => n,
            Err(reason) => {
                let mut conds = conditions(&vmi.data);
                set_condition(&mut conds, "PodScheduled", false, "Unschedulable", &reason);
                if vmi_status::changed(vmi, &conds) {
                    patch_status(api, vmi, json!({"conditions": conds})).await?;
                }
                return Ok(again);
            }
        },
    };
    let mut unbound = false;
    for (claim, pvc) in &claims_now {
        let Some(pvc) = pvc else {
            unbound = true;
            continue;
        };
        if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            if !pvc.annotations().contains_key(SELECTED_NODE) {
                let body = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
                pvcs.patch(claim, &PatchParams::default(), &Patch::Merge(&body))
                    .await?;
            }
            unbound = true;
        }
    }
    if unbound {
        return Ok(again);
    }
    let mut conds = conditions(&vmi.data);
    remove_condition(&mut conds, "PodScheduled");
    vmi_volumes::aggregate_data_volumes(ctx, vmi, &mut conds).await?;
    if set_phase(
        api,
        vmi,
        "Scheduled",
        json!({"nodeName": node, "conditions": conds}),
    )
    .await?
    {
        let body = json!({"metadata": {"labels": {"kubevirt.io/nodeName": node}}});
        api.patch(
            &vmi.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await?;
        tracing::info!(vmi = %format!("{ns}/{}", vmi.name_any()), node, "scheduled");
    }
    Ok(Action::await_change())
}
