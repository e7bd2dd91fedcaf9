//! Building the Wukong's status from a pipeline run: conditions (keeping transition
//! times of unchanged ones), phase, what each step reported.

use crate::api::{
    LifecycleState, MigrationStatus, NetworkStatus, VolumeStatus, WukongCondition, WukongPhase,
    WukongStatus,
};
use crate::plugin::types::{Condition, LifecyclePhase, StepKind};

use super::pipeline::{PipelineResult, StepFailure};

pub const READY: &str = "Ready";
pub const NETWORKS_CONFIGURED: &str = "NetworksConfigured";
pub const VOLUMES_BOUND: &str = "VolumesBound";
pub const STEP_FAILED: &str = "StepFailed";
/// The reason (of `StepFailed`, of an event) for an API call the operator's role refuses.
pub const FORBIDDEN: &str = "Forbidden";
/// How a refused action's `StepFailed` message starts (a refused step's names its step).
const ACTION_PREFIX: &str = "action ";

/// The new status; `now` is RFC 3339. Status never forgets: a step that did not report
/// this time (it failed, or an earlier one did) keeps its part of `previous` — its volumes
/// or networks by name, the lifecycle record with its request history, the migration
/// record — and, after a failure, conditions nobody set this time stay as they were.
pub fn build(
    previous: Option<&WukongStatus>,
    result: &PipelineResult,
    generation: Option<i64>,
    now: &str,
) -> WukongStatus {
    let empty = WukongStatus::default();
    let previous = previous.unwrap_or(&empty);
    let mut conditions: Vec<Condition> = Vec::new();
    if result.failure.is_some() {
        conditions.extend(
            previous
                .conditions
                .iter()
                .filter(|c| c.condition_type != STEP_FAILED)
                .map(|c| Condition {
                    condition_type: c.condition_type.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                }),
        );
    }
    let mut set = |c: Condition| match conditions
        .iter_mut()
        .find(|e| e.condition_type == c.condition_type)
    {
        Some(existing) => *existing = c,
        None => conditions.push(c),
    };
    if result.skipped.contains(&StepKind::Network) {
        set(condition(
            NETWORKS_CONFIGURED,
            true,
            "NoSecondaryNetworks",
            "the VM uses no networks Wukong configures",
        ));
    }
    if result.skipped.contains(&StepKind::Storage) {
        set(condition(
            VOLUMES_BOUND,
            true,
            "NoDisks",
            "the VM has no disks",
        ));
    }
    for c in &result.conditions {
        set(c.clone());
    }
    match &result.failure {
        Some(f) => {
            set(condition(
                STEP_FAILED,
                true,
                &reason_of(&f.reason),
                &format!(
                    "{} step, plugin {}: {}",
                    f.step.as_str(),
                    f.plugin,
                    f.message
                ),
            ));
            set(condition(
                READY,
                false,
                "StepFailed",
                &format!("the {} step failed", f.step.as_str()),
            ));
        }
        None => set(condition(STEP_FAILED, false, "AllStepsSucceeded", "")),
    }
    let networks = match result.reported(StepKind::Network) {
        true => result
            .upstream
            .networks
            .iter()
            .map(NetworkStatus::from)
            .collect(),
        false => by_name(
            result
                .upstream
                .networks
                .iter()
                .map(NetworkStatus::from)
                .collect(),
            &previous.networks,
            |n| &n.name,
        ),
    };
    let volumes = match result.reported(StepKind::Storage) {
        true => result
            .upstream
            .volumes
            .iter()
            .map(VolumeStatus::from)
            .collect(),
        false => by_name(
            result
                .upstream
                .volumes
                .iter()
                .map(VolumeStatus::from)
                .collect(),
            &previous.volumes,
            |v| &v.name,
        ),
    };
    let lifecycle = result.upstream.lifecycle.as_ref();
    let (node_name, vm_name, ip_addresses, lifecycle_state) = match lifecycle {
        Some(l) => (
            l.node_name.clone(),
            Some(l.vm_name.clone()).filter(|n| !n.is_empty()),
            l.ip_addresses.clone(),
            Some(LifecycleState::from(l)),
        ),
        None if !result.reported(StepKind::Lifecycle) => (
            previous.node_name.clone(),
            previous.vm_name.clone(),
            previous.ip_addresses.clone(),
            previous.lifecycle_state.clone(),
        ),
        None => (None, None, Vec::new(), None),
    };
    let migration_status = match result.reported(StepKind::Migration) {
        true => result.migration.as_ref().map(MigrationStatus::from),
        false => previous.migration_status.clone(),
    };
    let mut plugins = result.plugins.clone();
    for record in &previous.plugins {
        let step_reported = StepKind::ALL
            .iter()
            .any(|s| s.as_str() == record.step && result.reported(*s));
        let replaced = plugins
            .iter()
            .any(|p| p.step == record.step && p.backend == record.backend);
        if !step_reported && !replaced {
            plugins.push(record.clone());
        }
    }
    WukongStatus {
        phase: Some(phase(result)),
        observed_generation: generation,
        conditions: conditions
            .iter()
            .map(|c| with_transition_time(c, &previous.conditions, generation, now))
            .collect(),
        node_name,
        vm_name,
        ip_addresses,
        networks,
        volumes,
        lifecycle_state,
        migration_status,
        plugins,
    }
}

