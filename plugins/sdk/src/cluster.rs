//! Read-only access to the cluster: the host's `cluster` import inside a component, an
//! in-memory fixture natively.

use wukong_model::selector::Selector;

use crate::bindings::imports::wukong::plugin::cluster as wit_cluster;
use crate::{KindRef, Level, ObjectRef};

/// What a plugin may read. The host serves it inside a component; tests use
/// [`FixtureCluster`].
pub trait Cluster {
    /// One object as JSON, or `None` when it does not exist.
    fn get(&self, object: &ObjectRef) -> Result<Option<String>, String>;
    /// Objects of a kind as JSON, in a namespace, matching a label selector (`a=b`,
    /// `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`).
    fn list(
        &self,
        kind: &KindRef,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String>;
}

/// The host's `cluster` import. Only usable inside a component.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCluster;

impl Cluster for HostCluster {
    fn get(&self, object: &ObjectRef) -> Result<Option<String>, String> {
        wit_cluster::get(object)
    }
    fn list(
        &self,
        kind: &KindRef,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        wit_cluster::list(kind, namespace, label_selector)
    }
}

pub(crate) fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    crate::bindings::imports::wukong::plugin::log::log(level, message);
    // Natively there is no host: keep the line visible in test output.
    #[cfg(not(target_family = "wasm"))]
    eprintln!("[{level:?}] {message}");
}

/// An in-memory cluster for native tests: objects as JSON values.
#[derive(Debug, Clone, Default)]
pub struct FixtureCluster {
    objects: Vec<serde_json::Value>,
}

impl FixtureCluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an object (anything serializable with `apiVersion`, `kind`, `metadata.name`).
    #[must_use]
    pub fn with(mut self, object: impl serde::Serialize) -> Self {
        if let Ok(value) = serde_json::to_value(object) {
            self.objects.push(value);
        }
        self
    }

    fn matches_kind(object: &serde_json::Value, api_version: &str, kind: &str) -> bool {
        object["apiVersion"] == api_version && object["kind"] == kind
    }
}

impl Cluster for FixtureCluster {
    fn get(&self, object: &ObjectRef) -> Result<Option<String>, String> {
        Ok(self
            .objects
            .iter()
            .find(|candidate| {
                Self::matches_kind(candidate, &object.api_version, &object.kind)
                    && candidate["metadata"]["name"] == object.name.as_str()
                    && candidate["metadata"]["namespace"].as_str() == object.namespace.as_deref()
            })
            .map(ToString::to_string))
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        // Refused as the apiserver refuses it, so a plugin's test sees a bad selector fail.
        let selector = label_selector
            .map(Selector::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(self
            .objects
            .iter()
            .filter(|candidate| Self::matches_kind(candidate, &kind.api_version, &kind.kind))
            .filter(|candidate| {
                namespace.is_none() || candidate["metadata"]["namespace"].as_str() == namespace
            })
            .filter(|candidate| {
                selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&candidate["metadata"]["labels"]))
            })
            .map(ToString::to_string)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fixture_get_and_list_by_namespace() {
        let cluster = FixtureCluster::new()
            .with(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "1"}}}))
            .with(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "b", "namespace": "other"}}));
        let pvc = ObjectRef {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            namespace: Some("ns".into()),
            name: "a".into(),
        };
        assert!(cluster.get(&pvc).unwrap().is_some());
        let kind = KindRef {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
        };
        assert_eq!(cluster.list(&kind, Some("ns"), None).unwrap().len(), 1);
        assert_eq!(cluster.list(&kind, None, Some("x=1")).unwrap().len(), 1);
        assert_eq!(
            cluster.list(&kind, None, Some("x in (1,2)")).unwrap().len(),
            1
        );
        assert_eq!(cluster.list(&kind, None, Some("!x")).unwrap().len(), 1);
        let refused = cluster.list(&kind, None, Some("x in 1")).unwrap_err();
        assert!(refused.contains("\"x in 1\""), "{refused}");
        assert_eq!(cluster.list(&kind, None, None).unwrap().len(), 2);
    }
}
