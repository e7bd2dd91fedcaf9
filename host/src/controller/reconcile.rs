//! One reconcile: the finalizer, then the pipeline (apply) or the steps' `finalize` in
//! reverse (cleanup).
//!
//! # Expected flow (apply)
//! 1. The Wukong is read afresh (plugins keep their memory in its status).
//! 2. Each step runs in order; its objects are judged by the ownership rule and applied
//!    before the next step runs. A step that fails stops the pipeline.
//! 3. The status is written: every step's part, the steps that did not run keeping their
//!    previous part, the failure (if any) in `StepFailed` at the current generation.
//! 4. The one-shot actions the steps asked for are executed, in order. KubeVirt refusing
//!    (409) a request's first call finishes the lifecycle request as `Refused`; refusing a
//!    later call (the cluster moved on since the plugin read it) is noted in the record,
//!    for the plugin to judge. One the apiserver forbids (403) is reported in
//!    `StepFailed`. Either way the status is written again.
//! 5. Events are published; a failure is returned for backoff.
//!
//! # Guarantees
//! - An action is recorded (step 3) before it is executed (step 4): a crash in between
//!   cannot repeat it, and a failing step elsewhere cannot erase its record, so a request
//!   is done once whatever fails around it.
//! - Nothing is written to an object that is not the Wukong's (the guard and the applier
//!   both judge it); a retained disk carries no owner reference once its step has run.
//! - The status write cannot lose a step's record: a part is replaced only by the same
//!   step's new report.
//!
//! # Assumptions
//! - One active replica (the leader) reconciles a Wukong at a time.
//!
//! # Caveats
//! - Objects applied before a later step fails stay applied (each step's objects are
//!   what the next step reads); they are the Wukong's and are finalized with it.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::migrations;
use super::pipeline::{self, PipelineResult, StepFailure};
use super::{Context, Error, Result, status};
use crate::api::{FINALIZER, Wukong, WukongStatus, to_contract};
use crate::cluster::{ApplyError, LiveReader, Owner, ReadVersions};
use crate::plugin::types::{self, Action as PluginAction, Event, StepKind};
use crate::plugin::{ClusterReader, Outcome, Phase, StepStatus};

/// How long a converged Wukong waits before a routine re-check.
const RESYNC: Duration = Duration::from_secs(300);
/// The soonest a plugin's requeue hint brings the next call: a plugin cannot make the
/// operator spin on one Wukong (the lifecycle step asks for this while an action runs).
const MIN_REQUEUE: Duration = Duration::from_millis(250);
/// The field manager of the status the host writes.
const STATUS_MANAGER: &str = "wukong";

pub async fn reconcile(wukong: Arc<Wukong>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = wukong.namespace().unwrap_or_default();
    let api: Api<Wukong> = Api::namespaced(ctx.client.clone(), &namespace);
    let span =
        tracing::info_span!("reconcile", wukong = %wukong.name_any(), namespace = %namespace);
    let reported = Arc::clone(&wukong);
    ctx.events.begin(&wukong.uid().unwrap_or_default());
    let wukong = match add_finalizer(&ctx, &api, wukong).await {
        Ok(wukong) => wukong,
        Err(e) => return Err(Error::Kube(e)),
    };
    let result = finalizer(&api, FINALIZER, wukong, |event| async {
        match event {
            Finalizer::Apply(wukong) => apply(&wukong, &ctx, &api).await,
            Finalizer::Cleanup(wukong) => cleanup(&wukong, &ctx, &api).await,
        }
    })
    .instrument(span)
    .await
    .or_else(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => Err(e),
        // Gone while we removed our finalizer: nothing left to do.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
            if status.code == 404 =>
        {
            Ok(Action::await_change())
        }
        kube::runtime::finalizer::Error::AddFinalizer(e @ kube::Error::Api(_))
        | kube::runtime::finalizer::Error::RemoveFinalizer(e @ kube::Error::Api(_)) => {
            Err(Error::Kube(e))
        }
        other => Err(Error::Finalizer(other.to_string())),
    });
    // A call the role refuses never fixes itself: say which, on the Wukong, not only in the
    // log (a refused step already says so in its StepFailed event).
    if let Err(error) = &result
        && let Some(message) = forbidden(error, &namespace)
    {
        let event = Event {
            warning: true,
            reason: status::FORBIDDEN.into(),
            message,
        };
        publish(&ctx, &reported, &[event]).await;
    }
    result
}

