//! The reconcile loop: kube-runtime's `Controller` over Wukongs, the finalizer, the step
//! pipeline, status through the status subresource, events, requeue and backoff.

mod event_memory;
mod migrations;
mod node_changes;
mod pipeline;
mod reconcile;
mod status;
mod written;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::api::{WUKONG_LABEL, Wukong};
use crate::cluster::{Applier, Kinds};
use crate::config::Backends;
use crate::telemetry::Metrics;
use event_memory::EventMemory;
use written::KnownCopies;

#[cfg(test)]
pub(crate) use pipeline::PipelineResult;
pub use pipeline::StepFailure;
#[cfg(test)]
pub(crate) use status::build as status_for_fuzzing;
pub use status::{NETWORKS_CONFIGURED, READY, STEP_FAILED, VOLUMES_BOUND};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Apply(#[from] crate::cluster::ApplyError),
    #[error("{} step failed: {}", .0.step.as_str(), .0.message)]
    Step(StepFailure),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Errors that retrying soon may fix get short backoff; the rest wait longer.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube(_) | Self::Finalizer(_) => true,
            Self::Apply(e) => !e.is_permanent(),
            Self::Step(f) => f.transient,
        }
    }

    /// The `result` label of the reconcile metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube-error",
            Self::Apply(_) => "apply-error",
            Self::Step(_) => "step-error",
            Self::Finalizer(_) => "finalizer-error",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes events on Wukongs.
    pub recorder: Recorder,
    /// The loaded backends; replaced whole when the config or a plugin changes.
    pub backends: Arc<RwLock<Arc<Backends>>>,
    /// Applies outcomes; counts writes.
    pub applier: Applier,
    /// Discovered kinds, shared with the reader.
    pub kinds: Kinds,
    /// The process's metrics (reconciles, plugin calls, Wukongs by phase, ...).
    pub metrics: &'static Metrics,
    /// Consecutive failures per Wukong uid, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// What each Wukong's last reconciles published (a converged one publishes none).
    pub(crate) events: EventMemory,
    /// The last full copy of each Wukong, so a reconcile reads it only when it changed.
    pub(crate) known: KnownCopies,
    /// Bumped by [`Context::reconcile_all`]; the controller reconciles every Wukong.
    reconcile_all: tokio::sync::watch::Sender<()>,
}

impl Context {
    pub fn new(client: Client, backends: Arc<RwLock<Arc<Backends>>>) -> Arc<Self> {
        let kinds = Kinds::new(client.clone());
        let reporter = Reporter {
            controller: "wukong".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            applier: Applier::new(kinds.clone()),
            kinds,
            metrics: Metrics::global(),
            client,
            backends,
            failures: Mutex::default(),
            events: EventMemory::default(),
            known: KnownCopies::default(),
            reconcile_all: tokio::sync::watch::Sender::new(()),
        })
    }

    /// How many reconciles of the Wukong `uid` failed in a row.
    pub(crate) fn failure_count(&self, uid: &str) -> u32 {
        self.failures
            .lock()
            .map_or(0, |failures| failures.get(uid).copied().unwrap_or(0))
    }

    /// Reconciles every Wukong soon (after a hot swap of the backends).
    pub fn reconcile_all(&self) {
        self.reconcile_all.send_replace(());
    }

    /// One item per [`Context::reconcile_all`] from now on.
    fn reconcile_all_requests(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.reconcile_all.subscribe(), |mut requests| async move {
            requests.changed().await.ok().map(|()| ((), requests))
        })
    }

    /// The backends as of now (a reload swaps them between reconciles).
    pub fn backends(&self) -> Arc<Backends> {
        self.backends
            .read()
            .map(|b| Arc::clone(&b))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }
}

/// Kinds Wukong creates or follows; a change to a labelled one reconciles its Wukong. The
/// last field says whether to watch (and cache) every object of the kind rather than only
/// those with the Wukong label. Every object: the PVCs CDI makes for DataVolumes carry no
/// Wukong label; the cluster-scoped kinds plugins read on every call (StorageClasses,
/// Nodes) carry none; and a miss in such a cache answers "absent" without a request (the
/// lifecycle step reads its VM and VMI, the network step its NADs, before they exist).
const WATCHED: &[(&str, &str, &str, bool)] = &[
    ("kubevirt.io", "v1", "VirtualMachine", true),
    ("kubevirt.io", "v1", "VirtualMachineInstance", true),
    ("storage.k8s.io", "v1", "StorageClass", true),
    ("", "v1", "Node", true),
    (
        "kubevirt.io",
        "v1",
        "VirtualMachineInstanceMigration",
        false,
    ),
    ("cdi.kubevirt.io", "v1beta1", "DataVolume", false),
    ("", "v1", "PersistentVolumeClaim", true),
    // Every NAD: the network step reads its NAD by name before it exists, and a NAD the
    // user made carries no Wukong label.
    ("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition", true),
];

