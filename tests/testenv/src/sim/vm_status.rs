//! A VirtualMachine's status as upstream's `vm.go` `updateStatus` writes it: `created`,
//! `ready`, `runStrategy`, the state-change requests done trimmed, the conditions mirrored
//! from the VMI and `printableStatus`.

use std::collections::HashMap;

use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};

use super::Ctx;
use super::util::{condition_status, conditions, patch_status, set_condition, str_at};
use super::vm::{has_start_request, has_stop_request_for, is_final, run_strategy};
use super::vmi_status::without_nulls;
use crate::error::Result;

/// What one pass of the VM controller did and saw.
#[derive(Default)]
pub struct Pass {
    /// The VM's state-change requests, as this pass leaves them.
    pub requests: Vec<Value>,
    /// This pass deleted the VMI (upstream's stop expectation).
    pub stopping: bool,
    /// This pass created the VMI (upstream's start expectation).
    pub start_expected: bool,
    /// This pass wrote the VM's spec: the status waits for the next pass.
    pub spec_written: bool,
    /// DataVolumes read so far, by name (`None`: it does not exist).
    pub dvs: HashMap<String, Option<DynamicObject>>,
}

/// Writes the status this pass leaves, when it differs from the VM's.
pub async fn write(
    ctx: &Ctx,
    vms: &Api<DynamicObject>,
    vm: &DynamicObject,
    vmi: Option<&DynamicObject>,
    pass: &mut Pass,
) -> Result<()> {
    let strategy = run_strategy(vm);
    let created = vmi.is_some();
    let vmi_conds = vmi.map(|v| conditions(&v.data)).unwrap_or_default();
    let ready = condition_status(&vmi_conds, "Ready") == Some("True");
    // As upstream: status.runStrategy is first written when the VMI gets created, so a
    // RerunOnFailure VM can tell whether it ever started.
    let recorded = str_at(&vm.data, "/status/runStrategy").is_some_and(|s| !s.is_empty());
    let status_strategy = (recorded || created).then(|| strategy.clone());
    trim_first_request(&mut pass.requests, vmi);
    let printable = printable_status(ctx, vm, vmi, pass).await?;
    let generation = vm.metadata.generation;
    let wanted = json!({
        "printableStatus": printable,
        "ready": if ready { json!(true) } else { Value::Null },
        "created": if created { json!(true) } else { Value::Null },
        "runStrategy": status_strategy,
        "conditions": sync_conditions(vm, vmi),
        "observedGeneration": generation,
        "desiredGeneration": generation,
        "stateChangeRequests": if pass.requests.is_empty() { Value::Null } else { json!(pass.requests) },
    });
    let current = without_nulls(vm.data.get("status").cloned().unwrap_or_else(|| json!({})));
    let mine = without_nulls(wanted.clone());
    let same = wanted.as_object().is_some_and(|w| {
        w.keys().all(|k| {
            current.get(k) == mine.get(k)
                || (mine.get(k).is_none() && current.get(k) == Some(&json!([])))
        })
    });
    if !same {
        patch_status(vms, vm, wanted).await?;
    }
    Ok(())
}

/// As upstream's `isTrimFirstChangeRequestNeeded`: a Stop is done once its VMI is gone (or
/// another took its place), a Start once a live VMI exists.
fn trim_first_request(requests: &mut Vec<Value>, vmi: Option<&DynamicObject>) {
    let Some(first) = requests.first() else {
        return;
    };
    let done = match str_at(first, "/action") {
        Some("Stop") => match (vmi, str_at(first, "/uid")) {
            (Some(v), Some(uid)) => v.metadata.uid.as_deref() != Some(uid),
            _ => true,
        },
        Some("Start") => {
            vmi.is_some_and(|v| v.metadata.deletion_timestamp.is_none() && !is_final(v))
        }
        _ => false,
    };
    if done {
        requests.remove(0);
    }
}

