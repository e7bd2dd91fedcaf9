//! A fixture cluster: Kubernetes objects from YAML answering a plugin's reads.

use std::path::Path;

use serde_json::Value;
use wukong_model::selector::Selector;

use super::RunnerError;
use crate::plugin::ClusterReader;
use crate::plugin::types::{KindRef, ObjectRef};

/// Objects that answer `get` and `list`. An object without `metadata.namespace` is seen
/// from every namespace (cluster-scoped objects are written that way).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FixtureCluster {
    objects: Vec<Value>,
    /// Each object as JSON, serialized once: reads answer with it on every call.
    json: Vec<String>,
}

impl FixtureCluster {
    /// A cluster of these objects; each needs `apiVersion`, `kind` and `metadata.name`.
    /// Objects of `kind: List` are unpacked.
    pub fn new(objects: impl IntoIterator<Item = Value>) -> Result<Self, RunnerError> {
        let mut cluster = Self::default();
        for object in objects {
            cluster.add(object)?;
        }
        Ok(cluster)
    }

    /// Reads a multi-document YAML file, or one holding a list, of objects.
    pub fn load(path: &Path) -> Result<Self, RunnerError> {
        let text = std::fs::read_to_string(path).map_err(RunnerError::io(path))?;
        Self::from_yaml(&text).map_err(|e| match e {
            RunnerError::Parse { reason, .. } => RunnerError::Parse {
                origin: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses multi-document YAML, or a YAML list, of objects.
    pub fn from_yaml(text: &str) -> Result<Self, RunnerError> {
        let parse = |reason: String| RunnerError::Parse {
            origin: "cluster fixtures".into(),
            reason,
        };
        let mut cluster = Self::default();
        for document in serde_yaml::Deserializer::from_str(text) {
            let value: Value =
                serde::Deserialize::deserialize(document).map_err(|e| parse(e.to_string()))?;
            cluster.add(value).map_err(|e| parse(e.to_string()))?;
        }
        Ok(cluster)
    }

    /// The objects, in the order given.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    fn add(&mut self, object: Value) -> Result<(), RunnerError> {
        match object {
            Value::Null => Ok(()),
            Value::Array(items) => items.into_iter().try_for_each(|o| self.add(o)),
            Value::Object(ref map) if map.get("kind") == Some(&Value::from("List")) => {
                let items = map.get("items").cloned().unwrap_or(Value::Null);
                self.add(items)
            }
            object => {
                let name = object["metadata"]["name"].as_str();
                if object["apiVersion"].is_string() && object["kind"].is_string() && name.is_some()
                {
                    self.json.push(object.to_string());
                    self.objects.push(object);
                    Ok(())
                } else {
                    Err(RunnerError::Parse {
                        origin: "cluster fixtures".into(),
                        reason: format!(
                            "an object lacks apiVersion, kind or metadata.name: {object}"
                        ),
                    })
                }
            }
        }
    }

    fn of_kind<'a>(
        &'a self,
        api_version: &'a str,
        kind: &'a str,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a Value, &'a String)> + 'a {
        self.objects.iter().zip(&self.json).filter(move |(o, _)| {
            o["apiVersion"] == api_version
                && o["kind"] == kind
                && o["metadata"]["namespace"]
                    .as_str()
                    .is_none_or(|ns| ns == namespace)
        })
    }
}

impl ClusterReader for FixtureCluster {
    fn get(&self, target: &ObjectRef, default_namespace: &str) -> Result<Option<String>, String> {
        let namespace = target.namespace.as_deref().unwrap_or(default_namespace);
        Ok(self
            .of_kind(&target.api_version, &target.kind, namespace)
            .find(|(o, _)| o["metadata"]["name"] == target.name.as_str())
            .map(|(_, json)| json.clone()))
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let selector = label_selector
            .map(Selector::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(self
            .of_kind(&kind.api_version, &kind.kind, namespace)
            .filter(|(o, _)| {
                selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&o["metadata"]["labels"]))
            })
            .map(|(_, json)| json.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pvc(name: &str, namespace: Option<&str>, app: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}}})
    }

    #[test]
    fn reads_see_the_namespace_and_cluster_scoped_objects() {
        let cluster = FixtureCluster::from_yaml(&format!(
            "{}\n---\n{}\n---\n{}",
            pvc("a", Some("tenant-a"), "x"),
            pvc("b", Some("tenant-b"), "x"),
            json!({"apiVersion": "v1", "kind": "List", "items": [pvc("c", None, "y")]}),
        ))
        .expect("fixtures");
        let kind = KindRef {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
        };
        let names = |selector: Option<&str>| -> Vec<String> {
            cluster
                .list(&kind, "tenant-a", selector)
                .expect("list")
                .iter()
                .map(|o| {
                    serde_json::from_str::<Value>(o).expect("json")["metadata"]["name"].to_string()
                })
                .collect()
        };
        assert_eq!(names(None), ["\"a\"", "\"c\""]);
        assert_eq!(names(Some("app=y")), ["\"c\""]);
        assert_eq!(names(Some("app in (x, z),!missing")), ["\"a\""]);
        assert_eq!(names(Some("app notin (x)")), ["\"c\""]);
        let refused = cluster
            .list(&kind, "tenant-a", Some("app in x"))
            .expect_err("not a selector");
        assert!(refused.contains("requirement \"app in x\""), "{refused}");
        let get = |name: &str| ObjectRef {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            namespace: None,
            name: name.into(),
        };
        assert!(cluster.get(&get("a"), "tenant-a").expect("get").is_some());
        assert!(cluster.get(&get("b"), "tenant-a").expect("get").is_none());
    }

    #[test]
    fn an_object_without_a_name_is_refused() {
        let error = FixtureCluster::from_yaml("apiVersion: v1\nkind: Node\nmetadata: {}\n")
            .expect_err("no name");
        assert!(error.to_string().contains("metadata.name"), "{error}");
    }
}