/// Puts the finalizer on a Wukong that lacks it and goes on with the answer, as kube's
/// `finalizer` would with a JSON patch that tests the list first, except that its answer is
/// kept: the reconcile goes on to the steps at once, with no GET and no second reconcile
/// for the write coming back.
async fn add_finalizer(
    ctx: &Context,
    api: &Api<Wukong>,
    wukong: Arc<Wukong>,
) -> kube::Result<Arc<Wukong>> {
    let finalizers = wukong.finalizers();
    if wukong.meta().deletion_timestamp.is_some() || finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(wukong);
    }
    let mut wanted = finalizers.to_vec();
    wanted.push(FINALIZER.to_owned());
    let current = match &wukong.meta().finalizers {
        Some(list) => json!(list),
        None => serde_json::Value::Null,
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": current},
        {"op": "add", "path": "/metadata/finalizers", "value": wanted},
    ]))
    .map_err(kube::Error::SerdeError)?;
    let patched = api
        .patch(
            &wukong.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    Ok(ctx.known.remember_written(patched))
}

/// Says on a Wukong the operator cannot decode what is wrong and how out: the others go
/// on (it is read on its own), it waits for a change.
pub async fn report_unreadable(
    ctx: &Context,
    meta: &kube::core::PartialObjectMeta<Wukong>,
    error: &serde_json::Error,
) {
    tracing::warn!(wukong = %meta.name_any(), namespace = ?meta.namespace(), %error, "cannot read the Wukong");
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "Unreadable".into(),
        note: Some(format!(
            "the operator cannot read this Wukong ({error}); fix its spec, or delete it \
             (if it was finalized, remove the finalizer {FINALIZER} after cleaning up its objects)"
        )),
        action: "Read".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &meta.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// The message for an error the apiserver answered with 403.
fn forbidden(error: &Error, namespace: &str) -> Option<String> {
    match error {
        Error::Apply(ApplyError::Api { what, source }) => {
            status::forbidden(source, what, namespace)
        }
        Error::Kube(source) => status::forbidden(source, "the Wukong", namespace),
        _ => None,
    }
}

fn owner(wukong: &Wukong) -> Owner {
    Owner {
        name: wukong.name_any(),
        namespace: wukong.namespace().unwrap_or_default(),
        uid: wukong.uid().unwrap_or_default(),
    }
}

/// A reader for one reconcile (it remembers the versions it served).
fn reader(ctx: &Context) -> Arc<LiveReader> {
    Arc::new(LiveReader::new(
        ctx.kinds.clone(),
        tokio::runtime::Handle::current(),
    ))
}

/// `wukong` was read afresh for this reconcile (the controller watches metadata only):
/// plugins keep their memory (a one-shot action's stage) in its status.
async fn apply(wukong: &Wukong, ctx: &Context, api: &Api<Wukong>) -> Result<Action> {
    let record = to_contract(wukong);
    let result = run_pipeline(&record, wukong, ctx).await;
    if let Some(failure) = &result.failure
        && failure.reason == pipeline::STALE_READ
        && ctx.failure_count(&record.uid) < pipeline::STALE_RETRIES_UNREPORTED
    {
        // Decided on a read the cluster has moved past: nothing of this run is written or
        // told (its actions included); the next run reads what the cluster holds now.
        tracing::debug!(message = %failure.message, "stale read; running the steps again");
        return Err(Error::Step((*failure).clone()));
    }

    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let build = || {
        status::build(
            wukong.status.as_ref(),
            &result,
            wukong.metadata.generation,
            &now,
        )
    };
    let mut new_status = build();
    let kept_refusal = result.failure.is_none()
        && !result.actions.is_empty()
        && status::keep_action_forbidden(wukong.status.as_ref(), &mut new_status);
    write_status(ctx, api, wukong, new_status.clone()).await?;
    let owner = owner(wukong);
    let mut written = new_status.clone();
    for action in &result.actions {
        match execute(ctx, wukong, &owner, action).await {
            Ok(None) => {}
            Ok(Some(refusal)) => {
                // A refused first call finishes the request (its record says so, and the
                // plugin's next call sees it done rather than asking again); a refused
                // later call is the plugin's to judge (see `refuse_current_action`).
                if action.step == StepKind::Lifecycle
                    && status::refuse_current_action(
                        wukong.status.as_ref(),
                        &mut written,
                        &refusal,
                        &now,
                    )
                {
                    write_status(ctx, api, wukong, written.clone()).await?;
                }
            }
            Err(error) => {
                if let Some(message) = forbidden(&error, &wukong.namespace().unwrap_or_default()) {
                    let refused = status::action_forbidden(written, &message, &now);
                    write_status(ctx, api, wukong, refused).await?;
                }
                return Err(error);
            }
        }
    }
    if kept_refusal {
        // The refused action went through this time: the report goes (a request KubeVirt
        // refused meanwhile stays finished).
        let mut report = build();
        report.lifecycle_state = written.lifecycle_state;
        write_status(ctx, api, wukong, report).await?;
    }
    let events: Vec<Event> = result
        .written_event()
        .into_iter()
        .chain(result.events.iter().cloned())
        .collect();
    publish(ctx, wukong, &events).await;

    if let Some(failure) = result.failure {
        publish(
            ctx,
            wukong,
            &[Event {
                warning: true,
                reason: status::failure_event_reason(&failure).into(),
                message: format!("{} ({})", failure.message, failure.plugin),
            }],
        )
        .await;
        return Err(Error::Step(failure));
    }
    if let Ok(mut failures) = ctx.failures.lock() {
        failures.remove(&record.uid);
    }
    Ok(result
        .requeue_after_ms
        .map_or(Action::requeue(RESYNC), |ms| {
            ctx.metrics.triggered("requeue-hint");
            Action::requeue(Duration::from_millis(ms).max(MIN_REQUEUE))
        }))
}

/// Runs every step; a failing step stops the pipeline and is reported in the result.
async fn run_pipeline(record: &types::Wukong, wukong: &Wukong, ctx: &Context) -> PipelineResult {
    let backends = ctx.backends();
    let reader = reader(ctx);
    let owner = owner(wukong);
    let mut result = PipelineResult::default();

    let steps: [(StepKind, bool); 4] = [
        (StepKind::Network, !record.networks.is_empty()),
        (StepKind::Storage, !record.disks.is_empty()),
        (StepKind::Lifecycle, true),
        (StepKind::Migration, backends.has_step(StepKind::Migration)),
    ];
    for (step, needed) in steps {
        if !needed {
            result.skipped.push(step);
            continue;
        }
        let groups: Vec<(Option<String>, types::Wukong)> = match step {
            StepKind::Network => pipeline::by_backend(&record.networks, |n| n.backend.as_deref())
                .into_iter()
                .map(|(backend, networks)| {
                    (
                        backend,
                        types::Wukong {
                            networks,
                            ..record.clone()
                        },
                    )
                })
                .collect(),
            StepKind::Storage => pipeline::by_backend(&record.disks, |d| d.backend.as_deref())
                .into_iter()
                .map(|(backend, disks)| {
                    (
                        backend,
                        types::Wukong {
                            disks,
                            ..record.clone()
                        },
                    )
                })
                .collect(),
            StepKind::Lifecycle | StepKind::Migration => vec![(None, record.clone())],
        };
        for (backend_name, subset) in groups {
            if let Err(failure) = run_step(
                step,
                backend_name.as_deref(),
                subset,
                &backends,
                &reader,
                &owner,
                ctx,
                &mut result,
            )
            .await
            {
                result.failure = Some(failure);
                return result;
            }
        }
        order_like_spec(&mut result, record);
        result.completed.push(step);
    }
    result
}

#[allow(
    clippy::too_many_arguments,
    reason = "one step's whole context; a struct would only rename it"
)]
async fn run_step(
    step: StepKind,
    backend_name: Option<&str>,
    subset: types::Wukong,
    backends: &crate::config::Backends,
    reader: &Arc<LiveReader>,
    owner: &Owner,
    ctx: &Context,
    result: &mut PipelineResult,
) -> Result<(), StepFailure> {
    let backend = pipeline::backend_for(backends, step, backend_name)?;
    let backend_id = format!("{step}/{}", backend.name);
    let labels = subset.labels.clone();
    let retained: Vec<String> = subset
        .disks
        .iter()
        .filter(|d| d.retain)
        .map(|d| d.name.clone())
        .collect();
    let mut outcome: Outcome = pipeline::call(
        &backend,
        Phase::Reconcile,
        subset,
        result.upstream.clone(),
        Arc::clone(reader) as Arc<dyn ClusterReader>,
    )
    .await?;
    result.plugins.push(pipeline::record(step, &backend));
    let limit = backends.controller.max_concurrent_automatic_migrations;
    let _slot =
        migrations::gate(ctx, limit, step, &backend, &owner.namespace, &mut outcome).await?;
    let failure = |e: ApplyError| {
        let forbidden = match &e {
            ApplyError::Api { what, source } => status::forbidden(source, what, &owner.namespace),
            ApplyError::Invalid { .. }
            | ApplyError::NameTaken { .. }
            | ApplyError::Stale { .. } => None,
        };
        StepFailure {
            step,
            plugin: backend.plugin.id.to_string(),
            reason: match (&e, &forbidden) {
                (_, Some(_)) => "forbidden",
                (ApplyError::NameTaken { .. }, None) => "name-taken",
                (ApplyError::Stale { .. }, None) => pipeline::STALE_READ,
                _ => "apply",
            }
            .into(),
            message: forbidden.unwrap_or_else(|| e.to_string()),
            transient: !e.is_permanent(),
        }
    };
    apply_objects(
        ctx,
        &backend.plugin.manifest.name,
        &backend_id,
        owner,
        &mut outcome,
        &labels,
        &reader.versions(),
        &mut result.written,
    )
    .await
    .map_err(failure)?;
    if let StepStatus::Volumes(volumes) = &outcome.status {
        retain_volumes(ctx, owner, volumes, &retained)
            .await
            .map_err(failure)?;
    }
    result.absorb(step, &backend_id, &mut outcome);
    result.take_status(outcome.status);
    Ok(())
}

