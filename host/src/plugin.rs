//! The plugin runtime: wasmtime engine and limits, loading and validating plugins, the
//! sandboxed per-call store, the capability guard and the compiled-code cache.
//!
//! NB: this module must not depend on `kube` or on the controller, so it can become its
//! own crate: the cluster is reached only through [`ClusterReader`].

mod bindings;
mod cache;
mod call;
mod contract;
mod engine;
mod error;
mod guard;
mod limits;
mod loader;
pub mod ownership;
mod sandbox;
mod world;

pub use bindings::v0_1_0::types;
pub use cache::{CodeCache, CodeSource};
pub use contract::{ContractInfo, SUPPORTED_CONTRACTS};
pub use error::{CallError, CallFailure, LoadError, PluginId};
#[cfg(test)]
pub(crate) use guard::check as guard_for_fuzzing;
pub use limits::RuntimeLimits;
pub use loader::{Plugin, Runtime};

use serde::{Deserialize, Serialize};
use types::{
    Action, Condition, Context, Event, KindRef, LifecycleStatus, MigrationStatus,
    NetworkAttachment, ObjectRef, Upstream, Volume,
};

/// Answers a plugin's `cluster` reads. The operator serves them from its caches, the
/// isolation runner from fixtures or a recording.
pub trait ClusterReader: Send + Sync {
    /// One object as JSON. `target.namespace` of `None` means a cluster-scoped object, or,
    /// for a namespaced kind, `default_namespace` (the Wukong's).
    fn get(&self, target: &ObjectRef, default_namespace: &str) -> Result<Option<String>, String>;
    /// Objects of a kind: cluster-scoped ones, or those in `namespace` (the Wukong's).
    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String>;
}

impl types::StepKind {
    /// Every step, in pipeline order.
    pub const ALL: [Self; 4] = [
        Self::Network,
        Self::Storage,
        Self::Lifecycle,
        Self::Migration,
    ];

    /// The step's name as the contract, the config and the metrics spell it: `network`,
    /// `storage`, ... The one spelling: `Display` and every caller use it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Storage => "storage",
            Self::Lifecycle => "lifecycle",
            Self::Migration => "migration",
        }
    }
}

impl std::fmt::Display for types::StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `reconcile` or `finalize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Reconcile,
    Finalize,
}

impl Phase {
    /// `reconcile` or `finalize`, for messages and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reconcile => "reconcile",
            Self::Finalize => "finalize",
        }
    }
}

/// One call's input.
#[derive(Debug, Clone, Copy)]
pub struct StepRequest<'a> {
    pub phase: Phase,
    pub context: &'a Context,
    pub upstream: &'a Upstream,
}

/// The typed status part of an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepStatus {
    Networks(Vec<NetworkAttachment>),
    Volumes(Vec<Volume>),
    Lifecycle(LifecycleStatus),
    Migration(Option<MigrationStatus>),
    /// A `finalize` call returns effects only.
    Finalized,
}

/// A checked outcome: everything in it is within the plugin's capabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Objects to server-side apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete: Vec<ObjectRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_after_ms: Option<u64>,
    pub status: StepStatus,
}
