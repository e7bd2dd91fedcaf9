//! The capability guard: an outcome may only touch what the manifest declares, only in
//! the Wukong's namespace, may write or delete only what the Wukong owns (or what does not
//! exist yet), and may not carry the host's ownership marks. Every applied object and
//! every delete is judged before anything is written, so a refused outcome writes nothing.

use serde_json::Value;

use super::ownership::{self, Claimant, Verdict};

use super::types::{Action, Capabilities, Condition, Effects, Event, ObjectRef, StepKind, Wukong};
use super::{CallFailure, ClusterReader, Outcome, StepStatus};

/// Checks `effects` against the capabilities and turns it into an [`Outcome`] with
/// parsed objects.
pub(crate) fn check(
    step: StepKind,
    capabilities: &Capabilities,
    wukong: &Wukong,
    backend: &str,
    reader: &dyn ClusterReader,
    effects: Effects,
    status: StepStatus,
) -> Result<Outcome, CallFailure> {
    let claimant = Claimant {
        name: &wukong.name,
        uid: &wukong.uid,
        backend,
    };
    let writes = |api_version: &str, kind: &str| {
        capabilities
            .writes
            .iter()
            .any(|k| k.api_version == api_version && k.kind == kind)
    };
    let mut apply = Vec::with_capacity(effects.apply.len());
    for (index, json) in effects.apply.iter().enumerate() {
        let object: Value = serde_json::from_str(json).map_err(|e| {
            CallFailure::MalformedOutput(format!("apply[{index}] is not JSON: {e}"))
        })?;
        let (Some(api_version), Some(kind), Some(name)) = (
            object["apiVersion"].as_str(),
            object["kind"].as_str(),
            object["metadata"]["name"].as_str(),
        ) else {
            return Err(CallFailure::MalformedOutput(format!(
                "apply[{index}] lacks apiVersion, kind or metadata.name"
            )));
        };
        if !writes(api_version, kind) {
            return Err(CallFailure::Capability(format!(
                "apply of {api_version}/{kind} {name}: kind not declared in `writes`"
            )));
        }
        check_namespace(object["metadata"]["namespace"].as_str(), wukong, kind, name)?;
        if let Some(mark) = ownership::carried_mark(&object) {
            return Err(CallFailure::Capability(format!(
                "apply of {api_version}/{kind} {name}: the annotation {mark} is an ownership mark only the host writes"
            )));
        }
        let what = format!("apply of {api_version}/{kind} {name}");
        let target = ObjectRef {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: None,
            name: name.to_owned(),
        };
        check_name(name, &what)?;
        if let Some(vmi) = migration_target(&object) {
            check_action_target("virtualmachineinstances", vmi, wukong, &claimant, reader)
                .map_err(|e| CallFailure::Capability(format!("{what}: {e}")))?;
        }
        if let Some(live) = read(reader, &target, &wukong.namespace, &what)? {
            check_owned(&live, &claimant, reader, &wukong.namespace, false).map_err(|holder| {
                CallFailure::NameTaken(format!(
                    "{kind} {name} exists and is not the Wukong {}'s ({holder}); nothing was written: \
                     rename or remove that object, or pick other names",
                    wukong.name
                ))
            })?;
        }
        apply.push(object);
    }
    for target in &effects.delete {
        check_delete(target, wukong, &claimant, reader, &writes)?;
    }
    for action in &effects.actions {
        match action {
            Action::Subresource(call) => {
                let declared = format!("{}/{}", call.plural, call.subresource);
                if !capabilities.actions.contains(&declared) {
                    return Err(CallFailure::Capability(format!(
                        "action {declared} on {}: not declared in `actions`",
                        call.name
                    )));
                }
                check_action_target(&call.plural, &call.name, wukong, &claimant, reader).map_err(
                    |e| CallFailure::Capability(format!("action {declared} on {}: {e}", call.name)),
                )?;
                if let Some(body) = &call.body {
                    serde_json::from_str::<Value>(body).map_err(|e| {
                        CallFailure::MalformedOutput(format!(
                            "action {declared}: body is not JSON: {e}"
                        ))
                    })?;
                }
            }
            Action::DeleteObject((target, _grace)) => {
                check_delete(target, wukong, &claimant, reader, &writes)?
            }
        }
    }
    let (conditions, events) = check_reports(step, effects.conditions, effects.events)?;
    Ok(Outcome {
        apply,
        delete: effects.delete,
        actions: effects.actions,
        conditions,
        events,
        requeue_after_ms: effects.requeue_after_ms,
        status,
    })
}

