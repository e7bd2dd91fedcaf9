//! The plugin conformance kit: what every plugin of a step kind must do, checked with no
//! cluster (like CSI sanity for storage drivers). `wukong plugin conformance FILE` is a
//! thin wrapper; plugin authors call [`run`] from their own `cargo test`:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use wukong::conformance::{self, Options};
//! use wukong::plugin::{Runtime, RuntimeLimits};
//!
//! let runtime = Runtime::new(RuntimeLimits::default(), None)?;
//! let plugin = runtime.load(Path::new("target/wasm32-wasip2/plugin/my_storage.wasm"))?;
//! let report = conformance::run(&plugin, &Options::default());
//! assert!(report.is_success(), "{report}");
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//! The step kind is read from the component (as `wukong plugin inspect` does) and picks
//! the suite. Each check calls the plugin through the isolation runner ([`crate::runner`])
//! on Wukongs named `vm1` in namespace `tenant-a`, with reads answered by a simulated
//! cluster: fixture objects, plus whatever earlier outcomes applied, the way the host
//! applies them (the Wukong's labels, an owner reference on namespaced objects, merged
//! like server-side apply). The step's status is written back into the Wukong between
//! calls, as the operator does. A plugin "converges" when a call, after at most five
//! applied ones, asks for no write that would change that cluster.
//!
//! # Checks
//! Every kind: the config schema is present and refuses configs it forbids (an unknown
//! key, a property of the wrong type); every outcome stays within the declared
//! capabilities (the guard passes); no generated Wukong ([`generate`]: every one valid
//! against the CRD schema, many odd) makes the plugin panic, trap or break a limit —
//! refusing one with a step error is fine.
//!
//! - **storage**: one volume per disk, each with its own claim; claim names stable across
//!   times, generations, disk order and cluster state; the same input gives the same
//!   outcome and the plugin converges; a grown disk applies the larger request to its
//!   PersistentVolumeClaim and a shrunk one applies nothing smaller but sets a `False`
//!   condition naming the disk; a volume is bound only when its claim is `Bound` (and its
//!   DataVolume `Succeeded`) and every volume is bound once all are; finalize applies
//!   nothing and deletes exactly the objects the plugin made (not shared cluster-scoped
//!   ones), never a retained disk's claim or an existing claim.
//! - **network**: one attachment per network; a NetworkAttachmentDefinition is created
//!   only for networks with a config, one each; a NAD the spec names is referenced as
//!   `namespace/name` and never applied or deleted; stable names, same outcome,
//!   convergence; finalize deletes the NADs it created and nothing else.
//! - **lifecycle**: exactly one VirtualMachine, named after the Wukong, with the volumes,
//!   disks, networks and interfaces of the upstream outputs; each runStrategy applied as
//!   given; status follows the fixture VM and VMI (running and ready, starting, failed,
//!   stopped, paused); no action without a request; same outcome, convergence; a sane
//!   finalize.
//! - **migration**: no migration object without a request; exactly one
//!   VirtualMachineInstanceMigration per request as it runs to its end (status fed back);
//!   a target node becomes `addedNodeSelector` `kubernetes.io/hostname`; the status
//!   follows the migration's phases; same outcome; a sane finalize.

mod common;
pub mod generate;
mod harness;
mod lifecycle;
mod migration;
mod network;
mod report;
mod sim;
mod storage;

pub use report::{Check, Report};

use serde_json::Value;

use crate::plugin::Plugin;
use crate::plugin::types::StepKind;
use harness::Harness;

/// How to run the suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The plugin's config for every call; `{}` (the plugin's defaults) unless given.
    pub config: Value,
    /// The disk sources a storage backend serves (every one unless narrowed).
    pub disk_sources: DiskSources,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: Value::Object(serde_json::Map::new()),
            disk_sources: DiskSources::default(),
        }
    }
}

impl Options {
    #[must_use]
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// Checks a storage backend only on the disk sources it serves, and that it refuses
    /// the others.
    #[must_use]
    pub fn disk_sources(mut self, sources: DiskSources) -> Self {
        self.disk_sources = sources;
        self
    }
}

/// Which disk sources a storage backend serves. Blank disks, every backend; images
/// (`image:`, a CDI import) and existing claims (`existingClaim:`) as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSources {
    pub image: bool,
    pub existing_claim: bool,
}

impl Default for DiskSources {
    fn default() -> Self {
        Self {
            image: true,
            existing_claim: true,
        }
    }
}

impl DiskSources {
    /// From a list such as `blank,existing-claim` (`blank` is always served).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut sources = Self {
            image: false,
            existing_claim: false,
        };
        for source in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match source {
                "blank" => {}
                "image" => sources.image = true,
                "existing-claim" => sources.existing_claim = true,
                other => {
                    return Err(format!(
                        "unknown disk source {other:?}: use blank, image, existing-claim"
                    ));
                }
            }
        }
        Ok(sources)
    }

    /// Every source is served.
    pub fn all(&self) -> bool {
        self.image && self.existing_claim
    }

    /// The source of a spec disk, as `parse` names it.
    pub fn source_of(disk: &Value) -> &'static str {
        if !disk["image"].is_null() {
            "image"
        } else if !disk["existingClaim"].is_null() {
            "existing-claim"
        } else {
            "blank"
        }
    }

    /// Whether the backend serves the source of `disk`.
    pub fn serves(&self, disk: &Value) -> bool {
        match Self::source_of(disk) {
            "image" => self.image,
            "existing-claim" => self.existing_claim,
            _ => true,
        }
    }
}

/// Runs the suite of `plugin`'s step kind and the checks every plugin must pass.
pub fn run(plugin: &Plugin, options: &Options) -> Report {
    let h = Harness::new(plugin, options.config.clone());
    let step = plugin.step();
    let mut checks = vec![harness::check(
        "config schema present and enforced",
        common::config_schema(&h),
    )];
    checks.extend(match step {
        StepKind::Storage => storage::run(&h, options.disk_sources),
        StepKind::Network => network::run(&h),
        StepKind::Lifecycle => lifecycle::run(&h),
        StepKind::Migration => migration::run(&h),
    });
    checks.push(harness::check(
        "no panic or trap on generated Wukongs",
        common::generated(&h),
    ));
    // Last: it judges every call made above.
    checks.push(harness::check(
        "only declared kinds (the guard passes)",
        common::guard(&h),
    ));
    Report {
        plugin: plugin.id.to_string(),
        step,
        checks,
    }
}
