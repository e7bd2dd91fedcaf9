//! A VMI's volumes as virt-controller judges them before it creates the launcher pod
//! (upstream `pkg/virt-controller/watch/vmi/datavolumes.go` and `lifecycle.go`): missing
//! claims, DataVolumes still populating, WaitForFirstConsumer, `DataVolumesReady`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::storage::{SELECTED_NODE, claims};
use super::util::{self, condition_status, conditions, remove_condition, set_condition, str_at};
use super::{Ctx, scheduler};
use crate::error::Result;

/// Whether a VMI's volumes let its pod be created (upstream `areDataVolumesReady`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumesReady {
    /// Every claim exists and is populated.
    Yes,
    /// A claim is missing or still being populated.
    No,
    /// Populated but for WaitForFirstConsumer DataVolumes: a node must be chosen first.
    WaitForFirstConsumer,
}

/// Judges the VMI's (not hot-plugged) claims and sets the conditions upstream's
/// `lifecycle.go` sets in Pending: a missing PVC is `Synchronized=False` reason
/// `FailedPvcNotFound` (and `PodScheduled=False` Unschedulable); WaitForFirstConsumer is
/// `Provisioning=True`; `DataVolumesReady` aggregated.
pub async fn volumes_ready(
    ctx: &Ctx,
    vmi: &DynamicObject,
    conds: &mut Vec<Value>,
) -> Result<VolumesReady> {
    let ns = vmi.namespace().unwrap_or_default();
    let mut ready = true;
    let mut wffc = false;
    let mut found = Vec::new();
    for claim in cold_claims(vmi) {
        if ctx.informers.pvcs.get(Some(&ns), &claim).is_none() {
            let message = format!("PVC {ns}/{claim} does not exist, waiting for it to appear");
            set_condition(conds, "Synchronized", false, "FailedPvcNotFound", &message);
            set_condition(conds, "PodScheduled", false, "Unschedulable", &message);
            return Ok(VolumesReady::No);
        }
        // A claim that is no DataVolume's is ready as it is.
        let Some(dv) = ctx.informers.dvs.get(Some(&ns), &claim) else {
            continue;
        };
        let dv = (*dv).clone();
        let phase = str_at(&dv.data, "/status/phase").unwrap_or("");
        let populated = matches!(phase, "Succeeded" | "PendingPopulation");
        let waits = !populated && phase == "WaitForFirstConsumer";
        wffc |= waits;
        ready &= populated || waits;
        found.push(dv);
    }
    remove_condition(conds, "Synchronized");
    aggregate(conds, &found);
    if !ready {
        return Ok(VolumesReady::No);
    }
    if wffc {
        if condition_status(conds, "Provisioning").is_none() {
            conds.push(json!({"type": "Provisioning", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": null}));
        }
        return Ok(VolumesReady::WaitForFirstConsumer);
    }
    remove_condition(conds, "Provisioning");
    remove_condition(conds, "PodScheduled");
    Ok(VolumesReady::Yes)
}

/// The claims of the VMI's volumes that are not hot-plugged.
fn cold_claims(vmi: &DynamicObject) -> Vec<String> {
    vmi.data
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let (claim, hot) = match (v.get("persistentVolumeClaim"), v.get("dataVolume")) {
                (Some(p), _) => (str_at(p, "/claimName"), p.get("hotpluggable")),
                (None, Some(d)) => (str_at(d, "/name"), d.get("hotpluggable")),
                _ => (None, None),
            };
            claim
                .filter(|_| hot != Some(&json!(true)))
                .map(str::to_owned)
        })
        .collect()
}

/// As upstream's `aggregateDataVolumesConditions`: `DataVolumesReady` from the
/// DataVolumes' own `Ready` conditions (none: no condition).
fn aggregate(conds: &mut Vec<Value>, dvs: &[DynamicObject]) {
    if dvs.is_empty() {
        return;
    }
    let mut status = "True";
    for dv in dvs {
        match condition_status(&conditions(&dv.data), "Ready") {
            Some("True") => {}
            Some("False") => status = "False",
            _ if status == "True" => status = "Unknown",
            _ => {}
        }
    }
    let (reason, message) = if status == "True" {
        ("AllDVsReady", "All of the VMI's DVs are bound and ready")
    } else {
        ("NotAllDVsReady", "Not all of the VMI's DVs are ready")
    };
    let since = conds
        .iter()
        .find(|c| {
            str_at(c, "/type") == Some("DataVolumesReady") && str_at(c, "/status") == Some(status)
        })
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(util::now()));
    remove_condition(conds, "DataVolumesReady");
    conds.push(
        json!({"type": "DataVolumesReady", "status": status, "reason": reason,
        "message": message, "lastProbeTime": null, "lastTransitionTime": since}),
    );
}

/// [`aggregate`] over the DataVolumes of the VMI's claims.
pub async fn aggregate_data_volumes(
    ctx: &Ctx,
    vmi: &DynamicObject,
    conds: &mut Vec<Value>,
) -> Result<()> {
    let ns = vmi.namespace().unwrap_or_default();
    let mut found = Vec::new();
    for claim in cold_claims(vmi) {
        if let Some(dv) = ctx.informers.dvs.get(Some(&ns), &claim) {
            found.push((*dv).clone());
        }
    }
    aggregate(conds, &found);
    Ok(())
}

/// Upstream's temporary pod for WaitForFirstConsumer DataVolumes: the scheduler picks a
/// node and the claims are given it, so they bind and CDI can populate them.
pub async fn select_node_for_claims(ctx: &Ctx, vmi: &DynamicObject) -> Result<()> {
    let ns = vmi.namespace().unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut unselected = Vec::new();
    for claim in claims(&vmi.data) {
        if let Some(pvc) = ctx.informers.pvcs.get(Some(&ns), &claim) {
            let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            if !bound && !pvc.annotations().contains_key(SELECTED_NODE) {
                unselected.push(claim);
            }
        }
    }
    if unselected.is_empty() {
        return Ok(());
    }
    let Ok(node) = scheduler::pick(ctx, vmi, None, &BTreeMap::new()).await? else {
        return Ok(());
    };
    for claim in unselected {
        let body = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        pvcs.patch(&claim, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    Ok(())
}
