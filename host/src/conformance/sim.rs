//! The simulated cluster the suites run against: fixture objects plus what outcomes
//! applied, written the way the host writes them (the Wukong's labels, and the ownership
//! metadata of the host's rule, [`ownership::stamp`]: a controller reference on namespaced
//! objects, none but the owner-uid mark on retained ones, the backend and owner-uid marks
//! on cluster-scoped ones; merged like server-side apply), and a record of what the plugin
//! created. Outcomes reach it through the plugin call, whose guard has judged every write
//! and delete against this same cluster ([`ownership::judge`]), so what is applied here is
//! what the host would write.

use std::sync::Arc;

use serde_json::{Value, json};

use super::harness::{NAME, NAMESPACE};
use crate::api::{MANAGED_BY_LABEL, WUKONG_LABEL};
use crate::plugin::Outcome;
use crate::plugin::ownership::{self, Claimant, Verdict};
use crate::plugin::types::{Action, ObjectRef};
use crate::runner::{DEFAULT_UID, FixtureCluster, matches_subset};

/// The Wukong an outcome is applied for, as the ownership rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub uid: String,
    /// `step/backend` (`storage/default`), the backend whose plugin returned the outcome.
    pub backend: String,
}

impl Owner {
    /// The Wukong of `manifest` (its name, its uid or the runner's default one) for
    /// `backend`.
    pub fn of(manifest: &Value, backend: &str) -> Self {
        let text = |key: &str, default: &str| {
            manifest["metadata"][key]
                .as_str()
                .unwrap_or(default)
                .to_owned()
        };
        Self {
            name: text("name", NAME),
            uid: text("uid", DEFAULT_UID),
            backend: backend.to_owned(),
        }
    }

    fn claimant(&self) -> Claimant<'_> {
        Claimant {
            name: &self.name,
            uid: &self.uid,
            backend: &self.backend,
        }
    }
}

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
    /// The host's rule lets the Wukong delete it: its controller reference (or, retained,
    /// its owner-uid mark), or for a cluster-scoped object the marks of this backend and
    /// this Wukong.
    pub owned: bool,
    /// Cluster-scoped: the garbage collector will not delete it with the Wukong.
    pub cluster_scoped: bool,
    /// Cluster-scoped and applied without the Wukong's label (`vm.novasphere.dev/wukong`):
    /// the backend's, shared by its Wukongs (a StorageClass), not one Wukong's to delete.
    /// One made for this Wukong (a MigrationPolicy) carries its label.
    pub shared: bool,
}

impl Created {
    /// The Wukong's own: it may delete it, and it is not the backend's shared object.
    pub fn made_for_the_wukong(&self) -> bool {
        self.owned && !self.shared
    }
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

    /// An applied object as the host writes it for `owner`, given the live object: the
    /// Wukong's labels where the plugin set none, its namespace when namespaced, the
    /// ownership metadata [`ownership::stamp`] gives.
    fn as_applied(object: &Value, owner: &Owner, live: Option<&Value>) -> (Value, bool) {
        let mut object = Self::labelled(object, owner);
        let cluster_scoped = Self::cluster_scoped(&object);
        ownership::stamp(&mut object, &owner.claimant(), !cluster_scoped, live);
        (object, cluster_scoped)
    }

    /// The labels and namespace the host adds, without the ownership metadata.
    fn labelled(object: &Value, owner: &Owner) -> Value {
        let mut object = object.clone();
        for (key, value) in [
            (MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1),
            (WUKONG_LABEL, owner.name.as_str()),
        ] {
            if object["metadata"]["labels"][key].is_null() {
                object["metadata"]["labels"][key] = json!(value);
            }
        }
        if !Self::cluster_scoped(&object) {
            object["metadata"]["namespace"] = json!(NAMESPACE);
        }
        object
    }

    fn cluster_scoped(object: &Value) -> bool {
        let kind = object["kind"].as_str().unwrap_or_default();
        object["metadata"]["namespace"].is_null() && CLUSTER_SCOPED.contains(&kind)
    }

