//! virt-controller for VirtualMachineInstanceMigrations (`watch/migration/migration.go`)
//! and the source virt-launcher's migration monitor (`live-migration-source.go`):
//! phases Pending → Scheduling → Scheduled → PreparingTarget → TargetReady → Running →
//! Succeeded/Failed, the VMI's `migrationState`, abort by deletion, MigrationPolicy
//! matching, the unschedulable-target timeout, garbage collection of finished migrations
//! and a failure knob. Refusals at create are admission's (see `admission.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use wukong_model::Quantity;

use super::util::{self, flag, now, ok_unless_conflict, set_finalizer, str_at};
use super::vmi::set_phase;
use super::{ANN_FAIL_MIGRATION, Ctx, scheduler};
use crate::error::{Error, Result};

mod policy;

use policy::{DEFAULT_COMPLETION_TIMEOUT_PER_GIB, configuration, matching_policy};

/// The finalizer KubeVirt puts on migrations.
pub const FINALIZER: &str = "kubevirt.io/migrationJobFinalize";
/// The label naming a migration's VMI (`v1.MigrationSelectorLabel`).
pub const VMI_LABEL: &str = "kubevirt.io/vmi-name";
/// How many finished migrations of one VMI are kept
/// (`defaultFinalizedMigrationGarbageCollectionBuffer`).
pub const KEEP_FINISHED: usize = 5;
/// The reason a migration aborted by deletion reports (`setMigrationResult`).
pub const ABORTED: &str = "Live migration has been aborted";
const ACTIVE: &[&str] = &[
    "Pending",
    "Scheduling",
    "Scheduled",
    "PreparingTarget",
    "TargetReady",
    "Running",
];
/// Phases after the target was handed the VMI: the VMI's migrationState is this migration's.
const HANDED_OFF: &[&str] = &["PreparingTarget", "TargetReady", "Running"];

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let ar = util::vmim();
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &ar);
    Controller::new_with(api, watcher::Config::default(), ar)
        .trigger_backoff(util::TriggerBackoff::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<DynamicObject>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("migration: {e}");
    Action::requeue(Duration::from_millis(500))
}

