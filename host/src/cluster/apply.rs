//! Applying a checked outcome: server-side apply under the plugin's field manager with
//! the owner reference and labels added, deletes, and KubeVirt subresource calls. An
//! object already in the desired state is not written again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::Kinds;
use crate::plugin::types::{ObjectRef, SubresourceCall};

/// Why an API call for an outcome failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl ApplyError {
    /// Permission and validation errors will not go away by retrying soon.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => matches!(status.code, 400 | 403 | 422),
            Self::Api { .. } => false,
            Self::Invalid { .. } => true,
        }
    }
}

/// Counts of API writes, for metrics and for tests that prove a converged Wukong costs none.
#[derive(Debug, Default)]
pub struct ApplyStats {
    pub applies: AtomicU64,
    pub skipped: AtomicU64,
    pub deletes: AtomicU64,
    pub actions: AtomicU64,
}

impl ApplyStats {
    pub fn writes(&self) -> u64 {
        self.applies.load(Ordering::Relaxed)
            + self.deletes.load(Ordering::Relaxed)
            + self.actions.load(Ordering::Relaxed)
    }
}

/// The Wukong that owns what is applied.
#[derive(Debug, Clone)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Clone)]
pub struct Applier {
    kinds: Kinds,
    pub stats: Arc<ApplyStats>,
}

impl Applier {
    pub fn new(kinds: Kinds) -> Self {
        Self {
            kinds,
            stats: Arc::default(),
        }
    }

    fn api(&self, kind: &super::Kind, namespace: &str) -> Api<DynamicObject> {
        let client = self.kinds.client().clone();
        if kind.namespaced {
            Api::namespaced_with(client, namespace, &kind.resource)
        } else {
            Api::all_with(client, &kind.resource)
        }
    }