/// This run's items, then the previous ones it did not report (by name).
fn by_name<T: Clone>(mut reported: Vec<T>, previous: &[T], name: impl Fn(&T) -> &String) -> Vec<T> {
    for item in previous {
        if !reported.iter().any(|r| name(r) == name(item)) {
            reported.push(item.clone());
        }
    }
    reported
}

/// The reason of the Warning event for a failed step: `NameTaken` says what it is; any
/// other failure is a `StepFailed`.
pub fn failure_event_reason(failure: &StepFailure) -> &'static str {
    match failure.reason.as_str() {
        "name-taken" => "NameTaken",
        _ => "StepFailed",
    }
}

/// Records KubeVirt's refusal (409) of a lifecycle call in the action in progress.
///
/// A refusal of the request's *first* call finishes it as `Refused` with KubeVirt's
/// `message`: the request cannot be done, and the plugin must not ask again. A refusal of a
/// *later* call (`previous` already shows the request issued: a stage set) only goes into
/// the record's message and the request stays in progress: the cluster moved on between
/// the plugin's read and the call (a guest that shut down just before its forced stop, a
/// pause visible only after its re-issue, a start re-issued after a crash), and the
/// plugin's next call judges from what the cluster shows. Returns whether the status
/// changed.
pub fn refuse_current_action(
    previous: Option<&WukongStatus>,
    status: &mut WukongStatus,
    message: &str,
    now: &str,
) -> bool {
    let Some(current) = status
        .lifecycle_state
        .as_mut()
        .and_then(|l| l.current_action.as_mut())
        .filter(|c| c.outcome == "InProgress")
    else {
        return false;
    };
    let issued_before = previous
        .and_then(|p| p.lifecycle_state.as_ref())
        .and_then(|l| l.current_action.as_ref())
        .is_some_and(|p| {
            p.request_id == current.request_id && p.outcome == "InProgress" && !p.stage.is_empty()
        });
    if issued_before {
        current.message = format!("KubeVirt refused a later call ({message}); judging again");
    } else {
        current.outcome = "Refused".into();
        current.finished_at = Some(now.to_owned());
        current.message = format!("refused by KubeVirt: {message}");
    }
    true
}

