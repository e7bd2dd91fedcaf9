//! One call's part in the lifecycle action: which request to work on (a new one, the one in
//! progress, or none because it is done), its refusal or next step, and what goes into the
//! reported status, events and requeue.

use serde_json::Value;
use wukong_plugin_sdk::{Call, Effects, LifecycleStatus};

use crate::Config;
use crate::actions::{self, Step};
use crate::observed::Observed;
use crate::record::{self, IN_PROGRESS};

/// How soon to look again while an action waits on KubeVirt.
pub const ACTION_REQUEUE_MS: u64 = 250;
/// The condition that reports the last action.
pub const ACTION_CONDITION: &str = "LifecycleActionSucceeded";

/// Runs the requested action one step, given the VM (`None` before it exists: nothing runs
/// yet) and its instance, and fills in the status' action record and history.
pub fn run(
    call: &Call<'_, Config>,
    vm: Option<&Value>,
    vmi: Option<&Value>,
    effects: &mut Effects,
    status: &mut LifecycleStatus,
) {
    let previous = record::previous(&call.wukong_json());
    let mut history = previous.history;
    let mut current = previous.current.filter(|c| c.outcome == IN_PROGRESS);
    let request = call.wukong.lifecycle_action.as_ref();
    if let (None, Some(request), Some(_)) = (&current, request, vm) {
        // Done once: the newest finished request is never redone.
        let done = history
            .first()
            .is_some_and(|last| last.request_id == request.request_id);
        if !done {
            current = Some(actions::begin(request, call.now));
        }
    }
    if let (Some(mut record), Some(vm)) = (current.take(), vm) {
        let observed = Observed { vm, vmi };
        // The request in progress keeps going even if the spec moved on: it was started.
        let request = request
            .filter(|r| r.request_id == record.request_id)
            .cloned()
            .unwrap_or_else(|| wukong_plugin_sdk::LifecycleAction {
                action: record.action.clone(),
                force: false,
                grace_period_seconds: 30,
                request_id: record.request_id.clone(),
            });
        let step = if record.stage.is_empty() {
            match actions::refusal(&request, &observed) {
                Some(reason) => refuse(&mut record, &reason, call.now),
                None => {
                    effects.event(
                        "ActionStarted",
                        format!("{} ({}) started", record.action, record.request_id),
                    );
                    actions::advance(
                        &request,
                        &mut record,
                        &observed,
                        &call.wukong.name,
                        call.now,
                    )
                }
            }
        } else {
            actions::advance(
                &request,
                &mut record,
                &observed,
                &call.wukong.name,
                call.now,
            )
        };
        effects.actions.extend(step.actions);
        for (warning, reason, message) in step.events {
            if warning {
                effects.warning(reason, message);
            } else {
                effects.event(reason, message);
            }
        }
        if record.outcome == IN_PROGRESS {
            if let Some(phase) = actions::phase_of(&record.action) {
                status.phase = phase;
            }
            effects.requeue_after(ACTION_REQUEUE_MS);
            current = Some(record);
        } else {
            record::push(&mut history, record);
        }
    }
    if let Some(last) = current.as_ref().or(history.first()) {
        let ok = matches!(
            last.outcome.as_str(),
            "Succeeded" | "ForcedAfterTimeout" | IN_PROGRESS
        );
        let message = format!("{} ({}): {}", last.action, last.request_id, last.message);
        effects.condition(ACTION_CONDITION, ok, &last.outcome, message);
    }
    status.current_action = current;
    status.history = history;
}

fn refuse(record: &mut wukong_plugin_sdk::ActionRecord, reason: &str, now: &str) -> Step {
    record.outcome = "Refused".into();
    record.finished_at = Some(now.to_owned());
    record.message = format!("refused: {reason}");
    Step {
        actions: Vec::new(),
        events: vec![(
            true,
            "ActionRefused",
            format!(
                "{} ({}) refused: {reason}",
                record.action, record.request_id
            ),
        )],
    }
}