/// As upstream's `syncConditions`: `Ready` copied from the VMI (`VMINotExists`,
/// `VMIConditionMissing` otherwise), every other VMI condition mirrored, VM conditions the
/// VMI no longer has dropped. With no VMI the other conditions are left as they were.
fn sync_conditions(vm: &DynamicObject, vmi: Option<&DynamicObject>) -> Vec<Value> {
    const NOT_MIRRORED: [&str; 3] = ["Ready", "Failure", "RestartRequired"];
    let mut conds = conditions(&vm.data);
    let kind = |c: &Value| str_at(c, "/type").unwrap_or("").to_owned();
    // No sync errors are simulated, so no Failure condition either.
    conds.retain(|c| kind(c) != "Failure");
    let Some(vmi) = vmi else {
        set_condition(
            &mut conds,
            "Ready",
            false,
            "VMINotExists",
            "VMI does not exist",
        );
        return conds;
    };
    let vmi_conds = conditions(&vmi.data);
    match vmi_conds.iter().find(|c| kind(c) == "Ready") {
        Some(c) => upsert(&mut conds, c.clone()),
        None => set_condition(
            &mut conds,
            "Ready",
            false,
            "VMIConditionMissing",
            "VMI is missing the Ready condition",
        ),
    }
    for c in vmi_conds
        .iter()
        .filter(|c| !NOT_MIRRORED.contains(&kind(c).as_str()))
    {
        upsert(&mut conds, c.clone());
    }
    conds.retain(|c| {
        let k = kind(c);
        NOT_MIRRORED.contains(&k.as_str()) || vmi_conds.iter().any(|v| kind(v) == k)
    });
    conds
}

fn upsert(conds: &mut Vec<Value>, cond: Value) {
    let kind = cond.get("type").cloned();
    match conds.iter_mut().find(|c| c.get("type") == kind.as_ref()) {
        Some(slot) => *slot = cond,
        None => conds.push(cond),
    }
}

/// As upstream's `setPrintableStatus`: the first that holds, in upstream's order
/// (Migrating before Paused). ErrImagePull, ImagePullBackOff and CrashLoopBackOff never
/// hold here: the simulator pulls no images and has no start-failure backoff.
async fn printable_status(
    ctx: &Ctx,
    vm: &DynamicObject,
    vmi: Option<&DynamicObject>,
    pass: &mut Pass,
) -> Result<&'static str> {
    let conds = vmi.map(|v| conditions(&v.data)).unwrap_or_default();
    let has = |t: &str, s: &str, r: &str| {
        conds.iter().any(|c| {
            str_at(c, "/type") == Some(t)
                && str_at(c, "/status") == Some(s)
                && str_at(c, "/reason") == Some(r)
        })
    };
    let phase = vmi
        .and_then(|v| str_at(&v.data, "/status/phase"))
        .unwrap_or("");
    let paused = condition_status(&conds, "Paused") == Some("True");
    if vm.metadata.deletion_timestamp.is_some() {
        return Ok("Terminating");
    }
    if let Some(v) = vmi {
        if !is_final(v) && (v.metadata.deletion_timestamp.is_some() || pass.stopping) {
            return Ok("Stopping");
        }
        // As upstream's migrations.IsMigrating: started and not ended.
        if v.data
            .pointer("/status/migrationState/startTimestamp")
            .is_some()
            && v.data
                .pointer("/status/migrationState/endTimestamp")
                .is_none_or(Value::is_null)
        {
            return Ok("Migrating");
        }
        if phase == "Running" {
            return Ok(if paused { "Paused" } else { "Running" });
        }
    }
    if has("Synchronized", "False", "FailedPvcNotFound") {
        return Ok("ErrorPvcNotFound");
    }
    let volumes = VolumeFacts::read(ctx, vm, &mut pass.dvs).await?;
    if volumes.dv_error {
        return Ok("DataVolumeError");
    }
    if has("PodScheduled", "False", "Unschedulable") {
        return Ok("ErrorUnschedulable");
    }
    if volumes.provisioning {
        return Ok("Provisioning");
    }
    if volumes.unbound_claim && is_set_to_start(vm, vmi, &pass.requests) {
        return Ok("WaitingForVolumeBinding");
    }
    let starting = match vmi {
        None => pass.start_expected,
        Some(_) => matches!(phase, "" | "Pending" | "Scheduling" | "Scheduled"),
    };
    if starting {
        return Ok("Starting");
    }
    let stopped = match vmi {
        Some(v) => is_final(v),
        None => !pass.start_expected,
    };
    if stopped {
        return Ok("Stopped");
    }
    if vmi.is_none() && run_strategy(vm) == "WaitAsReceiver" {
        return Ok("WaitingForReceiver");
    }
    Ok("Unknown")
}

