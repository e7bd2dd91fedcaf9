//! The step pipeline for one Wukong: network → storage → lifecycle → migration, each a
//! plugin call (one per backend in use), each step's objects applied before the next
//! step runs, so later steps read what earlier ones made.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::PluginRecord;
use crate::config::{Backend, Backends};
use crate::plugin::types::{self, Action, Condition, Event, StepKind, Upstream};
use crate::plugin::{ClusterReader, Outcome, Phase, StepRequest, StepStatus};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::PluginLabel;

/// What one run of the pipeline produced.
#[derive(Default)]
pub struct PipelineResult {
    pub upstream: Upstream,
    pub migration: Option<types::MigrationStatus>,
    pub conditions: Vec<Condition>,
    pub events: Vec<Event>,
    /// What the steps wrote, in order (`Kind name applied by plugin p`), told in one event.
    pub written: Vec<String>,
    pub actions: Vec<StepAction>,
    pub requeue_after_ms: Option<u64>,
    pub plugins: Vec<PluginRecord>,
    /// The step that failed, if one did; later steps did not run.
    pub failure: Option<StepFailure>,
    /// Steps that ran to the end (every backend's call applied).
    pub completed: Vec<StepKind>,
    /// Steps with nothing to do (no networks, no disks, no migration backend).
    pub skipped: Vec<StepKind>,
}

/// A one-shot action and the step and backend (`step/name`) whose plugin asked for it.
#[derive(Debug, Clone)]
pub struct StepAction {
    pub step: StepKind,
    pub backend: String,
    pub action: Action,
}

/// The reason of a step whose write met an object changed since the step read it.
pub const STALE_READ: &str = "stale-read";

/// How many stale reads in a row are retried at once without a report; past that, the
/// object keeps changing under the step and `StepFailed` says so.
pub const STALE_RETRIES_UNREPORTED: u32 = 3;

/// A failed step, for the `StepFailed` condition.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub step: StepKind,
    /// `name@version` of the plugin, or the backend name when no plugin was found.
    pub plugin: String,
    /// Short, stable: `deadline`, `capability`, `unknown-backend`, `apply`, ...
    pub reason: String,
    pub message: String,
    /// Whether retrying soon may help.
    pub transient: bool,
}

/// Runs one plugin call on a blocking thread.
pub async fn call(
    backend: &Arc<Backend>,
    phase: Phase,
    wukong: types::Wukong,
    upstream: Upstream,
    reader: Arc<dyn ClusterReader>,
) -> Result<Outcome, StepFailure> {
    let plugin = Arc::clone(&backend.plugin);
    let context = types::Context {
        wukong,
        config: backend.config_json.clone(),
        backend: backend.name.clone(),
        now: k8s_openapi::jiff::Timestamp::now().to_string(),
    };
    let step = plugin.step();
    let id = plugin.id.to_string();
    let metrics = Metrics::global();
    let label = PluginLabel {
        step: step.as_str(),
        phase: phase.name(),
        name: &backend.plugin.manifest.name,
        version: &backend.plugin.manifest.version,
    };
    let started = Instant::now();
    let called = tokio::task::spawn_blocking(move || {
        let cpu = crate::telemetry::thread_cpu_time();
        let called = plugin.call(
            StepRequest {
                phase,
                context: &context,
                upstream: &upstream,
            },
            reader,
        );
        (
            called,
            crate::telemetry::thread_cpu_time().saturating_sub(cpu),
        )
    })
    .await;
    let (called, cpu) = match called {
        Ok((called, cpu)) => (Ok(called), cpu),
        Err(e) => (Err(e), Duration::ZERO),
    };
    // Failed calls are timed too: a plugin that runs into its deadline shows as slow.
    metrics.plugin_called(&label, started.elapsed().as_secs_f64(), cpu.as_secs_f64());
    match &called {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => metrics.plugin_failed(&label, Some(&e.failure)),
        Err(_) => metrics.plugin_failed(&label, None),
    }
    called
        .map_err(|e| StepFailure {
            step,
            plugin: id.clone(),
            reason: "internal".into(),
            message: format!("plugin call task failed: {e}"),
            transient: true,
        })?
        .map_err(|e| StepFailure {
            step,
            plugin: e.plugin.clone(),
            reason: e.failure.label().into(),
            // The plugin is its own field (`StepFailed` names it once).
            message: e.failure.to_string(),
            transient: e.failure.is_transient(),
        })
}

/// Groups items by the backend they name (None: the default), keeping spec order inside.
pub fn by_backend<T>(
    items: &[T],
    backend_of: impl Fn(&T) -> Option<&str>,
) -> BTreeMap<Option<String>, Vec<T>>
where
    T: Clone,
{
    let mut groups: BTreeMap<Option<String>, Vec<T>> = BTreeMap::new();
    for item in items {
        groups
            .entry(backend_of(item).map(str::to_owned))
            .or_default()
            .push(item.clone());
    }
    groups
}

