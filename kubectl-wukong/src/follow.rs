//! `--wait`: follows the Wukong through a watch (no polling) and prints a line each time
//! the request's progress changes, until it ends or time runs out.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use crate::request::Followed;
use crate::{EXIT_NOT_SUCCEEDED, EXIT_TIMED_OUT};

/// Follows `name` until `followed` ends; progress goes to stderr when `to_stderr` (stdout
/// then holds the object printed with `-o`).
pub async fn follow(
    api: &Api<DynamicObject>,
    name: &str,
    followed: &Followed,
    timeout: Duration,
    to_stderr: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut updates = std::pin::pin!(watcher(api.clone(), config).applied_objects());
    let mut last = String::new();
    let say = |line: &str| {
        let line = format!("  {:>6.1}s  {line}", started.elapsed().as_secs_f64());
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let ended = tokio::time::timeout(timeout, async {
        while let Some(update) = updates.next().await {
            let wukong = match update {
                Ok(wukong) => wukong,
                // The watcher retries by itself; say why it waits.
                Err(e) => {
                    say(&format!("watch interrupted ({e}); retrying"));
                    continue;
                }
            };
            let status = &wukong.data["status"];
            let (line, done) = match followed {
                Followed::Action(id) => action_progress(&status["lifecycleState"], id),
                Followed::Migration { request_id } => {
                    migration_progress(&status["migrationStatus"], request_id.as_deref())
                }
            };
            if !line.is_empty() && line != last {
                say(&line);
                last = line;
            }
            if let Some(ok) = done {
                return Some(ok);
            }
        }
        None
    })
    .await;
    match ended {
        Ok(Some(true)) => Ok(ExitCode::SUCCESS),
        Ok(Some(false)) => Ok(ExitCode::from(EXIT_NOT_SUCCEEDED)),
        Ok(None) => anyhow::bail!("the watch of wukong {name} ended"),
        Err(_) => {
            eprintln!(
                "error: timed out after {}; the request goes on in the cluster",
                humantime::format_duration(timeout)
            );
            Ok(ExitCode::from(EXIT_TIMED_OUT))
        }
    }
}

/// A progress line, and `Some(success)` once the request has ended.
pub fn action_progress(state: &Value, id: &str) -> (String, Option<bool>) {
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
        let stage = current["stage"].as_str().unwrap_or_default();
        let message = current["message"].as_str().unwrap_or_default();
        let line = format!(
            "{} {}{}",
            state["state"].as_str().unwrap_or("?"),
            if stage.is_empty() {
                String::new()
            } else {
                format!("({stage})")
            },
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            },
        );
        return (line.trim_end().to_owned(), None);
    }
    ("waiting for the operator".into(), None)
}

/// A progress line, and `Some(success)` once the migration (or its abort, when `id` is
/// `None`) has ended.
pub fn migration_progress(status: &Value, id: Option<&str>) -> (String, Option<bool>) {
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
    let abort = id.is_none();
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
    use serde_json::json;

    #[test]
    fn a_request_ends_only_when_its_id_is_in_the_history() {
        let state = json!({"state": "Stopping", "currentAction": {"requestId": "a", "stage": "stop-issued"},
            "history": [{"requestId": "b", "outcome": "Refused", "message": "VM is not running"}]});
        assert_eq!(
            action_progress(&state, "a"),
            ("Stopping (stop-issued)".into(), None)
        );
        assert_eq!(action_progress(&state, "b").1, Some(false));
        let done = json!({"history": [{"requestId": "a", "outcome": "ForcedAfterTimeout"}]});
        assert_eq!(action_progress(&done, "a").1, Some(true));
    }

    #[test]
    fn a_cancel_succeeds_when_the_migration_is_aborted() {
        let aborted = json!({"phase": "Aborted", "requestId": "x"});
        assert_eq!(migration_progress(&aborted, None).1, Some(true));
        assert_eq!(migration_progress(&aborted, Some("x")).1, Some(false));
        let other = json!({"phase": "Running", "requestId": "y"});
        assert_eq!(migration_progress(&other, Some("x")).1, None);
    }
}