/// What the controller watches: Wukongs' metadata only. NB: a full watch decodes every
/// Wukong of a list at once, so one the operator cannot decode (nesting past the JSON
/// parser's depth in a free-form field, a value past a field's type) would fail the whole
/// list and stop every Wukong; each is decoded on its own by its reconcile instead.
type WukongMeta = PartialObjectMeta<Wukong>;

/// Takes the Wukong as the operator last saw it when nobody else changed it since (see
/// `written`), else reads it; times and counts one reconcile.
async fn instrumented_reconcile(meta: Arc<WukongMeta>, ctx: Arc<Context>) -> Result<Action> {
    let uid = meta.uid().unwrap_or_default();
    let deleting = meta.metadata.deletion_timestamp.is_some();
    let started = Instant::now();
    let result = match read_wukong(&meta, &ctx).await {
        Ok(Some(wukong)) => {
            let status = wukong.status.as_ref();
            ctx.metrics.observe_status(&uid, status);
            ctx.metrics
                .observe_phase(&uid, status.and_then(|s| s.phase));
            reconcile::reconcile(wukong, Arc::clone(&ctx)).await
        }
        Ok(None) => Ok(Action::await_change()),
        Err(kube::Error::SerdeError(error)) => {
            reconcile::report_unreadable(&ctx, &meta, &error).await;
            Ok(Action::await_change())
        }
        Err(error) => Err(Error::Kube(error)),
    };
    let label = result.as_ref().map_or_else(Error::metric_label, |_| "ok");
    ctx.metrics
        .reconciled(label, started.elapsed().as_secs_f64());
    if deleting && result.is_ok() {
        ctx.metrics.forget(&uid);
        ctx.events.forget(&uid);
        ctx.known.forget(&uid);
    }
    result
}

/// The known copy when it is current, else a GET (remembered for the next reconcile).
async fn read_wukong(meta: &WukongMeta, ctx: &Context) -> kube::Result<Option<Arc<Wukong>>> {
    let uid = meta.uid().unwrap_or_default();
    if let Some(known) = ctx
        .known
        .recall(&uid, &meta.resource_version().unwrap_or_default())
    {
        return Ok(Some(known));
    }
    let api = Api::<Wukong>::namespaced(ctx.client.clone(), &meta.namespace().unwrap_or_default());
    Ok(api
        .get_opt(&meta.name_any())
        .await?
        .map(|wukong| ctx.known.remember(wukong)))
}

