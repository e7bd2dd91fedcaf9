//! virt-controller for VirtualMachineInstanceMigrations: phases Pending → Scheduling →
//! Scheduled → PreparingTarget → TargetReady → Running → Succeeded/Failed, the VMI's
//! `migrationState`, refusals, abort by deletion, MigrationPolicy matching, a failure knob.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::util::{self, condition_status, conditions, flag, now, set_finalizer, str_at};
use super::vmi::set_phase;
use super::{ANN_FAIL_MIGRATION, Ctx, scheduler};
use crate::error::{Error, Result};

/// The finalizer KubeVirt puts on migrations.
pub const FINALIZER: &str = "kubevirt.io/migrationJobFinalize";
const ACTIVE: &[&str] = &[
    "Pending",
    "Scheduling",
    "Scheduled",
    "PreparingTarget",
    "TargetReady",
    "Running",
];

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let ar = util::vmim();
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &ar);
    Controller::new_with(api, watcher::Config::default(), ar)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<DynamicObject>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("migration: {e}");
    Action::requeue(std::time::Duration::from_millis(500))
}

async fn reconcile(m: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = m.namespace().unwrap_or_default();
    let api = util::api(&ctx.client, &util::vmim(), &ns);
    let vmis = util::api(&ctx.client, &util::vmi(), &ns);
    let cfg = ctx.cfg();
    let uid = m.uid().unwrap_or_default();
    let phase = str_at(&m.data, "/status/phase").unwrap_or("").to_owned();
    let vmi_name = str_at(&m.data, "/spec/vmiName").unwrap_or("").to_owned();
    let vmi = vmis.get_opt(&vmi_name).await?;
    let ours = |v: &DynamicObject| {
        str_at(&v.data, "/status/migrationState/migrationUid") == Some(uid.as_str())
    };

    if m.metadata.deletion_timestamp.is_some() {
        if let Some(v) = vmi
            .as_ref()
            .filter(|v| ours(v) && ACTIVE.contains(&phase.as_str()))
        {
            let state = json!({"abortRequested": true, "abortStatus": "Succeeded", "completed": true,
                "failed": true, "failureReason": "Live migration aborted", "endTimestamp": now()});
            set_vmi_state(&vmis, v, state, None).await?;
            tracing::info!(migration = %m.name_any(), "aborted");
        }
        set_finalizer(&api, &m, FINALIZER, false).await?;
        return Ok(Action::await_change());
    }
    if phase.is_empty() {
        if !m.finalizers().iter().any(|f| f == FINALIZER) {
            let body = json!({"metadata": {"finalizers": [FINALIZER], "labels": {"kubevirt.io/vmi-name": vmi_name}}});
            util::patch_object(&api, &m, body).await?;
            return Ok(Action::await_change());
        }
        set_phase(&api, &m, "Pending", json!({})).await?;
        return Ok(Action::await_change());
    }
    if !ACTIVE.contains(&phase.as_str()) {
        return Ok(Action::await_change());
    }
    let delay = if phase == "Running" {
        cfg.migration_duration
    } else {
        cfg.migration_step_delay
    };
    if let Some(rest) = ctx.wait(format!("vmim/{uid}/{phase}"), delay) {
        return Ok(Action::requeue(rest));
    }
    let Some(vmi) = vmi else {
        return fail(
            &ctx,
            &api,
            &m,
            "VMINotFound",
            &format!("VMI {vmi_name} does not exist"),
        )
        .await;
    };
    let source = str_at(&vmi.data, "/status/nodeName")
        .unwrap_or("")
        .to_owned();
    match phase.as_str() {
        "Pending" => {
            if str_at(&vmi.data, "/status/phase") != Some("Running") {
                return fail(
                    &ctx,
                    &api,
                    &m,
                    "VMINotRunning",
                    &format!("VMI {vmi_name} is not running"),
                )
                .await;
            }
            let conds = conditions(&vmi.data);
            if condition_status(&conds, "LiveMigratable") != Some("True") {
                let c = conds
                    .iter()
                    .find(|c| str_at(c, "/type") == Some("LiveMigratable"));
                let reason = c
                    .and_then(|c| str_at(c, "/reason"))
                    .unwrap_or("NotLiveMigratable");
                let message = c
                    .and_then(|c| str_at(c, "/message"))
                    .unwrap_or("VMI is not live migratable");
                return fail(
                    &ctx,
                    &api,
                    &m,
                    reason,
                    &format!("Cannot migrate VMI, Reason: {reason}, Message: {message}"),
                )
                .await;
            }
            let others = api.list(&ListParams::default()).await?;
            let in_flight = others.iter().any(|o| {
                o.uid() != m.uid()
                    && str_at(&o.data, "/spec/vmiName") == Some(vmi_name.as_str())
                    && ACTIVE.contains(&str_at(&o.data, "/status/phase").unwrap_or("Pending"))
                    && o.metadata.deletion_timestamp.is_none()
            });
            if in_flight {
                return fail(
                    &ctx,
                    &api,
                    &m,
                    "InFlightMigration",
                    "in-flight migration detected",
                )
                .await;
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
                Err(reason) => {
                    return fail(
                        &ctx,
                        &api,
                        &m,
                        "Unschedulable",
                        &format!("no node fits the migration target: {reason}"),
                    )
                    .await;
                }
                Ok(target) => {
                    let state =
                        json!({"migrationUid": uid, "sourceNode": source, "targetNode": target});
                    set_phase(&api, &m, "Scheduled", json!({"migrationState": state})).await?;
                }
            }
        }
        "Scheduled" => {
            set_phase(&api, &m, "PreparingTarget", json!({})).await?;
        }
        "PreparingTarget" => {
            let target = str_at(&m.data, "/status/migrationState/targetNode")
                .unwrap_or("")
                .to_owned();
            let policy = matching_policy(&ctx, &vmi).await?;
            let post_copy = policy
                .as_ref()
                .and_then(|p| p.data.pointer("/spec/allowPostCopy"))
                == Some(&Value::Bool(true));
            let mut state = json!({"migrationUid": uid, "sourceNode": source, "targetNode": target,
                "targetPod": format!("virt-launcher-{vmi_name}-target"), "targetNodeAddress": "10.0.0.250",
                "mode": if post_copy { "PostCopy" } else { "PreCopy" }, "completed": false, "failed": false,
                "abortRequested": null, "abortStatus": null, "failureReason": null, "endTimestamp": null,
                "startTimestamp": null});
            if let Some(p) = &policy {
                state["migrationPolicyName"] = json!(p.name_any());
                let spec = p.data.get("spec").cloned().unwrap_or_default();
                let mut conf = json!({});
                for k in [
                    "allowAutoConverge",
                    "allowPostCopy",
                    "completionTimeoutPerGiB",
                    "bandwidthPerMigration",
                ] {
                    if let Some(v) = spec.get(k) {
                        conf[k] = v.clone();
                    }
                }
                state["migrationConfiguration"] = conf;
            }
            set_vmi_state(&vmis, &vmi, state, None).await?;
            set_phase(&api, &m, "TargetReady", json!({})).await?;
        }
        "TargetReady" => {
            set_vmi_state(&vmis, &vmi, json!({"startTimestamp": now()}), None).await?;
            set_phase(&api, &m, "Running", json!({})).await?;
        }
        _ => {
            // Running: done.
            if cfg.migration_fail || flag(&vmi, ANN_FAIL_MIGRATION) || flag(&m, ANN_FAIL_MIGRATION)
            {
                let reason = "Live migration failed: simulated failure (migration_fail)";
                let state = json!({"completed": true, "failed": true, "failureReason": reason, "endTimestamp": now()});
                set_vmi_state(&vmis, &vmi, state, None).await?;
                return fail(&ctx, &api, &m, "MigrationFailed", reason).await;
            }
            let target = str_at(&vmi.data, "/status/migrationState/targetNode")
                .unwrap_or("")
                .to_owned();
            let state = json!({"completed": true, "failed": false, "endTimestamp": now()});
            set_vmi_state(&vmis, &vmi, state, Some(&target)).await?;
            set_phase(&api, &m, "Succeeded", json!({})).await?;
            tracing::info!(vmi = %vmi_name, from = %source, to = %target, "migrated");
        }
    }
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

async fn fail(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    m: &DynamicObject,
    reason: &str,
    message: &str,
) -> Result<Action> {
    let state = json!({"failed": true, "completed": true, "failureReason": message});
    let mut conds = conditions(&m.data);
    util::set_condition(&mut conds, "Failed", true, reason, message);
    if set_phase(
        api,
        m,
        "Failed",
        json!({"migrationState": state, "conditions": conds}),
    )
    .await?
    {
        tracing::info!(migration = %m.name_any(), reason, "migration failed");
        let event: Event = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{}.", m.name_any()), "namespace": m.namespace()},
            "involvedObject": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "name": m.name_any(), "namespace": m.namespace(), "uid": m.uid()},
            "reason": "FailedMigration", "message": message, "type": "Warning",
            "source": {"component": "virtualmachine-controller"},
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
        }))?;
        let events: Api<Event> =
            Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            tracing::debug!("event: {e}");
        }
    }
    Ok(Action::await_change())
}

