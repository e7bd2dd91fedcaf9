//! Wukong: a Kubernetes operator for virtual machines on KubeVirt whose backend steps
//! (network, storage, lifecycle, migration) are sandboxed WebAssembly component plugins.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod controller;
#[cfg(test)]
mod fuzz;
pub mod leader;
pub mod oci;
pub mod plugin;
pub mod reload;
pub mod runner;
pub mod telemetry;
