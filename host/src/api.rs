//! The `Wukong` custom resource (`vm.novasphere.dev/v1alpha1`): spec as users write it,
//! status as the operator reports it, and the mapping into the plugin contract.

mod contract;
mod spec;
mod status;

pub use contract::{MANAGED_BY_LABEL, WUKONG_LABEL, to_contract};
pub use spec::*;
pub use status::*;

/// The finalizer the operator puts on every Wukong.
pub const FINALIZER: &str = "vm.novasphere.dev/cleanup";
