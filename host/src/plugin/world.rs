//! The four step worlds behind one trait, so loading and calling are written once.
//!
//! Why a trait object whose impls a macro writes: the generated bindings of the four
//! worlds differ only in names (the pre-linked type, the accessor of the step export,
//! the outcome field that becomes the status), never in logic. The trait lets a plugin
//! hold "some pre-linked step world" with no four-way match at each use; `step_worlds!`
//! states each world's names on one line, where four hand-written impls would be the
//! same code four times. One match on the step remains, in [`prepare`]: the step the
//! exports name picks the world to pre-link.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::StepStatus;
use super::bindings::v0_1_0::{lifecycle, migration, network, storage};
use super::sandbox::CallState;
use super::types::{Context, Effects, PluginManifest, StepError, StepKind, Upstream};

/// A step call's result: a trap or host error outside, the plugin's own error inside.
pub(crate) type Raw<T> = wasmtime::Result<Result<T, StepError>>;

/// A plugin pre-linked as one step world. Each method instantiates a fresh instance in
/// `store` (a cheap copy) and calls into it.
pub(crate) trait StepWorld: Send + Sync {
    /// Instantiates and drops the instance.
    fn instantiate_only(&self, store: &mut Store<CallState>) -> wasmtime::Result<()>;

    /// The plugin's `describe`. Outside, instantiating failed; inside, the call did: the
    /// loader sends the guest's output to the log only once the plugin ran.
    fn describe(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<wasmtime::Result<PluginManifest>>;

    /// The step's `reconcile`, its outcome split into effects and the typed status.
    fn reconcile(
        &self,
        store: &mut Store<CallState>,
        ctx: &Context,
        upstream: &Upstream,
    ) -> Raw<(Effects, StepStatus)>;

    /// The step's `finalize`.
    fn finalize(
        &self,
        store: &mut Store<CallState>,
        ctx: &Context,
        upstream: &Upstream,
    ) -> Raw<Effects>;
}

/// Implements [`StepWorld`] for each world's pre-linked bindings, given the type, the
/// accessor of its step export, and the status its reconcile outcome `$o` carries.
macro_rules! step_worlds {
    ($($world:ident::$pre:ident, $export:ident, |$o:ident| $status:expr;)*) => {$(
        impl StepWorld for $world::$pre<CallState> {
            fn instantiate_only(&self, store: &mut Store<CallState>) -> wasmtime::Result<()> {
                self.instantiate(store).map(drop)
            }

            fn describe(
                &self,
                store: &mut Store<CallState>,
            ) -> wasmtime::Result<wasmtime::Result<PluginManifest>> {
                let instance = self.instantiate(&mut *store)?;
                Ok(instance.wukong_plugin_manifest().call_describe(store))
            }

            fn reconcile(
                &self,
                store: &mut Store<CallState>,
                ctx: &Context,
                upstream: &Upstream,
            ) -> Raw<(Effects, StepStatus)> {
                let instance = self.instantiate(&mut *store)?;
                let outcome = instance.$export().call_reconcile(store, ctx, upstream)?;
                Ok(outcome.map(|$o| ($o.effects, $status)))
            }

            fn finalize(
                &self,
                store: &mut Store<CallState>,
                ctx: &Context,
                upstream: &Upstream,
            ) -> Raw<Effects> {
                let instance = self.instantiate(&mut *store)?;
                instance.$export().call_finalize(store, ctx, upstream)
            }
        }
    )*};
}

step_worlds! {
    network::NetworkPluginPre, wukong_plugin_network, |o| StepStatus::Networks(o.attachments);
    storage::StoragePluginPre, wukong_plugin_storage, |o| StepStatus::Volumes(o.volumes);
    lifecycle::LifecyclePluginPre, wukong_plugin_lifecycle, |o| StepStatus::Lifecycle(o.status);
    migration::MigrationPluginPre, wukong_plugin_migration, |o| StepStatus::Migration(o.status);
}

/// Pre-links a component as the world its exports name.
pub(crate) fn prepare(
    step: StepKind,
    instance_pre: InstancePre<CallState>,
) -> wasmtime::Result<Box<dyn StepWorld>> {
    let world: Box<dyn StepWorld> = match step {
        StepKind::Network => Box::new(network::NetworkPluginPre::new(instance_pre)?),
        StepKind::Storage => Box::new(storage::StoragePluginPre::new(instance_pre)?),
        StepKind::Lifecycle => Box::new(lifecycle::LifecyclePluginPre::new(instance_pre)?),
        StepKind::Migration => Box::new(migration::MigrationPluginPre::new(instance_pre)?),
    };
    Ok(world)
}
