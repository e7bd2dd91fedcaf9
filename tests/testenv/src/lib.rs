//! Wukong's test environment: a real kube-apiserver + etcd ([`TestEnv`]) and a KubeVirt
//! simulator ([`sim::Simulator`]) that serves KubeVirt's aggregated API through the real
//! aggregation layer.

pub mod env;
pub mod error;

pub use env::TestEnv;
pub use error::{Error, Result};
pub mod sim;

pub use sim::{SimConfig, Simulator, SubresourceCall};