/// Makes the claims of retained disks outlive the Wukong: no owner reference the garbage
/// collector would act on (whatever propagation the Wukong is deleted with), the owner-uid
/// mark instead. Retention is the spec's (`retained`: the names of the disks that say
/// so) or the plugin's report. Objects made before this rule get there on the next run.
async fn retain_volumes(
    ctx: &Context,
    owner: &Owner,
    volumes: &[types::Volume],
    retained: &[String],
) -> Result<(), ApplyError> {
    for volume in volumes
        .iter()
        .filter(|v| v.retain || retained.contains(&v.name))
    {
        for target in claim_objects(volume) {
            ctx.applier.retain(&target, owner).await?;
        }
    }
    Ok(())
}

/// The objects behind a volume: its DataVolume (if it is one) and its PVC, as KubeVirt
/// knows volumes.
fn claim_objects(volume: &types::Volume) -> Vec<types::ObjectRef> {
    let object = |api_version: &str, kind: &str| types::ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: None,
        name: volume.claim_name.clone(),
    };
    let mut objects = vec![object("v1", "PersistentVolumeClaim")];
    if volume.data_volume {
        objects.insert(0, object("cdi.kubevirt.io/v1beta1", "DataVolume"));
    }
    objects
}

#[allow(
    clippy::too_many_arguments,
    reason = "one step's writes and where they are told; a struct would only rename it"
)]
async fn apply_objects(
    ctx: &Context,
    plugin: &str,
    backend: &str,
    owner: &Owner,
    outcome: &mut Outcome,
    labels: &[(String, String)],
    read: &ReadVersions,
    written: &mut Vec<String>,
) -> Result<(), crate::cluster::ApplyError> {
    let manager = format!("wukong-{plugin}");
    // Each write is a notable result: the reconcile's event says what changed and which
    // plugin asked. A converged Wukong writes nothing, so it records no events.
    for object in std::mem::take(&mut outcome.apply) {
        let what = format!(
            "{} {}",
            object["kind"].as_str().unwrap_or("object"),
            object["metadata"]["name"].as_str().unwrap_or("?")
        );
        if ctx
            .applier
            .apply(&manager, owner, backend, object, labels, read)
            .await?
        {
            written.push(format!("{what} applied by plugin {plugin}"));
        }
    }
    for target in &outcome.delete {
        if ctx.applier.delete(target, owner, backend, None).await? {
            written.push(format!(
                "{} {} deleted by plugin {plugin}",
                target.kind, target.name
            ));
        }
    }
    Ok(())
}

