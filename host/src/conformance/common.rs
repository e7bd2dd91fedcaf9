//! Checks every plugin must pass whatever its kind: a config schema that refuses bad
//! configs, outcomes within the declared capabilities, and no crash on any Wukong the
//! CRD schema accepts.

use serde_json::{Value, json};

use super::generate::{self, Generated};
use super::harness::{CheckResult, Harness, Sim};
use crate::plugin::{CallFailure, Phase};
use crate::runner::{DEFAULT_NOW, RunnerError};

/// The schema is an object schema that constrains something, and configs it forbids are
/// refused before the plugin runs.
pub fn config_schema(h: &Harness<'_>) -> CheckResult {
    let schema: Value = serde_json::from_str(&h.plugin.manifest.config_schema)
        .map_err(|e| format!("the config schema is not JSON: {e}"))?;
    if schema == json!({}) || schema == json!(true) || !schema.is_object() {
        return Err(format!("the config schema accepts anything: {schema}"));
    }
    h.plugin
        .validate_config(&h.config)
        .map_err(|e| format!("the config under test is refused: {e}"))?;
    let violations = violating_configs(&schema, &h.config);
    if violations.is_empty() {
        return Err(format!(
            "the config schema forbids nothing the kit can try (no additionalProperties: false, no typed properties): {schema}"
        ));
    }
    for (what, config) in violations {
        let input =
            crate::runner::Input::new(super::harness::wukong(json!({"cpu": 1, "memory": "1Gi"})))
                .config(config.clone());
        match input.prepare(h.plugin) {
            Err(RunnerError::InvalidConfig { .. }) => {}
            Err(other) => return Err(format!("config {config} ({what}) fails otherwise: {other}")),
            Ok(_) => return Err(format!("config {config} ({what}) is accepted")),
        }
    }
    Ok(())
}

/// Configs `schema` forbids: an unknown key when extra keys are refused, and each typed
/// property given a value of another type.
fn violating_configs(schema: &Value, base: &Value) -> Vec<(String, Value)> {
    let mut configs = Vec::new();
    let base = match base {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if schema["additionalProperties"] == json!(false)
        || schema["unevaluatedProperties"] == json!(false)
    {
        let mut config = base.clone();
        config.insert("conformanceUnknownKey".into(), json!(true));
        configs.push(("an unknown key".to_owned(), Value::Object(config)));
    }
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        let types: Vec<&str> = match &property["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        let candidates = [
            ("object", json!({"conformance": 1})),
            ("array", json!(["conformance"])),
            ("string", json!("conformance")),
            ("boolean", json!(true)),
        ];
        let wrong = candidates.into_iter().find(|(t, _)| !types.contains(t));
        if let Some((_, value)) = wrong {
            let mut config = base.clone();
            config.insert(key.clone(), value);
            configs.push((format!("{key} of the wrong type"), Value::Object(config)));
        }
    }
    configs
}

/// No capability violation in any call the suite made.
pub fn guard(h: &Harness<'_>) -> CheckResult {
    let mut violations = h.violations();
    violations.sort();
    violations.dedup();
    match violations.first() {
        None => Ok(()),
        Some(_) => Err(format!(
            "the host refused outcomes or reads: {}",
            violations.join("; ")
        )),
    }
}

/// Failures that are the plugin breaking, not refusing a bad spec.
fn is_crash(failure: &CallFailure) -> bool {
    !matches!(failure, CallFailure::Step(_) | CallFailure::Capability(_))
}

/// Every generated Wukong: reconcile on an empty cluster, reconcile again on the cluster
/// its first outcome made, finalize; none may panic, trap or break a limit.
pub fn generated(h: &Harness<'_>) -> CheckResult {
    let cases = generate::wukongs();
    let mut crashes = Vec::new();
    for Generated { label, wukong } in &cases {
        let upstream = generate::upstream_for(wukong);
        let mut sim = Sim::default();
        let calls = [Phase::Reconcile, Phase::Reconcile, Phase::Finalize];
        for (round, phase) in calls.into_iter().enumerate() {
            match h.call_raw(phase, DEFAULT_NOW, wukong, Some(&upstream), &sim) {
                Ok(outcome) => {
                    // A refusal is the guard check's to report, not a crash.
                    if h.apply(&mut sim, wukong, &outcome).is_err() {
                        break;
                    }
                }
                Err(RunnerError::Call(e)) if is_crash(&e.failure) => {
                    crashes.push(format!(
                        "{label} ({} call {}): {}",
                        phase.name(),
                        round + 1,
                        e.failure
                    ));
                    break;
                }
                Err(RunnerError::Call(_)) => {}
                Err(other) => {
                    crashes.push(format!("{label}: the kit could not call: {other}"));
                    break;
                }
            }
        }
    }
    match crashes.first() {
        None => Ok(()),
        Some(_) => Err(format!(
            "{} of {} generated Wukongs broke the plugin:\n{}",
            crashes.len(),
            cases.len(),
            crashes.join("\n")
        )),
    }
}
