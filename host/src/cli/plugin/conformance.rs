//! `wukong plugin conformance FILE [--config C.yaml]`: the conformance suite of the
//! plugin's step kind, `ok`/`FAILED` per check with the reason for each failure, then
//! `N passed, N failed`; exits non-zero on any failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::conformance::{self, Options};
use crate::runner::parse_yaml;

#[derive(Debug, clap::Args)]
pub struct ConformanceArgs {
    /// The plugin (`.wasm` component).
    pub file: PathBuf,
    /// The plugin's config for every call (checked against its schema); `{}` when absent.
    #[arg(long, value_name = "C.yaml")]
    pub config: Option<PathBuf>,
    /// Storage: the disk sources the backend serves (`blank`, `image`, `existing-claim`,
    /// comma-separated); it is checked on those, and must refuse the others.
    #[arg(long, value_name = "LIST", value_parser = conformance::DiskSources::parse)]
    pub disk_sources: Option<conformance::DiskSources>,
}

pub fn run(args: &ConformanceArgs) -> anyhow::Result<ExitCode> {
    let plugin = super::load(&args.file)?;
    let mut options = Options::default();
    if let Some(path) = &args.config {
        let config = parse_yaml(path).with_context(|| format!("reading {}", path.display()))?;
        if !config.is_null() {
            options = options.config(config);
        }
    }
    if let Some(sources) = args.disk_sources {
        options = options.disk_sources(sources);
    }
    let report = conformance::run(&plugin, &options);
    println!("{report}");
    Ok(if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
