//! `wukong plugin test FILE DIR`: every case in DIR, `ok`/`FAILED` per case with a diff
//! for each failure, then `N passed, N failed`; exits non-zero on any failure.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::runner;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plugin (`.wasm` component).
    pub file: PathBuf,
    /// A folder of case files (`*.yaml`); the format is in docs/plugin-authoring.md
    /// (section 7, "Testing").
    pub dir: PathBuf,
}

pub fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let plugin = super::load(&args.file)?;
    let report = runner::run_dir(&plugin, &args.dir)?;
    println!("{report}");
    Ok(if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
