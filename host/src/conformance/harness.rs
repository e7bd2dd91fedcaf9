//! What every suite stands on: calling the plugin on a Wukong, with its reads answered by
//! the simulated cluster ([`Sim`]) that outcomes are applied to, and the step's status
//! written back into the Wukong between calls; helpers the checks share.

use std::cell::RefCell;

use serde_json::{Value, json};

pub use super::sim::{Created, Sim, deletes};
use crate::api::{MigrationStatus as MigrationStatusView, NetworkStatus, VolumeStatus};
use crate::plugin::{CallFailure, Outcome, Phase, Plugin, StepStatus};
use crate::runner::{DEFAULT_NOW, Input, RunnerError, outcome_to_value, subset_diff};

/// The Wukong every suite reconciles.
pub const NAME: &str = "vm1";
pub const NAMESPACE: &str = "tenant-a";
/// A second time of call: what a plugin names must not depend on when it is called.
pub const LATER: &str = "2026-06-01T12:00:00Z";
/// Calls, each applied to the cluster, after which a plugin must stop writing.
const ROUNDS: usize = 5;

/// A check passes with `Ok`, or fails saying why.
pub type CheckResult = Result<(), String>;

/// The plugin under test with the config it is tested with.
pub struct Harness<'p> {
    pub plugin: &'p Plugin,
    pub config: Value,
    /// Every capability violation the guard reported, for the `only declared kinds` check.
    violations: RefCell<Vec<String>>,
}

impl<'p> Harness<'p> {
    pub fn new(plugin: &'p Plugin, config: Value) -> Self {
        Self {
            plugin,
            config,
            violations: RefCell::default(),
        }
    }

    /// One call; a capability violation is also remembered for the guard check.
    pub fn call_raw(
        &self,
        phase: Phase,
        now: &str,
        wukong: &Value,
        upstream: Option<&Value>,
        sim: &Sim,
    ) -> Result<Outcome, RunnerError> {
        let input = Input {
            phase,
            backend: "default".into(),
            now: now.into(),
            config: self.config.clone(),
            wukong: wukong.clone(),
            upstream: upstream.cloned(),
        };
        let result = crate::runner::run(self.plugin, &input, sim.reader());
        if let Err(RunnerError::Call(error)) = &result
            && let CallFailure::Capability(what) = &error.failure
        {
            self.violations.borrow_mut().push(what.clone());
        }
        result
    }

    fn call(
        &self,
        phase: Phase,
        now: &str,
        wukong: &Value,
        upstream: Option<&Value>,
        sim: &Sim,
    ) -> Result<Outcome, String> {
        self.call_raw(phase, now, wukong, upstream, sim)
            .map_err(|e| format!("{} call failed: {e}", phase.name()))
    }

    pub fn reconcile(
        &self,
        wukong: &Value,
        upstream: Option<&Value>,
        sim: &Sim,
    ) -> Result<Outcome, String> {
        self.call(Phase::Reconcile, DEFAULT_NOW, wukong, upstream, sim)
    }

    pub fn reconcile_at(
        &self,
        now: &str,
        wukong: &Value,
        upstream: Option<&Value>,
        sim: &Sim,
    ) -> Result<Outcome, String> {
        self.call(Phase::Reconcile, now, wukong, upstream, sim)
    }

    pub fn finalize(
        &self,
        wukong: &Value,
        upstream: Option<&Value>,
        sim: &Sim,
    ) -> Result<Outcome, String> {
        self.call(Phase::Finalize, DEFAULT_NOW, wukong, upstream, sim)
    }

    /// Reconciles, applying each outcome to `sim` and writing the status back into
    /// `wukong`, until a call asks for no write; the last outcome.
    pub fn converge(
        &self,
        wukong: &mut Value,
        upstream: Option<&Value>,
        sim: &mut Sim,
    ) -> Result<Outcome, String> {
        let mut pending = Vec::new();
        for _ in 0..ROUNDS {
            let outcome = self.reconcile(wukong, upstream, sim)?;
            record_status(wukong, &outcome.status);
            pending = sim.writes_needed(&outcome);
            if pending.is_empty() {
                return Ok(outcome);
            }
            sim.apply(&outcome);
        }
        Err(format!(
            "does not converge: after {ROUNDS} calls, each applied to the cluster, it still asks to {}",
            pending.join(", ")
        ))
    }

    /// The capability violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.borrow().clone()
    }
}

/// A Wukong manifest named [`NAME`] in [`NAMESPACE`] with this spec.
pub fn wukong(spec: Value) -> Value {
    json!({"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
           "metadata": {"name": NAME, "namespace": NAMESPACE}, "spec": spec})
}

