//! The simulated cluster the suites run against: fixture objects plus what outcomes
//! applied, written the way the host writes them (the Wukong's labels, an owner reference
//! on namespaced objects, merged like server-side apply), and a record of what the plugin
//! created.

use std::sync::Arc;

use serde_json::{Value, json};

use super::harness::{NAME, NAMESPACE};
use crate::api::{MANAGED_BY_LABEL, WUKONG_LABEL};
use crate::plugin::Outcome;
use crate::plugin::types::{Action, ObjectRef};
use crate::runner::{DEFAULT_UID, FixtureCluster, matches_subset};

/// On a cluster-scoped object: the uid of the Wukong it was made for (the guard's rule).
const OWNER_UID_ANNOTATION: &str = "vm.novasphere.dev/owner-uid";

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

    pub(super) fn reader(&self) -> Arc<FixtureCluster> {
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

    /// True while the object is in the cluster.
    pub fn holds(&self, key: &Key) -> bool {
        self.position(key).is_some()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::harness::check_finalize;
    use crate::conformance::harness::tests::{outcome, target};
    use crate::plugin::StepStatus;

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
        let mut gone = sim.clone();
        gone.apply(&good);
        assert_eq!(
            check_finalize(&leaks, &gone, &must),
            Ok(()),
            "what is already deleted is not left behind"
        );
        let applies = outcome(
            vec![pvc("new")],
            vec![target("PersistentVolumeClaim", "mine")],
            StepStatus::Finalized,
        );
        assert!(check_finalize(&applies, &sim, &must).is_err());
    }
}
