//! Lifecycle actions from `spec.lifecycleAction`: start, stop, restart, suspend, resume,
//! soft reboot, each a small state machine over KubeVirt's subresources.
//!
//! # Exactly once
//! The plugin is a pure function: it remembers nothing but the record it reported last
//! time (read back from the Wukong's status). A request in the history is done and never
//! redone (an explicit `requestId` anywhere in it, an implicit one as its newest entry);
//! a new id starts a new action. A record the host finished (`Refused`, when KubeVirt
//! answered a call with 409) joins the history as it is: nothing here overwrites it. Every step that calls
//! KubeVirt moves the record to an `*-issued` stage in the same outcome, and the host
//! writes that status *before* it executes the call. After a crash in between, the next
//! call sees the stage, checks whether the cluster shows the step's effect (stop: the run
//! strategy is `Halted`; start: an instance or a running strategy; pause: the `Paused`
//! condition; a forced stop: the instance's grace period is 0) and re-issues the step only
//! when it does not. A soft reboot leaves no trace, so it is issued at most once.
//!
//! # Graceful stop and its fallback
//! A graceful stop gives the guest its grace period plus [`FORCE_MARGIN_MS`]; an instance
//! still there then is stopped with `gracePeriod: 0`, and the action ends
//! `ForcedAfterTimeout`, with a Warning event of that reason. The action's timeout
//! ([`ACTION_TIMEOUT_MS`], after which it ends `Failed`) counts from the end of that
//! grace: a grace period of any length falls back to force, never times out first.
//!
//! # KubeVirt's answers
//! Every request is judged first as KubeVirt's subresource API would ([`refusal`]): what
//! it would answer 409 is `Refused` with its words and nothing is called (a `start` on
//! `Always` or `Once`, a `restart` on `Halted` or `Once`, a pause of an instance that is
//! not `Running`, ...). What KubeVirt would not take *yet* waits instead (a `start` while
//! the old instance shuts down or other state-change requests are pending, which KubeVirt
//! answers 500 "stop/start already underway"): a 500 that still comes back is an error of
//! the call, the record stays at its `*-issued` stage, and the next call asks again once
//! the way is clear. `stop` keeps `Manual` and `RerunOnFailure` (it queues a request) and
//! switches `Always` and `Once` to `Halted`. A restart is a stop then a start, never
//! `virtualmachines/restart` (which refuses any grace period but 0).

use serde_json::json;
use wukong_plugin_sdk::{Action, ActionRecord, LifecycleAction, LifecyclePhase, SubresourceCall};

use crate::observed::Observed;
use crate::record::{IN_PROGRESS, millis_between};

/// Past the grace period, how long before a graceful stop is forced.
pub const FORCE_MARGIN_MS: i64 = 1_000;
/// How long an action may wait for KubeVirt before it is given up as failed, counted after
/// the grace period (and [`FORCE_MARGIN_MS`]) of a graceful stop or restart.
pub const ACTION_TIMEOUT_MS: i64 = 300_000;
/// How long before a pause or unpause not yet visible is asked again (KubeVirt reports
/// them through the instance's conditions a little after the call).
const REISSUE_AFTER_MS: i64 = 2_000;

