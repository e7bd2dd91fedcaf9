//! `wukong plugin`: tools for plugin authors, no cluster needed — inspect a plugin, run
//! one call, run a directory of cases.

pub mod conformance;
pub mod inspect;
pub mod new;
pub mod pull;
pub mod push;
pub mod run;
pub mod sign;
pub mod test;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::plugin::{CodeCache, Plugin, Runtime, RuntimeLimits};

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show a plugin's manifest, world, contract, capabilities, config schema and digest.
    Inspect(inspect::InspectArgs),
    /// Call a plugin once on a Wukong and print the checked outcome as YAML.
    Run(run::RunArgs),
    /// Run every case file `DIR/*.yaml` against a plugin.
    Test(test::TestArgs),
    /// Publish a plugin to an OCI registry (`oci://REGISTRY/REPOSITORY:TAG`); prints the digest.
    Push(push::PushArgs),
    /// Fetch a plugin from an OCI registry, verified, into a file; prints the digest.
    Pull(pull::PullArgs),
    /// Sign a plugin in a registry with a P-256 key, as cosign does; prints the digest.
    Sign(sign::SignArgs),
    /// Check that a plugin in a registry carries a cosign signature by a public key.
    Verify(sign::SignArgs),
    /// Run the conformance suite of the plugin's step kind (no cluster needed).
    Conformance(conformance::ConformanceArgs),
    /// Start a new plugin from the template: `wukong plugin new NAME --kind storage`.
    New(new::NewArgs),
}

pub fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::Inspect(args) => inspect::run(&args),
        PluginCommand::Run(args) => run::run(args),
        PluginCommand::Test(args) => test::run(&args),
        PluginCommand::Push(args) => push::run(&args),
        PluginCommand::Pull(args) => pull::run(&args),
        PluginCommand::Sign(args) => sign::sign(&args),
        PluginCommand::Verify(args) => sign::verify(&args),
        PluginCommand::Conformance(args) => conformance::run(&args),
        PluginCommand::New(args) => new::run(&args),
    }
}

/// Loads a plugin with the default limits, keeping compiled code in the default cache
/// (`$WUKONG_CACHE/compiled`, else `~/.cache/wukong/compiled`).
pub(crate) fn load(path: &Path) -> anyhow::Result<Plugin> {
    let runtime = Runtime::new(
        RuntimeLimits::default(),
        Some(CodeCache::new(CodeCache::default_dir())),
    )
    .context("cannot start the plugin runtime")?;
    Ok(runtime.load(path)?)
}
