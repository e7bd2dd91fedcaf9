//! Errors of the plugin runtime. Each names the plugin (file at load, name and version at
//! call) and says what went wrong in words a user can act on.

use std::path::PathBuf;

/// `name@version` of a loaded plugin.
pub type PluginId = String;

/// Loading a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a WebAssembly component ({reason})")]
    NotAComponent { path: PathBuf, reason: String },
    #[error(
        "{path}: not a Wukong plugin: it exports {exports:?}, expected `wukong:plugin/manifest` and one of network, storage, lifecycle, migration"
    )]
    WrongWorld { path: PathBuf, exports: Vec<String> },
    #[error("{path}: built against contract wukong:plugin@{found}; this host supports {supported}")]
    UnsupportedContract {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("{path}: does not compile or link: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error("{path}: invalid manifest: {reason}")]
    InvalidManifest { path: PathBuf, reason: String },
    #[error("{path} ({plugin}): config invalid: {reason}")]
    InvalidConfig {
        path: PathBuf,
        plugin: PluginId,
        reason: String,
    },
}

/// What broke during a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("deadline of {0} ms exceeded")]
    Deadline(u64),
    #[error("instruction budget of {0} exhausted")]
    Fuel(u64),
    #[error("memory limit of {0} bytes reached")]
    Memory(usize),
    #[error("wasm stack overflow")]
    StackOverflow,
    #[error("panicked: {0}")]
    Panic(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("capability violation: {0}")]
    Capability(String),
    /// An object of the wanted name exists and belongs to someone else.
    #[error("name taken: {0}")]
    NameTaken(String),
    #[error("outcome of {size} bytes is over the limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("malformed outcome: {0}")]
    MalformedOutput(String),
    #[error("host call limit of {0} cluster reads reached")]
    HostCallLimit(u32),
    #[error("log limit of {messages} messages or {bytes} bytes per call reached")]
    LogLimit { messages: u32, bytes: usize },
    /// Conditions or events past what a status and the event stream can carry, or a
    /// condition of a type the host or another step owns.
    #[error("outcome refused: {0}")]
    OutcomeLimit(String),
    #[error("step failed: {0}")]
    Step(String),
    #[error("no free instance slot: {0}")]
    Instantiate(String),
}

impl CallFailure {
    /// A short stable label for metrics and conditions.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Deadline(_) => "deadline",
            Self::Fuel(_) => "fuel",
            Self::Memory(_) => "memory",
            Self::StackOverflow => "stack-overflow",
            Self::Panic(_) => "panic",
            Self::Trap(_) => "trap",
            Self::Capability(_) => "capability",
            Self::NameTaken(_) => "name-taken",
            Self::OutputTooLarge { .. } => "output-too-large",
            Self::MalformedOutput(_) => "malformed-output",
            Self::HostCallLimit(_) => "host-call-limit",
            Self::LogLimit { .. } => "log-limit",
            Self::OutcomeLimit(_) => "outcome-limit",
            Self::Step(_) => "step-error",
            Self::Instantiate(_) => "instantiate",
        }
    }

    /// Whether calling again may succeed without the Wukong changing.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Deadline(_) | Self::Instantiate(_) | Self::Step(_)
        )
    }
}

/// A call failed: which plugin, and what broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin}: {failure}")]
pub struct CallError {
    pub plugin: PluginId,
    pub failure: CallFailure,
}