    /// Server-side applies `object` for `owner` under `manager`. Returns whether it wrote.
    pub async fn apply(
        &self,
        manager: &str,
        owner: &Owner,
        mut object: Value,
        labels: &[(String, String)],
    ) -> Result<bool, ApplyError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind_name = object["kind"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let what = format!("apply {kind_name} {name}");
        let kind = self
            .kinds
            .resolve(&api_version, &kind_name)
            .await
            .map_err(|source| ApplyError::Api {
                what: what.clone(),
                source,
            })?;
        let metadata = object["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApplyError::Invalid {
                what: what.clone(),
                message: "no metadata".into(),
            })?;
        let label_map = metadata.entry("labels").or_insert_with(|| json!({}));
        if let Some(label_map) = label_map.as_object_mut() {
            for (key, value) in labels {
                label_map
                    .entry(key.clone())
                    .or_insert_with(|| Value::String(value.clone()));
            }
        }
        if kind.namespaced {
            metadata.insert("namespace".into(), Value::String(owner.namespace.clone()));
        }
        let api = self.api(&kind, &owner.namespace);
        let cached = self.kinds.cache().get(
            &api_version,
            &kind_name,
            kind.namespaced.then_some(owner.namespace.as_str()),
            &name,
        );
        let live = match cached {
            Some(cached) => Some(cached),
            None => api
                .get_opt(&name)
                .await
                .map_err(|source| ApplyError::Api {
                    what: what.clone(),
                    source,
                })?
                .map(Arc::new),
        };
        if kind.namespaced {
            // Cluster-scoped objects cannot be owned by a namespaced Wukong: labels only.
            // An object another controller already controls (the PVC CDI made for a
            // DataVolume) gets a plain, non-controller reference.
            let controlled_elsewhere = live.as_ref().is_some_and(|l| {
                l.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid != owner.uid)
            });
            object["metadata"]["ownerReferences"] = json!([{"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name,
                "uid": owner.uid, "controller": !controlled_elsewhere, "blockOwnerDeletion": true}]);
        }
        if let Some(live) = live {
            let live = serde_json::to_value(&*live).unwrap_or(Value::Null);
            if is_subset(&object, &live) {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
        }
        let params = PatchParams::apply(manager).force();
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|source| ApplyError::Api { what, source })?;
        self.stats.applies.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Deletes an object (absent is fine), with a grace period when given.
    pub async fn delete(
        &self,
        target: &ObjectRef,
        namespace: &str,
        grace_period_seconds: Option<u32>,
    ) -> Result<bool, ApplyError> {
        let what = format!("delete {} {}", target.kind, target.name);
        let kind = self
            .kinds
            .resolve(&target.api_version, &target.kind)
            .await
            .map_err(|source| ApplyError::Api {
                what: what.clone(),
                source,
            })?;
        let api = self.api(&kind, target.namespace.as_deref().unwrap_or(namespace));
        let params = DeleteParams {
            grace_period_seconds,
            ..DeleteParams::background()
        };
        match api.delete(&target.name, &params).await {
            Ok(_) => {
                self.stats.deletes.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(source) => Err(ApplyError::Api { what, source }),
        }
    }

    /// `PUT` on a KubeVirt subresource (`subresources.kubevirt.io/v1`).
    pub async fn subresource(
        &self,
        namespace: &str,
        call: &SubresourceCall,
    ) -> Result<(), ApplyError> {
        let what = format!("{}/{} {}", call.plural, call.subresource, call.name);
        let url = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/{}/{}/{}",
            call.plural, call.name, call.subresource
        );
        let body = call
            .body
            .clone()
            .unwrap_or_else(|| "{}".into())
            .into_bytes();
        let request = http::Request::put(url)
            .header("Content-Type", "application/json")
            .body(body)
            .map_err(|e| ApplyError::Invalid {
                what: what.clone(),
                message: e.to_string(),
            })?;
        self.kinds
            .client()
            .request_text(request)
            .await
            .map_err(|source| ApplyError::Api { what, source })?;
        self.stats.actions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes `uid`'s owner reference from an object, so it outlives its Wukong.
    pub async fn orphan(
        &self,
        target: &ObjectRef,
        namespace: &str,
        uid: &str,
    ) -> Result<(), ApplyError> {
        let what = format!("retain {} {}", target.kind, target.name);
        let kind = self
            .kinds
            .resolve(&target.api_version, &target.kind)
            .await
            .map_err(|source| ApplyError::Api {
                what: what.clone(),
                source,
            })?;
        let api = self.api(&kind, namespace);
        let Some(live) = api
            .get_opt(&target.name)
            .await
            .map_err(|source| ApplyError::Api {
                what: what.clone(),
                source,
            })?
        else {
            return Ok(());
        };
        let owners = live.metadata.owner_references.unwrap_or_default();
        if owners.iter().all(|o| o.uid != uid) {
            return Ok(());
        }
        let kept: Vec<_> = owners.into_iter().filter(|o| o.uid != uid).collect();
        let patch = json!({"metadata": {"ownerReferences": kept, "resourceVersion": live.metadata.resource_version}});
        api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ApplyError::Api { what, source })?;
        self.stats.applies.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// True when every field of `desired` is in `live` with the same value (lists must match
/// element by element). Fields the server adds (status, defaults) do not matter.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| {
            l.get(k).is_some_and(|lv| is_subset(v, lv)) || (v.is_null() && !l.contains_key(k))
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        _ => desired == live,
    }
}

#[cfg(test)]
mod tests {
    use super::is_subset;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_fields_but_not_changes() {
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}}, "spec": {"size": "1Gi", "modes": ["RWO"]}, "status": {}});
        assert!(is_subset(
            &json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"size": "1Gi"}}),
            &live
        ));
        assert!(!is_subset(&json!({"spec": {"size": "2Gi"}}), &live));
        assert!(!is_subset(
            &json!({"spec": {"modes": ["RWO", "RWX"]}}),
            &live
        ));
        assert!(!is_subset(
            &json!({"metadata": {"labels": {"y": "2"}}}),
            &live
        ));
    }
}
