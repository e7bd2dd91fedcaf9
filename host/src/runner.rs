//! The isolation runner: call one plugin with inputs written as YAML, no cluster needed,
//! and check its outcome. The `wukong plugin run|test` commands are thin wrappers around
//! it, and plugin authors call it from their own `cargo test`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use wukong::plugin::{Runtime, RuntimeLimits};
//! use wukong::runner::run_dir;
//!
//! let runtime = Runtime::new(RuntimeLimits::default(), None)?;
//! let plugin = runtime.load(Path::new("target/wasm32-wasip2/plugin/my_storage.wasm"))?;
//! let report = run_dir(&plugin, Path::new("cases"))?;
//! assert!(report.is_success(), "{report}");
//! # Ok(())
//! # }
//! ```
//!
//! One call with fixtures, asserting on the outcome itself:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::path::Path;
//! # use wukong::plugin::{Runtime, RuntimeLimits};
//! use std::sync::Arc;
//! use wukong::runner::{FixtureCluster, Input, parse_yaml, run};
//!
//! # let plugin = Runtime::new(RuntimeLimits::default(), None)?.load(Path::new("p.wasm"))?;
//! let input = Input::new(parse_yaml(Path::new("vm1.yaml"))?)
//!     .config(serde_json::json!({"numberOfReplicas": 3}));
//! let cluster = FixtureCluster::load(Path::new("cluster.yaml"))?;
//! let outcome = run(&plugin, &input, Arc::new(cluster))?;
//! assert!(outcome.delete.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Case files
//!
//! One YAML file per case (`DIR/*.yaml`, run in name order; the file's stem names the
//! case). Every key but `wukong` and `expect` is optional; unknown keys are refused.
//!
//! ```yaml
//! description: one line saying what the case proves
//! phase: reconcile            # or finalize; default reconcile
//! backend: default            # the backend name passed in the context; default "default"
//! config: {numberOfReplicas: 3}   # plugin config, checked against its schema; default {}
//! wukong:                     # a Wukong manifest as users write it
//!   apiVersion: vm.novasphere.dev/v1alpha1
//!   kind: Wukong
//!   metadata: {name: vm1, namespace: tenant-a}
//!   spec: {cpu: 2, memory: 4Gi, disks: [{name: root, size: 20Gi, image: "docker://quay.io/containerdisks/fedora:40"}]}
//! upstream: {networks: [], volumes: [], lifecycle: null}   # contract types (snake_case)
//! cluster: []                 # fixture objects answering the plugin's reads
//! expect:                     # exactly one of:
//!   outcome: {...}            # the expected outcome, matched as a subset
//!   error: "substring"        # the call must fail with a message containing this
//! ```
//!
//! ## The Wukong
//! Taken as users write it, with these defaults so cases stay short and deterministic:
//! namespace `default`, uid [`DEFAULT_UID`] (fixture objects can carry ownerReferences to
//! it), generation 1. For `phase: finalize` a missing `metadata.deletionTimestamp` is set to
//! [`DELETION_TIMESTAMP`], as a Wukong being finalized always has one.
//!
//! ## Upstream
//! The `upstream` record of the contract, field names as generated (`networks`,
//! `volumes`, `lifecycle`, and snake_case inside: `claim_name`, `data_volume`, ...);
//! missing lists are empty.
//!
//! ## The fixture cluster
//! `cluster` lists Kubernetes objects (a YAML list; `kind: List` objects are unpacked).
//! A `get` or `list` sees the objects of the same `apiVersion` and `kind` in the Wukong's
//! namespace; an object without `metadata.namespace` is seen from every namespace (that
//! is how cluster-scoped objects such as Nodes and StorageClasses are written). `list`
//! honours label selectors as the apiserver reads them (`a=b`, `a!=b`, `a`, `!a`,
//! `a in (x,y)`, `a notin (x,y)`, `a>1`) and refuses one it would refuse.
//! Without `cluster`, every `get` finds nothing and every `list` is empty.
//!
//! ## Matching the outcome
//! The outcome is compared in the shape `wukong plugin run` prints it (camelCase
//! `apply`, `delete`, `actions`, `conditions`, `events`, `requeueAfterMs`, and `status`
//! keyed by its kind, e.g. `status: {volumes: [...]}`; contract records inside keep their
//! snake_case fields). `expect.outcome` is a *subset*: every key given must be in the
//! actual outcome with a matching value (maps: keys subset, recursively; lists: same
//! length, element by element; numbers by value); keys not given are not checked. An
//! expected `null` or `[]` also matches a key the outcome leaves out (empty lists and
//! absent values are not printed). A failure shows a diff of the expected outcome against
//! the actual one cut down to the keys the case gives.
//!
//! `expect.error` also matches input errors, such as a config that fails the plugin's
//! schema.

mod case;
mod compare;
mod error;
mod fixture;
mod input;
mod record;

pub use case::{Case, CaseReport, Expect, Report, run_case, run_case_file, run_dir};
pub use compare::{matches_subset, subset_diff};
pub use error::RunnerError;
pub use fixture::FixtureCluster;
pub use input::{
    DEFAULT_NOW, DEFAULT_UID, DELETION_TIMESTAMP, Input, Prepared, outcome_to_value, parse_yaml,
};
pub use record::{
    GetRequest, ListRequest, ReadAnswer, ReadRequest, RecordedRead, Recording, Replay,
};

use std::sync::Arc;

use crate::plugin::{ClusterReader, Outcome, Plugin};

/// Runs one call of `plugin` on `input`, the plugin's reads answered by `reader`.
///
/// The config is checked against the plugin's schema first; the outcome returned has
/// passed the capability guard.
pub fn run(
    plugin: &Plugin,
    input: &Input,
    reader: Arc<dyn ClusterReader>,
) -> Result<Outcome, RunnerError> {
    let prepared = input.prepare(plugin)?;
    plugin
        .call(prepared.request(), reader)
        .map_err(RunnerError::Call)
}
