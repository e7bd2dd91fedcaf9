//! Helpers shared by the simulated controllers: API resources of the KubeVirt kinds, JSON
//! access, optimistic-concurrency patches, conditions, quantities and timestamps.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::Result;

/// The KubeVirt and CDI kinds the simulator drives.
pub fn vm() -> ApiResource {
    ar("kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}
/// `kubevirt.io/v1` VirtualMachineInstance.
pub fn vmi() -> ApiResource {
    ar(
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    )
}
/// `kubevirt.io/v1` VirtualMachineInstanceMigration.
pub fn vmim() -> ApiResource {
    ar(
        "kubevirt.io",
        "v1",
        "VirtualMachineInstanceMigration",
        "virtualmachineinstancemigrations",
    )
}
/// `migrations.kubevirt.io/v1alpha1` MigrationPolicy.
pub fn migration_policy() -> ApiResource {
    ar(
        "migrations.kubevirt.io",
        "v1alpha1",
        "MigrationPolicy",
        "migrationpolicies",
    )
}
/// `cdi.kubevirt.io/v1beta1` DataVolume.
pub fn dv() -> ApiResource {
    ar("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes")
}

/// `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition (Multus).
pub fn nad() -> ApiResource {
    ar(
        "k8s.cni.cncf.io",
        "v1",
        "NetworkAttachmentDefinition",
        "network-attachment-definitions",
    )
}
/// `vm.novasphere.dev/v1alpha1` Wukong, the operator's own kind (its CRD is in the
/// repository's `crds/`).
pub fn wukong() -> ApiResource {
    ar("vm.novasphere.dev", "v1alpha1", "Wukong", "wukongs")
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// A namespaced dynamic API.
pub fn api(client: &kube::Client, ar: &ApiResource, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, ar)
}

/// A string at a JSON pointer.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Annotation value of an object.
pub fn annotation<'a>(obj: &'a DynamicObject, key: &str) -> Option<&'a str> {
    obj.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// True when the annotation is `"true"`.
pub fn flag(obj: &DynamicObject, key: &str) -> bool {
    annotation(obj, key) == Some("true")
}

/// Merge-patches `status` with the object's resourceVersion as precondition. `Ok(false)` on
/// a conflict (the watch brings the newer object and the controller tries again).
pub async fn patch_status(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    status: Value,
) -> Result<bool> {
    let body =
        json!({"metadata": {"resourceVersion": obj.metadata.resource_version}, "status": status});
    let name = obj.metadata.name.clone().unwrap_or_default();
    ok_unless_conflict(
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await,
    )
}

/// Merge-patches the object (metadata/spec) with the resourceVersion as precondition.
pub async fn patch_object(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    mut body: Value,
) -> Result<bool> {
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            json!(obj.metadata.resource_version),
        );
    } else if let Some(map) = body.as_object_mut() {
        map.insert(
            "metadata".into(),
            json!({"resourceVersion": obj.metadata.resource_version}),
        );
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    ok_unless_conflict(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await,
    )
}

/// Maps 409 Conflict (and 404: the object is gone) to `Ok(false)`.
pub fn ok_unless_conflict<T>(r: std::result::Result<T, kube::Error>) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Adds (`add = true`) or removes a finalizer with an optimistic-concurrency patch.
pub async fn set_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
    add: bool,
) -> Result<bool> {
    let mut list = obj.metadata.finalizers.clone().unwrap_or_default();
    let has = list.iter().any(|f| f == finalizer);
    if has == add {
        return Ok(true);
    }
    if add {
        list.push(finalizer.into());
    } else {
        list.retain(|f| f != finalizer);
    }
    patch_object(api, obj, json!({"metadata": {"finalizers": list}})).await
}

/// The conditions array at `/status/conditions` (empty when missing).
pub fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The status ("True"/"False") of a condition type.
pub fn condition_status<'a>(conds: &'a [Value], type_: &str) -> Option<&'a str> {
    conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .and_then(|c| c.get("status").and_then(Value::as_str))
}

/// Sets a condition, keeping its lastTransitionTime when the status does not change.
pub fn set_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status = if status { "True" } else { "False" };
    let pos = conds
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(type_));
    let since = pos
        .and_then(|i| conds.get(i))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    let cond = json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastProbeTime": null, "lastTransitionTime": since,
    });
    match pos {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
}

/// Removes a condition type.
pub fn remove_condition(conds: &mut Vec<Value>, type_: &str) {
    conds.retain(|c| c.get("type").and_then(Value::as_str) != Some(type_));
}

/// Now, as Kubernetes writes `metav1.Time` (RFC 3339, seconds).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_keeps_transition_time() {
        let mut c = vec![json!({"type": "Ready", "status": "True", "lastTransitionTime": "then"})];
        set_condition(&mut c, "Ready", true, "", "");
        assert_eq!(c[0]["lastTransitionTime"], "then");
        set_condition(&mut c, "Ready", false, "Stopped", "");
        assert_ne!(c[0]["lastTransitionTime"], "then");
    }
}

/// The controllers' trigger backoff. kube-runtime's default (0.8 s doubling to 30 s) sleeps
/// once for each failing watch in turn, so after an apiserver restart, when every watch
/// answers 410 Gone, a controller stood still for minutes; 100 ms doubling to 2 s keeps
/// the simulator as quick to recover as KubeVirt's informers.
#[derive(Default)]
pub struct TriggerBackoff(u32);

impl Iterator for TriggerBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let delay = std::time::Duration::from_millis(100 << self.0.min(4))
            .min(std::time::Duration::from_secs(2));
        self.0 = self.0.saturating_add(1);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.0 = 0;
    }
}
