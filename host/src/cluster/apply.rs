//! Applying a checked outcome: server-side apply under the plugin's field manager with
//! the ownership metadata and labels added, deletes, and KubeVirt subresource calls. The
//! ownership rule (`plugin::ownership`) is judged again against the object about to be
//! written, so what the guard saw in a stale cache cannot let a foreign object through.
//! An object already in the desired state is not written again. An object the step read
//! before writing it is applied with the `resourceVersion` it read as a precondition: a
//! write decided on a stale read fails ([`ApplyError::Stale`]) instead of undoing what
//! changed since (KubeVirt's answer to a start, a user's edit).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};

use super::{Kinds, OwnWrites, ReadVersions};
use crate::plugin::ownership::{self, Claimant, Verdict};
use crate::plugin::types::{ObjectRef, SubresourceCall};

/// Why an API call for an outcome failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    /// The object exists and is not the Wukong's (the ownership rule): nothing was written.
    #[error("{what}: the object exists and is not the Wukong's ({holder}); nothing was written")]
    NameTaken { what: String, holder: String },
    /// The object changed after the step read it: nothing was written, the step runs again
    /// on what the cluster holds now.
    #[error(
        "{what}: the object changed after the plugin read it (version {read}); nothing was written"
    )]
    Stale { what: String, read: String },
}