/// The outcome of one call for the action in progress.
#[derive(Debug, Default)]
pub struct Step {
    pub actions: Vec<Action>,
    /// `(warning, reason, message)`.
    pub events: Vec<(bool, &'static str, String)>,
}

/// Why KubeVirt would refuse `request` now, in its words (`pkg/virt-api/rest/
/// lifecycle.go`, checked in its order); `None` when it can run. A refusal is recorded
/// before anything is called, so a request KubeVirt would answer 409 never goes out.
///
/// Not refusals, because the plugin maps them (see [`advance`]): a `start` while the old
/// instance is still being deleted waits for it to go; a `stop` on `Halted` whose instance
/// is already shutting down with no longer a grace period than asked waits for it instead
/// of asking again (KubeVirt accepts only a shorter one there); a `start` while other
/// state-change requests are pending waits for them (KubeVirt answers 500 "stop/start
/// already underway").
pub fn refusal(request: &LifecycleAction, vm: &Observed<'_>) -> Option<String> {
    let strategy = vm.strategy();
    let reason = match request.action.as_str() {
        "start" if vm.start_blocked() && !vm.vmi_deleting() => "VM is already running".into(),
        "start" if matches!(strategy, "Always" | "Once") => {
            format!("{strategy} does not support manual start requests")
        }
        "start" if strategy == "RerunOnFailure" && vm.failed() => {
            "RerunOnFailure does not support starting VM from failed state".into()
        }
        // `Always` and `Once` stop by switching to `Halted`, with or without an instance.
        "stop" if !matches!(strategy, "Always" | "Once") && !vm.has_live_vmi() => {
            "VM is not running".into()
        }
        "restart" if matches!(strategy, "Halted" | "Once") => {
            // NB: "RunStategy" is KubeVirt's spelling.
            format!("RunStategy {strategy} does not support manual restart requests")
        }
        "restart" if vm.gone() => "VM is not running: Halted".into(),
        "suspend" if !vm.running() => "VM is not running".into(),
        "suspend" if vm.paused() => "VMI is already paused".into(),
        "resume" if !vm.running() => "VMI is not running".into(),
        "resume" if !vm.paused() => "VMI is not paused".into(),
        "softReboot" if !vm.running() => "VM is not running".into(),
        "softReboot" if vm.paused() => "VMI is paused".into(),
        "start" | "stop" | "restart" | "suspend" | "resume" | "softReboot" => return None,
        other => format!("unknown action {other:?}"),
    };
    Some(reason)
}

/// The state shown while `action` is in progress.
pub fn phase_of(action: &str) -> Option<LifecyclePhase> {
    Some(match action {
        "start" => LifecyclePhase::Starting,
        "stop" => LifecyclePhase::Stopping,
        "restart" => LifecyclePhase::Restarting,
        "suspend" => LifecyclePhase::Suspending,
        "resume" => LifecyclePhase::Resuming,
        _ => return None,
    })
}

/// Moves `record` (in progress) on by one call: issues the next step, re-issues one a
/// crash lost, or finishes it.
pub fn advance(
    request: &LifecycleAction,
    record: &mut ActionRecord,
    vm: &Observed<'_>,
    name: &str,
    now: &str,
) -> Step {
    let mut step = Step::default();
    if record.outcome != IN_PROGRESS {
        // Finished, by this plugin or by the host (a call KubeVirt refused): it stays so.
        return step;
    }
    let elapsed = millis_between(&record.started_at, now).unwrap_or(0);
    let grace = if request.force {
        0
    } else {
        request.grace_period_seconds
    };
    // The guest's grace first, then KubeVirt's time.
    let timeout = match (record.action.as_str(), grace) {
        ("stop" | "restart", 1..) => ACTION_TIMEOUT_MS + i64::from(grace) * 1000 + FORCE_MARGIN_MS,
        _ => ACTION_TIMEOUT_MS,
    };
    let fallback = !request.force && record.stage.starts_with("force-");
    let success = if fallback {
        "ForcedAfterTimeout"
    } else {
        "Succeeded"
    };
    match (record.action.as_str(), record.stage.as_str()) {
        ("start", "") => start_or_wait(record, &mut step, vm, name, false),
        // A restart whose instance already finished under a strategy that stops through
        // requests: KubeVirt would refuse the stop ("VM is not running"), so it starts.
        ("restart", "")
            if vm.vmi_final() && matches!(vm.strategy(), "Manual" | "RerunOnFailure") =>
        {
            start_or_wait(record, &mut step, vm, name, false);
        }
        ("stop" | "restart", "") => stop(record, &mut step, vm, name, grace, stopping(grace)),
        ("suspend", "") => issue(record, &mut step, vmi_call(name, "pause"), "pause-issued"),
        ("resume", "") => issue(
            record,
            &mut step,
            vmi_call(name, "unpause"),
            "unpause-issued",
        ),
        ("softReboot", "") => issue(
            record,
            &mut step,
            vmi_call(name, "softreboot"),
            "softreboot-issued",
        ),

        // Stopping (stop, and the first half of restart).
        (_, "stop-issued" | "force-stop-issued") if vm.gone() => {
            if record.action == "restart" {
                start_or_wait(record, &mut step, vm, name, fallback);
            } else {
                finish(record, &mut step, success, "the VM is stopped", now);
            }
        }
        (_, "stop-issued") if !vm.stop_took_effect() => {
            stop(record, &mut step, vm, name, grace, "stop-issued");
        }
        (_, "stop-issued") if elapsed >= i64::from(grace) * 1000 + FORCE_MARGIN_MS => {
            let message =
                format!("the guest did not shut down within {grace}s; stopping it by force");
            step.events.push((
                true,
                "ForcedAfterTimeout",
                format!("{} ({}): {message}", record.action, record.request_id),
            ));
            record.message = message;
            stop(record, &mut step, vm, name, 0, "force-stop-issued");
        }
        (_, "force-stop-issued") if !vm.force_took_effect() => {
            stop(record, &mut step, vm, name, 0, "force-stop-issued");
        }

        // Starting (start, and the second half of restart).
        (_, "start-waiting" | "force-start-waiting") if elapsed < timeout => {
            start_or_wait(
                record,
                &mut step,
                vm,
                name,
                record.stage.starts_with("force-"),
            );
        }
        (_, "start-issued" | "force-start-issued") if vm.alive() && vm.running() => {
            finish(record, &mut step, success, "the VM is running", now);
        }
        (_, "start-issued" | "force-start-issued") if vm.failed() => {
            finish(record, &mut step, "Failed", "the VM failed to start", now);
        }
        (_, "start-issued" | "force-start-issued") if !vm.start_took_effect() => {
            // Lost in a crash, or answered 500 (requests pending): asked again once free.
            start_or_wait(
                record,
                &mut step,
                vm,
                name,
                record.stage.starts_with("force-"),
            );
        }

        ("suspend", "pause-issued") if vm.paused() => {
            finish(record, &mut step, "Succeeded", "the VM is paused", now);
        }
        ("resume", "unpause-issued") if !vm.paused() => {
            finish(record, &mut step, "Succeeded", "the VM runs again", now);
        }
        ("suspend" | "resume", _) if !vm.running() => {
            finish(record, &mut step, "Failed", "the VM stopped running", now);
        }
        ("suspend", "pause-issued") if elapsed >= REISSUE_AFTER_MS => {
            issue(record, &mut step, vmi_call(name, "pause"), "pause-issued");
        }
        ("resume", "unpause-issued") if elapsed >= REISSUE_AFTER_MS => {
            issue(
                record,
                &mut step,
                vmi_call(name, "unpause"),
                "unpause-issued",
            );
        }
        // NB: a soft reboot shows nowhere, so once issued it is done (at most once). Only a
        // record still in progress gets here: one KubeVirt refused (409) the host records
        // `Refused`, and that stays.
        ("softReboot", "softreboot-issued") => {
            finish(
                record,
                &mut step,
                "Succeeded",
                "the guest was asked to reboot",
                now,
            );
        }
        _ if elapsed >= timeout => {
            let message = format!(
                "KubeVirt did not finish {} in {}s (stage {})",
                record.action,
                timeout / 1000,
                record.stage
            );
            finish(record, &mut step, "Failed", &message, now);
        }
        // Waiting for KubeVirt.
        _ => {}
    }
    step
}

/// Stops with `grace` and moves to `stage`. On `Halted` with the instance already shutting
/// down, KubeVirt takes only a grace period shorter than the instance's (else 409 "Halted
/// only supports manual stop requests with a shorter graceperiod"): with no shorter one to
/// give, the stop is already under way and nothing is called.
fn stop(
    record: &mut ActionRecord,
    step: &mut Step,
    vm: &Observed<'_>,
    name: &str,
    grace: u32,
    stage: &str,
) {
    let under_way = vm.strategy() == "Halted"
        && vm.has_live_vmi()
        && vm
            .vmi_grace()
            .is_some_and(|current| u64::from(grace) >= current);
    if under_way {
        record.stage = stage.to_owned();
        return;
    }
    let call = vm_call(name, "stop", Some(json!({"gracePeriod": grace})));
    issue(record, step, call, stage);
}

/// Starts, or waits while KubeVirt would not take the start yet: the old instance is still
/// being deleted ("VM is already running"), or other state-change requests are pending
/// (500 "stop/start already underway"). `fallback`: the restart was forced after its grace.
fn start_or_wait(
    record: &mut ActionRecord,
    step: &mut Step,
    vm: &Observed<'_>,
    name: &str,
    fallback: bool,
) {
    let (issued, waiting) = match fallback {
        true => ("force-start-issued", "force-start-waiting"),
        false => ("start-issued", "start-waiting"),
    };
    let why = if vm.vmi_deleting() {
        Some("the previous instance is still shutting down")
    } else if vm.start_would_collide() {
        Some("KubeVirt has a stop/start already underway")
    } else {
        None
    };
    match why {
        Some(why) => {
            record.stage = waiting.to_owned();
            // A forced fallback keeps saying why it was forced.
            if record.message.is_empty() || record.message.starts_with("waiting to start") {
                record.message = format!("waiting to start: {why}");
            }
        }
        None => {
            if record.message.starts_with("waiting to start") {
                record.message.clear();
            }
            issue(record, step, vm_call(name, "start", None), issued);
        }
    }
}

fn stopping(grace: u32) -> &'static str {
    if grace == 0 {
        "force-stop-issued"
    } else {
        "stop-issued"
    }
}

