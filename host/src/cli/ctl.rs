//! `wukong ctl`: lifecycle actions and migrations for people. Each command writes the
//! Wukong's spec (a one-shot request with a fresh `requestId`, never anything else) and,
//! with `--wait`, follows its status until the request ends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::api::Wukong;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The Wukong.
    pub name: String,
    #[arg(long, short, default_value = "default")]
    pub namespace: String,
    /// Follow the status and print progress until the request ends.
    #[arg(long, global = true)]
    pub wait: bool,
    /// With `--wait`: give up after this many seconds.
    #[arg(long, global = true, default_value_t = 300)]
    pub timeout: u64,
    /// A kubeconfig; `$KUBECONFIG` or in-cluster config when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Start the VM.
    Start,
    /// Stop the VM: gracefully, or at once with `--force`.
    Stop(PowerArgs),
    /// Restart the VM: stop, wait, start (forced after the grace period), or at once with `--force`.
    Restart(PowerArgs),
    /// Pause the VM (KubeVirt `pause`).
    Suspend,
    /// Unpause the VM.
    Resume,
    /// Reboot the guest OS (needs the guest agent or ACPI).
    SoftReboot,
    /// Live-migrate the VM, or abort the running migration.
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct PowerArgs {
    #[arg(long)]
    pub force: bool,
    /// Seconds the guest gets to shut down (default 30).
    #[arg(long)]
    pub grace_period: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Target node; the scheduler picks one when absent.
    #[arg(long, conflicts_with = "abort")]
    pub to: Option<String>,
    /// Abort the running migration.
    #[arg(long)]
    pub abort: bool,
    #[arg(long)]
    pub allow_post_copy: bool,
    #[arg(long)]
    pub allow_auto_converge: bool,
}

/// What `--wait` follows.
enum Followed {
    Action(String),
    Migration {
        request_id: Option<String>,
        abort: bool,
    },
}

pub fn run(args: &CtlArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = super::run::client(args.kubeconfig.as_ref()).await?;
        let api = Api::<Wukong>::namespaced(client, &args.namespace);
        let request_id = format!(
            "ctl-{}",
            k8s_openapi::jiff::Timestamp::now().as_millisecond()
        );
        let (patch, followed) = request(&args.command, &request_id);
        api.patch(
            &args.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": patch })),
        )
        .await
        .with_context(|| format!("updating wukong {}/{}", args.namespace, args.name))?;
        println!("{}/{}: requested ({request_id})", args.namespace, args.name);
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        follow(
            &api,
            &args.name,
            &followed,
            Duration::from_secs(args.timeout),
        )
        .await
    })
}

fn request(command: &CtlCommand, request_id: &str) -> (Value, Followed) {
    let action = |name: &str, force: bool, grace: Option<u32>| {
        let mut spec = json!({"action": name, "force": force, "requestId": request_id});
        if let Some(grace) = grace {
            spec["gracePeriodSeconds"] = grace.into();
        }
        (
            json!({ "lifecycleAction": spec }),
            Followed::Action(request_id.to_owned()),
        )
    };
    match command {
        CtlCommand::Start => action("start", false, None),
        CtlCommand::Stop(p) => action("stop", p.force, p.grace_period),
        CtlCommand::Restart(p) => action("restart", p.force, p.grace_period),
        CtlCommand::Suspend => action("suspend", false, None),
        CtlCommand::Resume => action("resume", false, None),
        CtlCommand::SoftReboot => action("softReboot", false, None),
        // An abort keeps the running request's id: it is that request that stops.
        CtlCommand::Migrate(m) if m.abort => (
            json!({"migration": {"abort": true}}),
            Followed::Migration {
                request_id: None,
                abort: true,
            },
        ),
        CtlCommand::Migrate(m) => (
            json!({"migration": {"targetNode": m.to, "allowPostCopy": m.allow_post_copy, "allowAutoConverge": m.allow_auto_converge,
                "abort": false, "requestId": request_id}}),
            Followed::Migration {
                request_id: Some(request_id.to_owned()),
                abort: false,
            },
        ),
    }
}

/// Polls the status, printing each new stage, until the request ends or time runs out.
async fn follow(
    api: &Api<Wukong>,
    name: &str,
    followed: &Followed,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        let wukong = api
            .get(name)
            .await
            .with_context(|| format!("reading wukong {name}"))?;
        let status = serde_json::to_value(&wukong.status).unwrap_or(Value::Null);
        let (line, done) = match followed {
            Followed::Action(id) => action_progress(&status["lifecycleState"], id),
            Followed::Migration { request_id, abort } => {
                migration_progress(&status["migrationStatus"], request_id.as_deref(), *abort)
            }
        };
        if !line.is_empty() && line != last {
            println!("  {:>6.1}s  {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        if let Some(ok) = done {
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "error: gave up after {}s; the request goes on in the cluster",
        timeout.as_secs()
    );
    Ok(ExitCode::FAILURE)
}

/// A progress line, and `Some(success)` once the request has ended.
fn action_progress(state: &Value, id: &str) -> (String, Option<bool>) {
    if let Some(done) = state["history"]
        .as_array()
        .and_then(|h| h.iter().find(|r| r["requestId"] == id))
    {
        let outcome = done["outcome"].as_str().unwrap_or("Unknown");
        let ok = matches!(outcome, "Succeeded" | "ForcedAfterTimeout");
        return (
            format!(
                "{outcome}: {}",
                done["message"].as_str().unwrap_or_default()
            ),
            Some(ok),
        );
    }
    let current = &state["currentAction"];
    if current["requestId"] == id {
        return (
            format!(
                "{} ({})",
                state["state"].as_str().unwrap_or("?"),
                current["stage"].as_str().unwrap_or("")
            ),
            None,
        );
    }
    ("waiting for the operator".into(), None)
}

fn migration_progress(status: &Value, id: Option<&str>, abort: bool) -> (String, Option<bool>) {
    if id.is_some_and(|id| status["requestId"] != id) {
        return ("waiting for the operator".into(), None);
    }
    let phase = status["phase"].as_str().unwrap_or("Pending");
    let line = format!(
        "{phase} {} -> {} {}",
        status["sourceNode"].as_str().unwrap_or("?"),
        status["targetNode"].as_str().unwrap_or("?"),
        status["failureReason"]
            .as_str()
            .or(status["message"].as_str())
            .unwrap_or_default()
    );
    let done = match phase {
        "Succeeded" => Some(!abort),
        "Aborted" => Some(abort),
        "Failed" | "Refused" => Some(false),
        _ => None,
    };
    (line.trim_end().to_owned(), done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_only_when_its_id_is_in_the_history() {
        let state = json!({"state": "Stopping", "currentAction": {"requestId": "a", "stage": "stop-issued"},
            "history": [{"requestId": "b", "outcome": "Refused", "message": "VM is not running"}]});
        assert_eq!(action_progress(&state, "a").1, None);
        assert_eq!(action_progress(&state, "b").1, Some(false));
        let done = json!({"history": [{"requestId": "a", "outcome": "ForcedAfterTimeout"}]});
        assert_eq!(action_progress(&done, "a").1, Some(true));
    }

    #[test]
    fn an_abort_succeeds_when_the_migration_is_aborted() {
        let aborted = json!({"phase": "Aborted", "requestId": "x"});
        assert_eq!(migration_progress(&aborted, None, true).1, Some(true));
        assert_eq!(
            migration_progress(&aborted, Some("x"), false).1,
            Some(false)
        );
        assert_eq!(
            migration_progress(
                &json!({"phase": "Running", "requestId": "y"}),
                Some("x"),
                false
            )
            .1,
            None
        );
    }
}
