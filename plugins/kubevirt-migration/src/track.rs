//! Following a started migration: its phase, nodes, mode, times and failure from the
//! migration object and the VMI's `migrationState`; abort by deleting the object; and
//! picking up a migration object a crashed host created but never recorded.

use serde_json::Value;
use wukong_plugin_sdk::{Call, Effects, MigrationStatus, StepError};

use crate::record::{new_record, status_text};
use crate::{AUTOMATIC_LABEL, KUBEVIRT, REQUEST_ANNOTATION, VMIM, WUKONG_LABEL};

/// KubeVirt's failure reason for a migration aborted on request
/// (`virtwrap/live-migration-source.go`).
pub const ABORTED: &str = "Live migration has been aborted";

/// KubeVirt's migration phases, folded into the record's.
fn phase_of(migration: &Value) -> &'static str {
    match migration["status"]["phase"].as_str().unwrap_or_default() {
        "Scheduling" | "Scheduled" | "PreparingTarget" => "Scheduling",
        "TargetReady" | "Running" => "Running",
        "Succeeded" => "Succeeded",
        "Failed" => "Failed",
        _ => "Pending",
    }
}

fn terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed")
}

/// The migration state that belongs to this migration: the VMI's while the VMI says it
/// is this one, else the one KubeVirt copies onto the migration object.
fn state<'v>(migration: &'v Value, vmi: Option<&'v Value>) -> &'v Value {
    let uid = &migration["metadata"]["uid"];
    match vmi.map(|v| &v["status"]["migrationState"]) {
        Some(s) if !uid.is_null() && s["migrationUid"] == *uid => s,
        _ => &migration["status"]["migrationState"],
    }
}

/// Whether the user wants `record`'s migration stopped: `abort: true`, or a manual
/// migration whose request was removed from the spec. An automatic migration takes the id
/// of the request in the spec when it starts (so that request stays served); an abort
/// with that same id was already in the spec before it started, so it is left running:
/// only an abort made afterwards (another request id) stops it.
fn abort_wanted<C>(call: &Call<'_, C>, record: &MigrationStatus) -> bool {
    match &call.wukong.migration {
        Some(request) => {
            request.abort && (!record.automatic || request.request_id != record.request_id)
        }
        None => !record.automatic,
    }
}

/// The record of a running migration, brought up to date.
pub fn follow<C>(
    call: &Call<'_, C>,
    record: &MigrationStatus,
    vmi: Option<&Value>,
    effects: &mut Effects,
) -> Result<MigrationStatus, StepError> {
    let name = record.migration_name.clone().unwrap_or_default();
    let target = call.object_ref(KUBEVIRT, VMIM, &name);
    let mut next = record.clone();
    let Some(migration) = call.get_as::<Value>(&target)? else {
        next.phase = "Aborted".into();
        next.finished_at = Some(call.now.to_owned());
        next.message = format!("the migration object {name} was deleted before it finished");
        effects.warning("MigrationAborted", &next.message);
        return Ok(next);
    };
    let phase = phase_of(&migration);
    let s = state(&migration, vmi);
    let text = |key: &str| s[key].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    next.source_node = text("sourceNode").or(next.source_node);
    next.target_node = text("targetNode").or(next.target_node);
    next.mode = text("mode").or(next.mode);
    next.started_at = text("startTimestamp").or(next.started_at);
    if !terminal(phase) && abort_wanted(call, record) {
        effects.delete.push(target);
        next.phase = "Aborted".into();
        next.finished_at = Some(call.now.to_owned());
        next.message = format!("migration {name} aborted: its migration object is deleted");
        effects.event("MigrationAborted", &next.message);
        return Ok(next);
    }
    let was_terminal = terminal(&record.phase);
    next.phase = phase.into();
    let source = next.source_node.clone().unwrap_or_default();
    let to = next.target_node.clone().unwrap_or_default();
    match phase {
        "Succeeded" => {
            next.finished_at = next
                .finished_at
                .or_else(|| text("endTimestamp"))
                .or_else(|| Some(call.now.to_owned()));
            next.message = format!("migrated from node {source} to node {to}");
            if !was_terminal {
                effects.event("MigrationSucceeded", &next.message);
            }
        }
        // KubeVirt has no `Failed` condition: the phase says it, the migration state why.
        "Failed" => {
            next.finished_at = next
                .finished_at
                .or_else(|| text("endTimestamp"))
                .or_else(|| Some(call.now.to_owned()));
            let aborted = s["abortStatus"] == "Succeeded";
            let reason = text("failureReason").or_else(|| aborted.then(|| ABORTED.to_owned()));
            let why = reason.as_deref().unwrap_or("KubeVirt gave no reason");
            if aborted {
                next.phase = "Aborted".into();
                next.message = format!("migration {name} aborted: {why}");
            } else {
                next.message = format!("migration from node {source} failed: {why}");
            }
            next.failure_reason = reason;
            if !was_terminal {
                let reason = if aborted {
                    "MigrationAborted"
                } else {
                    "MigrationFailed"
                };
                effects.warning(reason, &next.message);
            }
        }
        _ => {
            let base = match phase {
                "Pending" => pending(&migration, &name, vmi),
                _ => format!("migration {name} {}", phase.to_lowercase()),
            };
            next.message = match &call.wukong.migration {
                Some(r) if r.request_id != record.request_id && !r.abort => {
                    format!("{base}; request {} waits for it to end", r.request_id)
                }
                _ => base,
            };
        }
    }
    Ok(next)
}

