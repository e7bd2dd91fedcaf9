//! The operator's Prometheus metrics (`prometheus-client`), one registry per process.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `wukong_reconciles_total`, `wukong_reconcile_duration_seconds` | `result` (`ok` or the error kind) | reconciles |
//! | `wukong_plugin_call_duration_seconds` | `step`, `phase`, `plugin`, `version` | sandboxed plugin calls (`sum by (step)` for per-step) |
//! | `wukong_plugin_call_cpu_seconds_total` | `step`, `phase`, `plugin`, `version` | CPU time inside those calls, host reads included: set against the process's CPU time, the sandbox's share |
//! | `wukong_plugin_failures_total` | `step`, `plugin`, `version`, `kind`, `reason` | failed plugin calls; `kind` is deadline, memory, trap, capability or other |
//! | `wukong_wukongs` | `phase` | Wukongs by `status.phase`, from the leader's cache at scrape time |
//! | `wukong_lifecycle_actions_started_total`, `wukong_lifecycle_actions_total`, `wukong_lifecycle_action_duration_seconds` | `action` (+ `outcome`) | one-shot lifecycle actions, from `status.lifecycleState` |
//! | `wukong_migrations_total`, `wukong_migration_duration_seconds` | `trigger` (`manual` or the policy trigger), `phase` | finished migrations, from `status.migrationStatus` |
//! | `wukong_leader` | | 1 while this replica leads |
//! | `wukong_kube_requests_total` | `verb`, `resource` | the operator's requests to the apiserver (`telemetry::requests`) |
//! | `wukong_reconcile_triggers_total` | `source` | what asked for a reconcile: a watched kind's change, the Wukong's own (`Wukong/own-write`: the operator's own status write coming back, counted but waking nobody; `own-object-write` likewise for the objects it applies), a plugin's requeue hint, a retry (several triggers within the debounce make one reconcile) |
//!
//! Actions and migrations are counted by the replica that sees them finish (their
//! timestamps are after it started), so a new leader does not count its predecessor's.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use k8s_openapi::jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::phases::PhaseCollector;
use crate::api::{WukongPhase, WukongStatus};
use crate::plugin::CallFailure;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    step: &'static str,
    phase: &'static str,
    plugin: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    step: &'static str,
    plugin: String,
    version: String,
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationLabels {
    trigger: String,
    phase: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Plugin calls take microseconds to seconds (the deadline).
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
}

/// Reconciles take milliseconds to tens of seconds.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 3.0, 11))
}

/// Lifecycle actions and migrations take seconds to many minutes.
fn action_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 12))
}

/// Which plugin ran a call, for labels.
pub struct PluginLabel<'a> {
    pub step: &'static str,
    pub phase: &'static str,
    pub name: &'a str,
    pub version: &'a str,
}

