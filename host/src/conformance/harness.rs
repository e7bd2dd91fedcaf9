//! What every suite stands on: calling the plugin on a Wukong, with its reads answered by
//! a simulated cluster that outcomes are applied to the way the host applies them
//! (labels, owner reference, merge), and the step's status written back into the Wukong.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{MANAGED_BY_LABEL, WUKONG_LABEL};
use crate::api::{MigrationStatus as MigrationStatusView, NetworkStatus, VolumeStatus};
use crate::plugin::types::{Action, ObjectRef};
use crate::plugin::{CallFailure, Outcome, Phase, Plugin, StepStatus};
use crate::runner::{
    DEFAULT_NOW, DEFAULT_UID, FixtureCluster, Input, RunnerError, matches_subset, outcome_to_value,
    subset_diff,
};

/// The Wukong every suite reconciles.
pub const NAME: &str = "vm1";
pub const NAMESPACE: &str = "tenant-a";
/// A second time of call: what a plugin names must not depend on when it is called.
pub const LATER: &str = "2026-06-01T12:00:00Z";
/// On a cluster-scoped object: the uid of the Wukong it was made for (the guard's rule).
const OWNER_UID_ANNOTATION: &str = "vm.novasphere.dev/owner-uid";
/// Calls, each applied to the cluster, after which a plugin must stop writing.
const ROUNDS: usize = 5;

/// Kinds the simulated cluster treats as cluster-scoped when an object names no namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "StorageClass",
    "Node",
    "PersistentVolume",
    "Namespace",
    "MigrationPolicy",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
];

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
            .map_err(|e| format!("{} call failed: {e}", phase_name(phase)))
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

/// `reconcile` or `finalize`, for messages.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Reconcile => "reconcile",
        Phase::Finalize => "finalize",
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

/// An object's identity in the simulated cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub api_version: String,
    pub kind: String,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    fn of(object: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Self {
            api_version: text(&object["apiVersion"]),
            kind: text(&object["kind"]),
            namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
            name: text(&object["metadata"]["name"]),
        }
    }

    /// True when `target` (a delete) names this object.
    pub fn is(&self, target: &ObjectRef) -> bool {
        self.api_version == target.api_version
            && self.kind == target.kind
            && self.name == target.name
            && (self.namespace.is_none()
                || self.namespace.as_deref()
                    == Some(target.namespace.as_deref().unwrap_or(NAMESPACE)))
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// An object the plugin applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub key: Key,
    /// The Wukong owns it: namespaced (the host adds the owner reference), or
    /// cluster-scoped with the owner-uid annotation naming the Wukong.
    pub owned: bool,
    /// Cluster-scoped: the garbage collector will not delete it with the Wukong.
    pub cluster_scoped: bool,
}

/// A cluster that outcomes are applied to.
#[derive(Debug, Clone, Default)]
pub struct Sim {
    objects: Vec<Value>,
    created: Vec<Created>,
}

impl Sim {
    pub fn new(objects: impl IntoIterator<Item = Value>) -> Self {
        Self {
            objects: objects.into_iter().collect(),
            created: Vec::new(),
        }
    }

    fn reader(&self) -> Arc<FixtureCluster> {
        // Every object here has apiVersion, kind and name: the guard checked the applied ones.
        Arc::new(FixtureCluster::new(self.objects.iter().cloned()).unwrap_or_default())
    }