fn check_namespace(
    namespace: Option<&str>,
    wukong: &Wukong,
    kind: &str,
    name: &str,
) -> Result<(), CallFailure> {
    match namespace {
        Some(namespace) if namespace != wukong.namespace => Err(CallFailure::Capability(format!(
            "{kind} {name} in namespace {namespace:?}: only the Wukong's namespace {:?} is allowed",
            wukong.namespace
        ))),
        _ => Ok(()),
    }
}

fn check_delete(
    target: &ObjectRef,
    wukong: &Wukong,
    claimant: &Claimant<'_>,
    reader: &dyn ClusterReader,
    writes: &dyn Fn(&str, &str) -> bool,
) -> Result<(), CallFailure> {
    let what = format!(
        "delete of {}/{} {}",
        target.api_version, target.kind, target.name
    );
    if !writes(&target.api_version, &target.kind) {
        return Err(CallFailure::Capability(format!(
            "{what}: kind not declared in `writes`"
        )));
    }
    check_namespace(
        target.namespace.as_deref(),
        wukong,
        &target.kind,
        &target.name,
    )?;
    check_name(&target.name, &what)?;
    let existing = read(reader, target, &wukong.namespace, &what)?;
    let Some(existing) = existing else {
        return Ok(()); // already gone: deleting it is a no-op
    };
    check_owned(&existing, claimant, reader, &wukong.namespace, true).map_err(|holder| {
        CallFailure::NameTaken(format!(
            "{what}: not the Wukong {}'s to delete ({holder})",
            wukong.name
        ))
    })
}

/// Conditions one call may set: the status must always fit in an object etcd stores.
pub const MAX_CONDITIONS: usize = 16;
/// Events one call may publish.
pub const MAX_EVENTS: usize = 32;
/// Characters kept of a condition's or event's message (and reason).
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// Which step may set a condition type the host reports on: `None` for the host's own.
fn owner_of_condition(condition_type: &str) -> Option<Option<StepKind>> {
    Some(match condition_type {
        "StepFailed" => None,
        "Ready" => Some(StepKind::Lifecycle),
        "VolumesBound" => Some(StepKind::Storage),
        "NetworksConfigured" => Some(StepKind::Network),
        _ => return None,
    })
}

/// Bounds what a call reports: at most [`MAX_CONDITIONS`] conditions and [`MAX_EVENTS`]
/// events, messages cut to [`MAX_MESSAGE_CHARS`], and no condition of a type the host or
/// another step owns (the host's `StepFailed`, the lifecycle step's `Ready`, ...).
fn check_reports(
    step: StepKind,
    mut conditions: Vec<Condition>,
    mut events: Vec<Event>,
) -> Result<(Vec<Condition>, Vec<Event>), CallFailure> {
    if conditions.len() > MAX_CONDITIONS {
        return Err(CallFailure::OutcomeLimit(format!(
            "{} conditions, at most {MAX_CONDITIONS} per call",
            conditions.len()
        )));
    }
    if events.len() > MAX_EVENTS {
        return Err(CallFailure::OutcomeLimit(format!(
            "{} events, at most {MAX_EVENTS} per call",
            events.len()
        )));
    }
    let cut = |text: &mut String| {
        if let Some((at, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
            text.truncate(at);
        }
    };
    for condition in &mut conditions {
        match owner_of_condition(&condition.condition_type) {
            Some(None) => {
                return Err(CallFailure::OutcomeLimit(format!(
                    "condition {} is the host's own",
                    condition.condition_type
                )));
            }
            Some(Some(owner)) if owner != step => {
                return Err(CallFailure::OutcomeLimit(format!(
                    "condition {} is the {owner} step's",
                    condition.condition_type
                )));
            }
            _ => {}
        }
        let valid_type = !condition.condition_type.is_empty()
            && condition.condition_type.len() <= 63
            && condition
                .condition_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric());
        if !valid_type {
            return Err(CallFailure::OutcomeLimit(format!(
                "condition type {:?}: letters and digits, at most 63",
                condition.condition_type
            )));
        }
        cut(&mut condition.reason);
        cut(&mut condition.message);
    }
    for event in &mut events {
        cut(&mut event.reason);
        cut(&mut event.message);
    }
    Ok((conditions, events))
}