impl ApplyError {
    /// Permission, validation and ownership errors will not go away by retrying soon.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => matches!(status.code, 400 | 403 | 422),
            Self::Api { .. } | Self::Stale { .. } => false,
            Self::Invalid { .. } | Self::NameTaken { .. } => true,
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
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl Owner {
    /// The Wukong as the ownership rule sees it, for `backend` (`step/name`).
    pub fn claimant<'a>(&'a self, backend: &'a str) -> Claimant<'a> {
        Claimant {
            name: &self.name,
            uid: &self.uid,
            backend,
        }
    }
}

#[derive(Clone)]
pub struct Applier {
    kinds: Kinds,
    pub stats: Arc<ApplyStats>,
    /// The versions its applies returned, so their watch events wake nobody.
    pub own_writes: Arc<OwnWrites>,
}

impl Applier {
    pub fn new(kinds: Kinds) -> Self {
        Self {
            kinds,
            stats: Arc::default(),
            own_writes: Arc::default(),
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

    /// The object as the cluster has it: from the watch cache, else from the apiserver.
    async fn live(
        &self,
        kind: &super::Kind,
        namespace: &str,
        name: &str,
        what: &str,
    ) -> Result<Option<Value>, ApplyError> {
        let (api_version, kind_name) = (&kind.resource.api_version, &kind.resource.kind);
        let scope = kind.namespaced.then_some(namespace);
        let object = match self.kinds.cache().get(api_version, kind_name, scope, name) {
            Some(cached) => Some(cached),
            None => self
                .api(kind, namespace)
                .get_opt(name)
                .await
                .map_err(|source| ApplyError::Api {
                    what: what.to_owned(),
                    source,
                })?
                .map(Arc::new),
        };
        Ok(object.map(|o| serde_json::to_value(&*o).unwrap_or(Value::Null)))
    }

    /// The ownership rule on an existing object, its controller looked up when needed.
    async fn check_owned(
        &self,
        live: &Value,
        claimant: &Claimant<'_>,
        namespace: &str,
        deleting: bool,
        what: &str,
    ) -> Result<(), ApplyError> {
        let held = match ownership::judge(live, claimant, deleting) {
            Verdict::Owned => Ok(()),
            Verdict::Taken(holder) => Err(holder),
            Verdict::ThroughController(parent) => {
                let live_parent = match self.kinds.resolve(&parent.api_version, &parent.kind).await
                {
                    Ok(kind) => self.live(&kind, namespace, &parent.name, what).await?,
                    Err(_) => None,
                };
                ownership::judge_through(&parent, live_parent.as_ref(), claimant)
            }
        };
        held.map_err(|holder| ApplyError::NameTaken {
            what: what.to_owned(),
            holder,
        })
    }

    /// Server-side applies `object` for `owner` under `manager`, the ownership rule first:
    /// an existing object that is not the Wukong's (for `backend`, `step/name`, when it is
    /// cluster-scoped) is not touched. `read` holds what the step was served: an object it
    /// read is written only if still at the version it read. Returns whether it wrote.
    pub async fn apply(
        &self,
        manager: &str,
        owner: &Owner,
        backend: &str,
        mut object: Value,
        labels: &[(String, String)],
        read: &ReadVersions,
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
        let metadata = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApplyError::Invalid {
                what: what.clone(),
                message: "no metadata".into(),
            })?;
        let label_map = metadata.entry("labels").or_insert_with(|| json!({}));
        // The host's labels are how its watches find the object: they always go on.
        if !label_map.is_object() {
            *label_map = json!({});
        }
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
        // A precondition is the host's to set (below), not one the plugin may choose.
        metadata.remove("resourceVersion");
        let read = read.of(
            &api_version,
            &kind_name,
            kind.namespaced.then_some(owner.namespace.as_str()),
            &name,
        );
        let read = read.as_deref();
        let claimant = owner.claimant(backend);
        let live = self.live(&kind, &owner.namespace, &name, &what).await?;
        if let Some(live) = &live {
            self.check_owned(live, &claimant, &owner.namespace, false, &what)
                .await?;
        }
        ownership::stamp(&mut object, &claimant, kind.namespaced, live.as_ref());
        if let Some(live) = &live {
            // A retained object made before the rule still carries our reference: drop it.
            let stale_reference = object["metadata"]["ownerReferences"].is_null()
                && ownership::has_owner_reference(live, &owner.uid);
            if is_subset(&object, live) && !stale_reference {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            if let Some(read) = read
                && live["metadata"]["resourceVersion"].as_str() != Some(read)
            {
                // Already known to be newer than the read: no request to learn it.
                return Err(ApplyError::Stale {
                    what,
                    read: read.to_owned(),
                });
            }
        }
        if let Some(read) = read {
            if live.is_none() {
                // Read, then deleted: making it again is for a step that sees it gone.
                return Err(ApplyError::Stale {
                    what,
                    read: read.to_owned(),
                });
            }
            object["metadata"]["resourceVersion"] = json!(read);
        }
        let params = PatchParams::apply(manager).force();
        let written = self
            .api(&kind, &owner.namespace)
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|source| match (&source, read) {
                // With `force` an apply meets no field conflict: a 409 is the precondition.
                (kube::Error::Api(status), Some(read)) if status.code == 409 => ApplyError::Stale {
                    what,
                    read: read.to_owned(),
                },
                _ => ApplyError::Api { what, source },
            })?;
        self.own_writes.note(&written);
        self.stats.applies.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Deletes an object the Wukong owns (absent is fine), with a grace period when given.
    /// The delete carries the uid of the object judged, so one re-created under the same
    /// name meanwhile is not deleted.
    pub async fn delete(
        &self,
        target: &ObjectRef,
        owner: &Owner,
        backend: &str,
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
        let namespace = target.namespace.as_deref().unwrap_or(&owner.namespace);
        let Some(live) = self.live(&kind, namespace, &target.name, &what).await? else {
            return Ok(false);
        };
        self.check_owned(&live, &owner.claimant(backend), namespace, true, &what)
            .await?;
        let params = DeleteParams {
            grace_period_seconds,
            preconditions: live["metadata"]["uid"].as_str().map(|uid| Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self
            .api(&kind, namespace)
            .delete(&target.name, &params)
            .await
        {
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
        // NB: the guard checked these already; a path is built from them, so again here.
        if ![&call.plural, &call.subresource, &call.name]
            .iter()
            .all(|part| ownership::is_object_name(part))
        {
            return Err(ApplyError::Invalid {
                what,
                message: "not a valid subresource path".into(),
            });
        }
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

    /// Makes an object the Wukong owns outlive it: drops the Wukong's owner reference
    /// (which the garbage collector would act on, whatever else happens) and marks it with
    /// the owner-uid annotation instead, so it stays the Wukong's to write. Absent, or
    /// already so: no write. Returns whether it wrote.
    pub async fn retain(&self, target: &ObjectRef, owner: &Owner) -> Result<bool, ApplyError> {
        let what = format!("retain {} {}", target.kind, target.name);
        let kind = self
            .kinds
            .resolve(&target.api_version, &target.kind)
            .await
            .map_err(|source| ApplyError::Api {
                what: what.clone(),
                source,
            })?;
        let Some(live) = self
            .live(&kind, &owner.namespace, &target.name, &what)
            .await?
        else {
            return Ok(false);
        };
        let marked =
            live["metadata"]["annotations"][ownership::OWNER_UID_ANNOTATION] == owner.uid.as_str();
        if !ownership::has_owner_reference(&live, &owner.uid) && marked {
            return Ok(false);
        }
        // Never adopt: only an object that is the Wukong's is retained.
        self.check_owned(&live, &owner.claimant(""), &owner.namespace, false, &what)
            .await?;
        let kept: Vec<&Value> = live["metadata"]["ownerReferences"]
            .as_array()
            .map(|owners| {
                owners
                    .iter()
                    .filter(|o| o["uid"] != owner.uid.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let patch = json!({"metadata": {
            "ownerReferences": kept,
            "annotations": {ownership::OWNER_UID_ANNOTATION: owner.uid},
            "resourceVersion": live["metadata"]["resourceVersion"],
        }});
        self.api(&kind, &owner.namespace)
            .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ApplyError::Api { what, source })?;
        self.stats.applies.fetch_add(1, Ordering::Relaxed);
        Ok(true)
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
