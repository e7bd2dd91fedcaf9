//! `kubectl-wukong`: run as `kubectl wukong ...` once on PATH (kubectl's plugin convention).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match kubectl_wukong::run(kubectl_wukong::Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
