//! The `wukong` binary: the operator, the CRD generator and the plugin tools.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // kube's TLS needs a process-wide crypto provider; pick one explicitly rather than
    // depend on which rustls features happen to be unified into this build.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
