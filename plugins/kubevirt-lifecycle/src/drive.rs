//! One call's part in the lifecycle action: which request to work on (a new one, the one in
//! progress, or none because it is done), its refusal or next step, and what goes into the
//! reported status, events and requeue.

use serde_json::Value;
use wukong_plugin_sdk::{ActionRecord, Call, Effects, LifecycleStatus};

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
///
/// A previous `currentAction` that is no longer `InProgress` was finished by the host (it
/// records `Refused` with KubeVirt's message when KubeVirt answers an action's call with
/// 409 Conflict): it goes into the history first, so its request is done and is never
/// started again, and the `LifecycleActionSucceeded` condition reports it.
pub fn run(
    call: &Call<'_, Config>,
    vm: Option<&Value>,
    vmi: Option<&Value>,
    effects: &mut Effects,
    status: &mut LifecycleStatus,
) {
    let wukong = call.wukong_json();
    let previous = record::previous(&wukong);
    let mut history = previous.history;
    let mut current = None;
    match previous.current {
        Some(record) if record.outcome == IN_PROGRESS => current = Some(record),
        Some(finished) => record::push(&mut history, finished),
        None => {}
    }
    let request = call.wukong.lifecycle_action.as_ref();
    if let (None, Some(request), Some(_)) = (&current, request, vm) {
        let explicit = wukong["spec"]["lifecycleAction"]["requestId"].is_string();
        if !done(&history, &request.request_id, explicit) {
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

/// Whether the request of `request_id` already ran, given the history (newest first; the
/// record in progress, if any, is never begun again either).
/// - An explicit id (`spec.lifecycleAction.requestId`) names one request: it is done when
///   any entry has it, so a GitOps rollback re-applying an older manifest does not run its
///   request again.
/// - An implicit id is the action's content (`restart/force=false/grace=30`, derived by
///   the host), the same for every request of that content: only the newest entry counts,
///   since asking for the same action again later (after another one) is a new request,
///   while the one just done stays done.
///
/// NB: the history keeps [`record::HISTORY_LEN`] entries; an explicit request older than
/// that runs again.
fn done(history: &[ActionRecord], request_id: &str, explicit: bool) -> bool {
    match explicit {
        true => history.iter().any(|r| r.request_id == request_id),
        false => history.first().is_some_and(|r| r.request_id == request_id),
    }
}

fn refuse(record: &mut ActionRecord, reason: &str, now: &str) -> Step {
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use serde_json::{Value, json};
    use wukong_plugin_sdk::native::lifecycle_reconcile;
    use wukong_plugin_sdk::{
        Action, Context, FixtureCluster, LifecycleAction, LifecycleOutcome, Upstream, Volume,
        Wukong,
    };

    use super::*;
    use crate::KubevirtLifecycle;
    use crate::actions::{ACTION_TIMEOUT_MS, FORCE_MARGIN_MS};

    const T0: &str = "2026-01-01T00:00:00Z";

    /// A Wukong asking for `action` (its `spec.lifecycleAction` as written: `requestId`
    /// or none) with `status.lifecycleState`, called at `now`.
    fn context(action: Value, state: Value, now: &str) -> Context {
        let text = |key: &str| action[key].as_str().map(str::to_owned);
        let (name, force) = (text("action").unwrap(), action["force"] == true);
        let grace = action["gracePeriodSeconds"].as_u64().unwrap_or(30) as u32;
        let request_id =
            text("requestId").unwrap_or_else(|| format!("{name}/force={force}/grace={grace}"));
        let json = json!({"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
            "metadata": {"name": "vm1", "namespace": "tenant-a", "uid": "uid-1"},
            "spec": {"cpu": 2, "memory": "4Gi", "lifecycleAction": action},
            "status": {"lifecycleState": state}});
        Context {
            wukong: Wukong {
                name: "vm1".into(),
                namespace: "tenant-a".into(),
                uid: "uid-1".into(),
                generation: 2,
                deleting: false,
                cpu: 2,
                memory: "4Gi".into(),
                run_strategy: "Always".into(),
                disks: vec![],
                networks: vec![],
                lifecycle_action: Some(LifecycleAction {
                    action: name,
                    force,
                    grace_period_seconds: grace,
                    request_id,
                }),
                migration: None,
                labels: vec![("vm.novasphere.dev/wukong".into(), "vm1".into())],
                json: json.to_string(),
            },
            config: "{}".into(),
            backend: "default".into(),
            now: now.into(),
        }
    }

    fn vm(strategy: &str) -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "tenant-a",
                "annotations": {"vm.novasphere.dev/applied-run-strategy": "Always"}},
            "spec": {"runStrategy": strategy}, "status": {"printableStatus": "Running"}})
    }

    fn vmi(deleting: bool) -> Value {
        let mut vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm1", "namespace": "tenant-a"},
            "status": {"phase": "Running", "nodeName": "node-1", "conditions": [{"type": "Ready", "status": "True"}]}});
        if deleting {
            vmi["metadata"]["deletionTimestamp"] = json!(T0);
        }
        vmi
    }

    fn reconcile(ctx: &Context, cluster: &FixtureCluster) -> LifecycleOutcome {
        let root = Volume {
            name: "root".into(),
            claim_name: "vm1-root".into(),
            data_volume: true,
            phase: "Bound".into(),
            bound: true,
            progress: None,
            requested: "20Gi".into(),
            capacity: None,
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: None,
            storage_class: None,
            retain: false,
            boot_order: Some(1),
            bus: "virtio".into(),
            message: String::new(),
        };
        let upstream = Upstream {
            networks: vec![],
            volumes: vec![root],
            lifecycle: None,
        };
        lifecycle_reconcile::<KubevirtLifecycle>(ctx, &upstream, cluster).unwrap()
    }

    fn running() -> FixtureCluster {
        FixtureCluster::new().with(vm("Always")).with(vmi(false))
    }

    fn subresources(outcome: &LifecycleOutcome) -> Vec<String> {
        outcome
            .effects
            .actions
            .iter()
            .map(|a| match a {
                Action::Subresource(call) => format!(
                    "{}/{} {}",
                    call.plural,
                    call.subresource,
                    call.body.as_deref().unwrap_or_default()
                ),
                #[allow(unreachable_patterns, reason = "the contract may grow actions")]
                _ => String::from("other"),
            })
            .collect()
    }

    fn action_condition(outcome: &LifecycleOutcome) -> (&str, &str, &str) {
        let c = outcome
            .effects
            .conditions
            .iter()
            .find(|c| c.condition_type == ACTION_CONDITION)
            .unwrap();
        (&c.status, &c.reason, &c.message)
    }

    fn entry(action: &str, id: &str, outcome: &str) -> Value {
        json!({"action": action, "requestId": id, "startedAt": T0, "finishedAt": T0, "outcome": outcome})
    }

    #[test]
    fn an_action_the_host_recorded_refused_is_done_and_reported_false() {
        // KubeVirt answered the restart with 409: the host finished the record `Refused`.
        let state = json!({"state": "Running", "ready": true, "liveMigratable": false,
            "currentAction": {"action": "restart", "requestId": "r1", "startedAt": T0, "finishedAt": T0,
                "outcome": "Refused", "stage": "stop-issued",
                "message": "refused by KubeVirt: Operation cannot be fulfilled"},
            "history": [entry("stop", "r0", "Succeeded")]});
        let ctx = context(
            json!({"action": "restart", "requestId": "r1"}),
            state,
            "2026-01-01T00:00:10Z",
        );
        let outcome = reconcile(&ctx, &running());
        assert!(outcome.effects.actions.is_empty(), "never started again");
        let status = &outcome.status;
        assert!(status.current_action.is_none());
        let ids: Vec<_> = status
            .history
            .iter()
            .map(|r| (r.request_id.as_str(), r.outcome.as_str()))
            .collect();
        assert_eq!(ids, [("r1", "Refused"), ("r0", "Succeeded")]);
        let (ok, reason, message) = action_condition(&outcome);
        assert_eq!((ok, reason), ("False", "Refused"));
        assert!(
            message.contains("Operation cannot be fulfilled"),
            "{message}"
        );

        // The next call (status as just reported) keeps it done, without a second entry.
        let state = json!({"state": "Running", "ready": true, "liveMigratable": false,
            "history": [entry("restart", "r1", "Refused"), entry("stop", "r0", "Succeeded")]});
        let ctx = context(
            json!({"action": "restart", "requestId": "r1"}),
            state,
            "2026-01-01T00:00:20Z",
        );
        let again = reconcile(&ctx, &running());
        assert!(again.effects.actions.is_empty() && again.status.current_action.is_none());
        assert_eq!(again.status.history.len(), 2);
    }

    #[test]
    fn a_refused_soft_reboot_is_not_reported_succeeded() {
        let refused = json!({"action": "softReboot", "requestId": "r1", "startedAt": T0, "finishedAt": T0,
            "outcome": "Refused", "stage": "softreboot-issued", "message": "refused by KubeVirt: VMI is paused"});
        let state = json!({"state": "Running", "ready": true, "liveMigratable": false, "currentAction": refused});
        let ctx = context(
            json!({"action": "softReboot", "requestId": "r1"}),
            state,
            "2026-01-01T00:00:01Z",
        );
        let outcome = reconcile(&ctx, &running());
        assert!(outcome.effects.actions.is_empty());
        assert_eq!(outcome.status.history[0].outcome, "Refused");
        assert_eq!(
            outcome.status.history[0].message,
            "refused by KubeVirt: VMI is paused"
        );
        assert_eq!(action_condition(&outcome).1, "Refused");
        assert!(
            !outcome
                .effects
                .events
                .iter()
                .any(|e| e.reason == "ActionSucceeded"),
            "{:?}",
            outcome.effects.events
        );

        // The step machine itself leaves a finished record alone.
        let mut record = actions::begin(ctx.wukong.lifecycle_action.as_ref().unwrap(), T0);
        record.stage = "softreboot-issued".into();
        record.outcome = "Refused".into();
        let vm = vm("Always");
        let vmi = vmi(false);
        let observed = Observed {
            vm: &vm,
            vmi: Some(&vmi),
        };
        let request = ctx.wukong.lifecycle_action.clone().unwrap();
        let step = actions::advance(
            &request,
            &mut record,
            &observed,
            "vm1",
            "2026-01-01T00:00:01Z",
        );
        assert!(step.actions.is_empty() && step.events.is_empty());
        assert_eq!(
            (record.outcome.as_str(), record.finished_at),
            ("Refused", None)
        );
    }

    #[test]
    fn a_rollback_to_an_older_explicit_request_does_not_run_it_again() {
        // r1 (restart) ran, then r2 (stop); a GitOps rollback re-applies the r1 manifest.
        let state = json!({"state": "Stopped", "ready": false, "liveMigratable": false,
            "history": [entry("stop", "r2", "Succeeded"), entry("restart", "r1", "Succeeded")]});
        let ctx = context(
            json!({"action": "restart", "requestId": "r1"}),
            state.clone(),
            "2026-01-01T01:00:00Z",
        );
        let outcome = reconcile(&ctx, &running());
        assert!(
            outcome.effects.actions.is_empty(),
            "{:?}",
            subresources(&outcome)
        );
        assert!(outcome.status.current_action.is_none());
        // A new id runs.
        let ctx = context(
            json!({"action": "restart", "requestId": "r3"}),
            state,
            "2026-01-01T01:00:00Z",
        );
        assert_eq!(
            subresources(&reconcile(&ctx, &running())),
            [r#"virtualmachines/stop {"gracePeriod":30}"#]
        );
    }

    #[test]
    fn an_implicit_request_is_done_only_as_the_newest_entry() {
        let stop = "stop/force=false/grace=30";
        // Stopped just now: the same implicit stop is that request, done.
        let state = json!({"state": "Stopped", "ready": false, "liveMigratable": false,
            "history": [entry("stop", stop, "Succeeded")]});
        let ctx = context(json!({"action": "stop"}), state, "2026-01-01T01:00:00Z");
        let outcome = reconcile(&ctx, &running());
        assert!(outcome.effects.actions.is_empty());
        // Stopped, started, and asked to stop again: the same content is a new request.
        let state = json!({"state": "Running", "ready": true, "liveMigratable": false,
            "history": [entry("start", "start/force=false/grace=30", "Succeeded"), entry("stop", stop, "Succeeded")]});
        let ctx = context(json!({"action": "stop"}), state, "2026-01-01T01:00:00Z");
        let outcome = reconcile(&ctx, &running());
        assert_eq!(
            subresources(&outcome),
            [r#"virtualmachines/stop {"gracePeriod":30}"#]
        );
    }

    #[test]
    fn a_grace_period_past_the_action_timeout_falls_back_to_force() {
        let grace: i64 = 400;
        let stopping = |stage: &str| {
            json!({"state": "Stopping", "ready": false, "liveMigratable": false,
                "currentAction": {"action": "stop", "requestId": "r1", "startedAt": T0,
                    "outcome": "InProgress", "stage": stage, "message": ""}})
        };
        let at = |ms: i64| {
            k8s_openapi::jiff::Timestamp::from_millisecond(1_767_225_600_000 + ms)
                .unwrap()
                .to_string()
        };
        assert_eq!(at(0), T0);
        let action = json!({"action": "stop", "requestId": "r1", "gracePeriodSeconds": grace});
        // The guest shuts down (the VMI is being deleted) past the 300 s action timeout.
        let cluster = FixtureCluster::new().with(vm("Halted")).with(vmi(true));
        let ctx = context(
            action.clone(),
            stopping("stop-issued"),
            &at(ACTION_TIMEOUT_MS + 50_000),
        );
        let outcome = reconcile(&ctx, &cluster);
        let current = outcome.status.current_action.as_ref().unwrap();
        assert_eq!(
            (current.outcome.as_str(), current.stage.as_str()),
            ("InProgress", "stop-issued")
        );
        assert!(outcome.effects.actions.is_empty());
        // Past its grace (+ margin): forced, as documented, not Failed.
        let ctx = context(
            action.clone(),
            stopping("stop-issued"),
            &at(grace * 1000 + FORCE_MARGIN_MS),
        );
        let outcome = reconcile(&ctx, &cluster);
        assert_eq!(
            subresources(&outcome),
            [r#"virtualmachines/stop {"gracePeriod":0}"#]
        );
        assert!(
            outcome
                .effects
                .events
                .iter()
                .any(|e| e.warning && e.reason == "ForcedAfterTimeout")
        );
        assert_eq!(
            outcome.status.current_action.as_ref().unwrap().stage,
            "force-stop-issued"
        );
        // KubeVirt's 300 s count from there: a force that never lands fails after them.
        let mut forced = vmi(true);
        forced["spec"]["terminationGracePeriodSeconds"] = json!(0);
        let cluster = FixtureCluster::new().with(vm("Halted")).with(forced);
        let late = grace * 1000 + FORCE_MARGIN_MS + ACTION_TIMEOUT_MS;
        let ctx = context(action.clone(), stopping("force-stop-issued"), &at(late - 1));
        assert!(reconcile(&ctx, &cluster).status.current_action.is_some());
        let ctx = context(action, stopping("force-stop-issued"), &at(late));
        let outcome = reconcile(&ctx, &cluster);
        assert_eq!(outcome.status.history[0].outcome, "Failed");
    }

    /// The record the call reports: the one in progress, else the newest in the history.
    fn record(outcome: &LifecycleOutcome) -> &ActionRecord {
        outcome
            .status
            .current_action
            .as_ref()
            .or(outcome.status.history.first())
            .unwrap()
    }

    fn with_vmi(strategy: &str, vmi: Value) -> FixtureCluster {
        FixtureCluster::new().with(vm(strategy)).with(vmi)
    }

    #[test]
    fn start_on_always_or_once_is_refused_as_kubevirt_words_it_never_called() {
        for strategy in ["Always", "Once"] {
            // No instance (still provisioning, or crash-looping): KubeVirt answers 409.
            let cluster = FixtureCluster::new().with(vm(strategy));
            let ctx = context(
                json!({"action": "start", "requestId": "st1"}),
                json!({}),
                T0,
            );
            let outcome = reconcile(&ctx, &cluster);
            assert!(
                outcome.effects.actions.is_empty(),
                "{strategy}: nothing is called"
            );
            let refused = record(&outcome);
            assert_eq!(
                (refused.outcome.as_str(), refused.message.clone()),
                (
                    "Refused",
                    format!("refused: {strategy} does not support manual start requests")
                )
            );
            assert!(outcome.status.current_action.is_none(), "done, no 409 loop");
            assert_eq!(action_condition(&outcome).1, "Refused");
        }
        // A running instance is "already running", whatever the strategy (checked first).
        let ctx = context(
            json!({"action": "start", "requestId": "st1"}),
            json!({}),
            T0,
        );
        let outcome = reconcile(&ctx, &with_vmi("Manual", vmi(false)));
        assert_eq!(record(&outcome).message, "refused: VM is already running");
    }

    #[test]
    fn a_stop_on_rerun_on_failure_keeps_the_strategy_and_is_not_asked_twice() {
        let ctx = context(json!({"action": "stop", "requestId": "s1"}), json!({}), T0);
        let outcome = reconcile(&ctx, &with_vmi("RerunOnFailure", vmi(false)));
        assert_eq!(
            subresources(&outcome),
            [r#"virtualmachines/stop {"gracePeriod":30}"#]
        );
        // The VM was re-applied with its live strategy, not `Halted`.
        let vm_applied: Value = serde_json::from_str(&outcome.effects.apply[0]).unwrap();
        assert_eq!(vm_applied["spec"]["runStrategy"], "RerunOnFailure");
        // KubeVirt queued the stop request (the strategy stays): that is the stop taken.
        let state = json!({"currentAction": {"action": "stop", "requestId": "s1", "startedAt": T0,
            "outcome": "InProgress", "stage": "stop-issued", "message": ""}});
        let mut queued = vm("RerunOnFailure");
        queued["status"]["stateChangeRequests"] = json!([{"action": "Stop", "uid": "vmi-uid"}]);
        let ctx = context(
            json!({"action": "stop", "requestId": "s1"}),
            state,
            "2026-01-01T00:00:01Z",
        );
        let outcome = reconcile(&ctx, &FixtureCluster::new().with(queued).with(vmi(false)));
        assert!(
            outcome.effects.actions.is_empty(),
            "{:?}",
            subresources(&outcome)
        );
        assert_eq!(record(&outcome).stage, "stop-issued");
    }

    #[test]
    fn a_stop_on_halted_sends_only_a_shorter_grace_than_the_instance_has() {
        // Halted with its instance shutting down with 30 s: asking 30 s again would be 409.
        let mut stopping = vmi(false);
        stopping["spec"]["terminationGracePeriodSeconds"] = json!(30);
        let ctx = context(
            json!({"action": "stop", "requestId": "s1", "gracePeriodSeconds": 30}),
            json!({}),
            T0,
        );
        let outcome = reconcile(&ctx, &with_vmi("Halted", stopping.clone()));
        assert!(
            outcome.effects.actions.is_empty(),
            "{:?}",
            subresources(&outcome)
        );
        let current = outcome.status.current_action.as_ref().unwrap();
        assert_eq!(
            (current.outcome.as_str(), current.stage.as_str()),
            ("InProgress", "stop-issued")
        );
        // A shorter one (here, force) is what KubeVirt takes.
        let ctx = context(
            json!({"action": "stop", "requestId": "s2", "force": true}),
            json!({}),
            T0,
        );
        let outcome = reconcile(&ctx, &with_vmi("Halted", stopping));
        assert_eq!(
            subresources(&outcome),
            [r#"virtualmachines/stop {"gracePeriod":0}"#]
        );
        // Halted with no instance: "VM is not running"; Once with none switches to Halted.
        let ctx = context(json!({"action": "stop", "requestId": "s3"}), json!({}), T0);
        let outcome = reconcile(&ctx, &FixtureCluster::new().with(vm("Halted")));
        assert_eq!(record(&outcome).message, "refused: VM is not running");
        let outcome = reconcile(&ctx, &FixtureCluster::new().with(vm("Once")));
        assert_eq!(
            subresources(&outcome),
            [r#"virtualmachines/stop {"gracePeriod":30}"#]
        );
    }

    #[test]
    fn a_start_waits_while_kubevirt_has_a_stop_or_start_underway() {
        let mut busy = vm("Manual");
        busy["status"]["stateChangeRequests"] = json!([{"action": "Stop", "uid": "old"}]);
        let ctx = context(
            json!({"action": "start", "requestId": "st1"}),
            json!({}),
            T0,
        );
        let outcome = reconcile(&ctx, &FixtureCluster::new().with(busy));
        assert!(
            outcome.effects.actions.is_empty(),
            "KubeVirt would answer 500"
        );
        let current = outcome.status.current_action.as_ref().unwrap();
        assert_eq!(
            (current.outcome.as_str(), current.stage.as_str()),
            ("InProgress", "start-waiting")
        );
        assert!(
            current.message.contains("already underway"),
            "{}",
            current.message
        );
        // Cleared: the start goes.
        let state = json!({"currentAction": {"action": "start", "requestId": "st1", "startedAt": T0,
            "outcome": "InProgress", "stage": "start-waiting", "message": current.message}});
        let ctx = context(
            json!({"action": "start", "requestId": "st1"}),
            state.clone(),
            "2026-01-01T00:00:01Z",
        );
        let outcome = reconcile(&ctx, &FixtureCluster::new().with(vm("Manual")));
        assert_eq!(subresources(&outcome), ["virtualmachines/start "]);
        assert!(record(&outcome).message.is_empty());
        // A 500 that came back anyway left it at start-issued: asked again once free.
        let state = json!({"currentAction": {"action": "start", "requestId": "st1", "startedAt": T0,
            "outcome": "InProgress", "stage": "start-issued", "message": ""}});
        let ctx = context(
            json!({"action": "start", "requestId": "st1"}),
            state,
            "2026-01-01T00:00:02Z",
        );
        let outcome = reconcile(&ctx, &FixtureCluster::new().with(vm("Manual")));
        assert_eq!(subresources(&outcome), ["virtualmachines/start "]);
        assert_eq!(record(&outcome).outcome, "InProgress", "not a failure");
    }

    #[test]
    fn restart_and_vmi_actions_are_refused_where_kubevirt_refuses_them() {
        let refused = |action: Value, cluster: &FixtureCluster| {
            let ctx = context(action, json!({}), T0);
            let outcome = reconcile(&ctx, cluster);
            assert!(outcome.effects.actions.is_empty());
            let r = record(&outcome);
            assert_eq!(r.outcome, "Refused");
            r.message.clone()
        };
        let once = with_vmi("Once", vmi(false));
        assert_eq!(
            refused(json!({"action": "restart", "requestId": "r1"}), &once),
            "refused: RunStategy Once does not support manual restart requests"
        );
        let mut scheduling = vmi(false);
        scheduling["status"]["phase"] = json!("Scheduling");
        let starting = with_vmi("Always", scheduling);
        for (action, words) in [
            ("suspend", "VM is not running"),
            ("softReboot", "VM is not running"),
            ("resume", "VMI is not running"),
        ] {
            assert_eq!(
                refused(json!({"action": action, "requestId": "x"}), &starting),
                format!("refused: {words}")
            );
        }
        assert_eq!(
            refused(json!({"action": "resume", "requestId": "u1"}), &running()),
            "refused: VMI is not paused"
        );
    }

    #[test]
    fn a_restart_of_a_finished_manual_instance_goes_straight_to_start() {
        let mut done = vmi(false);
        done["status"]["phase"] = json!("Succeeded");
        let ctx = context(
            json!({"action": "restart", "requestId": "r1"}),
            json!({}),
            T0,
        );
        let outcome = reconcile(&ctx, &with_vmi("Manual", done));
        assert_eq!(subresources(&outcome), ["virtualmachines/start "]);
        assert_eq!(record(&outcome).stage, "start-issued");
    }
}
