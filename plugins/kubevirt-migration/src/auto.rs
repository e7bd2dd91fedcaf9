//! `spec.migrationPolicy` (Wukong's own evacuation policy, not KubeVirt's MigrationPolicy):
//! watch the VMI's node and move the VM when a trigger holds.
//!
//! - `nodeFailure`: NotReady for `gracePeriodSeconds` (default 60). A live migration needs
//!   the source's virt-handler, so the VMI is deleted instead (grace 0) and KubeVirt
//!   restarts the VM on a Ready node. No cool-down: a VM on a dead node is down anyway.
//! - `nodeMaintenance`: cordoned or a maintenance taint → live-migrate.
//! - `resourcePressure`: the node's load (see [`crate::nodes`]) above `threshold` →
//!   live-migrate to the least loaded matching node below it.
//!
//! A live move is not started again within the cool-down after the last one ended.

use serde_json::Value;
use wukong_plugin_sdk::objects::condition_status;
use wukong_plugin_sdk::{Action, Call, Effects, MigrationStatus, ObjectRef, StepError};

use crate::objects::{self, Start};
use crate::record::{last_move, new_record, seconds_since, status_text};
use crate::{Config, KUBEVIRT, VMI, admission, nodes};

/// The condition this module sets while the policy is enabled.
pub const AUTO_MIGRATION: &str = "AutoMigration";
const DEFAULT_GRACE_SECONDS: i64 = 60;

/// The policy as the user wrote it, when enabled.
pub fn policy<C>(call: &Call<'_, C>) -> Option<Value> {
    let policy = call.wukong_json()["spec"]["migrationPolicy"].take();
    (policy["enabled"] == true).then_some(policy)
}

fn trigger<'p>(policy: &'p Value, kind: &str) -> Option<&'p Value> {
    policy["triggerConditions"]
        .as_array()?
        .iter()
        .find(|t| t["type"] == kind)
}

fn node(call: &Call<'_, Config>, name: &str) -> Result<Option<Value>, StepError> {
    call.get_as(&ObjectRef {
        api_version: "v1".into(),
        kind: "Node".into(),
        namespace: None,
        name: name.into(),
    })
}