    /// Who holds `live` when the ownership rule says it is not `owner`'s to write (or to
    /// delete); `None` when it is. A controller is followed in this cluster (CDI's PVC of
    /// the Wukong's DataVolume).
    fn taken(&self, live: &Value, owner: &Owner, deleting: bool) -> Option<String> {
        let claimant = owner.claimant();
        let held = match ownership::judge(live, &claimant, deleting) {
            Verdict::Owned => Ok(()),
            Verdict::Taken(holder) => Err(holder),
            Verdict::ThroughController(parent) => {
                let live_parent = self.objects.iter().find(|o| {
                    o["kind"] == parent.kind.as_str()
                        && o["metadata"]["name"] == parent.name.as_str()
                        && o["metadata"]["namespace"] == live["metadata"]["namespace"]
                });
                ownership::judge_through(&parent, live_parent, &claimant)
            }
        };
        held.err()
    }

    /// The identity `object` (as a plugin returns it) has once applied.
    fn key(object: &Value) -> Key {
        let mut key = Key::of(object);
        if !Self::cluster_scoped(object) {
            key.namespace = Some(NAMESPACE.to_owned());
        }
        key
    }

    /// The writes `outcome` asks for that would change the cluster.
    pub fn writes_needed(&self, outcome: &Outcome) -> Vec<String> {
        let mut writes = Vec::new();
        for object in &outcome.apply {
            let key = Self::key(object);
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

    /// Applies an outcome for `owner` as the host would: the ownership metadata stamped,
    /// server-side apply merges, deletes remove. Refused, writing nothing, when the host
    /// would refuse it: an object carrying the host's ownership marks, or a write or delete
    /// of an existing object that is not `owner`'s (`NameTaken`). The plugin call's guard
    /// refuses the same before an outcome gets here; this keeps the simulation honest for
    /// outcomes made up by hand.
    pub fn apply(&mut self, outcome: &Outcome, owner: &Owner) -> Result<(), String> {
        for object in &outcome.apply {
            let key = Self::key(object);
            if let Some(mark) = ownership::carried_mark(object) {
                return Err(format!(
                    "the host refuses to apply {key}: it carries {mark}, a mark only the host writes"
                ));
            }
            if let Some(i) = self.position(&key)
                && let Some(holder) = self.taken(&self.objects[i], owner, false)
            {
                return Err(format!(
                    "NameTaken: {key} exists and is not the Wukong {}'s ({holder})",
                    owner.name
                ));
            }
        }
        for target in deletes(outcome) {
            if let Some(live) = self.objects.iter().find(|o| Key::of(o).is(target))
                && let Some(holder) = self.taken(live, owner, true)
            {
                return Err(format!(
                    "NameTaken: {} is not the Wukong {}'s to delete ({holder})",
                    Key::of(live),
                    owner.name
                ));
            }
        }
        for object in &outcome.apply {
            let key = Self::key(object);
            let position = self.position(&key);
            let live = position.map(|i| &self.objects[i]);
            let (applied, cluster_scoped) = Self::as_applied(object, owner, live);
            match position {
                Some(i) => {
                    let live = &mut self.objects[i];
                    merge(live, applied.clone());
                    // Server-side apply removes what the host no longer sets: a retained
                    // object's stale reference goes.
                    if applied["metadata"]["ownerReferences"].is_null()
                        && ownership::is_retained(&applied)
                        && let Some(metadata) = live["metadata"].as_object_mut()
                    {
                        metadata.remove("ownerReferences");
                    }
                }
                None => self.objects.push(applied),
            }
            let shared =
                cluster_scoped && object["metadata"]["labels"][WUKONG_LABEL] != owner.name.as_str();
            let owned = self
                .position(&key)
                .is_some_and(|i| self.taken(&self.objects[i], owner, true).is_none());
            if !self.created.iter().any(|c| c.key == key) {
                self.created.push(Created {
                    key,
                    owned,
                    cluster_scoped,
                    shared,
                });
            }
        }
        let targets: Vec<ObjectRef> = deletes(outcome).cloned().collect();
        self.objects
            .retain(|o| !targets.iter().any(|t| Key::of(o).is(t)));
        Ok(())
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

    fn owner() -> Owner {
        Owner::of(&Value::Null, "storage/default")
    }

    #[test]
    fn applied_objects_are_owned_and_labelled_and_reapplying_them_is_no_write() {
        let mut sim = Sim::default();
        let first = outcome(vec![pvc("a")], vec![], StepStatus::Finalized);
        assert_eq!(
            sim.writes_needed(&first),
            ["create PersistentVolumeClaim tenant-a/a"]
        );
        sim.apply(&first, &owner()).expect("applied");
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
        sim.apply(
            &outcome(
                vec![pvc("mine"), pvc("kept")],
                vec![],
                StepStatus::Finalized,
            ),
            &owner(),
        )
        .expect("applied");
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
        gone.apply(&good, &owner()).expect("applied");
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

    #[test]
    fn ownership_is_stamped_as_the_host_does() {
        let mut sim = Sim::default();
        let mut retained = pvc("keep");
        retained["metadata"]["annotations"] = json!({ownership::RETAIN_ANNOTATION: "true"});
        let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"}});
        let policy = json!({"apiVersion": "migrations.kubevirt.io/v1alpha1", "kind": "MigrationPolicy",
            "metadata": {"name": "p", "labels": {WUKONG_LABEL: NAME}}});
        let first = outcome(vec![retained, class, policy], vec![], StepStatus::Finalized);
        sim.apply(&first, &owner()).expect("applied");
        let keep = sim.find("PersistentVolumeClaim", "keep").expect("applied");
        assert!(keep["metadata"]["ownerReferences"].is_null(), "{keep}");
        assert_eq!(
            keep["metadata"]["annotations"][ownership::OWNER_UID_ANNOTATION],
            DEFAULT_UID
        );
        let fast = sim.find("StorageClass", "fast").expect("applied");
        assert_eq!(
            fast["metadata"]["annotations"][ownership::BACKEND_ANNOTATION],
            "storage/default"
        );
        assert_eq!(
            fast["metadata"]["annotations"][ownership::OWNER_UID_ANNOTATION],
            DEFAULT_UID
        );
        let created = |name: &str| {
            sim.created()
                .iter()
                .find(|c| c.key.name == name)
                .cloned()
                .expect("created")
        };
        assert!(created("keep").owned && !created("keep").cluster_scoped);
        let (fast, p) = (created("fast"), created("p"));
        assert!(
            fast.cluster_scoped && fast.shared,
            "no Wukong label: the backend's"
        );
        assert!(
            p.cluster_scoped && p.owned && !p.shared,
            "made for this Wukong"
        );
    }

    #[test]
    fn what_the_host_would_refuse_writes_nothing() {
        let web = Owner {
            name: "web".into(),
            uid: "uid-web".into(),
            backend: "storage/default".into(),
        };
        let mut sim = Sim::default();
        sim.apply(
            &outcome(vec![pvc("web-db-data")], vec![], StepStatus::Finalized),
            &web,
        )
        .expect("applied");
        let before = sim.clone();
        let onto = outcome(
            vec![pvc("web-db-data"), pvc("mine")],
            vec![],
            StepStatus::Finalized,
        );
        let refused = sim
            .apply(&onto, &owner())
            .expect_err("another Wukong's claim");
        assert!(
            refused.starts_with("NameTaken: PersistentVolumeClaim tenant-a/web-db-data"),
            "{refused}"
        );
        let delete = outcome(
            vec![],
            vec![target("PersistentVolumeClaim", "web-db-data")],
            StepStatus::Finalized,
        );
        assert!(sim.apply(&delete, &owner()).is_err());
        let mut marked = pvc("mine");
        marked["metadata"]["annotations"] = json!({ownership::OWNER_UID_ANNOTATION: DEFAULT_UID});
        let marked = outcome(vec![marked], vec![], StepStatus::Finalized);
        assert!(
            sim.apply(&marked, &owner())
                .is_err_and(|e| e.contains("only the host writes"))
        );
        assert_eq!(sim.objects, before.objects, "nothing written");
    }
}
