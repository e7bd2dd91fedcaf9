//! Calling a plugin's logic natively, exactly as its component export does: the same
//! config parsing, the same [`Call`]. For unit tests and the host's native baseline.

use crate::{Call, Cluster, Context, Plugin, PluginManifest, StepKind, Upstream};

/// The full manifest: what the plugin declares plus its step and config schema.
pub fn describe<P: Plugin>(step: StepKind) -> PluginManifest {
    let manifest = P::manifest();
    let schema = schemars::schema_for!(P::Config);
    PluginManifest {
        name: manifest.name,
        version: manifest.version,
        step,
        description: manifest.description,
        capabilities: manifest.capabilities,
        config_schema: serde_json::to_string(&schema).unwrap_or_else(|_| "{}".into()),
    }
}

/// `call` knowing `P`'s manifest (built only if a helper asks what it declares).
fn declared<P: Plugin, C>(mut call: Call<'_, C>) -> Call<'_, C> {
    call.manifest = Some(P::manifest);
    call
}

macro_rules! native_step {
    ($trait:ident, $outcome:ident, $reconcile:ident, $finalize:ident) => {
        /// Runs the step's `reconcile` natively.
        pub fn $reconcile<P: crate::$trait>(
            context: &Context,
            upstream: &Upstream,
            cluster: &dyn Cluster,
        ) -> crate::StepResult<crate::$outcome> {
            P::reconcile(&declared::<P, _>(Call::new(context, upstream, cluster)?))
        }

        /// Runs the step's `finalize` natively.
        pub fn $finalize<P: crate::$trait>(
            context: &Context,
            upstream: &Upstream,
            cluster: &dyn Cluster,
        ) -> crate::StepResult<crate::Effects> {
            P::finalize(&declared::<P, _>(Call::new(context, upstream, cluster)?))
        }
    };
}

native_step!(
    NetworkPlugin,
    NetworkOutcome,
    network_reconcile,
    network_finalize
);
native_step!(
    StoragePlugin,
    StorageOutcome,
    storage_reconcile,
    storage_finalize
);
native_step!(
    LifecyclePlugin,
    LifecycleOutcome,
    lifecycle_reconcile,
    lifecycle_finalize
);
native_step!(
    MigrationPlugin,
    MigrationOutcome,
    migration_reconcile,
    migration_finalize
);