/// Backends run per group; put networks and volumes back in spec order.
fn order_like_spec(result: &mut PipelineResult, record: &types::Wukong) {
    let network_position = |name: &str| {
        record
            .networks
            .iter()
            .position(|n| n.name == name)
            .unwrap_or(usize::MAX)
    };
    let disk_position = |name: &str| {
        record
            .disks
            .iter()
            .position(|d| d.name == name)
            .unwrap_or(usize::MAX)
    };
    result
        .upstream
        .networks
        .sort_by_key(|n| network_position(&n.name));
    result
        .upstream
        .volumes
        .sort_by_key(|v| disk_position(&v.name));
}

/// Executes one plugin action. KubeVirt refusing it (HTTP 409: the VM is not in a state
/// that allows it) is not a failed step: it is returned as `Ok(Some(KubeVirt's message))`
/// for the caller to record, and published as a Warning event naming the action, so it
/// never loops silently.
async fn execute(
    ctx: &Context,
    wukong: &Wukong,
    owner: &Owner,
    action: &pipeline::StepAction,
) -> Result<Option<String>> {
    let namespace = &owner.namespace;
    match &action.action {
        PluginAction::Subresource(call) => {
            let what = format!("{}/{}", call.plural, call.subresource);
            tracing::info!(action = %what, target = %call.name, "executing action");
            match ctx.applier.subresource(namespace, call).await {
                Err(ApplyError::Api {
                    source: kube::Error::Api(status),
                    ..
                }) if status.code == 409 => {
                    tracing::warn!(action = %what, target = %call.name, message = %status.message, "KubeVirt refused the action");
                    let message = format!("{what} {}: {}", call.name, status.message);
                    let event = Event {
                        warning: true,
                        reason: "ActionRefusedByKubeVirt".into(),
                        message: message.clone(),
                    };
                    publish(ctx, wukong, &[event]).await;
                    return Ok(Some(message));
                }
                other => other?,
            }
        }
        PluginAction::DeleteObject((target, grace)) => {
            tracing::info!(kind = %target.kind, target = %target.name, grace = ?grace, "deleting as an action");
            ctx.applier
                .delete(target, owner, &action.backend, *grace)
                .await?;
        }
    }
    Ok(None)
}