/// What the apiserver refused (HTTP 403) in `what`, worded for whoever grants the
/// operator's role: `forbidden: cannot create datavolumes.cdi.kubevirt.io in namespace ns
/// (apply DataVolume vm1-root; grant it in the ClusterRole)`. `None` for any other error.
pub fn forbidden(error: &kube::Error, what: &str, namespace: &str) -> Option<String> {
    let kube::Error::Api(status) = error else {
        return None;
    };
    // An admission webhook's denial comes back as 403 too; it is no missing permission.
    if status.code != 403 || status.message.contains("denied the request") {
        return None;
    }
    if let Some(message) = rbac_denial(&status.message, what) {
        return Some(message);
    }
    // NB: an apply that would create the object is checked for `create` after the `patch`
    // went through, and that denial carries no words, only the resource in its details.
    let resource = status.details.as_ref().map(|d| match d.group.as_str() {
        "" => d.kind.clone(),
        group => format!("{}.{group}", d.kind),
    });
    Some(match resource {
        Some(resource) if what.starts_with("apply ") => format!(
            "forbidden: cannot create {resource} in namespace {namespace} ({what}; grant it in the ClusterRole)"
        ),
        _ => format!(
            "forbidden: {what}: {} (grant it in the ClusterRole)",
            status.message
        ),
    })
}

/// RBAC words a denial `... cannot VERB resource "RESOURCE" in API group "GROUP" in the
/// namespace "NS"` (or `at the cluster scope`).
fn rbac_denial(apiserver: &str, what: &str) -> Option<String> {
    let (_, denial) = apiserver.split_once(" cannot ")?;
    let verb = denial.split_whitespace().next().unwrap_or_default();
    let quoted = |label: &str| {
        denial
            .split_once(label)
            .and_then(|(_, rest)| rest.split('"').nth(1))
    };
    let resource = quoted("resource ").unwrap_or_default();
    let resource = match quoted("API group ") {
        Some(group) if !group.is_empty() => format!("{resource}.{group}"),
        _ => resource.to_owned(),
    };
    let scope = quoted("namespace ").map_or_else(
        || "at cluster scope".to_owned(),
        |ns| format!("in namespace {ns}"),
    );
    Some(format!(
        "forbidden: cannot {verb} {resource} {scope} ({what}; grant it in the ClusterRole)"
    ))
}

/// The status after `action` was refused by the apiserver: `StepFailed` says so (the rest,
/// the action's record included, stays as written before the call).
pub fn action_forbidden(mut status: WukongStatus, message: &str, now: &str) -> WukongStatus {
    set_step_failed(
        &mut status,
        FORBIDDEN,
        &format!("{ACTION_PREFIX}{message}"),
        now,
    );
    status
}

/// The reason of `StepFailed` while a deletion waits on a step's finalize.
pub const FINALIZE_FAILED: &str = "FinalizeFailed";

/// The status of a Wukong whose deletion waits on a failing finalize: `Terminating`, and
/// `StepFailed` saying which step, which plugin, why and the way out (`message`).
pub fn finalize_failed(mut status: WukongStatus, message: &str, now: &str) -> WukongStatus {
    status.phase = Some(WukongPhase::Terminating);
    set_step_failed(&mut status, FINALIZE_FAILED, message, now);
    status
}

/// Sets `StepFailed=True` with `reason` and `message`, keeping its transition time while it
/// was already True.
fn set_step_failed(status: &mut WukongStatus, reason: &str, message: &str, now: &str) {
    let failed = WukongCondition {
        condition_type: STEP_FAILED.into(),
        status: "True".into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Some(now.to_owned()),
        observed_generation: status.observed_generation,
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.condition_type == STEP_FAILED)
    {
        Some(existing) => {
            let since = if existing.status == failed.status {
                existing.last_transition_time.clone()
            } else {
                failed.last_transition_time.clone()
            };
            *existing = WukongCondition {
                last_transition_time: since,
                ..failed
            };
        }
        None => status.conditions.push(failed),
    }
}

/// Keeps a refused action's `StepFailed` from `previous` while the plugin asks for the action
/// again (the steps themselves succeeded), so the report does not flap between the status
/// written before the call and the one after. Returns whether it kept one.
pub fn keep_action_forbidden(previous: Option<&WukongStatus>, status: &mut WukongStatus) -> bool {
    let Some(kept) = previous.and_then(|p| {
        p.conditions.iter().find(|c| {
            c.condition_type == STEP_FAILED
                && c.status == "True"
                && c.reason == FORBIDDEN
                && c.message.starts_with(ACTION_PREFIX)
        })
    }) else {
        return false;
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.condition_type == STEP_FAILED)
    {
        Some(existing) if existing.status == "False" => *existing = kept.clone(),
        Some(_) => return false,
        None => status.conditions.push(kept.clone()),
    }
    true
}

