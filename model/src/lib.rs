//! What the host, the plugin SDK and the test environment must read the same way:
//! Kubernetes quantities ([`quantity`]), label selectors ([`selector`]) and the labels and
//! annotations Wukong marks objects with ([`marks`]).
//!
//! One copy of each, so a size, a CPU request or a selector never means one thing to the
//! host and another to a plugin. Pure code with no OS access: plugins compile it to
//! `wasm32-wasip2` through the SDK.

pub mod marks;
pub mod quantity;
pub mod selector;

pub use quantity::Quantity;
pub use selector::Selector;