/// Looks at the VM's node and starts what the policy asks; returns the record to keep.
pub fn evaluate(
    call: &Call<'_, Config>,
    policy: &Value,
    previous: Option<MigrationStatus>,
    vmi: Option<&Value>,
    effects: &mut Effects,
) -> Result<Option<MigrationStatus>, StepError> {
    let running = vmi.filter(|v| {
        status_text(v, "phase").as_deref() == Some("Running")
            && v["metadata"]["deletionTimestamp"].is_null()
    });
    let (Some(vmi), Some(source)) = (running, running.and_then(|v| status_text(v, "nodeName")))
    else {
        effects.condition(AUTO_MIGRATION, true, "Idle", "the VM is not running");
        return Ok(previous);
    };
    let Some(node) = node(call, &source)? else {
        effects.condition(
            AUTO_MIGRATION,
            true,
            "Idle",
            format!("node {source} is gone"),
        );
        return Ok(previous);
    };
    let request_id = call.wukong.migration.as_ref().map(|r| r.request_id.clone());

    if let (Some(t), Some(since)) = (
        trigger(policy, "nodeFailure"),
        nodes::not_ready_since(&node),
    ) {
        let grace = t["gracePeriodSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let elapsed = seconds_since(call.now, since).unwrap_or(0);
        if elapsed < grace {
            let wait = grace - elapsed;
            effects.condition(
                AUTO_MIGRATION,
                true,
                "NodeNotReady",
                format!("node {source} is NotReady; the VM restarts elsewhere in {wait}s"),
            );
            effects.requeue_after(u64::try_from(wait).unwrap_or(1).max(1) * 1000);
            return Ok(previous);
        }
        let message = format!(
            "node {source} NotReady for {elapsed}s: a live migration is impossible, so the VM \
             instance is deleted and KubeVirt restarts the VM on another node"
        );
        effects.actions.push(Action::DeleteObject((
            call.object_ref(KUBEVIRT, VMI, &call.wukong.name),
            Some(0),
        )));
        effects.warning("NodeFailureRestart", &message);
        effects.condition(AUTO_MIGRATION, false, "NodeFailure", &message);
        let id = request_id.unwrap_or_else(|| "auto/nodeFailure".into());
        return Ok(Some(MigrationStatus {
            trigger: Some("nodeFailure".into()),
            source_node: Some(source),
            started_at: Some(call.now.to_owned()),
            finished_at: Some(call.now.to_owned()),
            message,
            ..new_record("Restarted", &id, true)
        }));
    }

    let maintenance = trigger(policy, "nodeMaintenance")
        .and_then(|_| nodes::maintenance(&node, &call.config))
        .map(|why| ("nodeMaintenance", why, None));
    let pressure = || {
        let t = trigger(policy, "resourcePressure")?;
        let threshold = t["threshold"]
            .as_str()
            .and_then(nodes::threshold_percent)
            .unwrap_or(80.0);
        let load = nodes::load_percent(&node, &call.config)?;
        (load > threshold).then(|| {
            let why = format!("node {source} is {load:.0}% requested, above {threshold:.0}%");
            ("resourcePressure", why, Some(threshold))
        })
    };
    let Some((kind, why, below)) = maintenance.or_else(pressure) else {
        effects.condition(
            AUTO_MIGRATION,
            true,
            "NoTrigger",
            format!("watching node {source}: no trigger holds"),
        );
        return Ok(previous);
    };
    if let Some(last) = last_move(previous.as_ref()) {
        let since = seconds_since(call.now, last).unwrap_or(0);
        let cooldown = i64::try_from(call.config.cooldown_seconds).unwrap_or(i64::MAX);
        if since < cooldown {
            let wait = cooldown - since;
            effects.condition(
                AUTO_MIGRATION,
                false,
                "CoolingDown",
                format!("{why}; the VM moved {since}s ago, next move in {wait}s at the earliest"),
            );
            effects.requeue_after(u64::try_from(wait).unwrap_or(1).max(1) * 1000);
            return Ok(previous);
        }
    }
    if condition_status(vmi, "LiveMigratable") != Some("True") {
        let message = format!("{why}, but the VM cannot live-migrate");
        effects.warning("AutoMigrationImpossible", &message);
        effects.condition(AUTO_MIGRATION, false, "NotLiveMigratable", message);
        return Ok(previous);
    }
    let Some(target) = pick_target(call, policy, &source, below)? else {
        let message = format!("{why}, but no node matches targetNodeSelector and has room");
        effects.warning("AutoMigrationImpossible", &message);
        effects.condition(AUTO_MIGRATION, false, "NoTargetNode", message);
        return Ok(previous);
    };
    let id = request_id.unwrap_or_else(|| format!("auto/{kind}"));
    let ours = format!("{}-auto-", call.wukong.name);
    if let Some((name, denied)) = admission::denial(call, |n| n.starts_with(&ours)) {
        // The last call's migration was refused at create: a failed move (so the
        // cool-down holds before the next try), with KubeVirt's reason.
        let message = format!("{why}, but KubeVirt refused the migration: {denied}");
        effects.warning("AutoMigrationRefused", &message);
        effects.condition(AUTO_MIGRATION, false, "RefusedByKubeVirt", &message);
        return Ok(Some(MigrationStatus {
            trigger: Some(kind.into()),
            migration_name: Some(name),
            source_node: Some(source),
            target_node: Some(target),
            started_at: Some(call.now.to_owned()),
            finished_at: Some(call.now.to_owned()),
            failure_reason: Some(denied),
            message,
            ..new_record("Failed", &id, true)
        }));
    }
    if let Some(busy) = admission::refusal(call, Some(vmi))? {
        let message = format!("{why}, but KubeVirt would refuse a migration now: {busy}");
        effects.condition(AUTO_MIGRATION, false, "MigrationNotAdmitted", message);
        return Ok(previous);
    }
    effects.condition(AUTO_MIGRATION, true, "Migrating", &why);
    objects::start(
        call,
        &Start {
            request_id: &id,
            automatic: true,
            trigger: Some(kind),
            source: &source,
            target: Some(&target),
            salt: call.now,
        },
        effects,
    )
    .map(|record| {
        Some(MigrationStatus {
            message: format!("{}: {why}", record.message),
            ..record
        })
    })
}

/// The least loaded Ready, schedulable node matching the selector, other than the
/// source, under `below` percent when given. Nodes without load annotations count as 0%.
fn pick_target(
    call: &Call<'_, Config>,
    policy: &Value,
    source: &str,
    below: Option<f64>,
) -> Result<Option<String>, StepError> {
    let selector = nodes::target_selector(policy)
        .map_err(|e| StepError::InvalidSpec(format!("targetNodeSelector: {e}")))?;
    let all: Vec<Value> = call.list_as("v1", "Node", None, None)?;
    let mut candidates: Vec<(f64, String)> = all
        .iter()
        .filter(|n| nodes::name(n) != source)
        .filter(|n| nodes::ready(n) && nodes::unschedulable(n).is_none())
        .filter(|n| nodes::maintenance(n, &call.config).is_none())
        .filter(|n| nodes::selected(selector.as_ref(), n))
        .map(|n| {
            let load = nodes::load_percent(n, &call.config).unwrap_or(0.0);
            (load, nodes::name(n).to_owned())
        })
        .filter(|(load, _)| below.is_none_or(|limit| *load < limit))
        .collect();
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    Ok(candidates.into_iter().next().map(|(_, name)| name))
}
