//! Recording a plugin's reads and their answers, and replaying them offline.
//!
//! A recording file is YAML, one entry per distinct read, in the order first made:
//!
//! ```yaml
//! reads:
//! - get: {apiVersion: v1, kind: PersistentVolumeClaim, namespace: tenant-a, name: root}
//!   object: {apiVersion: v1, kind: PersistentVolumeClaim, ...}   # null: not found
//! - list: {apiVersion: v1, kind: Node, namespace: tenant-a, labelSelector: "zone=a"}
//!   objects: [...]
//! - get: {apiVersion: v1, kind: Secret, defaultNamespace: tenant-a, name: x}
//!   error: "secrets is forbidden"
//! ```
//!
//! A `get` records the namespace the plugin gave (`namespace`), or, when it gave none, the
//! namespace it defaulted to (`defaultNamespace`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RunnerError;
use crate::plugin::ClusterReader;
use crate::plugin::types::{KindRef, ObjectRef};

/// A `get` as the plugin made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetRequest {
    pub api_version: String,
    pub kind: String,
    /// The namespace the plugin named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Wukong's namespace, when the plugin named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
    pub name: String,
}

/// A `list` as the plugin made it (`namespace` is the Wukong's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListRequest {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// One read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadRequest {
    Get(GetRequest),
    List(ListRequest),
}

/// The answer to one read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadAnswer {
    /// A `get`'s object; `None` when it does not exist.
    Object(Option<Value>),
    /// A `list`'s objects.
    Objects(Vec<Value>),
    /// The read failed with this message.
    Error(String),
}

/// A read and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRead {
    #[serde(flatten)]
    pub request: ReadRequest,
    #[serde(flatten)]
    pub answer: ReadAnswer,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordingFile {
    reads: Vec<RecordedRead>,
}

impl ReadRequest {
    fn get(target: &ObjectRef, default_namespace: &str) -> Self {
        Self::Get(GetRequest {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
            namespace: target.namespace.clone(),
            default_namespace: target
                .namespace
                .is_none()
                .then(|| default_namespace.to_owned()),
            name: target.name.clone(),
        })
    }

    fn list(kind: &KindRef, namespace: &str, label_selector: Option<&str>) -> Self {
        Self::List(ListRequest {
            api_version: kind.api_version.clone(),
            kind: kind.kind.clone(),
            namespace: namespace.to_owned(),
            label_selector: label_selector.map(str::to_owned),
        })
    }
}