fn issue(record: &mut ActionRecord, step: &mut Step, action: Action, stage: &str) {
    record.stage = stage.to_owned();
    step.actions.push(action);
}

fn finish(record: &mut ActionRecord, step: &mut Step, outcome: &str, message: &str, now: &str) {
    record.outcome = outcome.to_owned();
    record.finished_at = Some(now.to_owned());
    if record.message.is_empty() || outcome != "ForcedAfterTimeout" {
        record.message = message.to_owned();
    }
    let (warning, reason) = match outcome {
        "Succeeded" => (false, "ActionSucceeded"),
        "ForcedAfterTimeout" => (true, "ActionForced"),
        _ => (true, "ActionFailed"),
    };
    step.events.push((
        warning,
        reason,
        format!(
            "{} ({}): {}",
            record.action, record.request_id, record.message
        ),
    ));
}

/// A new record for `request`, started now.
pub fn begin(request: &LifecycleAction, now: &str) -> ActionRecord {
    ActionRecord {
        action: request.action.clone(),
        request_id: request.request_id.clone(),
        started_at: now.to_owned(),
        finished_at: None,
        outcome: IN_PROGRESS.to_owned(),
        message: String::new(),
        stage: String::new(),
    }
}

fn vm_call(name: &str, subresource: &str, body: Option<serde_json::Value>) -> Action {
    Action::Subresource(SubresourceCall {
        plural: "virtualmachines".into(),
        name: name.to_owned(),
        subresource: subresource.into(),
        body: body.map(|b| b.to_string()),
    })
}

fn vmi_call(name: &str, subresource: &str) -> Action {
    Action::Subresource(SubresourceCall {
        plural: "virtualmachineinstances".into(),
        name: name.to_owned(),
        subresource: subresource.into(),
        body: None,
    })
}