/// KubeVirt's migration object, whose `spec.vmiName` is what it acts on.
const MIGRATION: (&str, &str) = ("kubevirt.io/v1", "VirtualMachineInstanceMigration");

/// The VMI a migration object would move.
fn migration_target(object: &Value) -> Option<&str> {
    (object["apiVersion"] == MIGRATION.0 && object["kind"] == MIGRATION.1)
        .then(|| object["spec"]["vmiName"].as_str().unwrap_or_default())
}

/// A Kubernetes object name: a DNS-1123 subdomain (what goes into a URL path unescaped).
fn check_name(name: &str, what: &str) -> Result<(), CallFailure> {
    if ownership::is_object_name(name) {
        Ok(())
    } else {
        Err(CallFailure::Capability(format!(
            "{what}: {name:?} is not a valid object name (lowercase letters, digits, '-' and '.', at most 253)"
        )))
    }
}

/// An action (a KubeVirt subresource call, a migration) acts only on the Wukong's own VM
/// or VMI: a valid name, of an object that exists and is the Wukong's (the VMI through its
/// VM).
fn check_action_target(
    plural: &str,
    name: &str,
    wukong: &Wukong,
    claimant: &Claimant<'_>,
    reader: &dyn ClusterReader,
) -> Result<(), String> {
    let kind = match plural {
        "virtualmachines" => "VirtualMachine",
        "virtualmachineinstances" => "VirtualMachineInstance",
        other => return Err(format!("{other} has no KubeVirt subresources")),
    };
    if !ownership::is_object_name(name) {
        return Err(format!("{name:?} is not a valid object name"));
    }
    let target = ObjectRef {
        api_version: "kubevirt.io/v1".into(),
        kind: kind.into(),
        namespace: None,
        name: name.into(),
    };
    let live = reader
        .get(&target, &wukong.namespace)
        .map_err(|e| format!("cannot read {kind} {name}: {e}"))?
        .and_then(|json| serde_json::from_str::<Value>(&json).ok())
        .ok_or_else(|| format!("{kind} {name} does not exist"))?;
    check_owned(&live, claimant, reader, &wukong.namespace, false).map_err(|holder| {
        format!(
            "{kind} {name} is not the Wukong {}'s ({holder})",
            wukong.name
        )
    })
}

fn read(
    reader: &dyn ClusterReader,
    target: &ObjectRef,
    namespace: &str,
    what: &str,
) -> Result<Option<Value>, CallFailure> {
    let json = reader
        .get(target, namespace)
        .map_err(|e| CallFailure::Step(format!("{what}: cannot read it: {e}")))?;
    Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
}

/// Applies the ownership rule to an existing object; `Err` says who holds it.
fn check_owned(
    live: &Value,
    claimant: &Claimant<'_>,
    reader: &dyn ClusterReader,
    namespace: &str,
    deleting: bool,
) -> Result<(), String> {
    match ownership::judge(live, claimant, deleting) {
        Verdict::Owned => Ok(()),
        Verdict::Taken(holder) => Err(holder),
        Verdict::ThroughController(parent) => {
            let target = ObjectRef {
                api_version: parent.api_version.clone(),
                kind: parent.kind.clone(),
                namespace: None,
                name: parent.name.clone(),
            };
            let live_parent = reader
                .get(&target, namespace)
                .ok()
                .flatten()
                .and_then(|json| serde_json::from_str::<Value>(&json).ok());
            ownership::judge_through(&parent, live_parent.as_ref(), claimant)
        }
    }
}
