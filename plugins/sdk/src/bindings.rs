//! The raw wit-bindgen output. Private: plugin authors use the re-exports in the crate root.
//!
//! The import side (types, `cluster`, `log`) is generated once and is all a native build
//! needs. The export side of a step world is generated only inside a component, for the
//! one enabled step feature: every generated world adds its component type to the binary,
//! and a component must export all of a world's functions.

/// Types, `cluster` and `log`, shared by every world.
pub mod imports {
    wit_bindgen::generate!({
        world: "imports",
        path: "../../wit",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        generate_all,
    });
}

macro_rules! step_world {
    ($feature:literal, $module:ident, $world:literal, $macro_name:literal, $bindings:literal) => {
        #[cfg(all(target_family = "wasm", feature = $feature))]
        pub mod $module {
            wit_bindgen::generate!({
                world: $world,
                path: "../../wit",
                with: {
                    "wukong:plugin/types@0.1.0": crate::bindings::imports::wukong::plugin::types,
                    "wukong:plugin/cluster@0.1.0": crate::bindings::imports::wukong::plugin::cluster,
                    "wukong:plugin/log@0.1.0": crate::bindings::imports::wukong::plugin::log,
                },
                additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
                pub_export_macro: true,
                export_macro_name: $macro_name,
                default_bindings_module: $bindings,
            });
        }
    };
}

step_world!(
    "network",
    network,
    "network-plugin",
    "export_network_world",
    "wukong_plugin_sdk::__private::network"
);
step_world!(
    "storage",
    storage,
    "storage-plugin",
    "export_storage_world",
    "wukong_plugin_sdk::__private::storage"
);
step_world!(
    "lifecycle",
    lifecycle,
    "lifecycle-plugin",
    "export_lifecycle_world",
    "wukong_plugin_sdk::__private::lifecycle"
);
step_world!(
    "migration",
    migration,
    "migration-plugin",
    "export_migration_world",
    "wukong_plugin_sdk::__private::migration"
);
