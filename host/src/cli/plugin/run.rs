//! `wukong plugin run FILE --wukong W.yaml ...`: one call, the checked outcome printed as
//! YAML; a failed call is an error (exit code 1).
//!
//! The plugin's reads are answered by `--cluster` fixtures, by a `--replay` recording, or,
//! with `--record`, by the live cluster of the current kubeconfig (or by the fixtures, when
//! `--cluster` is given too) while every read is saved. With none of these, every `get`
//! finds nothing and every `list` is empty.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::cluster::{Kinds, LiveReader};
use crate::plugin::{ClusterReader, Outcome, Phase, Plugin};
use crate::runner::{
    FixtureCluster, Input, Prepared, Recording, Replay, RunnerError, outcome_to_value, parse_yaml,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plugin (`.wasm` component).
    pub file: PathBuf,
    /// The Wukong, a manifest as users write it (namespace defaults to `default`).
    #[arg(long, value_name = "W.yaml")]
    pub wukong: PathBuf,
    /// Kubernetes objects answering the plugin's reads (multi-document YAML or a list).
    #[arg(long, value_name = "FIXTURES.yaml", conflicts_with = "replay")]
    pub cluster: Option<PathBuf>,
    /// The plugin's config, checked against its schema first.
    #[arg(long, value_name = "C.yaml")]
    pub config: Option<PathBuf>,
    /// The results of earlier steps: the contract's `upstream` record (snake_case).
    #[arg(long, value_name = "U.yaml")]
    pub upstream: Option<PathBuf>,
    /// The backend name passed to the plugin.
    #[arg(long, default_value = "default")]
    pub backend: String,
    /// Call `finalize` instead of `reconcile`.
    #[arg(long)]
    pub finalize: bool,
    /// Answer reads from the live cluster (or `--cluster`) and save them to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer reads only from a file saved by `--record`.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plugin = super::load(&args.file)?;
    let prepared = prepare(&plugin, &args)?;
    let outcome = match (&args.record, &args.cluster, &args.replay) {
        (Some(record), None, _) => call_live(plugin, prepared, record)?,
        (Some(record), Some(fixtures), _) => {
            let recording = Arc::new(Recording::new(Arc::new(FixtureCluster::load(fixtures)?)));
            let result = call(&plugin, &prepared, recording.clone());
            save(&recording, record)?;
            result?
        }
        (None, Some(fixtures), _) => call(
            &plugin,
            &prepared,
            Arc::new(FixtureCluster::load(fixtures)?),
        )?,
        (None, None, Some(replay)) => call(&plugin, &prepared, Arc::new(Replay::load(replay)?))?,
        (None, None, None) => call(&plugin, &prepared, Arc::new(FixtureCluster::default()))?,
    };
    print!("{}", serde_yaml::to_string(&outcome_to_value(&outcome))?);
    Ok(ExitCode::SUCCESS)
}

/// Reads the input files, naming the file at fault in every error.
fn prepare(plugin: &Plugin, args: &RunArgs) -> anyhow::Result<Prepared> {
    let read =
        |path: &Path| parse_yaml(path).with_context(|| format!("reading {}", path.display()));
    let mut input = Input::new(read(&args.wukong)?)
        .backend(args.backend.clone())
        .phase(if args.finalize {
            Phase::Finalize
        } else {
            Phase::Reconcile
        });
    if let Some(path) = &args.config {
        let config = read(path)?;
        input = input.config(if config.is_null() {
            serde_json::json!({})
        } else {
            config
        });
    }
    if let Some(path) = &args.upstream {
        input = input.upstream(read(path)?);
    }
    input.prepare(plugin).map_err(|error| {
        let file = match &error {
            RunnerError::InvalidConfig { .. } => args.config.as_deref(),
            RunnerError::InvalidUpstream(_) => args.upstream.as_deref(),
            _ => Some(args.wukong.as_path()),
        };
        match file {
            Some(file) => anyhow::anyhow!("{}: {error}", file.display()),
            None => anyhow::anyhow!("{error}"),
        }
    })
}

fn call(
    plugin: &Plugin,
    prepared: &Prepared,
    reader: Arc<dyn ClusterReader>,
) -> anyhow::Result<Outcome> {
    Ok(plugin.call(prepared.request(), reader)?)
}

fn save(recording: &Recording, path: &Path) -> anyhow::Result<()> {
    recording.save(path)?;
    eprintln!(
        "recorded {} reads to {}",
        recording.reads().len(),
        path.display()
    );
    Ok(())
}

/// Calls the plugin on a blocking thread, its reads answered by the live cluster.
fn call_live(plugin: Plugin, prepared: Prepared, record: &Path) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let (recording, result) = runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach a cluster (kubeconfig or in-cluster config)")?;
        // The operator's reader, answering as it would; no watches here, so its caches
        // stay empty and every read goes to the apiserver.
        let live = LiveReader::new(Kinds::new(client), tokio::runtime::Handle::current());
        let recording = Arc::new(Recording::new(Arc::new(live)));
        let reader = recording.clone();
        let result = tokio::task::spawn_blocking(move || plugin.call(prepared.request(), reader))
            .await
            .context("the plugin call panicked")?;
        anyhow::Ok((recording, result))
    })?;
    save(&recording, record)?;
    Ok(result?)
}