/// The MigrationPolicy matching the VMI's labels (and its namespace's), most labels first.
async fn matching_policy(ctx: &Ctx, vmi: &DynamicObject) -> Result<Option<DynamicObject>> {
    let policies = Api::<DynamicObject>::all_with(ctx.client.clone(), &util::migration_policy())
        .list(&ListParams::default())
        .await?;
    if policies.items.is_empty() {
        return Ok(None);
    }
    let ns = vmi.namespace().unwrap_or_default();
    let ns_labels = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&ns)
        .await?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    let vmi_labels = vmi.labels().clone();
    let matches = |sel: Option<&Value>, labels: &BTreeMap<String, String>| -> Option<usize> {
        let sel: BTreeMap<String, String> = sel
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        sel.iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            .then_some(sel.len())
    };
    let mut best: Option<(usize, DynamicObject)> = None;
    for p in policies {
        let vs = matches(
            p.data
                .pointer("/spec/selectors/virtualMachineInstanceSelector"),
            &vmi_labels,
        );
        let ns_match = matches(
            p.data.pointer("/spec/selectors/namespaceSelector"),
            &ns_labels,
        );
        if let (Some(a), Some(b)) = (vs, ns_match) {
            let score = a + b;
            if score > 0
                && best
                    .as_ref()
                    .is_none_or(|(s, b)| score > *s || (score == *s && p.name_any() < b.name_any()))
            {
                best = Some((score, p));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}
