//! Building the Wukong's status from a pipeline run: conditions (keeping transition
//! times of unchanged ones), phase, what each step reported.

use crate::api::{
    LifecycleState, MigrationStatus, NetworkStatus, VolumeStatus, WukongCondition, WukongPhase,
    WukongStatus,
};
use crate::config::step_name;
use crate::plugin::types::{Condition, LifecyclePhase};

use super::pipeline::PipelineResult;

pub const READY: &str = "Ready";
pub const NETWORKS_CONFIGURED: &str = "NetworksConfigured";
pub const VOLUMES_BOUND: &str = "VolumesBound";
pub const STEP_FAILED: &str = "StepFailed";

/// The new status; `now` is RFC 3339.
pub fn build(
    previous: Option<&WukongStatus>,
    result: &PipelineResult,
    generation: Option<i64>,
    now: &str,
) -> WukongStatus {
    let mut conditions: Vec<Condition> = Vec::new();
    let mut set = |c: Condition| match conditions
        .iter_mut()
        .find(|e| e.condition_type == c.condition_type)
    {
        Some(existing) => *existing = c,
        None => conditions.push(c),
    };
    if !result.network_step_ran && result.failure.is_none() {
        set(condition(
            NETWORKS_CONFIGURED,
            true,
            "NoSecondaryNetworks",
            "the VM uses no networks Wukong configures",
        ));
    }
    if !result.storage_step_ran && result.failure.is_none() {
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
                    step_name(f.step),
                    f.plugin,
                    f.message
                ),
            ));
            set(condition(
                READY,
                false,
                "StepFailed",
                &format!("the {} step failed", step_name(f.step)),
            ));
        }
        None => set(condition(STEP_FAILED, false, "AllStepsSucceeded", "")),
    }
    let lifecycle = result.upstream.lifecycle.as_ref();
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    WukongStatus {
        phase: Some(phase(result)),
        observed_generation: generation,
        conditions: conditions
            .iter()
            .map(|c| with_transition_time(c, previous_conditions, generation, now))
            .collect(),
        node_name: lifecycle.and_then(|l| l.node_name.clone()),
        vm_name: lifecycle
            .map(|l| l.vm_name.clone())
            .filter(|n| !n.is_empty()),
        ip_addresses: lifecycle
            .map(|l| l.ip_addresses.clone())
            .unwrap_or_default(),
        networks: result
            .upstream
            .networks
            .iter()
            .map(NetworkStatus::from)
            .collect(),
        volumes: result
            .upstream
            .volumes
            .iter()
            .map(VolumeStatus::from)
            .collect(),
        lifecycle_state: lifecycle.map(LifecycleState::from),
        migration_status: result.migration.as_ref().map(MigrationStatus::from),
        plugins: result.plugins.clone(),
    }
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