/// The backend for a step and name, or the failure that says why there is none.
pub fn backend_for(
    backends: &Backends,
    step: StepKind,
    name: Option<&str>,
) -> Result<Arc<Backend>, StepFailure> {
    backends
        .get(step, name)
        .cloned()
        .ok_or_else(|| StepFailure {
            step,
            plugin: name.unwrap_or("default").to_owned(),
            reason: "unknown-backend".into(),
            message: match name {
                Some(name) => format!(
                    "{} backend {name:?} is not configured (configured: {})",
                    step.as_str(),
                    backends.names(step).join(", ")
                ),
                None => format!("no {} backend is configured", step.as_str()),
            },
            transient: false,
        })
}

/// The status record of a backend.
pub fn record(step: StepKind, backend: &Backend) -> PluginRecord {
    PluginRecord {
        step: step.as_str().to_owned(),
        backend: backend.name.clone(),
        name: backend.plugin.manifest.name.clone(),
        version: backend.plugin.manifest.version.clone(),
        digest: backend.plugin.digest.clone(),
    }
}

/// Adds `condition`; one of its type already there (another backend of the same step, e.g.
/// `VolumesBound` from Longhorn and from Ceph) is combined with it: `True` only when both
/// are, the reason of the one that is not, both messages.
fn merge_condition(conditions: &mut Vec<Condition>, condition: Condition) {
    let Some(existing) = conditions
        .iter_mut()
        .find(|c| c.condition_type == condition.condition_type)
    else {
        conditions.push(condition);
        return;
    };
    let both_true = existing.status == "True" && condition.status == "True";
    if !both_true && existing.status == "True" {
        existing.status.clone_from(&condition.status);
        existing.reason.clone_from(&condition.reason);
    }
    if !condition.message.is_empty() && condition.message != existing.message {
        existing.message = match existing.message.is_empty() {
            true => condition.message,
            false => format!("{}; {}", existing.message, condition.message),
        };
    }
}

impl PipelineResult {
    /// Takes an outcome's conditions, events, actions (from `step`'s `backend`) and
    /// requeue hint; returns the rest.
    pub fn absorb(&mut self, step: StepKind, backend: &str, outcome: &mut Outcome) {
        for condition in outcome.conditions.drain(..) {
            merge_condition(&mut self.conditions, condition);
        }
        self.events.append(&mut outcome.events);
        self.actions
            .extend(outcome.actions.drain(..).map(|action| StepAction {
                step,
                backend: backend.to_owned(),
                action,
            }));
        if let Some(ms) = outcome.requeue_after_ms {
            self.requeue_after_ms =
                Some(self.requeue_after_ms.map_or(ms, |current| current.min(ms)));
        }
    }

    /// One event for every object this run wrote (one per object cost a request each:
    /// three of a new Wukong's twenty): `Applied` when it applied any, else `Deleted`.
    pub fn written_event(&self) -> Option<Event> {
        let reason = match self.written.iter().any(|w| w.contains(" applied by ")) {
            _ if self.written.is_empty() => return None,
            true => "Applied",
            false => "Deleted",
        };
        Some(Event {
            warning: false,
            reason: reason.into(),
            message: self.written.join("; "),
        })
    }

    /// Whether `step`'s part of the status is this run's: it completed, or had nothing to
    /// do. Otherwise (it failed, or an earlier step did) the previous part stands.
    pub fn reported(&self, step: StepKind) -> bool {
        self.completed.contains(&step) || self.skipped.contains(&step)
    }

    /// Stores a step's typed status part.
    pub fn take_status(&mut self, status: StepStatus) {
        match status {
            StepStatus::Networks(mut networks) => self.upstream.networks.append(&mut networks),
            StepStatus::Volumes(mut volumes) => self.upstream.volumes.append(&mut volumes),
            StepStatus::Lifecycle(lifecycle) => self.upstream.lifecycle = Some(lifecycle),
            StepStatus::Migration(migration) => self.migration = migration,
            StepStatus::Finalized => {}
        }
    }
}

#[allow(
    clippy::derivable_impls,
    reason = "the type is generated by bindgen; a derive cannot be added there"
)]
impl Default for Upstream {
    fn default() -> Self {
        Self {
            networks: Vec::new(),
            volumes: Vec::new(),
            lifecycle: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            condition_type: "VolumesBound".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_condition_two_backends_report_is_true_only_when_both_are() {
        let mut conditions = vec![bound("True", "AllBound", "1 of 1 volumes bound")];
        merge_condition(
            &mut conditions,
            bound("False", "Pending", "0 of 1 volumes bound"),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            (conditions[0].status.as_str(), conditions[0].reason.as_str()),
            ("False", "Pending")
        );
        assert_eq!(
            conditions[0].message,
            "1 of 1 volumes bound; 0 of 1 volumes bound"
        );
        let mut both = vec![bound("True", "AllBound", "a")];
        merge_condition(&mut both, bound("True", "AllBound", "b"));
        assert_eq!(
            (both[0].status.as_str(), both[0].message.as_str()),
            ("True", "a; b")
        );
    }
}
