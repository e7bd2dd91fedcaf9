//! Write a Wukong backend plugin in Rust.
//!
//! A plugin is one type implementing [`Plugin`] (name, version, capabilities, config type)
//! and the trait of its step ([`StoragePlugin`], [`NetworkPlugin`], [`LifecyclePlugin`],
//! [`MigrationPlugin`]), plus one macro line that exports it as a WebAssembly component:
//!
//! ```ignore
//! struct Longhorn;
//! impl Plugin for Longhorn { type Config = LonghornConfig; fn manifest() -> Manifest { .. } }
//! impl StoragePlugin for Longhorn { fn reconcile(call: &Call<'_, LonghornConfig>) -> StepResult<StorageOutcome> { .. } }
//! wukong_plugin_sdk::export_storage_plugin!(Longhorn);
//! ```
//!
//! Enable the SDK feature of your step (`features = ["storage"]`) and build with
//! `cargo build --target wasm32-wasip2`. The same impl is callable natively through
//! [`native`], with a [`FixtureCluster`] answering reads: that is how plugins are unit
//! tested and how the host's benchmark measures the native baseline.
//!
//! Name what a plugin makes with [`names::derived`] (injective over the Wukong and the
//! item, a valid Kubernetes name); read ownership with [`objects::made_for`], never write
//! it (the host does: an outcome carrying [`objects::OWNER_UID_ANNOTATION`] is refused).
//!
//! # The contract
//! See `wit/types.wit` for the full contract (expected flow, guarantees, assumptions,
//! caveats). In short: a plugin is a pure function of its input and its `cluster` reads;
//! it returns objects to apply, objects to delete, actions, its typed status part,
//! conditions and events; the host does all writes and refuses anything outside the
//! manifest's capabilities.

#![allow(unsafe_code, reason = "wit-bindgen's generated glue uses unsafe")]

#[cfg(all(target_family = "wasm", not(feature = "system-allocator")))]
mod alloc;
mod bindings;
mod call;
mod cluster;
pub mod disks;
mod export;
mod manifest;
pub mod names;
pub mod native;
pub mod objects;
mod steps;

/// The labels and annotations Wukong marks objects with ([`marks::WUKONG_LABEL`],
/// [`marks::OWNER_UID_ANNOTATION`], ...), as the host defines them.
pub use wukong_model::marks;
/// Kubernetes quantities (`20Gi`, `500m`, `1e3`) as the host reads them:
/// [`quantity::to_bytes`], [`quantity::Quantity`].
pub use wukong_model::quantity;
/// Label selectors as the host and the apiserver read them: [`selector::Selector`].
pub use wukong_model::selector;

#[cfg(all(target_family = "wasm", not(feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: alloc::Bump = alloc::Bump::new();

pub use call::Call;
pub use cluster::{Cluster, FixtureCluster};
pub use manifest::Manifest;
pub use steps::{
    LifecyclePlugin, MigrationPlugin, NetworkPlugin, Plugin, StepResult, StoragePlugin,
};

/// The WIT contract version this SDK builds plugins against.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The contract's shared types, as generated from `wit/types.wit`.
pub use bindings::imports::wukong::plugin::types::{
    Action, ActionRecord, Capabilities, Condition, Context, Disk, DiskSource, Effects, Event,
    KindRef, Level, LifecycleAction, LifecycleOutcome, LifecyclePhase, LifecycleStatus,
    MigrationOutcome, MigrationRequest, MigrationStatus, Network, NetworkAttachment, NetworkConfig,
    NetworkOutcome, ObjectRef, PluginManifest, StepError, StepKind, StorageOutcome,
    SubresourceCall, Upstream, Volume, Wukong,
};

/// Used by the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(all(target_family = "wasm", feature = "lifecycle"))]
    pub use crate::bindings::lifecycle;
    #[cfg(all(target_family = "wasm", feature = "migration"))]
    pub use crate::bindings::migration;
    #[cfg(all(target_family = "wasm", feature = "network"))]
    pub use crate::bindings::network;
    #[cfg(all(target_family = "wasm", feature = "storage"))]
    pub use crate::bindings::storage;
    pub use crate::cluster::HostCluster;
}

/// Log through the host: the line is tagged with the plugin's name and version.
pub fn log(level: Level, message: &str) {
    cluster::log(level, message);
}

#[cfg(all(
    target_family = "wasm",
    any(
        all(
            feature = "network",
            any(feature = "storage", feature = "lifecycle", feature = "migration")
        ),
        all(feature = "storage", any(feature = "lifecycle", feature = "migration")),
        all(feature = "lifecycle", feature = "migration"),
    )
))]
compile_error!(
    "a plugin component serves one step: enable exactly one of the SDK features network, storage, lifecycle, migration (build each plugin with its own `cargo build -p`)"
);
