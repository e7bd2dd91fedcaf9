//! The migration suite: nothing moves without a request; one
//! VirtualMachineInstanceMigration per request however often the plugin is called while
//! it runs; the target node through `addedNodeSelector`; status that follows the
//! migration's phases; a sane finalize.

use serde_json::{Value, json};

use super::Check;
use super::generate::upstream_for;
use super::harness::{
    self, CheckResult, Harness, NAME, NAMESPACE, Sim, applied, check, record_status, wukong,
};
use crate::api::WUKONG_LABEL;
use crate::plugin::types::MigrationStatus;
use crate::plugin::{Outcome, StepStatus};
use crate::runner::DEFAULT_UID;

const KUBEVIRT: &str = "kubevirt.io/v1";
const VMIM: &str = "VirtualMachineInstanceMigration";
const HOSTNAME: &str = "kubernetes.io/hostname";

fn manifest(migration: Option<Value>) -> Value {
    let mut spec = json!({"cpu": 2, "memory": "4Gi"});
    if let Some(migration) = migration {
        spec["migration"] = migration;
    }
    wukong(spec)
}

/// A running, live-migratable VM on node-0 and two Ready nodes.
fn cluster() -> Sim {
    let node = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {HOSTNAME: name}},
            "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    };
    Sim::new([
        // The Wukong's VM (the host made it) and its instance (KubeVirt's, controlled by it).
        json!({"apiVersion": KUBEVIRT, "kind": "VirtualMachine",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "vm-uid",
                "ownerReferences": [{"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
                    "name": NAME, "uid": DEFAULT_UID, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"runStrategy": "Always"}, "status": {"printableStatus": "Running", "ready": true}}),
        json!({"apiVersion": KUBEVIRT, "kind": "VirtualMachineInstance",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "vmi-uid", "labels": {WUKONG_LABEL: NAME},
                "ownerReferences": [{"apiVersion": KUBEVIRT, "kind": "VirtualMachine", "name": NAME,
                    "uid": "vm-uid", "controller": true, "blockOwnerDeletion": true}]},
            "status": {"phase": "Running", "nodeName": "node-0", "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "LiveMigratable", "status": "True"}]}}),
        node("node-0"),
        node("node-1"),
    ])
}

fn record(outcome: &Outcome) -> Result<Option<&MigrationStatus>, String> {
    match &outcome.status {
        StepStatus::Migration(record) => Ok(record.as_ref()),
        other => Err(format!(
            "reconcile reports {other:?}, not a migration status"
        )),
    }
}

fn migrations(outcome: &Outcome) -> Vec<&Value> {
    applied(outcome, VMIM).collect()
}

fn migration_names(outcome: &Outcome) -> Vec<String> {
    migrations(outcome)
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// One request followed to its end: each call's outcome applied and its status fed back,
/// the migration object's phase moved by "KubeVirt" in between.
struct Journey {
    /// (what KubeVirt reported before the call, the call's outcome)
    calls: Vec<(String, Outcome)>,
    /// The cluster after the journey.
    sim: Sim,
    /// The migration object's name.
    name: String,
    /// The state after the second call, for the failure path.
    midway: (Value, Sim),
}

fn journey(h: &Harness<'_>) -> Result<Journey, String> {
    let mut wukong = manifest(Some(json!({"targetNode": "node-1"})));
    let upstream = upstream_for(&wukong);
    let mut sim = cluster();
    let mut calls = Vec::new();
    let first = h.reconcile(&wukong, Some(&upstream), &sim)?;
    let name = match migration_names(&first).as_slice() {
        [one] => one.clone(),
        other => {
            return Err(format!(
                "a migration request to node-1 on a running, live-migratable VM creates {} VirtualMachineInstanceMigration(s) {other:?}, not one",
                other.len()
            ));
        }
    };
    let mut midway = None;
    let mut last = first;
    for (step, phase) in [
        ("the migration object just created", None),
        ("the migration Running", Some("Running")),
        ("the migration Succeeded", Some("Succeeded")),
        ("the migration Succeeded, recorded", None),
    ] {
        record_status(&mut wukong, &last.status);
        h.apply(&mut sim, &wukong, &last)?;
        if let Some(phase) = phase
            && let Some(object) = sim.find_mut(VMIM, &name)
        {
            object["metadata"]["uid"] = json!("migration-uid");
            object["status"] = json!({"phase": phase, "migrationState": {"sourceNode": "node-0", "targetNode": "node-1"}});
        }
        if midway.is_none() {
            midway = Some((wukong.clone(), sim.clone()));
        }
        last = h.reconcile(&wukong, Some(&upstream), &sim)?;
        calls.push((step.to_owned(), last.clone()));
    }
    Ok(Journey {
        calls,
        sim,
        name,
        midway: midway.unwrap_or_default(),
    })
}

pub fn run(h: &Harness<'_>) -> Vec<Check> {
    let journey = journey(h);
    vec![
        check("no migration without a request", no_request(h)),
        check(
            "one VirtualMachineInstanceMigration per request",
            one_per_request(&journey),
        ),
        check(
            "node selection when a target node is asked",
            node_selection(h),
        ),
        check(
            "status follows the migration's phases",
            status_follows(h, &journey),
        ),
        check("idempotent", idempotent(h, &journey)),
        check(
            "finalize deletes only what it created",
            finalize(h, &journey),
        ),
    ]
}

fn no_request(h: &Harness<'_>) -> CheckResult {
    let mut done = manifest(None);
    done["status"] = json!({"migrationStatus": {"phase": "Succeeded", "requestId": "migrate/node-1",
        "automatic": false, "migrationName": "vm1-old", "finishedAt": "2025-12-31T00:00:00Z"}});
    for (what, wukong) in [
        ("a Wukong that never asked", manifest(None)),
        ("a Wukong whose request is done and gone", done),
    ] {
        let outcome = h.reconcile(&wukong, Some(&upstream_for(&wukong)), &cluster())?;
        let names = migration_names(&outcome);
        if !names.is_empty() {
            return Err(format!("{what} gets migrations {names:?}"));
        }
    }
    Ok(())
}

fn one_per_request(journey: &Result<Journey, String>) -> CheckResult {
    let journey = journey.as_ref().map_err(Clone::clone)?;
    for (what, outcome) in &journey.calls {
        let others: Vec<String> = migration_names(outcome)
            .into_iter()
            .filter(|n| *n != journey.name)
            .collect();
        if !others.is_empty() {
            return Err(format!(
                "after {}, the same request creates another migration: {others:?}",
                what
            ));
        }
    }
    let vmi = migrations(
        &journey
            .calls
            .first()
            .map(|(_, o)| o.clone())
            .ok_or("no calls")?,
    )
    .first()
    .map(|m| m["spec"]["vmiName"].clone());
    if vmi.as_ref().is_some_and(|v| *v != NAME) {
        return Err(format!("the migration moves VMI {vmi:?}, not {NAME}"));
    }
    Ok(())
}

fn node_selection(h: &Harness<'_>) -> CheckResult {
    for (target, want) in [(Some("node-1"), Some("node-1")), (None, None)] {
        let request = target.map_or_else(|| json!({}), |t| json!({"targetNode": t}));
        let wukong = manifest(Some(request));
        let outcome = h.reconcile(&wukong, Some(&upstream_for(&wukong)), &cluster())?;
        let migration = migrations(&outcome)
            .first()
            .copied()
            .cloned()
            .ok_or_else(|| format!("a request to {target:?} creates no migration"))?;
        let selected = migration["spec"]["addedNodeSelector"][HOSTNAME].as_str();
        if selected != want {
            return Err(format!(
                "a request for node {target:?} gives addedNodeSelector {}",
                migration["spec"]["addedNodeSelector"]
            ));
        }
    }
    Ok(())
}

fn status_follows(h: &Harness<'_>, journey: &Result<Journey, String>) -> CheckResult {
    let journey = journey.as_ref().map_err(Clone::clone)?;
    let phase_after = |index: usize| {
        journey
            .calls
            .get(index)
            .map(|(what, o)| (what.clone(), record(o).map(|r| r.cloned())))
    };
    for (index, want) in [(1, "Running"), (2, "Succeeded"), (3, "Succeeded")] {
        let Some((what, record)) = phase_after(index) else {
            continue;
        };
        let record = record?;
        let got = record
            .as_ref()
            .map(|r| (r.phase.clone(), r.migration_name.clone()));
        if got != Some((want.to_owned(), Some(journey.name.clone()))) {
            return Err(format!(
                "with {what}, the status is {got:?}, not phase {want} of migration {}",
                journey.name
            ));
        }
    }
    let (wukong, mut sim) = journey.midway.clone();
    if let Some(object) = sim.find_mut(VMIM, &journey.name) {
        object["status"] = json!({"phase": "Failed", "migrationState": {"failed": true, "failureReason": "simulated"}});
    }
    let outcome = h.reconcile(&wukong, Some(&upstream_for(&wukong)), &sim)?;
    let got = record(&outcome)?.map(|r| r.phase.clone());
    if got.as_deref() != Some("Failed") {
        return Err(format!(
            "with the migration Failed, the status phase is {got:?}, not Failed"
        ));
    }
    Ok(())
}

fn idempotent(h: &Harness<'_>, journey: &Result<Journey, String>) -> CheckResult {
    let wukong = manifest(Some(json!({"targetNode": "node-1"})));
    harness::same_outcome(h, &wukong, Some(&upstream_for(&wukong)), &cluster())?;
    let journey = journey.as_ref().map_err(Clone::clone)?;
    let (wukong, sim) = &journey.midway;
    harness::same_outcome(h, wukong, Some(&upstream_for(wukong)), sim)
}

fn finalize(h: &Harness<'_>, journey: &Result<Journey, String>) -> CheckResult {
    let wukong = manifest(Some(json!({"targetNode": "node-1"})));
    let upstream = upstream_for(&wukong);
    let empty = cluster();
    let nothing = h.finalize(&wukong, Some(&upstream), &empty)?;
    harness::check_finalize(&nothing, &empty, &|_| false)
        .map_err(|e| format!("on a cluster holding nothing of the Wukong: {e}"))?;
    let journey = journey.as_ref().map_err(Clone::clone)?;
    let outcome = h.finalize(&wukong, Some(&upstream), &journey.sim)?;
    harness::check_finalize(&outcome, &journey.sim, &|_| false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::harness::tests::outcome;

    #[test]
    fn a_second_migration_object_for_the_same_request_fails() {
        let vmim = |name: &str| json!({"apiVersion": KUBEVIRT, "kind": VMIM, "metadata": {"name": name}, "spec": {"vmiName": NAME}});
        let journey = |second: &str| {
            Ok(Journey {
                calls: vec![
                    (
                        "first".into(),
                        outcome(vec![vmim("vm1-a")], vec![], StepStatus::Migration(None)),
                    ),
                    (
                        "the migration Running".into(),
                        outcome(vec![vmim(second)], vec![], StepStatus::Migration(None)),
                    ),
                ],
                sim: Sim::default(),
                name: "vm1-a".into(),
                midway: (Value::Null, Sim::default()),
            })
        };
        assert_eq!(one_per_request(&journey("vm1-a")), Ok(()));
        assert_eq!(
            one_per_request(&journey("vm1-b")),
            Err("after the migration Running, the same request creates another migration: [\"vm1-b\"]".into())
        );
    }
}
