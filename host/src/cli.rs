//! The command line: one module per subcommand.

pub mod crdgen;
pub mod manifest;
pub mod plugin;
pub mod run;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wukong",
    version,
    about = "Virtual machines on KubeVirt with swappable WebAssembly backends"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WUKONG_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, as `RUST_LOG` (`info`, `wukong=debug`).
    #[arg(long, global = true, default_value = "info", env = "RUST_LOG")]
    pub log: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the CRD YAML (to `crds/` or stdout).
    Crdgen(crdgen::CrdgenArgs),
    /// Write the one-file release manifest built from `deploy/`.
    Manifest(manifest::ManifestArgs),
    /// Tools for plugin authors: inspect a plugin, run it on a Wukong, run test cases.
    Plugin(plugin::PluginArgs),
    /// Run the operator.
    Run(run::RunArgs),
    /// Drive Wukong VMs as `kubectl wukong` does: start, stop, restart, pause, unpause,
    /// soft-reboot, migrate, migrate-cancel, get, describe.
    Ctl(kubectl_wukong::Cli),
}

impl Command {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Crdgen(args) => crdgen::run(&args),
            Self::Manifest(args) => manifest::run(&args),
            Self::Plugin(args) => plugin::run(args),
            Self::Run(args) => run::run(&args),
            Self::Ctl(args) => kubectl_wukong::run(args),
        }
    }
}

/// Logs go to stderr, as text or JSON.
pub fn init_tracing(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a pod's log (or a file) would get escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
