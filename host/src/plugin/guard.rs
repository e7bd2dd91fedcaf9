//! The capability guard: an outcome may only touch what the manifest declares, only in
//! the Wukong's namespace, and may only delete what the Wukong owns.

use serde_json::Value;

use super::types::{Action, Capabilities, Effects, ObjectRef, Wukong};
use super::{CallFailure, ClusterReader, Outcome, StepStatus};

/// Checks `effects` against the capabilities and turns it into an [`Outcome`] with
/// parsed objects.
pub(crate) fn check(
    capabilities: &Capabilities,
    wukong: &Wukong,
    reader: &dyn ClusterReader,
    effects: Effects,
    status: StepStatus,
) -> Result<Outcome, CallFailure> {
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
        apply.push(object);
    }
    for target in &effects.delete {
        check_delete(target, wukong, reader, &writes)?;
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
                if let Some(body) = &call.body {
                    serde_json::from_str::<Value>(body).map_err(|e| {
                        CallFailure::MalformedOutput(format!(
                            "action {declared}: body is not JSON: {e}"
                        ))
                    })?;
                }
            }
            Action::DeleteObject((target, _grace)) => {
                check_delete(target, wukong, reader, &writes)?
            }
        }
    }
    Ok(Outcome {
        apply,
        delete: effects.delete,
        actions: effects.actions,
        conditions: effects.conditions,
        events: effects.events,
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
    let existing = reader
        .get(target, &wukong.namespace)
        .map_err(|e| CallFailure::Step(format!("{what}: cannot read it: {e}")))?;
    let Some(existing) = existing else {
        return Ok(()); // already gone: deleting it is a no-op
    };
    let object: Value = serde_json::from_str(&existing).unwrap_or(Value::Null);
    if owned_by(&object, &wukong.uid, reader, &wukong.namespace, 2)
        || owned_cluster_scoped(&object, &wukong.uid)
    {
        Ok(())
    } else {
        Err(CallFailure::Capability(format!(
            "{what}: the Wukong {} does not own it",
            wukong.name
        )))
    }
}

/// On a cluster-scoped object (a KubeVirt MigrationPolicy), the uid of the Wukong it was
/// made for: a namespaced Wukong cannot be its owner reference.
pub const OWNER_UID_ANNOTATION: &str = "vm.novasphere.dev/owner-uid";

/// True for a cluster-scoped object whose owner-uid annotation names `uid`. NB: this is no
/// weaker than what `apply` allows, which may already write any object of a declared kind.
fn owned_cluster_scoped(object: &Value, uid: &str) -> bool {
    object["metadata"]["namespace"].is_null()
        && object["metadata"]["annotations"][OWNER_UID_ANNOTATION] == uid
}

/// True when `object` is owned by `uid`, directly or through up to `depth` owners (a VMI
/// is owned by its VirtualMachine, which the Wukong owns).
fn owned_by(
    object: &Value,
    uid: &str,
    reader: &dyn ClusterReader,
    namespace: &str,
    depth: u8,
) -> bool {
    let Some(owners) = object["metadata"]["ownerReferences"].as_array() else {
        return false;
    };
    owners.iter().any(|owner| {
        if owner["uid"] == uid {
            return true;
        }
        if depth <= 1 {
            return false;
        }
        let (Some(api_version), Some(kind), Some(name)) = (
            owner["apiVersion"].as_str(),
            owner["kind"].as_str(),
            owner["name"].as_str(),
        ) else {
            return false;
        };
        let parent = ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: None,
            name: name.into(),
        };
        reader
            .get(&parent, namespace)
            .ok()
            .flatten()
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .is_some_and(|parent| {
                parent["metadata"]["uid"] == owner["uid"]
                    && owned_by(&parent, uid, reader, namespace, depth - 1)
            })
    })
}
