//! Host bindings of the WIT contract, one module per supported contract version.
//!
//! The import side (types, `cluster`, `log`) is generated once per version; each step
//! world reuses it through `with`, so all four worlds share one set of types. A later
//! contract version gets its own module here, reusing unchanged interfaces the same way.

/// Contract `wukong:plugin@0.1.0`.
pub mod v0_1_0 {
    /// Types, `cluster` and `log`.
    pub mod imports {
        wasmtime::component::bindgen!({
            world: "imports",
            path: "../wit",
            imports: { default: trappable },
            additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
        });
    }

    macro_rules! step_world {
        ($module:ident, $world:literal) => {
            pub mod $module {
                wasmtime::component::bindgen!({
                    world: $world,
                    path: "../wit",
                    imports: { default: trappable },
                    with: {
                        "wukong:plugin/types": super::imports::wukong::plugin::types,
                        "wukong:plugin/cluster": super::imports::wukong::plugin::cluster,
                        "wukong:plugin/log": super::imports::wukong::plugin::log,
                    },
                });
            }
        };
    }

    step_world!(network, "network-plugin");
    step_world!(storage, "storage-plugin");
    step_world!(lifecycle, "lifecycle-plugin");
    step_world!(migration, "migration-plugin");

    pub use imports::wukong::plugin::types;
}
