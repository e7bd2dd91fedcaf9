//! The hostile-plugin suite: each misbehaviour fails its own call with a distinct, clear
//! error within the deadline, the host stays healthy, and the next good call succeeds.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wukong::plugin::types::{KindRef, ObjectRef};
use wukong::plugin::{
    CallFailure, ClusterReader, Outcome, Phase, Plugin, Runtime, RuntimeLimits, StepRequest,
};

/// Answers every read with the same PVC, owned by someone else.
struct OneForeignPvc;

impl ClusterReader for OneForeignPvc {
    fn get(&self, target: &ObjectRef, namespace: &str) -> Result<Option<String>, String> {
        Ok(Some(json!({"apiVersion": "v1", "kind": target.kind, "metadata": {"name": target.name, "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "not-the-wukong"}]}}).to_string()))
    }
    fn list(&self, _: &KindRef, _: &str, _: Option<&str>) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

const DEADLINE_MS: u64 = 300;

/// Whether a failure is the one a mode must cause.
type Expectation = fn(&CallFailure) -> bool;

fn runtime() -> Runtime {
    // Fuel far above what the deadline allows, so the deadline is what stops the loop.
    let limits = RuntimeLimits {
        deadline_ms: DEADLINE_MS,
        fuel: 1 << 40,
        memory_bytes: 32 << 20,
        output_bytes: 1 << 20,
        host_calls: 1_000,
        ..RuntimeLimits::default()
    };
    Runtime::new(limits, None).expect("runtime")
}

fn call(
    plugin: &Plugin,
    config: serde_json::Value,
) -> (Result<Outcome, wukong::plugin::CallError>, Duration) {
    let context = support::context(support::wukong("tenant-a", 1), config);
    let upstream = support::no_upstream();
    let started = Instant::now();
    let result = plugin.call(
        StepRequest {
            phase: Phase::Reconcile,
            context: &context,
            upstream: &upstream,
        },
        Arc::new(OneForeignPvc),
    );
    (result, started.elapsed())
}

fn failure(plugin: &Plugin, mode: &str) -> (CallFailure, Duration) {
    // Twice the output limit: over it, but quick to produce within the deadline.
    let (result, elapsed) = call(plugin, json!({"mode": mode, "outputBytes": 2 << 20}));
    let error = result.expect_err(&format!("mode {mode} must fail"));
    assert_eq!(
        error.plugin, "hostile@0.1.0",
        "the error names the plugin and its version"
    );
    assert!(
        error.to_string().starts_with("plugin hostile@0.1.0: "),
        "{error}"
    );
    (error.failure, elapsed)
}

#[test]
fn every_hostile_plugin_is_contained_and_the_next_call_succeeds() {
    let runtime = runtime();
    let plugin = runtime
        .load(&support::plugin_wasm("hostile-plugin"))
        .expect("load hostile plugin");
    let deadline = Duration::from_millis(DEADLINE_MS);

    let expectations: Vec<(&str, Expectation)> = vec![
        ("loop", |f| matches!(f, CallFailure::Deadline(_))),
        ("alloc", |f| matches!(f, CallFailure::Memory(_))),
        ("stack", |f| matches!(f, CallFailure::StackOverflow)),
        (
            "panic",
            |f| matches!(f, CallFailure::Panic(m) if m.contains("hostile plugin panics on purpose")),
        ),
        ("trap", |f| matches!(f, CallFailure::Trap(_))),
        (
            "undeclared-kind",
            |f| matches!(f, CallFailure::Capability(m) if m.contains("v1/Secret")),
        ),
        (
            "other-namespace",
            |f| matches!(f, CallFailure::Capability(m) if m.contains("kube-system")),
        ),
        (
            "delete-unowned",
            |f| matches!(f, CallFailure::NameTaken(m) if m.contains("not the Wukong vm1's to delete")),
        ),
        ("huge-output", |f| {
            matches!(f, CallFailure::OutputTooLarge { .. })
        }),
        ("bad-json", |f| matches!(f, CallFailure::MalformedOutput(_))),
        (
            "undeclared-read",
            |f| matches!(f, CallFailure::Capability(m) if m.contains("Secret") && m.contains("reads")),
        ),
        ("host-call-flood", |f| {
            matches!(f, CallFailure::HostCallLimit(1_000))
        }),
        ("log-flood", |f| matches!(f, CallFailure::LogLimit { .. })),
        (
            "set-ready",
            |f| matches!(f, CallFailure::OutcomeLimit(m) if m.contains("Ready is the lifecycle step's")),
        ),
        (
            "set-step-failed",
            |f| matches!(f, CallFailure::OutcomeLimit(m) if m.contains("StepFailed is the host's own")),
        ),
        (
            "many-conditions",
            |f| matches!(f, CallFailure::OutcomeLimit(m) if m.contains("5000 conditions")),
        ),
    ];
    let mut labels = std::collections::HashSet::new();
    for (mode, expected) in &expectations {
        let (failure, elapsed) = failure(&plugin, mode);
        eprintln!("{mode:>16}: {failure} ({} ms)", elapsed.as_millis());
        assert!(
            expected(&failure),
            "mode {mode}: unexpected failure {failure:?}"
        );
        // Bounded by the deadline (the failure kinds above prove which limit fired); the
        // overshoot itself is a timing figure: `cargo bench --bench plugin_calls` prints it.
        assert!(
            elapsed <= deadline + Duration::from_secs(2),
            "mode {mode} took {elapsed:?}"
        );
        labels.insert(failure.label());
        let (good, _) = call(&plugin, json!({"mode": "noop"}));
        good.unwrap_or_else(|e| panic!("the call after {mode} must succeed: {e}"));
    }
    assert_eq!(
        labels.len(),
        expectations.len() - 4,
        "each failure kind is distinct (capability covers three modes and outcome-limit three, with distinct messages)"
    );
}

#[test]
fn a_plugin_cannot_read_files_env_or_sockets() {
    let runtime = runtime();
    let plugin = runtime
        .load(&support::plugin_wasm("hostile-plugin"))
        .expect("load");
    let (result, _) = call(&plugin, json!({"mode": "escape"}));
    let outcome = result.expect("the escape attempt itself is not an error");
    let report = &outcome.events.first().expect("an escape report").message;
    assert!(report.contains("file: denied"), "{report}");
    assert!(report.contains("env: 0 variables"), "{report}");
    assert!(report.contains("socket: denied"), "{report}");
}

#[test]
fn the_loop_is_stopped_at_the_deadline() {
    let runtime = runtime();
    let plugin = runtime
        .load(&support::plugin_wasm("hostile-plugin"))
        .expect("load");
    let (failure, elapsed) = failure(&plugin, "loop");
    assert_eq!(failure, CallFailure::Deadline(DEADLINE_MS));
    assert!(
        elapsed >= Duration::from_millis(DEADLINE_MS),
        "stopped early: {elapsed:?}"
    );
    eprintln!(
        "the loop was stopped {:?} after the call began (deadline {DEADLINE_MS} ms)",
        elapsed
    );
}

#[test]
fn fuel_bounds_work_independently_of_the_clock() {
    let limits = RuntimeLimits {
        deadline_ms: 60_000,
        fuel: 50_000_000,
        ..RuntimeLimits::default()
    };
    let runtime = Runtime::new(limits, None).expect("runtime");
    let plugin = runtime
        .load(&support::plugin_wasm("hostile-plugin"))
        .expect("load");
    let (failure, _) = failure(&plugin, "loop");
    assert_eq!(failure, CallFailure::Fuel(50_000_000));
}
