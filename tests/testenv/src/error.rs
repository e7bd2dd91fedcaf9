//! The error type of the test environment and the simulator.

use std::path::PathBuf;

/// What can go wrong while starting or running the test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A control-plane binary is missing: the message names it and the provision command.
    #[error(
        "{binary} not found (looked in {searched}); run `bash tests/testenv/provision.sh` \
         (or set KUBEBUILDER_ASSETS to a folder holding kube-apiserver and etcd)"
    )]
    MissingBinary { binary: String, searched: String },
    /// A process of the control plane exited or never became ready.
    #[error("{what} did not become ready: {reason}\n--- last lines of {log} ---\n{tail}")]
    NotReady {
        what: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    /// The network namespace for the aggregated API could not be made.
    #[error(
        "cannot create a network namespace for the aggregated API ({0}); this needs root \
         (CAP_NET_ADMIN) and `ip` from iproute2"
    )]
    NetNs(String),
    /// Generating certificates or keys failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// TLS set-up failed.
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A CRD file could not be read or parsed.
    #[error("CRD {path}: {reason}")]
    Crd { path: String, reason: String },
    /// Waiting for something timed out.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// File-system or process I/O.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialisation.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context.into(),
            source,
        })
    }
}
