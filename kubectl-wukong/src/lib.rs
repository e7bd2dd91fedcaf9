//! `kubectl wukong`: drive Wukong VMs the way `virtctl` drives KubeVirt's, verb first
//! (`kubectl wukong stop vm1 --wait`), without the operator's plugin runtime.
//!
//! Each action writes one thing: the Wukong's one-shot request (`spec.lifecycleAction` or
//! `spec.migration`, with a fresh `requestId`); the operator does the rest. `--wait`
//! follows the Wukong through a watch and prints each new stage until the request ends.
//! The kubeconfig, context and namespace are found the way kubectl finds them.
//!
//! Exit codes: 0 done (or requested, without `--wait`); 1 an error (the Wukong does not
//! exist, the apiserver refused the write, ...); 2 bad usage; 3 the request ended but did
//! not succeed (KubeVirt refused it, it failed); 4 `--wait` ran out of time (the request
//! goes on in the cluster).

mod connect;
mod follow;
mod request;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;

pub use request::Verb;

/// The request ended without success (refused or failed).
pub const EXIT_NOT_SUCCEEDED: u8 = 3;
/// `--wait` ran out of time.
pub const EXIT_TIMED_OUT: u8 = 4;

/// Drive Wukong VMs: lifecycle actions, live migration, and a readable view of a Wukong.
#[derive(Debug, Parser)]
#[command(name = "kubectl-wukong", bin_name = "kubectl wukong", version)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the Wukongs are: as kubectl finds them.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The namespace; the kubeconfig context's namespace, else `default`, when absent.
    #[arg(long, short, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use; the current context when absent.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// A kubeconfig file; `$KUBECONFIG` (a list of files, merged), else `~/.kube/config`,
    /// else the in-cluster service account, when absent.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the VM.
    Start(Target),
    /// Stop the VM: the guest gets its grace period, or none with `--force`.
    Stop(Power),
    /// Restart the VM: a stop (forced once the grace period is over), then a start.
    Restart(Power),
    /// Pause the VM (KubeVirt `pause`).
    #[command(visible_alias = "suspend")]
    Pause(Target),
    /// Unpause the VM.
    #[command(visible_alias = "resume")]
    Unpause(Target),
    /// Ask the guest OS to reboot (needs the guest agent or ACPI).
    SoftReboot(Target),
    /// Live-migrate the VM, to a node of your choice or one the scheduler picks.
    Migrate(Migrate),
    /// Abort the VM's running migration.
    MigrateCancel(Target),
    /// List Wukongs, or show one, a line each.
    Get(Get),
    /// Show a Wukong: its steps and plugins, conditions, disks, networks and last actions.
    Describe(Describe),
    /// Print a shell completion script (`source <(kubectl-wukong completion bash)`).
    Completion { shell: clap_complete::Shell },
}

/// The Wukong a request is for, and how to send and follow it.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The Wukong.
    pub name: String,
    /// Follow the request and print its progress until it ends.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: how long to follow it (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Have the apiserver check the request without saving it.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the Wukong as written instead of a sentence.
    #[arg(long, short, value_enum)]
    pub output: Option<Output>,
}

#[derive(Debug, clap::Args)]
pub struct Power {
    #[command(flatten)]
    pub target: Target,
    /// No grace period for the guest.
    #[arg(long)]
    pub force: bool,
    /// Seconds the guest gets to shut down (the operator's default when absent).
    #[arg(long)]
    pub grace_period: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct Migrate {
    #[command(flatten)]
    pub target: Target,
    /// The node to move to; the scheduler picks one when absent.
    #[arg(long)]
    pub to: Option<String>,
    /// Allow post-copy if the migration does not converge.
    #[arg(long)]
    pub allow_post_copy: bool,
    /// Allow KubeVirt to slow the guest down so the migration converges.
    #[arg(long)]
    pub allow_auto_converge: bool,
}

#[derive(Debug, clap::Args)]
pub struct Get {
    /// One Wukong; every Wukong of the namespace when absent.
    pub name: Option<String>,
    /// Every namespace.
    #[arg(long, short = 'A', conflicts_with = "name")]
    pub all_namespaces: bool,
    #[arg(long, short, value_enum)]
    pub output: Option<Output>,
}

#[derive(Debug, clap::Args)]
pub struct Describe {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Name,
    Json,
    Yaml,
}

/// The Wukong custom resource, as the apiserver serves it.
pub fn wukong_resource() -> ApiResource {
    ApiResource {
        group: "vm.novasphere.dev".into(),
        version: "v1alpha1".into(),
        api_version: "vm.novasphere.dev/v1alpha1".into(),
        kind: "Wukong".into(),
        plural: "wukongs".into(),
    }
}

/// Runs the command line; errors come back for the caller to print (exit code 1).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Completion { shell } = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(
            *shell,
            &mut command,
            "kubectl-wukong",
            &mut std::io::stdout(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> anyhow::Result<ExitCode> {
    let (client, namespace) = connect::client(&cli.connection).await?;
    let resource = wukong_resource();
    let api = |ns: &str| Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
    let (verb, target) = match cli.command {
        Command::Get(get) => {
            let api = match get.all_namespaces {
                true => Api::all_with(client.clone(), &resource),
                false => api(&namespace),
            };
            return show::get(&api, get.name.as_deref(), get.output, &namespace).await;
        }
        Command::Describe(describe) => {
            return show::describe(&api(&namespace), &describe.name).await;
        }
        Command::Completion { .. } => return Ok(ExitCode::SUCCESS),
        Command::Start(t) => (Verb::Start, t),
        Command::Stop(p) => (
            Verb::Stop {
                force: p.force,
                grace_period: p.grace_period,
            },
            p.target,
        ),
        Command::Restart(p) => (
            Verb::Restart {
                force: p.force,
                grace_period: p.grace_period,
            },
            p.target,
        ),
        Command::Pause(t) => (Verb::Pause, t),
        Command::Unpause(t) => (Verb::Unpause, t),
        Command::SoftReboot(t) => (Verb::SoftReboot, t),
        Command::Migrate(m) => (
            Verb::Migrate {
                to: m.to,
                allow_post_copy: m.allow_post_copy,
                allow_auto_converge: m.allow_auto_converge,
            },
            m.target,
        ),
        Command::MigrateCancel(t) => (Verb::MigrateCancel, t),
    };
    let api = api(&namespace);
    let request_id = format!(
        "ctl-{}",
        k8s_openapi::jiff::Timestamp::now().as_millisecond()
    );
    let request = request::build(&verb, &request_id);
    let params = PatchParams {
        dry_run: target.dry_run,
        ..PatchParams::default()
    };
    let written = api
        .patch(&target.name, &params, &Patch::Merge(&request.patch))
        .await
        .map_err(|e| request::explain(e, &namespace, &target.name))?;
    let dry = if target.dry_run {
        " (server dry run)"
    } else {
        ""
    };
    match target.output {
        Some(output) => show::print(&written, output)?,
        None => println!(
            "wukong.vm.novasphere.dev/{} {} requested ({request_id}){dry}",
            target.name,
            verb.name()
        ),
    }
    if !target.wait || target.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    follow::follow(
        &api,
        &target.name,
        &request.followed,
        target.timeout,
        target.output.is_some(),
    )
    .await
}