/// `Controller.execute` + `updateStatus` + `sync`, one step per reconcile.
async fn reconcile(m: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = m.namespace().unwrap_or_default();
    let api = util::api(&ctx.client, &util::vmim(), &ns);
    let vmis = util::api(&ctx.client, &util::vmi(), &ns);
    let cfg = ctx.cfg();
    let uid = m.uid().unwrap_or_default();
    let phase = str_at(&m.data, "/status/phase").unwrap_or("").to_owned();
    let vmi_name = str_at(&m.data, "/spec/vmiName").unwrap_or("").to_owned();

    // execute(): a migration whose VMI is gone is deleted.
    let Some(vmi) = vmis.get_opt(&vmi_name).await? else {
        if m.metadata.deletion_timestamp.is_none() {
            ok_unless_conflict(api.delete(&m.name_any(), &DeleteParams::default()).await)?;
        } else {
            set_finalizer(&api, &m, FINALIZER, false).await?;
        }
        return Ok(Action::await_change());
    };
    if m.metadata.deletion_timestamp.is_some() {
        return abort(&ctx, &api, &vmis, &m, &vmi, &phase).await;
    }
    if phase.is_empty() {
        if !m.finalizers().iter().any(|f| f == FINALIZER) {
            // ensureSelectorLabelPresent, and the finalizer.
            let body =
                json!({"metadata": {"finalizers": [FINALIZER], "labels": {VMI_LABEL: vmi_name}}});
            util::patch_object(&api, &m, body).await?;
            return Ok(Action::await_change());
        }
        // canMigrateVMI: the VMI's migrationState belongs to an unfinished other migration.
        let held = str_at(&vmi.data, "/status/migrationState/migrationUid")
            .is_some_and(|u| !u.is_empty() && u != uid)
            && vmi.data.pointer("/status/migrationState/completed") != Some(&Value::Bool(true));
        if held {
            let why =
                "VMI is not eligible for migration because another migration job is in progress.";
            return fail(&ctx, &api, &m, &vmi, why).await;
        }
        set_phase(&api, &m, "Pending", json!({})).await?;
        return Ok(Action::await_change());
    }
    if !ACTIVE.contains(&phase.as_str()) {
        return Ok(Action::await_change());
    }
    // updateStatus: a VMI that shut down ends its migration.
    if matches!(
        str_at(&vmi.data, "/status/phase"),
        Some("Succeeded" | "Failed")
    ) {
        return fail(
            &ctx,
            &api,
            &m,
            &vmi,
            "Migration failed vmi shutdown during migration.",
        )
        .await;
    }
    let delay = if phase == "Running" {
        cfg.migration_duration
    } else {
        cfg.migration_step_delay
    };
    if phase != "Running"
        && let Some(rest) = ctx.wait(format!("vmim/{uid}/{phase}"), delay)
    {
        return Ok(Action::requeue(rest));
    }
    let source = str_at(&vmi.data, "/status/nodeName")
        .unwrap_or("")
        .to_owned();
    match phase.as_str() {
        "Pending" => {
            // sync: no target pod for a VMI that is not running; the migration waits.
            if str_at(&vmi.data, "/status/phase") != Some("Running") {
                return Ok(Action::requeue(cfg.retry_interval));
            }
            set_phase(&api, &m, "Scheduling", json!({})).await?;
        }
        "Scheduling" => {
            let added: BTreeMap<String, String> = m
                .data
                .pointer("/spec/addedNodeSelector")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            match scheduler::pick(&ctx, &vmi, Some(&source), &added).await? {
                Err(reason) => return unschedulable(&ctx, &api, &m, &vmi, &reason).await,
                Ok(target) => {
                    // handleTargetPodHandoff: the VMI learns of its migration, with the
                    // matched policy's configuration.
                    let policy = matching_policy(&ctx, &vmi).await?;
                    let mut state = json!({"migrationUid": uid, "sourceNode": source, "targetNode": target,
                        "targetPod": format!("virt-launcher-{vmi_name}-target"), "targetNodeAddress": null,
                        "mode": null, "completed": false, "failed": false,
                        "abortRequested": null, "abortStatus": null, "failureReason": null, "endTimestamp": null,
                        "startTimestamp": null, "migrationPolicyName": null,
                        "migrationConfiguration": configuration(policy.as_ref())});
                    if let Some(p) = &policy {
                        state["migrationPolicyName"] = json!(p.name_any());
                    }
                    set_vmi_state(&vmis, &vmi, state, None).await?;
                    set_phase(&api, &m, "Scheduled", json!({})).await?;
                }
            }
        }
        "Scheduled" => {
            set_phase(&api, &m, "PreparingTarget", json!({})).await?;
        }
        "PreparingTarget" => {
            // The target's virt-handler reports its address: TargetReady.
            set_vmi_state(
                &vmis,
                &vmi,
                json!({"targetNodeAddress": "10.0.0.250"}),
                None,
            )
            .await?;
            set_phase(&api, &m, "TargetReady", json!({})).await?;
        }
        "TargetReady" => {
            // The source starts in pre-copy (live-migration-source.go).
            let state = json!({"startTimestamp": now(), "mode": "PreCopy"});
            set_vmi_state(&vmis, &vmi, state, None).await?;
            set_phase(&api, &m, "Running", json!({})).await?;
        }
        _ => return running(&ctx, &api, &vmis, &m, &vmi).await,
    }
    Ok(Action::await_change())
}

