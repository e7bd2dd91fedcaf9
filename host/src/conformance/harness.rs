//! What every suite stands on: calling the plugin on a Wukong, with its reads answered by
//! the simulated cluster ([`Sim`]) that outcomes are applied to, and the step's status
//! written back into the Wukong between calls; helpers the checks share.

use std::cell::RefCell;

use serde_json::{Value, json};

pub use super::sim::{Created, Key, Owner, Sim, deletes};
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

    /// The Wukong of `manifest` applying outcomes of this plugin's backend
    /// (`step/default`, as the calls name it).
    pub fn owner(&self, manifest: &Value) -> Owner {
        Owner::of(manifest, &format!("{}/default", self.plugin.manifest.step))
    }

    /// Applies `outcome` to `sim` as the host would for the Wukong of `manifest`; a
    /// refusal (the host's ownership rule) is also remembered for the guard check.
    pub fn apply(&self, sim: &mut Sim, manifest: &Value, outcome: &Outcome) -> Result<(), String> {
        sim.apply(outcome, &self.owner(manifest))
            .inspect_err(|refused| {
                self.violations.borrow_mut().push(refused.clone());
            })
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
            self.apply(sim, wukong, &outcome)?;
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
/// is its own, not shared by the backend's Wukongs), and deletes every cluster-scoped
/// object it made for this Wukong (the garbage collector will not). `must_delete` says
/// which other created objects it must delete.
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
            Some(c) if c.shared => problems.push(format!(
                "deletes {}, which it created for the backend: shared by its Wukongs (no Wukong label)",
                c.key
            )),
            Some(c) if !c.owned => problems.push(format!(
                "deletes {}, which it created but does not own",
                c.key
            )),
            Some(_) => {}
        }
    }
    // What an earlier call already deleted is not left behind.
    for created in sim.created().iter().filter(|c| sim.holds(&c.key)) {
        let deleted = deletes(outcome).any(|t| created.key.is(t));
        let required =
            (created.cluster_scoped && created.made_for_the_wukong()) || must_delete(created);
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

/// A Wukong manifest named `name` with `uid`, in [`NAMESPACE`], with this spec.
pub fn wukong_named(name: &str, uid: &str, spec: Value) -> Value {
    let mut manifest = wukong(spec);
    manifest["metadata"]["name"] = json!(name);
    manifest["metadata"]["uid"] = json!(uid);
    manifest
}

/// Two Wukongs whose derived names meet when a plugin names by `{wukong}-{item}`: `web`
/// with item `db-data` and `web-db` with item `data` (both `web-db-data`). `spec` gives a
/// Wukong's spec with one item of that name; `names` the object names an outcome reports
/// for its items (claims, created NADs). Each is converged in turn on one cluster, `web`
/// first, so `web-db` meets `web`'s objects: it must get objects of its own (the names
/// differ, on an empty cluster and on that one) and never write or delete `web`'s (the
/// ownership rule, which the calls' guard applies, would refuse: `NameTaken`).
pub fn alike_wukongs_get_distinct_objects(
    h: &Harness<'_>,
    sim: &Sim,
    spec: &dyn Fn(&str) -> Value,
    names: &dyn Fn(&Outcome) -> Result<Vec<String>, String>,
) -> CheckResult {
    let mut web = wukong_named("web", "uid-web", spec("db-data"));
    let mut web_db = wukong_named("web-db", "uid-web-db", spec("data"));
    let overlap = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|n| b.contains(n)).cloned().collect()
    };
    let fresh_web = names(&h.reconcile(&web, None, sim)?)?;
    let fresh_web_db = names(&h.reconcile(&web_db, None, sim)?)?;
    let shared = overlap(&fresh_web, &fresh_web_db);
    if !shared.is_empty() {
        return Err(format!(
            "Wukong web (item db-data) and Wukong web-db (item data) are both given {shared:?}: \
             names must be injective over (Wukong, item), e.g. wukong_plugin_sdk::names::derived"
        ));
    }
    let mut sim = sim.clone();
    let web_out = h
        .converge(&mut web, None, &mut sim)
        .map_err(|e| format!("Wukong web: {e}"))?;
    let made_by_web: Vec<Key> = sim.created().iter().map(|c| c.key.clone()).collect();
    let web_db_out = h
        .converge(&mut web_db, None, &mut sim)
        .map_err(|e| format!("Wukong web-db, once Wukong web has its objects: {e}"))?;
    let shared = overlap(&names(&web_out)?, &names(&web_db_out)?);
    if !shared.is_empty() {
        return Err(format!(
            "once Wukong web (item db-data) has its objects, Wukong web-db (item data) reports {shared:?} as its own too: two Wukongs on one object"
        ));
    }
    let onto: Vec<String> = web_db_out
        .apply
        .iter()
        .filter(|o| {
            made_by_web.iter().any(|k| {
                k.namespace.is_some()
                    && o["kind"] == k.kind.as_str()
                    && o["metadata"]["name"] == k.name.as_str()
            })
        })
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    match onto.is_empty() {
        true => Ok(()),
        false => Err(format!("Wukong web-db applies Wukong web's {onto:?}")),
    }
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