/// The metrics of this process.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histograms<ResultLabels>,
    plugin_calls: Histograms<CallLabels>,
    plugin_cpu: Family<CallLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    plugin_failures: Family<FailureLabels, Counter>,
    actions_started: Family<ActionLabels, Counter>,
    actions: Family<OutcomeLabels, Counter>,
    action_duration: Histograms<OutcomeLabels>,
    migrations: Family<MigrationLabels, Counter>,
    migration_duration: Histograms<MigrationLabels>,
    leader: Gauge,
    kube_requests: Family<RequestLabels, Counter>,
    triggers: Family<TriggerLabels, Counter>,
    phases: PhaseCollector,
    /// Per Wukong uid: the action and migration records already counted.
    counted: Mutex<HashMap<String, HashSet<String>>>,
    /// Records finished before this process started are its predecessor's to count.
    started: Timestamp,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    /// The process's metrics. NB: one per process, because the plugin-call wrapper that
    /// records timings is reached from code that has no handle to pass it through.
    pub fn global() -> &'static Self {
        &GLOBAL
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wukong");
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            plugin_calls: Family::new_with_constructor(call_histogram),
            plugin_cpu: Family::default(),
            plugin_failures: Family::default(),
            actions_started: Family::default(),
            actions: Family::default(),
            action_duration: Family::new_with_constructor(action_histogram),
            migrations: Family::default(),
            migration_duration: Family::new_with_constructor(action_histogram),
            leader: Gauge::default(),
            kube_requests: Family::default(),
            triggers: Family::default(),
            phases: PhaseCollector::default(),
            counted: Mutex::default(),
            started: Timestamp::now(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles by result: ok, or the error kind",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by result",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Sandboxed plugin call duration by step, phase, plugin and version",
            metrics.plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_cpu_seconds",
            "CPU time the calling thread spent inside sandboxed plugin calls (the sandbox's cost, host reads included), by step, phase, plugin and version",
            metrics.plugin_cpu.clone(),
        );
        registry.register(
            "plugin_failures",
            "Failed plugin calls by kind (deadline, memory, trap, capability, other) and exact reason",
            metrics.plugin_failures.clone(),
        );
        registry.register(
            "lifecycle_actions_started",
            "Lifecycle actions seen starting",
            metrics.actions_started.clone(),
        );
        registry.register(
            "lifecycle_actions",
            "Lifecycle actions finished, by outcome",
            metrics.actions.clone(),
        );
        registry.register(
            "lifecycle_action_duration_seconds",
            "Lifecycle action duration, request to finish",
            metrics.action_duration.clone(),
        );
        registry.register(
            "migrations",
            "Migrations finished, by trigger (manual or the policy's trigger) and phase",
            metrics.migrations.clone(),
        );
        registry.register(
            "migration_duration_seconds",
            "Migration duration, start to finish",
            metrics.migration_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        registry.register(
            "kube_requests",
            "The operator's requests to the apiserver, by verb and resource",
            metrics.kube_requests.clone(),
        );
        registry.register(
            "reconcile_triggers",
            "What asked for reconciles, by source (a watched kind, the Wukong, a requeue hint, a retry)",
            metrics.triggers.clone(),
        );
        registry.register_collector(Box::new(metrics.phases.clone()));
        Self {
            registry,
            ..metrics
        }
    }

    /// One request to the apiserver.
    pub fn kube_request(&self, verb: &'static str, resource: &str) {
        self.kube_requests
            .get_or_create(&RequestLabels {
                verb,
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// Something asked for a reconcile (see the table above for the sources).
    pub fn triggered(&self, source: &'static str) {
        self.triggers.get_or_create(&TriggerLabels { source }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    pub fn reconciled(&self, result: &'static str, seconds: f64) {
        let labels = ResultLabels { result };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// A call took `seconds` of wall-clock time, `cpu_seconds` of it on the CPU.
    pub fn plugin_called(&self, plugin: &PluginLabel<'_>, seconds: f64, cpu_seconds: f64) {
        let labels = CallLabels {
            step: plugin.step,
            phase: plugin.phase,
            plugin: plugin.name.to_owned(),
            version: plugin.version.to_owned(),
        };
        self.plugin_cpu.get_or_create(&labels).inc_by(cpu_seconds);
        self.plugin_calls.get_or_create(&labels).observe(seconds);
    }

    /// A failed call; `failure` is `None` when the call did not even run (a host error).
    pub fn plugin_failed(&self, plugin: &PluginLabel<'_>, failure: Option<&CallFailure>) {
        self.plugin_failures
            .get_or_create(&FailureLabels {
                step: plugin.step,
                plugin: plugin.name.to_owned(),
                version: plugin.version.to_owned(),
                kind: failure.map_or("other", failure_kind),
                reason: failure.map_or("internal", CallFailure::label),
            })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts Wukongs by phase from this cache at every scrape.
    pub fn watch_phases(&self) {
        if let Ok(mut slot) = self.phases.phases.lock() {
            slot.get_or_insert_with(Default::default);
        }
    }

    /// Notes a Wukong's phase as a reconcile read it.
    pub fn observe_phase(&self, uid: &str, phase: Option<WukongPhase>) {
        if let Ok(mut slot) = self.phases.phases.lock()
            && let Some(phases) = slot.as_mut()
        {
            phases.insert(uid.to_owned(), phase);
        }
    }

    /// Counts what a Wukong's status shows newly started or finished.
    pub fn observe_status(&self, uid: &str, status: Option<&WukongStatus>) {
        let Some(status) = status else { return };
        let mut current = HashSet::new();
        let mut fresh: Vec<Record> = Vec::new();
        let after_start = |at: &str| at.parse::<Timestamp>().is_ok_and(|t| t >= self.started);
        if let Some(lifecycle) = &status.lifecycle_state {
            if let Some(action) = &lifecycle.current_action {
                let key = format!("start/{}", action.request_id);
                if after_start(&action.started_at) {
                    fresh.push(Record {
                        key: key.clone(),
                        what: Counted::Started {
                            action: action.action.clone(),
                        },
                        seconds: None,
                    });
                }
                current.insert(key);
            }
            for record in &lifecycle.history {
                let Some(finished) = record.finished_at.as_deref() else {
                    continue;
                };
                let key = format!("action/{}", record.request_id);
                if after_start(finished) {
                    fresh.push(Record {
                        key: key.clone(),
                        what: Counted::Action {
                            action: record.action.clone(),
                            outcome: record.outcome.clone(),
                        },
                        seconds: seconds_between(&record.started_at, finished),
                    });
                }
                current.insert(key);
            }
        }
        if let Some(migration) = &status.migration_status
            && let Some(finished) = migration.finished_at.as_deref()
        {
            let key = format!(
                "migration/{}/{}",
                migration.request_id,
                migration.started_at.as_deref().unwrap_or(finished)
            );
            if after_start(finished) {
                fresh.push(Record {
                    key: key.clone(),
                    what: Counted::Migration {
                        trigger: if migration.automatic {
                            migration
                                .trigger
                                .clone()
                                .unwrap_or_else(|| "automatic".into())
                        } else {
                            "manual".into()
                        },
                        phase: migration.phase.clone(),
                    },
                    seconds: migration
                        .started_at
                        .as_deref()
                        .and_then(|started| seconds_between(started, finished)),
                });
            }
            current.insert(key);
        }
        let Ok(mut counted) = self.counted.lock() else {
            return;
        };
        let seen = counted.entry(uid.to_owned()).or_default();
        for record in fresh {
            self.count(record, seen);
        }
        // Records only ever leave the status, so forgetting those gone cannot recount one.
        *seen = current;
    }

    /// Forgets a Wukong that is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut counted) = self.counted.lock() {
            counted.remove(uid);
        }
        if let Ok(mut slot) = self.phases.phases.lock()
            && let Some(phases) = slot.as_mut()
        {
            phases.remove(uid);
        }
    }

    fn count(&self, record: Record, seen: &HashSet<String>) {
        if seen.contains(&record.key) {
            return;
        }
        match record.what {
            Counted::Started { action } => {
                self.actions_started
                    .get_or_create(&ActionLabels { action })
                    .inc();
            }
            Counted::Action { action, outcome } => {
                let labels = OutcomeLabels { action, outcome };
                self.actions.get_or_create(&labels).inc();
                if let Some(seconds) = record.seconds {
                    self.action_duration.get_or_create(&labels).observe(seconds);
                }
            }
            Counted::Migration { trigger, phase } => {
                let labels = MigrationLabels { trigger, phase };
                self.migrations.get_or_create(&labels).inc();
                if let Some(seconds) = record.seconds {
                    self.migration_duration
                        .get_or_create(&labels)
                        .observe(seconds);
                }
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A started or finished action or migration seen in a status, keyed so it counts once.
struct Record {
    key: String,
    what: Counted,
    seconds: Option<f64>,
}

enum Counted {
    Started { action: String },
    Action { action: String, outcome: String },
    Migration { trigger: String, phase: String },
}

fn seconds_between(start: &str, end: &str) -> Option<f64> {
    let (start, end) = (
        start.parse::<Timestamp>().ok()?,
        end.parse::<Timestamp>().ok()?,
    );
    let nanos = end.as_nanosecond() - start.as_nanosecond();
    #[allow(
        clippy::cast_precision_loss,
        reason = "a duration in seconds for a histogram"
    )]
    Some((nanos.max(0) as f64) / 1e9)
}

/// The sandbox's failure kinds folded into the few an alert is written for.
pub fn failure_kind(failure: &CallFailure) -> &'static str {
    match failure {
        CallFailure::Deadline(_) | CallFailure::Fuel(_) => "deadline",
        CallFailure::Memory(_) => "memory",
        CallFailure::Trap(_) | CallFailure::Panic(_) | CallFailure::StackOverflow => "trap",
        CallFailure::Capability(_) | CallFailure::NameTaken(_) => "capability",
        CallFailure::OutputTooLarge { .. }
        | CallFailure::MalformedOutput(_)
        | CallFailure::HostCallLimit(_)
        | CallFailure::LogLimit { .. }
        | CallFailure::OutcomeLimit(_)
        | CallFailure::Step(_)
        | CallFailure::Instantiate(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ActionRecord, LifecycleState};

    fn status(history: Vec<ActionRecord>) -> WukongStatus {
        WukongStatus {
            lifecycle_state: Some(LifecycleState {
                state: "Running".into(),
                printable_status: None,
                vmi_phase: None,
                ready: true,
                live_migratable: false,
                last_action: None,
                last_action_time: None,
                current_action: None,
                history,
                message: String::new(),
            }),
            ..WukongStatus::default()
        }
    }

    fn record(id: &str, started: &str, finished: &str) -> ActionRecord {
        ActionRecord {
            action: "restart".into(),
            request_id: id.into(),
            started_at: started.into(),
            finished_at: Some(finished.into()),
            outcome: "Succeeded".into(),
            message: String::new(),
            stage: String::new(),
        }
    }

    #[test]
    fn a_finished_action_is_counted_once_and_old_ones_never() {
        let metrics = Metrics::new();
        let now = Timestamp::now();
        let later = |s: i64| (now + std::time::Duration::from_secs(s.unsigned_abs())).to_string();
        let before = "2020-01-01T00:00:00Z";
        let old = record("old", before, before);
        let new = record("r1", &later(1), &later(4));
        for _ in 0..3 {
            metrics.observe_status("uid", Some(&status(vec![new.clone(), old.clone()])));
        }
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains(
                r#"wukong_lifecycle_actions_total{action="restart",outcome="Succeeded"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"wukong_lifecycle_action_duration_seconds_sum{action="restart",outcome="Succeeded"} 3.0"#),
            "{text}"
        );
    }

    #[test]
    fn automatic_migrations_count_each_run_of_a_repeating_trigger() {
        let metrics = Metrics::new();
        let at = |s: u64| (Timestamp::now() + std::time::Duration::from_secs(s)).to_string();
        let migration = |started: &str, finished: &str| WukongStatus {
            migration_status: Some(crate::api::MigrationStatus {
                phase: "Succeeded".into(),
                request_id: "auto/nodeMaintenance".into(),
                automatic: true,
                trigger: Some("nodeMaintenance".into()),
                migration_name: None,
                source_node: None,
                target_node: None,
                mode: None,
                started_at: Some(started.into()),
                finished_at: Some(finished.into()),
                failure_reason: None,
                message: String::new(),
            }),
            ..WukongStatus::default()
        };
        let first = migration(&at(1), &at(11));
        metrics.observe_status("uid", Some(&first));
        metrics.observe_status("uid", Some(&first));
        metrics.observe_status("uid", Some(&migration(&at(20), &at(25))));
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains(
                r#"wukong_migrations_total{trigger="nodeMaintenance",phase="Succeeded"} 2"#
            ),
            "the same request id, started twice: {text}"
        );
        assert!(
            text.contains(r#"wukong_migration_duration_seconds_sum{trigger="nodeMaintenance",phase="Succeeded"} 15.0"#),
            "{text}"
        );
    }

    #[test]
    fn failures_fold_into_alertable_kinds() {
        assert_eq!(failure_kind(&CallFailure::Fuel(1)), "deadline");
        assert_eq!(failure_kind(&CallFailure::StackOverflow), "trap");
        assert_eq!(failure_kind(&CallFailure::Memory(1)), "memory");
        assert_eq!(
            failure_kind(&CallFailure::Capability("x".into())),
            "capability"
        );
        assert_eq!(failure_kind(&CallFailure::Step("x".into())), "other");
    }
}