/// The source's migration monitor (`handleLegacyConvergence`): after the acceptable
/// completion time (`completionTimeoutPerGiB` × the guest's memory in GiB) a pre-copy
/// migration switches to post-copy when allowed, pauses the guest when only workload
/// disruption is allowed, and is aborted otherwise.
async fn running(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    vmis: &Api<DynamicObject>,
    m: &DynamicObject,
    vmi: &DynamicObject,
) -> Result<Action> {
    let cfg = ctx.cfg();
    let uid = m.uid().unwrap_or_default();
    let elapsed = since(ctx, format!("vmim/{uid}/Running"));
    let conf = vmi
        .data
        .pointer("/status/migrationState/migrationConfiguration")
        .cloned()
        .unwrap_or_default();
    let allowed = |k: &str| conf.get(k) == Some(&Value::Bool(true));
    let per_gib = conf
        .get("completionTimeoutPerGiB")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_COMPLETION_TIMEOUT_PER_GIB);
    let acceptable = Duration::from_secs_f64((per_gib.max(0) as f64) * memory_gib(vmi));
    let mode = str_at(&vmi.data, "/status/migrationState/mode").unwrap_or("PreCopy");
    if elapsed < cfg.migration_duration {
        let rest = cfg.migration_duration - elapsed;
        if mode != "PreCopy" || acceptable.is_zero() || elapsed < acceptable {
            let next = if mode == "PreCopy" && !acceptable.is_zero() && acceptable > elapsed {
                rest.min(acceptable - elapsed)
            } else {
                rest
            };
            return Ok(Action::requeue(next));
        }
        if allowed("allowPostCopy") && allowed("allowWorkloadDisruption") {
            set_vmi_state(vmis, vmi, json!({"mode": "PostCopy"}), None).await?;
        } else if allowed("allowWorkloadDisruption") {
            set_vmi_state(vmis, vmi, json!({"mode": "Paused"}), None).await?;
        } else {
            // cancelMigration: "not completed after N seconds".
            let state = json!({"abortStatus": "Succeeded", "completed": true, "failed": true,
                "failureReason": ABORTED, "endTimestamp": now()});
            set_vmi_state(vmis, vmi, state, None).await?;
            let fresh = vmis.get(&vmi.name_any()).await?;
            return fail(ctx, api, m, &fresh, "source node reported migration failed").await;
        }
        return Ok(Action::requeue(rest));
    }
    let vmi_name = vmi.name_any();
    if cfg.migration_fail || flag(vmi, ANN_FAIL_MIGRATION) || flag(m, ANN_FAIL_MIGRATION) {
        let reason = "Live migration failed: simulated failure (migration_fail)";
        let state = json!({"completed": true, "failed": true, "failureReason": reason, "endTimestamp": now()});
        set_vmi_state(vmis, vmi, state, None).await?;
        let fresh = vmis.get(&vmi_name).await?;
        return fail(ctx, api, m, &fresh, "source node reported migration failed").await;
    }
    let source = str_at(&vmi.data, "/status/nodeName")
        .unwrap_or("")
        .to_owned();
    let target = str_at(&vmi.data, "/status/migrationState/targetNode")
        .unwrap_or("")
        .to_owned();
    let state = json!({"completed": true, "failed": false, "endTimestamp": now()});
    set_vmi_state(vmis, vmi, state, Some(&target)).await?;
    let fresh = vmis.get(&vmi_name).await?;
    let extra = json!({"migrationState": fresh.data.pointer("/status/migrationState")});
    if set_phase(api, m, "Succeeded", extra).await? {
        tracing::info!(vmi = %vmi_name, from = %source, to = %target, "migrated");
        event(
            ctx,
            m,
            "Normal",
            "SuccessfulMigration",
            "Source node reported migration succeeded",
        )
        .await;
        collect_finished(api, &vmi_name).await?;
    }
    Ok(Action::await_change())
}

/// `handlePendingPodTimeout`: the target pod waits for a node; after the unschedulable
/// timeout it is deleted, and a migration whose target pod is gone fails.
async fn unschedulable(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    m: &DynamicObject,
    vmi: &DynamicObject,
    reason: &str,
) -> Result<Action> {
    let cfg = ctx.cfg();
    let uid = m.uid().unwrap_or_default();
    let waited = since(ctx, format!("vmim/{uid}/unschedulable"));
    let (ns, name) = (vmi.namespace().unwrap_or_default(), vmi.name_any());
    if waited >= cfg.migration_unschedulable_timeout {
        let why = "Migration target pod was removed during active migration.";
        return fail(ctx, api, m, vmi, why).await;
    }
    // Named per migration: one event however often the controller looks again.
    let message = format!("Migration target pod for VMI [{ns}/{name}] is currently unschedulable.");
    event_named(
        ctx,
        m,
        "unschedulable",
        "Warning",
        "MigrationTargetPodUnschedulable",
        &message,
    )
    .await;
    tracing::debug!(migration = %m.name_any(), reason, "target unschedulable");
    let rest = cfg.migration_unschedulable_timeout - waited;
    Ok(Action::requeue(
        rest.min(cfg.retry_interval.max(Duration::from_secs(2))),
    ))
}

