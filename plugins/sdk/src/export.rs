//! The export macros: one line turns a plugin type into a component's exports.

/// Shared body of the four `export_*_plugin!` macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($plugin:ty, $world:ident, $iface:ident, $kind:ident, $outcome:ident, $reconcile:ident, $finalize:ident, $export:ident) => {
        #[cfg(target_family = "wasm")]
        #[allow(unsafe_code, reason = "wit-bindgen's export glue")]
        const _: () = {
            struct WukongExport;

            impl $crate::__private::$world::exports::wukong::plugin::manifest::Guest for WukongExport {
                fn describe() -> $crate::PluginManifest {
                    $crate::native::describe::<$plugin>($crate::StepKind::$kind)
                }
            }

            impl $crate::__private::$world::exports::wukong::plugin::$iface::Guest for WukongExport {
                fn reconcile(
                    context: $crate::Context,
                    upstream: $crate::Upstream,
                ) -> ::core::result::Result<$crate::$outcome, $crate::StepError> {
                    $crate::native::$reconcile::<$plugin>(&context, &upstream, &$crate::__private::HostCluster)
                }

                fn finalize(
                    context: $crate::Context,
                    upstream: $crate::Upstream,
                ) -> ::core::result::Result<$crate::Effects, $crate::StepError> {
                    $crate::native::$finalize::<$plugin>(&context, &upstream, &$crate::__private::HostCluster)
                }
            }

            $crate::__private::$world::$export!(WukongExport with_types_in $crate::__private::$world);
        };
    };
}

/// Exports a [`crate::NetworkPlugin`] as the component's `network-plugin` world.
#[macro_export]
macro_rules! export_network_plugin {
    ($plugin:ty) => {
        $crate::__export_plugin!(
            $plugin,
            network,
            network,
            Network,
            NetworkOutcome,
            network_reconcile,
            network_finalize,
            export_network_world
        );
    };
}

/// Exports a [`crate::StoragePlugin`] as the component's `storage-plugin` world.
#[macro_export]
macro_rules! export_storage_plugin {
    ($plugin:ty) => {
        $crate::__export_plugin!(
            $plugin,
            storage,
            storage,
            Storage,
            StorageOutcome,
            storage_reconcile,
            storage_finalize,
            export_storage_world
        );
    };
}

/// Exports a [`crate::LifecyclePlugin`] as the component's `lifecycle-plugin` world.
#[macro_export]
macro_rules! export_lifecycle_plugin {
    ($plugin:ty) => {
        $crate::__export_plugin!(
            $plugin,
            lifecycle,
            lifecycle,
            Lifecycle,
            LifecycleOutcome,
            lifecycle_reconcile,
            lifecycle_finalize,
            export_lifecycle_world
        );
    };
}

/// Exports a [`crate::MigrationPlugin`] as the component's `migration-plugin` world.
#[macro_export]
macro_rules! export_migration_plugin {
    ($plugin:ty) => {
        $crate::__export_plugin!(
            $plugin,
            migration,
            migration,
            Migration,
            MigrationOutcome,
            migration_reconcile,
            migration_finalize,
            export_migration_world
        );
    };
}
