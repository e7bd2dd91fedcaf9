//! Errors of the isolation runner: each names the file or input at fault.

use std::path::PathBuf;

use crate::plugin::CallError;

/// Preparing or running a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not the YAML it should be.
    #[error("{origin}: {reason}")]
    Parse { origin: String, reason: String },
    /// The Wukong manifest is not one.
    #[error("invalid Wukong: {0}")]
    InvalidWukong(String),
    /// The plugin's config fails its schema.
    #[error("config invalid for plugin {plugin}: {reason}")]
    InvalidConfig { plugin: String, reason: String },
    /// The `upstream` record does not match the contract.
    #[error("invalid upstream: {0}")]
    InvalidUpstream(String),
    /// The plugin call failed (sandbox limit, capability violation, step error).
    #[error(transparent)]
    Call(CallError),
    /// A directory holds no case files.
    #[error("{0}: no case files (*.yaml) found")]
    NoCases(PathBuf),
    /// The live cluster could not be reached.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl RunnerError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