/// A deleted migration: one handed off is aborted on the VMI (`markMigrationAbortInVmiStatus`,
/// then the source reports "Live migration has been aborted"); the migration ends Failed
/// with `AbortRequested`, then its finalizer goes.
async fn abort(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    vmis: &Api<DynamicObject>,
    m: &DynamicObject,
    vmi: &DynamicObject,
    phase: &str,
) -> Result<Action> {
    let uid = m.uid().unwrap_or_default();
    let ours = str_at(&vmi.data, "/status/migrationState/migrationUid") == Some(uid.as_str());
    if ACTIVE.contains(&phase) {
        let mut extra = json!({});
        if ours && !HANDED_OFF.contains(&phase) {
            let fresh = mark_failed_on_vmi(ctx, m, vmi).await?;
            extra["migrationState"] = json!(fresh.data.pointer("/status/migrationState"));
        } else if ours {
            let state = json!({"abortRequested": true, "abortStatus": "Succeeded", "completed": true,
                "failed": true, "failureReason": ABORTED, "endTimestamp": now()});
            set_vmi_state(vmis, vmi, state, None).await?;
            let fresh = vmis.get(&vmi.name_any()).await?;
            extra["migrationState"] = json!(fresh.data.pointer("/status/migrationState"));
            tracing::info!(migration = %m.name_any(), "aborted");
        }
        let mut conds = util::conditions(&m.data);
        util::set_condition(&mut conds, "AbortRequested", true, "", "");
        extra["conditions"] = json!(conds);
        event(
            ctx,
            m,
            "Warning",
            "FailedMigration",
            "Migration failed due to being canceled",
        )
        .await;
        if !set_phase(api, m, "Failed", extra).await? {
            return Ok(Action::await_change());
        }
        let fresh = api.get(&m.name_any()).await?;
        set_finalizer(api, &fresh, FINALIZER, false).await?;
        return Ok(Action::await_change());
    }
    set_finalizer(api, m, FINALIZER, false).await?;
    Ok(Action::await_change())
}