impl std::fmt::Display for ReadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Get(g) => {
                let namespace = g.namespace.as_ref().or(g.default_namespace.as_ref());
                write!(f, "get {}/{} ", g.api_version, g.kind)?;
                match namespace {
                    Some(ns) => write!(f, "{ns}/{}", g.name),
                    None => write!(f, "{}", g.name),
                }
            }
            Self::List(l) => {
                write!(f, "list {}/{} in {}", l.api_version, l.kind, l.namespace)?;
                match &l.label_selector {
                    Some(s) => write!(f, " with selector {s:?}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Wraps a reader and keeps every distinct read with its answer.
pub struct Recording {
    inner: Arc<dyn ClusterReader>,
    reads: Mutex<Vec<RecordedRead>>,
}

impl Recording {
    /// Records the reads `inner` answers.
    pub fn new(inner: Arc<dyn ClusterReader>) -> Self {
        Self {
            inner,
            reads: Mutex::new(Vec::new()),
        }
    }

    /// The reads so far, in the order first made.
    pub fn reads(&self) -> Vec<RecordedRead> {
        self.reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The recording as YAML.
    pub fn to_yaml(&self) -> String {
        let file = RecordingFile {
            reads: self.reads(),
        };
        // Plain data: serializing it cannot fail.
        serde_yaml::to_string(&file).unwrap_or_default()
    }

    /// Writes the recording to `path`.
    pub fn save(&self, path: &Path) -> Result<(), RunnerError> {
        std::fs::write(path, self.to_yaml()).map_err(RunnerError::io(path))
    }

    fn keep(&self, request: ReadRequest, answer: ReadAnswer) {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        if !reads.iter().any(|r| r.request == request) {
            reads.push(RecordedRead { request, answer });
        }
    }
}

impl ClusterReader for Recording {
    fn get(&self, target: &ObjectRef, default_namespace: &str) -> Result<Option<String>, String> {
        let result = self.inner.get(target, default_namespace);
        let answer = match &result {
            Ok(object) => ReadAnswer::Object(object.as_deref().map(json_or_string)),
            Err(e) => ReadAnswer::Error(e.clone()),
        };
        self.keep(ReadRequest::get(target, default_namespace), answer);
        result
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let result = self.inner.list(kind, namespace, label_selector);
        let answer = match &result {
            Ok(objects) => ReadAnswer::Objects(objects.iter().map(|o| json_or_string(o)).collect()),
            Err(e) => ReadAnswer::Error(e.clone()),
        };
        self.keep(ReadRequest::list(kind, namespace, label_selector), answer);
        result
    }
}

/// Answers reads from a recording only; a read it does not hold is an error naming it.
#[derive(Debug, Clone)]
pub struct Replay {
    origin: String,
    reads: Vec<RecordedRead>,
}

impl Replay {
    /// Replays these reads; `origin` names them in errors.
    pub fn new(origin: impl Into<String>, reads: Vec<RecordedRead>) -> Self {
        Self {
            origin: origin.into(),
            reads,
        }
    }

    /// Loads a recording file written by [`Recording::save`].
    pub fn load(path: &Path) -> Result<Self, RunnerError> {
        let text = std::fs::read_to_string(path).map_err(RunnerError::io(path))?;
        let file: RecordingFile = serde_yaml::from_str(&text).map_err(|e| RunnerError::Parse {
            origin: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(path.display().to_string(), file.reads))
    }

    /// The recorded reads.
    pub fn reads(&self) -> &[RecordedRead] {
        &self.reads
    }

    fn answer(&self, request: &ReadRequest) -> Result<&ReadAnswer, String> {
        self.reads
            .iter()
            .find(|r| &r.request == request)
            .map(|r| &r.answer)
            .ok_or_else(|| format!("unrecorded read: {request} is not in {}", self.origin))
    }
}

impl ClusterReader for Replay {
    fn get(&self, target: &ObjectRef, default_namespace: &str) -> Result<Option<String>, String> {
        let request = ReadRequest::get(target, default_namespace);
        match self.answer(&request)? {
            ReadAnswer::Object(object) => Ok(object.as_ref().map(to_json)),
            ReadAnswer::Error(e) => Err(e.clone()),
            ReadAnswer::Objects(_) => Err(format!(
                "{}: {request} is recorded with a list answer",
                self.origin
            )),
        }
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let request = ReadRequest::list(kind, namespace, label_selector);
        match self.answer(&request)? {
            ReadAnswer::Objects(objects) => Ok(objects.iter().map(to_json).collect()),
            ReadAnswer::Error(e) => Err(e.clone()),
            ReadAnswer::Object(_) => Err(format!(
                "{}: {request} is recorded with a get answer",
                self.origin
            )),
        }
    }
}

/// Keeps objects readable in the file; anything not JSON stays a string.
fn json_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn to_json(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::runner::FixtureCluster;

    #[test]
    fn a_recording_replays_the_same_answers_and_refuses_others() {
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "metadata": {"name": "root", "namespace": "ns"}});
        let fixtures = FixtureCluster::new([pvc.clone()]).expect("fixtures");
        let recording = Recording::new(Arc::new(fixtures));
        let target = |name: &str| ObjectRef {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            namespace: None,
            name: name.into(),
        };
        let kind = KindRef {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
        };
        let found = recording.get(&target("root"), "ns").expect("get");
        let missing = recording.get(&target("gone"), "ns").expect("get");
        let listed = recording.list(&kind, "ns", Some("a=b")).expect("list");
        recording.get(&target("root"), "ns").expect("get again");
        assert_eq!(recording.reads().len(), 3, "repeated reads are kept once");

        let file: RecordingFile = serde_yaml::from_str(&recording.to_yaml()).expect("round trip");
        let replay = Replay::new("rec.yaml", file.reads);
        assert_eq!(replay.get(&target("root"), "ns").expect("get"), found);
        assert_eq!(replay.get(&target("gone"), "ns").expect("get"), missing);
        assert_eq!(replay.list(&kind, "ns", Some("a=b")).expect("list"), listed);
        let error = replay
            .get(&target("root"), "other")
            .expect_err("unrecorded");
        assert_eq!(
            error,
            "unrecorded read: get v1/PersistentVolumeClaim other/root is not in rec.yaml"
        );
        assert!(replay.list(&kind, "ns", None).is_err());
    }
}
