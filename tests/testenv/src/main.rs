//! `wukong-testenv up`: a real control plane plus the KubeVirt simulator, until Ctrl-C.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wukong_testenv::{SimConfig, Simulator, TestEnv};

#[derive(Parser)]
#[command(
    name = "wukong-testenv",
    about = "A real kube-apiserver + etcd with a KubeVirt simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the control plane and the simulator; print how to use them; run until Ctrl-C.
    Up {
        /// Number of simulated nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Allocatable CPU per node.
        #[arg(long, default_value = "8")]
        node_cpu: String,
        /// Allocatable memory per node.
        #[arg(long, default_value = "32Gi")]
        node_memory: String,
        /// No delays at all (otherwise delays a person can follow with `kubectl get -w`).
        #[arg(long)]
        fast: bool,
        /// VMI Scheduled → Running, in milliseconds.
        #[arg(long)]
        boot_ms: Option<u64>,
        /// A migration's Running phase, in milliseconds.
        #[arg(long)]
        migration_ms: Option<u64>,
        /// DataVolume import step, in milliseconds.
        #[arg(long)]
        import_step_ms: Option<u64>,
        /// Every migration fails.
        #[arg(long)]
        fail_migrations: bool,
        /// Every guest ignores ACPI (graceful stops end only at the grace period).
        #[arg(long)]
        guests_ignore_acpi: bool,
        /// Also write the kubeconfig here (it is removed with the data dir otherwise).
        #[arg(long)]
        kubeconfig_out: Option<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client=off,kube_runtime=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let Command::Up {
        nodes,
        node_cpu,
        node_memory,
        fast,
        boot_ms,
        migration_ms,
        import_step_ms,
        fail_migrations,
        guests_ignore_acpi,
        kubeconfig_out,
    } = Cli::parse().command;
    let mut config = if fast {
        SimConfig::fast()
    } else {
        SimConfig::default()
    };
    config.nodes = nodes;
    config.node_cpu = node_cpu;
    config.node_memory = node_memory;
    config.migration_fail = fail_migrations;
    config.guest_ignores_acpi = guests_ignore_acpi;
    if let Some(ms) = boot_ms {
        config.boot_delay = Duration::from_millis(ms);
    }
    if let Some(ms) = migration_ms {
        config.migration_duration = Duration::from_millis(ms);
    }
    if let Some(ms) = import_step_ms {
        config.import_step_delay = Duration::from_millis(ms);
    }
    let env = TestEnv::start()
        .await
        .context("starting the control plane")?;
    let sim = Simulator::start(&env, config)
        .await
        .context("starting the KubeVirt simulator")?;
    let mut kubeconfig = env.kubeconfig_path();
    if let Some(out) = kubeconfig_out {
        std::fs::copy(&kubeconfig, &out).with_context(|| format!("writing {}", out.display()))?;
        kubeconfig = out;
    }
    println!("kubeconfig: {}", kubeconfig.display());
    println!("API server: {}", env.server());
    println!("nodes: {}", sim.node_names().join(", "));
    println!();
    println!(
        "  export KUBECONFIG={}; kubectl get nodes",
        kubeconfig.display()
    );
    println!("  kubectl get vm,vmi,vmim,dv,pvc -A -w");
    println!();
    println!("Ctrl-C stops everything and removes the data dir.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping");
    drop(sim);
    drop(env);
    Ok(())
}