/// Merges into the VMI's `status.migrationState`; on success moves it to `node`.
async fn set_vmi_state(
    vmis: &Api<DynamicObject>,
    vmi: &DynamicObject,
    state: Value,
    node: Option<&str>,
) -> Result<()> {
    let mut status = json!({"migrationState": state});
    if let Some(node) = node {
        status["nodeName"] = json!(node);
        let body = json!({"metadata": {"labels": {"kubevirt.io/nodeName": node}}});
        vmis.patch(
            &vmi.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await?;
    }
    vmis.patch_status(
        &vmi.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await?;
    Ok(())
}

/// `failMigration`: phase Failed (KubeVirt has no Failed condition), a FailedMigration
/// event with `why`, the VMI's migrationState copied when it is this migration's, and the
/// older finished migrations of the VMI collected.
async fn fail(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    m: &DynamicObject,
    vmi: &DynamicObject,
    why: &str,
) -> Result<Action> {
    let vmi = &mark_failed_on_vmi(ctx, m, vmi).await?;
    let mut extra = json!({});
    if str_at(&vmi.data, "/status/migrationState/migrationUid") == m.uid().as_deref() {
        extra["migrationState"] = json!(vmi.data.pointer("/status/migrationState"));
    }
    if set_phase(api, m, "Failed", extra).await? {
        tracing::info!(migration = %m.name_any(), why, "migration failed");
        event(ctx, m, "Warning", "FailedMigration", why).await;
        collect_finished(api, &vmi.name_any()).await?;
    }
    Ok(Action::await_change())
}

/// `handleMarkMigrationFailedOnVMI`: a migration that ends before the source reported
/// leaves the VMI's migrationState failed and completed ("Target pod is down"), so the
/// next migration may take it over. Returns the VMI as it now is.
async fn mark_failed_on_vmi(
    ctx: &Ctx,
    m: &DynamicObject,
    vmi: &DynamicObject,
) -> Result<DynamicObject> {
    let state = vmi
        .data
        .pointer("/status/migrationState")
        .cloned()
        .unwrap_or_default();
    let ours = str_at(&state, "/migrationUid") == m.uid().as_deref();
    if !ours || state.get("completed") == Some(&Value::Bool(true)) {
        return Ok(vmi.clone());
    }
    let mut mark = json!({"failed": true, "completed": true});
    for (k, v) in [
        ("endTimestamp", json!(now())),
        ("startTimestamp", json!(now())),
        ("failureReason", json!("Target pod is down")),
    ] {
        if state.get(k).is_none_or(Value::is_null) {
            mark[k] = v;
        }
    }
    let vmis = util::api(
        &ctx.client,
        &util::vmi(),
        &vmi.namespace().unwrap_or_default(),
    );
    set_vmi_state(&vmis, vmi, mark, None).await?;
    Ok(vmis.get(&vmi.name_any()).await?)
}

/// `garbageCollectFinalizedMigrations`: keeps the newest [`KEEP_FINISHED`] finished
/// migrations of a VMI. One label-selected list, when a migration finishes.
async fn collect_finished(api: &Api<DynamicObject>, vmi_name: &str) -> Result<()> {
    let lp = ListParams::default().labels(&format!("{VMI_LABEL}={vmi_name}"));
    let mut done: Vec<DynamicObject> = api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|o| {
            o.metadata.deletion_timestamp.is_none()
                && matches!(
                    str_at(&o.data, "/status/phase"),
                    Some("Succeeded" | "Failed")
                )
        })
        .collect();
    // Oldest first; the phase just written may not be listed yet, so it is never deleted.
    done.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.name_any(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            ))
    });
    let extra = done.len().saturating_sub(KEEP_FINISHED);
    for old in done.iter().take(extra) {
        ok_unless_conflict(api.delete(&old.name_any(), &DeleteParams::default()).await)?;
        tracing::debug!(migration = %old.name_any(), "garbage-collected");
    }
    Ok(())
}

/// How long since `key` was first asked about.
fn since(ctx: &Ctx, key: String) -> Duration {
    let mut timers = ctx.timers.lock().unwrap_or_else(|p| p.into_inner());
    timers.entry(key).or_insert_with(Instant::now).elapsed()
}

/// The guest's memory in GiB (`domain.memory.guest`, else the memory request).
fn memory_gib(vmi: &DynamicObject) -> f64 {
    let q = str_at(&vmi.data, "/spec/domain/memory/guest")
        .or_else(|| str_at(&vmi.data, "/spec/domain/resources/requests/memory"))
        .and_then(|q| Quantity::parse(q).ok())
        .map_or(0.0, Quantity::as_f64);
    q / (1024.0 * 1024.0 * 1024.0)
}

async fn event(ctx: &Ctx, m: &DynamicObject, type_: &str, reason: &str, message: &str) {
    event_named(ctx, m, "", type_, reason, message).await;
}

/// Records an event on the migration; with a `suffix`, under a fixed name (once).
async fn event_named(
    ctx: &Ctx,
    m: &DynamicObject,
    suffix: &str,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let mut meta = json!({"namespace": m.namespace()});
    if suffix.is_empty() {
        meta["generateName"] = json!(format!("{}.", m.name_any()));
    } else {
        meta["name"] = json!(format!(
            "{}.{}.{suffix}",
            m.name_any(),
            m.uid().unwrap_or_default()
        ));
    }
    let event = serde_json::from_value::<Event>(json!({
        "metadata": meta,
        "involvedObject": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "name": m.name_any(), "namespace": m.namespace(), "uid": m.uid()},
        "reason": reason, "message": message, "type": type_,
        "source": {"component": "virtualmachine-controller"},
        "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
    }));
    let Ok(event) = event else { return };
    let events: Api<Event> =
        Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    match events.create(&PostParams::default(), &event).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::debug!("event: {e}"),
    }
}