/// Why a migration is still `Pending`: KubeVirt starts it once the VMI runs, and says
/// in the migration's conditions what else holds it (a resource quota, a backup, ...).
fn pending(migration: &Value, name: &str, vmi: Option<&Value>) -> String {
    let vmi_phase = vmi
        .and_then(|v| status_text(v, "phase"))
        .unwrap_or_default();
    let held = migration["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True" && c["type"] != "migrationAbortRequested")
        .filter_map(|c| c["message"].as_str().or(c["type"].as_str()))
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>();
    let mut message = format!("migration {name} pending");
    if vmi_phase != "Running" {
        let phase = if vmi_phase.is_empty() {
            "not started"
        } else {
            &vmi_phase
        };
        message.push_str(&format!(
            ": the VM instance is {phase}; KubeVirt migrates it once it runs"
        ));
    }
    if !held.is_empty() {
        message.push_str(&format!(" ({})", held.join("; ")));
    }
    message
}

/// A migration object of this Wukong the record does not know: one still running (the
/// host crashed between creating it and writing status), or the one of the pending
/// manual request (`expected`), even finished. Followed as if it had been recorded.
pub fn adopt<C>(
    call: &Call<'_, C>,
    recorded: Option<&MigrationStatus>,
    expected: Option<&str>,
    vmi: Option<&Value>,
    effects: &mut Effects,
) -> Result<Option<MigrationStatus>, StepError> {
    let selector = format!("{WUKONG_LABEL}={}", call.wukong.name);
    let mine: Vec<Value> = call.list_as(
        KUBEVIRT,
        VMIM,
        Some(&call.wukong.namespace),
        Some(&selector),
    )?;
    let name_of = |m: &Value| {
        m["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let known = recorded.and_then(|r| r.migration_name.as_deref());
    let found = mine.iter().find(|m| {
        let name = name_of(m);
        let running = !terminal(phase_of(m)) && m["metadata"]["deletionTimestamp"].is_null();
        Some(name.as_str()) != known && (running || Some(name.as_str()) == expected)
    });
    let Some(migration) = found else {
        return Ok(None);
    };
    let automatic = migration["metadata"]["labels"][AUTOMATIC_LABEL] == "true";
    let request_id = migration["metadata"]["annotations"][REQUEST_ANNOTATION]
        .as_str()
        .unwrap_or_default();
    let record = MigrationStatus {
        migration_name: Some(name_of(migration)),
        started_at: migration["metadata"]["creationTimestamp"]
            .as_str()
            .map(str::to_owned),
        source_node: vmi.and_then(|v| status_text(v, "nodeName")),
        ..new_record("Pending", request_id, automatic)
    };
    follow(call, &record, vmi, effects).map(Some)
}
