//! The `wukong` binary: the operator, the CRD generator and the plugin tools.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = wukong::cli::Cli::parse();
    wukong::cli::init_tracing(&cli.log);
    match cli.command.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