/// Writes status through the status subresource, only when it changed.
/// The answer is remembered, so the next reconcile reads this status without a GET.
async fn write_status(
    ctx: &Context,
    api: &Api<Wukong>,
    wukong: &Wukong,
    status: WukongStatus,
) -> Result<()> {
    if wukong.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({"apiVersion": Wukong::api_version(&()), "kind": Wukong::kind(&()), "status": status});
    let written = api
        .patch_status(
            &wukong.name_any(),
            &PatchParams::apply(STATUS_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    // The metrics follow what the operator wrote: its own write wakes no reconcile that
    // would read it back (see `controller::run`).
    let uid = wukong.uid().unwrap_or_default();
    ctx.metrics.observe_status(&uid, Some(&status));
    ctx.metrics.observe_phase(&uid, status.phase);
    ctx.known.remember_written(written);
    Ok(())
}

/// Publishes the events the previous reconcile did not publish too (see `event_memory`).
async fn publish(ctx: &Context, wukong: &Wukong, events: &[Event]) {
    let uid = wukong.uid().unwrap_or_default();
    let reference = wukong.object_ref(&());
    for event in events {
        if !ctx
            .events
            .fresh(&uid, event.warning, &event.reason, &event.message)
        {
            continue;
        }
        let kube_event = KubeEvent {
            type_: if event.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.clone(),
            note: Some(event.message.chars().take(1000).collect()),
            // NB: kube's recorder folds events with the same type, reason and action into
            // one series and keeps the first note; distinct notes must stay distinct events.
            action: format!("Reconcile-{:08x}", note_hash(&event.message)),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&kube_event, &reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "cannot publish event");
        }
    }
}

/// Deletion: each step's `finalize` in reverse order, retained disks orphaned, then the
/// finalizer goes (by kube-runtime's `finalizer`).
/// Deletion, and when a step's finalize fails, a report on the Wukong of what it waits on
/// and the way out (a Warning event and `StepFailed`): a stuck deletion is never silent.
async fn cleanup(wukong: &Wukong, ctx: &Context, api: &Api<Wukong>) -> Result<Action> {
    let result = finalize_steps(wukong, ctx).await;
    if let Err(error) = &result {
        let cause = match error {
            Error::Step(f) => format!(
                "the {} step's finalize (plugin {}) failed: {}",
                f.step, f.plugin, f.message
            ),
            other => format!("finalizing failed: {other}"),
        };
        let message = format!(
            "deletion waits: {cause}. Fix the cause (the backend in the config, its plugin, \
             the operator's permissions) and it goes on; to let the Wukong go without it, \
             clean up its objects and remove the finalizer: kubectl patch wukong {} \
             --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]' \
             (docs/operating.md)",
            wukong.name_any()
        );
        let event = Event {
            warning: true,
            reason: status::FINALIZE_FAILED.into(),
            message: message.clone(),
        };
        publish(ctx, wukong, &[event]).await;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let previous = wukong.status.clone().unwrap_or_default();
        let reported = status::finalize_failed(previous, &message, &now);
        if let Err(e) = write_status(ctx, api, wukong, reported).await {
            tracing::warn!(error = %e, "cannot report the failing finalize in status");
        }
    }
    result
}

async fn finalize_steps(wukong: &Wukong, ctx: &Context) -> Result<Action> {
    let record = to_contract(wukong);
    let backends = ctx.backends();
    let reader = reader(ctx);
    let owner = owner(wukong);
    // Retention is the spec's: a disk it names keeps the spec's word; a disk no longer in
    // the spec keeps what was last reported for it.
    let volumes: Vec<types::Volume> = wukong
        .status
        .as_ref()
        .map(|s| s.volumes.iter().map(types::Volume::from).collect())
        .unwrap_or_default();
    let volumes: Vec<types::Volume> = volumes
        .into_iter()
        .map(|mut volume| {
            if let Some(disk) = record.disks.iter().find(|d| d.name == volume.name) {
                volume.retain = disk.retain;
            }
            volume
        })
        .collect();
    let retained: Vec<types::ObjectRef> = volumes
        .iter()
        .filter(|v| v.retain)
        .flat_map(claim_objects)
        .collect();
    for target in &retained {
        ctx.applier.retain(target, &owner).await?;
    }
    let upstream = types::Upstream {
        networks: Vec::new(),
        volumes,
        lifecycle: None,
    };
    for step in [
        StepKind::Migration,
        StepKind::Lifecycle,
        StepKind::Storage,
        StepKind::Network,
    ] {
        let groups: Vec<Option<String>> = match step {
            StepKind::Network => pipeline::by_backend(&record.networks, |n| n.backend.as_deref())
                .into_keys()
                .collect(),
            StepKind::Storage => pipeline::by_backend(&record.disks, |d| d.backend.as_deref())
                .into_keys()
                .collect(),
            _ if backends.has_step(step) => vec![None],
            _ => Vec::new(),
        };
        for name in groups {
            let backend =
                pipeline::backend_for(&backends, step, name.as_deref()).map_err(Error::Step)?;
            let mut outcome = pipeline::call(
                &backend,
                Phase::Finalize,
                record.clone(),
                upstream.clone(),
                Arc::clone(&reader) as Arc<dyn ClusterReader>,
            )
            .await
            .map_err(Error::Step)?;
            let backend_id = format!("{step}/{}", backend.name);
            keep_retained(ctx, wukong, &backend, &retained, &mut outcome).await;
            apply_objects(
                ctx,
                &backend.plugin.manifest.name,
                &backend_id,
                &owner,
                &mut outcome,
                &record.labels,
                &reader.versions(),
                // The Wukong is going away: its last event says every step finalized.
                &mut Vec::new(),
            )
            .await?;
            for action in std::mem::take(&mut outcome.actions) {
                let action = pipeline::StepAction {
                    step,
                    backend: backend_id.clone(),
                    action,
                };
                execute(ctx, wukong, &owner, &action).await?;
            }
        }
    }
    ctx.events.forget(&record.uid);
    publish(
        ctx,
        wukong,
        &[Event {
            warning: false,
            reason: "Deleted".into(),
            message: "every step finalized; removing the finalizer".into(),
        }],
    )
    .await;
    Ok(Action::await_change())
}

/// Drops from a finalize outcome the deletes of retained disks' objects: whatever a plugin
/// asks, a disk the spec retains outlives its Wukong. Each dropped delete is a Warning.
async fn keep_retained(
    ctx: &Context,
    wukong: &Wukong,
    backend: &crate::config::Backend,
    retained: &[types::ObjectRef],
    outcome: &mut Outcome,
) {
    let is_retained = |target: &types::ObjectRef| {
        retained.iter().any(|r| {
            r.api_version == target.api_version && r.kind == target.kind && r.name == target.name
        })
    };
    let mut kept = Vec::new();
    outcome.delete.retain(|target| {
        let keep = is_retained(target);
        if keep {
            kept.push(target.clone());
        }
        !keep
    });
    let events: Vec<Event> = kept
        .iter()
        .map(|target| Event {
            warning: true,
            reason: "RetainedDiskKept".into(),
            message: format!(
                "plugin {} asked to delete {} {}, which a retained disk uses; it is kept",
                backend.plugin.id, target.kind, target.name
            ),
        })
        .collect();
    publish(ctx, wukong, &events).await;
}

/// A short stable hash of an event's note (FNV-1a), to tell distinct events apart.
fn note_hash(note: &str) -> u32 {
    note.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}