fn condition(condition_type: &str, ok: bool, reason: &str, message: &str) -> Condition {
    Condition {
        condition_type: condition_type.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
    }
}

/// `deadline` → `Deadline`, `unknown-backend` → `UnknownBackend`: condition reasons are CamelCase.
fn reason_of(label: &str) -> String {
    label
        .split('-')
        .map(|w| w[..1.min(w.len())].to_uppercase() + &w[1.min(w.len())..])
        .collect()
}

fn with_transition_time(
    c: &Condition,
    previous: &[WukongCondition],
    generation: Option<i64>,
    now: &str,
) -> WukongCondition {
    let unchanged = previous
        .iter()
        .find(|p| p.condition_type == c.condition_type && p.status == c.status);
    WukongCondition {
        condition_type: c.condition_type.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_transition_time: unchanged
            .and_then(|p| p.last_transition_time.clone())
            .or_else(|| Some(now.to_owned())),
        observed_generation: generation,
    }
}

fn phase(result: &PipelineResult) -> WukongPhase {
    if result.failure.is_some() {
        return WukongPhase::Failed;
    }
    if result.upstream.volumes.iter().any(|v| !v.bound) {
        return WukongPhase::Provisioning;
    }
    match result.upstream.lifecycle.as_ref().map(|l| l.phase) {
        None | Some(LifecyclePhase::Pending | LifecyclePhase::Unknown) => WukongPhase::Pending,
        Some(LifecyclePhase::Starting | LifecyclePhase::Resuming) => WukongPhase::Starting,
        Some(LifecyclePhase::Running) => WukongPhase::Running,
        Some(LifecyclePhase::Stopping) => WukongPhase::Stopping,
        Some(LifecyclePhase::Stopped) => WukongPhase::Stopped,
        Some(LifecyclePhase::Restarting) => WukongPhase::Restarting,
        Some(LifecyclePhase::Suspending | LifecyclePhase::Suspended) => WukongPhase::Suspended,
        Some(LifecyclePhase::Migrating) => WukongPhase::Migrating,
        Some(LifecyclePhase::Failed) => WukongPhase::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(status: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(status).expect("status")))
    }

    #[test]
    fn a_denial_names_verb_resource_and_scope() {
        let denied = api_error(serde_json::json!({"code": 403, "message":
            "virtualmachines.subresources.kubevirt.io \"vm1\" is forbidden: User \"system:serviceaccount:wukong-system:wukong\" cannot update resource \"virtualmachines/start\" in API group \"subresources.kubevirt.io\" in the namespace \"vms\""}));
        assert_eq!(
            forbidden(&denied, "virtualmachines/start vm1", "vms").as_deref(),
            Some(
                "forbidden: cannot update virtualmachines/start.subresources.kubevirt.io in namespace vms (virtualmachines/start vm1; grant it in the ClusterRole)"
            )
        );
        let cluster_scoped = api_error(serde_json::json!({"code": 403, "message":
            "nodes \"n1\" is forbidden: User \"x\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"}));
        assert_eq!(
            forbidden(&cluster_scoped, "read", "vms").as_deref(),
            Some(
                "forbidden: cannot get nodes at cluster scope (read; grant it in the ClusterRole)"
            )
        );
        // An apply's create check: no words, the resource in the details.
        let create = api_error(serde_json::json!({"code": 403,
            "message": "datavolumes.cdi.kubevirt.io \"vm1-root\" is forbidden: ",
            "details": {"name": "vm1-root", "group": "cdi.kubevirt.io", "kind": "datavolumes"}}));
        assert_eq!(
            forbidden(&create, "apply DataVolume vm1-root", "vms").as_deref(),
            Some(
                "forbidden: cannot create datavolumes.cdi.kubevirt.io in namespace vms (apply DataVolume vm1-root; grant it in the ClusterRole)"
            )
        );
        let conflict = api_error(serde_json::json!({"code": 409, "message": "conflict"}));
        assert_eq!(forbidden(&conflict, "apply", "vms"), None);
    }

    #[test]
    fn a_refused_action_stays_reported_while_it_is_asked_again() {
        let mut previous = WukongStatus::default();
        previous.conditions.push(WukongCondition {
            condition_type: STEP_FAILED.into(),
            status: "False".into(),
            reason: "AllStepsSucceeded".into(),
            message: String::new(),
            last_transition_time: Some("2026-01-01T00:00:00Z".into()),
            observed_generation: Some(1),
        });
        let refused = action_forbidden(previous.clone(), "forbidden: x", "2026-02-02T00:00:00Z");
        let reported = refused
            .conditions
            .iter()
            .find(|c| c.condition_type == STEP_FAILED)
            .expect("StepFailed");
        assert_eq!(
            (reported.status.as_str(), reported.reason.as_str()),
            ("True", FORBIDDEN)
        );
        assert_eq!(
            reported.last_transition_time.as_deref(),
            Some("2026-02-02T00:00:00Z")
        );
        // The next run's fresh status (steps fine) keeps it; a step's own failure wins.
        let mut next = previous.clone();
        assert!(keep_action_forbidden(Some(&refused), &mut next));
        assert_eq!(next.conditions, refused.conditions);
        let mut failed = refused.clone();
        failed.conditions[0].reason = "Deadline".into();
        failed.conditions[0].message = "storage step: deadline".into();
        let mut next = failed.clone();
        assert!(!keep_action_forbidden(Some(&refused), &mut next));
        assert!(!keep_action_forbidden(
            Some(&previous),
            &mut previous.clone()
        ));
    }

    fn record(request_id: &str, outcome: &str) -> crate::api::ActionRecord {
        crate::api::ActionRecord {
            action: "restart".into(),
            request_id: request_id.into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            outcome: outcome.into(),
            message: String::new(),
            stage: "stop-issued".into(),
        }
    }

    fn running(
        current_action: Option<crate::api::ActionRecord>,
        history: Vec<crate::api::ActionRecord>,
    ) -> LifecycleState {
        LifecycleState {
            state: "Running".into(),
            printable_status: None,
            vmi_phase: None,
            ready: true,
            live_migratable: false,
            last_action: None,
            last_action_time: None,
            current_action,
            history,
            message: String::new(),
        }
    }

    fn volume(name: &str) -> VolumeStatus {
        VolumeStatus {
            name: name.into(),
            claim_name: format!("vm1-{name}-x"),
            data_volume: false,
            phase: "Bound".into(),
            bound: true,
            progress: None,
            requested: "1Gi".into(),
            capacity: None,
            access_modes: Vec::new(),
            volume_mode: None,
            storage_class: None,
            retain: false,
            message: String::new(),
        }
    }

    #[test]
    fn a_step_that_did_not_report_keeps_its_part_and_the_failure_shows() {
        let previous = WukongStatus {
            observed_generation: Some(3),
            node_name: Some("node-1".into()),
            volumes: vec![volume("root"), volume("data")],
            lifecycle_state: Some(running(None, vec![record("r1", "Succeeded")])),
            conditions: vec![WukongCondition {
                condition_type: "DisksResized".into(),
                status: "True".into(),
                reason: "AsRequested".into(),
                message: String::new(),
                last_transition_time: Some("2026-01-01T00:00:00Z".into()),
                observed_generation: Some(3),
            }],
            ..WukongStatus::default()
        };
        // The storage step failed (its second backend): lifecycle and migration never ran.
        let mut result = PipelineResult {
            failure: Some(StepFailure {
                step: StepKind::Storage,
                plugin: "nope".into(),
                reason: "unknown-backend".into(),
                message: "storage backend \"nope\" is not configured".into(),
                transient: false,
            }),
            ..PipelineResult::default()
        };
        result.skipped.push(StepKind::Network);
        result
            .upstream
            .volumes
            .push(crate::plugin::types::Volume::from(&volume("root")));
        let status = build(Some(&previous), &result, Some(4), "2026-02-02T00:00:00Z");
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.phase, Some(WukongPhase::Failed));
        let failed = status
            .conditions
            .iter()
            .find(|c| c.condition_type == STEP_FAILED)
            .expect("StepFailed");
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("True", "UnknownBackend")
        );
        assert_eq!(failed.observed_generation, Some(4));
        assert_eq!(
            status.lifecycle_state, previous.lifecycle_state,
            "the request history stays"
        );
        assert_eq!(status.node_name.as_deref(), Some("node-1"));
        let names: Vec<&str> = status.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["root", "data"], "the unreported volume stays");
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.condition_type == "DisksResized"),
            "conditions nobody set stay"
        );

        // Once every step reports, the parts are this run's alone.
        let fine = PipelineResult {
            completed: StepKind::ALL.to_vec(),
            ..PipelineResult::default()
        };
        let status = build(Some(&previous), &fine, Some(5), "2026-02-02T00:00:00Z");
        assert!(status.volumes.is_empty() && status.lifecycle_state.is_none());
        assert!(
            !status
                .conditions
                .iter()
                .any(|c| c.condition_type == "DisksResized")
        );
    }

    #[test]
    fn a_refusal_finishes_only_the_request_in_progress() {
        let mut status = WukongStatus {
            lifecycle_state: Some(running(Some(record("b1", "InProgress")), Vec::new())),
            ..WukongStatus::default()
        };
        assert!(refuse_current_action(
            None,
            &mut status,
            "VMI is paused",
            "2026-02-02T00:00:00Z"
        ));
        let current = status
            .lifecycle_state
            .as_ref()
            .and_then(|l| l.current_action.clone())
            .expect("record");
        assert_eq!(current.outcome, "Refused");
        assert!(current.message.contains("VMI is paused"));
        assert!(
            !refuse_current_action(None, &mut status, "again", "2026-02-02T00:00:01Z"),
            "already finished"
        );
    }

    #[test]
    fn a_refused_later_call_leaves_the_request_to_the_plugin() {
        let mut issued = record("b1", "InProgress");
        issued.stage = "stop-issued".into();
        let previous = WukongStatus {
            lifecycle_state: Some(running(Some(issued.clone()), Vec::new())),
            ..WukongStatus::default()
        };
        issued.stage = "force-stop-issued".into();
        let mut status = WukongStatus {
            lifecycle_state: Some(running(Some(issued), Vec::new())),
            ..WukongStatus::default()
        };
        assert!(refuse_current_action(
            Some(&previous),
            &mut status,
            "VM is not running",
            "2026-02-02T00:00:00Z"
        ));
        let current = status
            .lifecycle_state
            .and_then(|l| l.current_action)
            .expect("record");
        assert_eq!(
            current.outcome, "InProgress",
            "the guest stopped just before the force"
        );
        assert_eq!(current.stage, "force-stop-issued");
        assert!(current.message.contains("VM is not running"));
    }

    #[test]
    fn reasons_are_camel_case() {
        assert_eq!(reason_of("unknown-backend"), "UnknownBackend");
        assert_eq!(reason_of("deadline"), "Deadline");
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let previous = vec![WukongCondition {
            condition_type: READY.into(),
            status: "True".into(),
            reason: "Running".into(),
            message: String::new(),
            last_transition_time: Some("2026-01-01T00:00:00Z".into()),
            observed_generation: Some(1),
        }];
        let same = with_transition_time(
            &condition(READY, true, "Running", ""),
            &previous,
            Some(2),
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(
            same.last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        let flipped = with_transition_time(
            &condition(READY, false, "Stopped", ""),
            &previous,
            Some(2),
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(
            flipped.last_transition_time.as_deref(),
            Some("2026-02-02T00:00:00Z")
        );
    }
}