/// As upstream's `isSetToStart`.
fn is_set_to_start(vm: &DynamicObject, vmi: Option<&DynamicObject>, requests: &[Value]) -> bool {
    let strategy = run_strategy(vm);
    match (strategy.as_str(), vmi) {
        ("Always", _) => true,
        ("Manual", Some(v)) => !has_stop_request_for(requests, v),
        ("Manual", None) => has_start_request(requests),
        ("RerunOnFailure", Some(v)) => str_at(&v.data, "/status/phase") != Some("Succeeded"),
        ("RerunOnFailure", None) => {
            has_start_request(requests)
                || str_at(&vm.data, "/status/runStrategy") != Some(strategy.as_str())
        }
        ("Once", v) => v.is_none(),
        _ => false,
    }
}

/// What the VM's template volumes say (upstream's `storagetypes` helpers).
#[derive(Default)]
struct VolumeFacts {
    /// `HasDataVolumeErrors`: a DataVolume Failed, or its importer stopped on an error.
    dv_error: bool,
    /// `HasDataVolumeProvisioning`: a DataVolume not yet populated (WaitForFirstConsumer
    /// and unbound excepted).
    provisioning: bool,
    /// `HasUnboundPVC`: a claim that exists and is not Bound.
    unbound_claim: bool,
}

impl VolumeFacts {
    async fn read(
        ctx: &Ctx,
        vm: &DynamicObject,
        dvs_seen: &mut HashMap<String, Option<DynamicObject>>,
    ) -> Result<Self> {
        let ns = vm.namespace().unwrap_or_default();
        let mut facts = Self::default();
        let volumes = vm
            .data
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for v in &volumes {
            let dv_name = str_at(v, "/dataVolume/name");
            if let Some(name) = dv_name {
                let dv = match dvs_seen.get(name) {
                    Some(dv) => dv.clone(),
                    None => {
                        let dv = ctx
                            .informers
                            .dvs
                            .get(Some(&ns), name)
                            .map(|dv| (*dv).clone());
                        dvs_seen.insert(name.to_owned(), dv.clone());
                        dv
                    }
                };
                if let Some(dv) = dv {
                    facts.judge_data_volume(&dv);
                }
            }
            let Some(claim) = dv_name.or_else(|| str_at(v, "/persistentVolumeClaim/claimName"))
            else {
                continue;
            };
            if let Some(pvc) = ctx.informers.pvcs.get(Some(&ns), claim) {
                let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
                facts.unbound_claim |= phase != Some("Bound");
            }
        }
        Ok(facts)
    }

    fn judge_data_volume(&mut self, dv: &DynamicObject) {
        let phase = str_at(&dv.data, "/status/phase").unwrap_or("");
        let conds = conditions(&dv.data);
        let running = conds.iter().find(|c| str_at(c, "/type") == Some("Running"));
        let importer_error = running.is_some_and(|c| {
            str_at(c, "/status") == Some("False")
                && matches!(str_at(c, "/reason"), Some("Error" | "ImagePullFailed"))
        });
        self.dv_error |= phase == "Failed" || importer_error;
        let bound = condition_status(&conds, "Bound") == Some("True");
        if !matches!(phase, "Succeeded" | "PendingPopulation")
            && (bound || phase != "WaitForFirstConsumer")
        {
            self.provisioning = true;
        }
    }
}
