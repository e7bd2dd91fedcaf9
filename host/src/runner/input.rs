//! The inputs of one call as users write them (a Wukong manifest, a config, an upstream
//! record) and how they become the contract's `context` and `upstream`.

use std::path::Path;

use serde_json::{Value, json};

use super::RunnerError;
use crate::api::{self, Wukong};
use crate::plugin::types::{Context, Upstream};
use crate::plugin::{LoadError, Outcome, Phase, Plugin, StepRequest};

/// The time a case runs at unless it says `now:`, so outcomes are reproducible.
pub const DEFAULT_NOW: &str = "2026-01-01T00:00:00Z";

/// The uid a Wukong gets when its manifest has none, so fixtures can be owned by it.
pub const DEFAULT_UID: &str = "00000000-0000-4000-8000-000000000001";
/// The `deletionTimestamp` a Wukong gets for a `finalize` call when it has none.
pub const DELETION_TIMESTAMP: &str = "2024-01-01T00:00:00Z";

const API_VERSION: &str = "vm.novasphere.dev/v1alpha1";

/// Everything one plugin call is made of, in the shapes users write.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// `reconcile` or `finalize`.
    pub phase: Phase,
    /// The backend name passed in the context.
    pub backend: String,
    /// The call's time, RFC 3339; [`DEFAULT_NOW`] unless a case says otherwise.
    pub now: String,
    /// The plugin's config.
    pub config: Value,
    /// A Wukong manifest (`apiVersion`, `kind`, `metadata`, `spec`, optional `status`).
    pub wukong: Value,
    /// The contract's `upstream` record (snake_case fields); `None` means empty.
    pub upstream: Option<Value>,
}

/// An input turned into the contract's types, ready to call.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub phase: Phase,
    pub context: Context,
    pub upstream: Upstream,
}

impl Prepared {
    /// The request to pass to [`Plugin::call`].
    pub fn request(&self) -> StepRequest<'_> {
        StepRequest {
            phase: self.phase,
            context: &self.context,
            upstream: &self.upstream,
        }
    }
}

impl Input {
    /// A `reconcile` call of backend `default` with an empty config.
    pub fn new(wukong: Value) -> Self {
        Self {
            phase: Phase::Reconcile,
            backend: "default".into(),
            now: DEFAULT_NOW.into(),
            config: json!({}),
            wukong,
            upstream: None,
        }
    }

    #[must_use]
    pub fn phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    #[must_use]
    pub fn backend(mut self, backend: impl Into<String>) -> Self {
        self.backend = backend.into();
        self
    }

    #[must_use]
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    #[must_use]
    pub fn upstream(mut self, upstream: Value) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Checks the config against `plugin`'s schema and builds the contract's inputs.
    pub fn prepare(&self, plugin: &Plugin) -> Result<Prepared, RunnerError> {
        plugin.validate_config(&self.config).map_err(|e| match e {
            LoadError::InvalidConfig { plugin, reason, .. } => {
                RunnerError::InvalidConfig { plugin, reason }
            }
            other => RunnerError::InvalidConfig {
                plugin: plugin.id.to_string(),
                reason: other.to_string(),
            },
        })?;
        let wukong = wukong(&self.wukong, self.phase)?;
        Ok(Prepared {
            phase: self.phase,
            context: Context {
                wukong: api::to_contract(&wukong),
                config: self.config.to_string(),
                backend: self.backend.clone(),
                now: self.now.clone(),
            },
            upstream: upstream(self.upstream.as_ref())?,
        })
    }
}

/// Parses a Wukong manifest as users write it, filling the defaults the runner promises.
fn wukong(manifest: &Value, phase: Phase) -> Result<Wukong, RunnerError> {
    let invalid = |reason: String| RunnerError::InvalidWukong(reason);
    let mut manifest = manifest.clone();
    let Some(object) = manifest.as_object_mut() else {
        return Err(invalid("not a YAML map".into()));
    };
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        other => {
            return Err(invalid(format!(
                "apiVersion is {other:?}, expected {API_VERSION:?}"
            )));
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        Some("Wukong") => {}
        other => return Err(invalid(format!("kind is {other:?}, expected \"Wukong\""))),
    }
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata is not a map".into()))?;
    if !metadata.get("name").is_some_and(Value::is_string) {
        return Err(invalid("metadata.name is missing".into()));
    }
    metadata
        .entry("namespace")
        .or_insert_with(|| json!("default"));
    metadata.entry("uid").or_insert_with(|| json!(DEFAULT_UID));
    metadata.entry("generation").or_insert_with(|| json!(1));
    if phase == Phase::Finalize {
        metadata
            .entry("deletionTimestamp")
            .or_insert_with(|| json!(DELETION_TIMESTAMP));
    }
    serde_json::from_value(manifest).map_err(|e| invalid(e.to_string()))
}

/// Parses the `upstream` record; missing lists are empty.
fn upstream(value: Option<&Value>) -> Result<Upstream, RunnerError> {
    let mut value = match value {
        None | Some(Value::Null) => json!({}),
        Some(value) => value.clone(),
    };
    let Some(object) = value.as_object_mut() else {
        return Err(RunnerError::InvalidUpstream("not a YAML map".into()));
    };
    for list in ["networks", "volumes"] {
        object.entry(list).or_insert_with(|| json!([]));
    }
    object.entry("lifecycle").or_insert(Value::Null);
    serde_json::from_value(value).map_err(|e| RunnerError::InvalidUpstream(e.to_string()))
}

/// Reads a YAML file into a JSON value; an empty file is `null`.
pub fn parse_yaml(path: &Path) -> Result<Value, RunnerError> {
    let text = std::fs::read_to_string(path).map_err(RunnerError::io(path))?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_yaml::from_str(&text).map_err(|e| RunnerError::Parse {
        origin: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// An outcome in the shape it is printed and matched: `status` as a map keyed by its
/// kind (`status: {volumes: [...]}`), not a YAML tag.
pub fn outcome_to_value(outcome: &Outcome) -> Value {
    // Serializing these plain types to JSON cannot fail.
    serde_json::to_value(outcome).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Value {
        json!({"apiVersion": API_VERSION, "kind": "Wukong", "metadata": {"name": "vm1"},
               "spec": {"cpu": 2, "memory": "4Gi"}})
    }

    #[test]
    fn a_wukong_gets_deterministic_defaults() {
        let w = wukong(&manifest(), Phase::Finalize).expect("valid");
        let c = api::to_contract(&w);
        assert_eq!(
            (c.namespace.as_str(), c.uid.as_str(), c.generation),
            ("default", DEFAULT_UID, 1)
        );
        assert!(c.deleting, "finalize sets the deletion timestamp");
        assert!(!api::to_contract(&wukong(&manifest(), Phase::Reconcile).expect("valid")).deleting);
    }

    #[test]
    fn a_wrong_kind_is_refused_by_name() {
        let mut m = manifest();
        m["kind"] = json!("VirtualMachine");
        let error = wukong(&m, Phase::Reconcile).expect_err("wrong kind");
        assert!(error.to_string().contains("\"VirtualMachine\""), "{error}");
    }

    #[test]
    fn upstream_lists_default_to_empty() {
        let u = upstream(Some(&json!({"volumes": []}))).expect("valid");
        assert!(u.networks.is_empty() && u.lifecycle.is_none());
        assert!(upstream(Some(&json!({"volumes": 3}))).is_err());
    }
}