/// Runs the controller until a shutdown signal.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let wukongs = Api::<WukongMeta>::all(ctx.client.clone());
    let settings = ctx.backends().controller.clone();
    let writer = reflector::store::Writer::<WukongMeta>::default();
    let reader = writer.as_reader();
    let main = reflector::reflector(
        writer,
        watcher(wukongs, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|wukong| wukong.metadata.managed_fields = None),
    )
    .applied_objects()
    .try_filter({
        let ctx = Arc::clone(&ctx);
        move |meta| {
            let own = ctx.known.is_own_write(
                &meta.uid().unwrap_or_default(),
                &meta.resource_version().unwrap_or_default(),
            );
            ctx.metrics
                .triggered(if own { "Wukong/own-write" } else { "Wukong" });
            std::future::ready(!own)
        }
    });
    // NB: the operator's own status write coming back wakes nobody (it was counted above,
    // and the store still takes it): the reconcile that wrote it ran every step on what it
    // wrote, executed the actions after recording them, and a plugin that wants to be
    // called again soon says so with a requeue hint. Waking on it cost one reconcile in
    // three at 1,000 Wukongs (`cargo bench -p wukong --bench operator_scale`).
    let mut controller = Controller::for_stream(main, reader)
        .trigger_backoff(EachWatchBacksOff)
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(settings.concurrency)
                // Triggers gathered (`[controller] debounceMs`, see `config`).
                .debounce(Duration::from_millis(settings.debounce_ms)),
        );
    ctx.metrics.watch_phases();
    // The VMIs' store, to find the Wukongs on a node whose schedulability changed (VMIs
    // come before Nodes in WATCHED).
    let mut vmis: Option<reflector::Store<DynamicObject>> = None;
    for &(group, version, kind, every_object) in WATCHED {
        match ctx.kinds.resolve(&api_version(group, version), kind).await {
            Ok(resolved) => {
                let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resolved.resource);
                // Objects carry the Wukong's label: VMIs are owned by the VM, PVCs by
                // their DataVolume, so owner references alone would miss them. The watch
                // fills the cache plugins read from before it triggers the reconcile.
                let writer = reflector::store::Writer::new(resolved.resource.clone());
                ctx.kinds.cache().insert(
                    resolved.resource.clone(),
                    writer.as_reader(),
                    (!every_object).then_some(WUKONG_LABEL),
                );
                let selection = match every_object {
                    true => watcher::Config::default(),
                    false => watcher::Config::default().labels(WUKONG_LABEL),
                };
                // List items come without apiVersion and kind; plugins read whole objects.
                let types = kube::core::TypeMeta {
                    api_version: resolved.resource.api_version.clone(),
                    kind: resolved.resource.kind.clone(),
                };
                let watch = watcher(api, selection)
                    .default_backoff()
                    .modify(move |object| {
                        object.types.get_or_insert_with(|| types.clone());
                        // Often half an object's bytes, and neither plugins nor the
                        // ownership rule read them.
                        object.metadata.managed_fields = None;
                    });
                if kind == "VirtualMachineInstance" {
                    vmis = Some(writer.as_reader());
                }
                let touched = reflector::reflector(writer, watch).touched_objects();
                controller = match (kind, &vmis) {
                    // Nodes carry no Wukong label: a cordon, a taint or a lost node wakes
                    // the Wukongs whose VMs run there (an evacuation starts now, not at the
                    // migration step's next poll).
                    ("Node", Some(vmis)) => {
                        let wukongs = node_changes::wukongs_on_changed_node(vmis.clone());
                        let metrics = ctx.metrics;
                        controller.watches_stream_with(
                            touched,
                            move |node| {
                                let woken = wukongs(node);
                                woken.iter().for_each(|_| metrics.triggered(kind));
                                woken
                            },
                            resolved.resource.clone(),
                        )
                    }
                    _ => {
                        let metrics = ctx.metrics;
                        let own_writes = Arc::clone(&ctx.applier.own_writes);
                        controller.watches_stream_with(
                            touched,
                            move |object| {
                                if own_writes.is_own(&object) {
                                    // An apply of the operator's own coming back.
                                    metrics.triggered("own-object-write");
                                    return None;
                                }
                                let namespace = object.namespace();
                                let wukong = object.labels().get(WUKONG_LABEL).map(|name| {
                                    ObjectRef::new(name)
                                        .within(namespace.as_deref().unwrap_or_default())
                                });
                                if wukong.is_some() {
                                    metrics.triggered(kind);
                                }
                                wukong
                            },
                            resolved.resource.clone(),
                        )
                    }
                };
            }
            Err(e) => {
                tracing::warn!(kind = %GroupVersionKind::gvk(group, version, kind).kind, error = %e, "kind not served by this cluster; not watching it")
            }
        }
    }
    controller
        .reconcile_all_on(ctx.reconcile_all_requests())
        .shutdown_on_signal()
        .run(instrumented_reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(wukong = %object, "reconciled"),
                Err(ControllerError::QueueError(e)) => {
                    tracing::warn!(error = %e, "a watch failed; it retries with backoff")
                }
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
    Ok(())
}

/// The trigger stream's own backoff, which never waits: every watch above backs off on
/// its own (`default_backoff`), and a backoff on the merged stream would sleep once for each
/// watch's error in turn. After an apiserver restart every watch answers 410 Gone, and
/// those sleeps (0.8 s doubling to 30 s, nine watches) held every Wukong for minutes
/// (`host/tests/faults.rs`).
struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// Backoff: transient errors from 1 s doubling to 5 min; the rest from 30 s.
fn error_policy(wukong: Arc<WukongMeta>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = wukong.uid().unwrap_or_default();
    let attempts = ctx.failures.lock().map_or(1, |mut failures| {
        let count = failures.entry(uid).or_insert(0);
        *count = count.saturating_add(1);
        *count
    });
    if let Error::Step(failure) = error
        && failure.reason == pipeline::STALE_READ
        && attempts <= pipeline::STALE_RETRIES_UNREPORTED
    {
        // The cache catches up within moments: run again soon, unreported.
        ctx.metrics.triggered("stale-retry");
        return Action::requeue(Duration::from_millis(250) * attempts);
    }
    ctx.metrics.triggered("retry");
    let base = if error.is_transient() { 1 } else { 30 };
    let delay = Duration::from_secs((base << attempts.min(9).saturating_sub(1)).min(300));
    tracing::warn!(wukong = %wukong.name_any(), namespace = ?wukong.namespace(), error = %error, attempts, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