    /// What the plugin applied so far.
    pub fn created(&self) -> &[Created] {
        &self.created
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    pub fn find_mut(&mut self, kind: &str, name: &str) -> Option<&mut Value> {
        self.objects
            .iter_mut()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    pub fn objects_mut(&mut self) -> &mut Vec<Value> {
        &mut self.objects
    }

    fn position(&self, key: &Key) -> Option<usize> {
        self.objects.iter().position(|o| Key::of(o) == *key)
    }

    /// An applied object as the host writes it: the Wukong's labels, its namespace and
    /// owner reference when namespaced.
    fn as_applied(object: &Value) -> (Value, bool) {
        let mut object = object.clone();
        let kind = object["kind"].as_str().unwrap_or_default();
        let cluster_scoped =
            object["metadata"]["namespace"].is_null() && CLUSTER_SCOPED.contains(&kind);
        for (key, value) in [
            (MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1),
            (WUKONG_LABEL, NAME),
        ] {
            if object["metadata"]["labels"][key].is_null() {
                object["metadata"]["labels"][key] = json!(value);
            }
        }
        if !cluster_scoped {
            object["metadata"]["namespace"] = json!(NAMESPACE);
            object["metadata"]["ownerReferences"] = json!([{"apiVersion": "vm.novasphere.dev/v1alpha1",
                "kind": "Wukong", "name": NAME, "uid": DEFAULT_UID, "controller": true, "blockOwnerDeletion": true}]);
        }
        (object, cluster_scoped)
    }

    /// The writes `outcome` asks for that would change the cluster.
    pub fn writes_needed(&self, outcome: &Outcome) -> Vec<String> {
        let mut writes = Vec::new();
        for object in &outcome.apply {
            let (applied, _) = Self::as_applied(object);
            let key = Key::of(&applied);
            match self.position(&key) {
                Some(i) if matches_subset(object, &self.objects[i]) => {}
                Some(_) => writes.push(format!("change {key}")),
                None => writes.push(format!("create {key}")),
            }
        }
        for target in deletes(outcome) {
            if let Some(object) = self.objects.iter().find(|o| Key::of(o).is(target)) {
                writes.push(format!("delete {}", Key::of(object)));
            }
        }
        writes
    }

    /// Applies an outcome as the host would (server-side apply merges; deletes remove).
    pub fn apply(&mut self, outcome: &Outcome) {
        for object in &outcome.apply {
            let (applied, cluster_scoped) = Self::as_applied(object);
            let key = Key::of(&applied);
            let owned = !cluster_scoped
                || applied["metadata"]["annotations"][OWNER_UID_ANNOTATION] == DEFAULT_UID;
            match self.position(&key) {
                Some(i) => merge(&mut self.objects[i], applied),
                None => self.objects.push(applied),
            }
            if !self.created.iter().any(|c| c.key == key) {
                self.created.push(Created {
                    key,
                    owned,
                    cluster_scoped,
                });
            }
        }
        let targets: Vec<ObjectRef> = deletes(outcome).cloned().collect();
        self.objects
            .retain(|o| !targets.iter().any(|t| Key::of(o).is(t)));
    }
}

/// Every object an outcome deletes: `delete` and delete-object actions.
pub fn deletes(outcome: &Outcome) -> impl Iterator<Item = &ObjectRef> {
    outcome
        .delete
        .iter()
        .chain(outcome.actions.iter().filter_map(|a| match a {
            Action::DeleteObject((target, _)) => Some(target),
            Action::Subresource(_) => None,
        }))
}

/// Server-side apply, simplified: maps merge key by key, anything else is replaced.
fn merge(live: &mut Value, applied: Value) {
    match (live, applied) {
        (Value::Object(live), Value::Object(applied)) => {
            for (key, value) in applied {
                match live.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        live.insert(key, value);
                    }
                }
            }
        }
        (live, applied) => *live = applied,
    }
}

/// Applied objects of a kind.
pub fn applied<'o>(outcome: &'o Outcome, kind: &'o str) -> impl Iterator<Item = &'o Value> + 'o {
    outcome.apply.iter().filter(move |o| o["kind"] == kind)
}

/// The names of applied objects, sorted, as `Kind name`.
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
    for created in sim.created() {
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

    fn pvc(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
               "spec": {"resources": {"requests": {"storage": "1Gi"}}}})
    }

    #[test]
    fn applied_objects_are_owned_and_labelled_and_reapplying_them_is_no_write() {
        let mut sim = Sim::default();
        let first = outcome(vec![pvc("a")], vec![], StepStatus::Finalized);
        assert_eq!(
            sim.writes_needed(&first),
            ["create PersistentVolumeClaim tenant-a/a"]
        );
        sim.apply(&first);
        let live = sim.find("PersistentVolumeClaim", "a").expect("applied");
        assert_eq!(live["metadata"]["ownerReferences"][0]["uid"], DEFAULT_UID);
        assert_eq!(live["metadata"]["labels"][WUKONG_LABEL], NAME);
        assert!(
            sim.writes_needed(&first).is_empty(),
            "the same object again is no write"
        );
        let mut grown = pvc("a");
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let second = outcome(
            vec![grown],
            vec![target("PersistentVolumeClaim", "a")],
            StepStatus::Finalized,
        );
        assert_eq!(
            sim.writes_needed(&second),
            [
                "change PersistentVolumeClaim tenant-a/a",
                "delete PersistentVolumeClaim tenant-a/a"
            ]
        );
    }

    #[test]
    fn finalize_is_judged_against_what_was_created() {
        let mut sim = Sim::new([pvc("foreign")]);
        sim.apply(&outcome(
            vec![pvc("mine"), pvc("kept")],
            vec![],
            StepStatus::Finalized,
        ));
        let must = |c: &Created| c.key.name == "mine";
        let good = outcome(
            vec![],
            vec![target("PersistentVolumeClaim", "mine")],
            StepStatus::Finalized,
        );
        assert_eq!(check_finalize(&good, &sim, &must), Ok(()));
        let leaks = outcome(vec![], vec![], StepStatus::Finalized);
        assert_eq!(
            check_finalize(&leaks, &sim, &must),
            Err("leaves PersistentVolumeClaim tenant-a/mine behind".into())
        );
        let greedy = outcome(
            vec![],
            vec![
                target("PersistentVolumeClaim", "mine"),
                target("PersistentVolumeClaim", "foreign"),
            ],
            StepStatus::Finalized,
        );
        assert_eq!(
            check_finalize(&greedy, &sim, &must),
            Err("deletes PersistentVolumeClaim foreign, which it did not create".into())
        );
        let applies = outcome(
            vec![pvc("new")],
            vec![target("PersistentVolumeClaim", "mine")],
            StepStatus::Finalized,
        );
        assert!(check_finalize(&applies, &sim, &must).is_err());
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