/// Writes the step's status part into the Wukong as the operator does, so the next call
/// sees what the previous one reported.
pub fn record_status(wukong: &mut Value, status: &StepStatus) {
    let (key, value) = match status {
        StepStatus::Volumes(volumes) => (
            "volumes",
            json!(volumes.iter().map(VolumeStatus::from).collect::<Vec<_>>()),
        ),
        StepStatus::Networks(networks) => (
            "networks",
            json!(networks.iter().map(NetworkStatus::from).collect::<Vec<_>>()),
        ),
        StepStatus::Lifecycle(lifecycle) => (
            "lifecycleState",
            json!(crate::api::LifecycleState::from(lifecycle)),
        ),
        StepStatus::Migration(migration) => (
            "migrationStatus",
            migration
                .as_ref()
                .map_or(Value::Null, |m| json!(MigrationStatusView::from(m))),
        ),
        StepStatus::Finalized => return,
    };
    if !wukong["status"].is_object() {
        wukong["status"] = json!({});
    }
    if let Some(status) = wukong["status"].as_object_mut() {
        if value.is_null() {
            status.remove(key);
        } else {
            status.insert(key.into(), value);
        }
    }
}

/// Applied objects of a kind.
pub fn applied<'o>(outcome: &'o Outcome, kind: &'o str) -> impl Iterator<Item = &'o Value> + 'o {
    outcome.apply.iter().filter(move |o| o["kind"] == kind)
}

/// The names of applied objects, sorted, as `Kind name`.
/// Fails when two outcomes apply different objects (by kind and name).
pub fn same_applied_names(fresh: &Outcome, at_later: &Outcome) -> CheckResult {
    let (before, after) = (applied_names(fresh), applied_names(at_later));
    if before != after {
        return Err(format!(
            "the objects applied change with the time and generation: {before:?}, then {after:?}"
        ));
    }
    Ok(())
}

pub fn applied_names(outcome: &Outcome) -> Vec<String> {
    let mut names: Vec<String> = outcome
        .apply
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    names.sort();
    names
}

/// Finalize applies nothing, deletes only what the plugin created (and what it created
/// is its own), and deletes every cluster-scoped object it owns (the garbage collector
/// will not). `must_delete` says which other created objects it must delete.
pub fn check_finalize(
    outcome: &Outcome,
    sim: &Sim,
    must_delete: &dyn Fn(&Created) -> bool,
) -> CheckResult {
    if !outcome.apply.is_empty() {
        return Err(format!(
            "finalize applies objects: {}",
            applied_names(outcome).join(", ")
        ));
    }
    let mut problems = Vec::new();
    for target in deletes(outcome) {
        let created = sim.created().iter().find(|c| c.key.is(target));
        match created {
            None => problems.push(format!(
                "deletes {} {}, which it did not create",
                target.kind, target.name
            )),
            Some(c) if !c.owned => problems.push(format!(
                "deletes {}, which it created but shares (no owner)",
                c.key
            )),
            Some(_) => {}
        }
    }
    // What an earlier call already deleted is not left behind.
    for created in sim.created().iter().filter(|c| sim.holds(&c.key)) {
        let deleted = deletes(outcome).any(|t| created.key.is(t));
        let required = (created.cluster_scoped && created.owned) || must_delete(created);
        if required && !deleted {
            problems.push(format!("leaves {} behind", created.key));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("; ")),
    }
}

/// Same input, same outcome.
pub fn same_outcome(
    h: &Harness<'_>,
    wukong: &Value,
    upstream: Option<&Value>,
    sim: &Sim,
) -> CheckResult {
    let first = h.reconcile(wukong, upstream, sim)?;
    let second = h.reconcile(wukong, upstream, sim)?;
    if first == second {
        return Ok(());
    }
    Err(format!(
        "two calls with the same input give different outcomes:\n{}",
        subset_diff(&outcome_to_value(&first), &outcome_to_value(&second))
    ))
}

/// Runs one check, catching nothing: a check is a plain function of the harness.
pub fn check(name: &str, result: CheckResult) -> super::Check {
    super::Check {
        name: name.to_owned(),
        failure: result.err(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plugin::types::ObjectRef;

    pub fn outcome(apply: Vec<Value>, delete: Vec<ObjectRef>, status: StepStatus) -> Outcome {
        Outcome {
            apply,
            delete,
            actions: Vec::new(),
            conditions: Vec::new(),
            events: Vec::new(),
            requeue_after_ms: None,
            status,
        }
    }

    pub fn target(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some(NAMESPACE.into()),
            name: name.into(),
        }
    }

    #[test]
    fn a_migration_record_is_written_back_and_cleared() {
        let mut w = wukong(json!({"cpu": 1, "memory": "1Gi"}));
        let record = crate::plugin::types::MigrationStatus {
            phase: "Running".into(),
            request_id: "r".into(),
            automatic: false,
            trigger: None,
            migration_name: Some("m".into()),
            source_node: None,
            target_node: None,
            mode: None,
            started_at: None,
            finished_at: None,
            failure_reason: None,
            message: String::new(),
        };
        record_status(&mut w, &StepStatus::Migration(Some(record)));
        assert_eq!(w["status"]["migrationStatus"]["migrationName"], "m");
        record_status(&mut w, &StepStatus::Migration(None));
        assert!(w["status"].get("migrationStatus").is_none());
    }
}
