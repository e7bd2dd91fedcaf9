//! The live `ClusterReader`: plugins' reads answered from the watch caches when they hold
//! the object, else by the apiserver. The operator's reconciles use it, and so does
//! `wukong plugin run --record`, which starts no watches: with empty caches every read is
//! a GET or a LIST, worded as the operator would word it.
//!
//! Plugin calls run on a blocking thread; the reader blocks on the async client there.
//!
//! One reader serves one reconcile and remembers the `resourceVersion` of every object it
//! served ([`ReadVersions`]): an object a step writes after reading it is applied with
//! that version as a precondition, so a decision made on a stale read (a cache that has
//! not seen KubeVirt's answer to the last action yet) cannot overwrite what changed since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{Api, DynamicObject, ListParams};
use tokio::runtime::Handle;

use super::Kinds;
use super::cache::Lookup;
use crate::plugin::ClusterReader;
use crate::plugin::types::{KindRef, ObjectRef};

/// Which object a read served: apiVersion, kind, namespace (`None`: cluster-scoped), name.
type ReadKey = (String, String, Option<String>, String);

/// The `resourceVersion` of each object served during one reconcile, the last read winning.
#[derive(Debug, Default)]
pub struct ReadVersions(Mutex<HashMap<ReadKey, String>>);

impl ReadVersions {
    fn note(&self, api_version: &str, kind: &str, namespace: Option<&str>, object: &DynamicObject) {
        let (Some(name), Some(version)) = (
            object.metadata.name.as_deref(),
            object.metadata.resource_version.as_deref(),
        ) else {
            return;
        };
        let key = (
            api_version.to_owned(),
            kind.to_owned(),
            namespace.map(str::to_owned),
            name.to_owned(),
        );
        if let Ok(mut seen) = self.0.lock() {
            seen.insert(key, version.to_owned());
        }
    }

    /// The version a step was served of this object, if it read it.
    pub fn of(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<String> {
        let key = (
            api_version.to_owned(),
            kind.to_owned(),
            namespace.map(str::to_owned),
            name.to_owned(),
        );
        self.0.lock().ok()?.get(&key).cloned()
    }
}

/// Reads through the apiserver. Only call from a blocking thread (`spawn_blocking`).
pub struct LiveReader {
    kinds: Kinds,
    handle: Handle,
    versions: Arc<ReadVersions>,
}

impl LiveReader {
    pub fn new(kinds: Kinds, handle: Handle) -> Self {
        Self {
            kinds,
            handle,
            versions: Arc::default(),
        }
    }

    /// What this reader has served so far.
    pub fn versions(&self) -> Arc<ReadVersions> {
        Arc::clone(&self.versions)
    }

    async fn get_async(
        &self,
        target: &ObjectRef,
        default_namespace: &str,
    ) -> Result<Option<String>, String> {
        let kind = self
            .kinds
            .resolve(&target.api_version, &target.kind)
            .await
            .map_err(|e| format!("{}/{}: {e}", target.api_version, target.kind))?;
        let namespace = kind
            .namespaced
            .then(|| target.namespace.as_deref().unwrap_or(default_namespace));
        match self
            .kinds
            .cache()
            .lookup(&target.api_version, &target.kind, namespace, &target.name)
        {
            Lookup::Found(cached) => {
                self.versions
                    .note(&target.api_version, &target.kind, namespace, &cached);
                return serde_json::to_string(&*cached)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            Lookup::Absent => return Ok(None),
            Lookup::Unknown => {}
        }
        let client = self.kinds.client().clone();
        let api: Api<DynamicObject> = match namespace {
            Some(namespace) => Api::namespaced_with(client, namespace, &kind.resource),
            None => Api::all_with(client, &kind.resource),
        };
        let found = api
            .get_opt(&target.name)
            .await
            .map_err(|e| format!("{} {}: {e}", target.kind, target.name))?;
        if let Some(object) = &found {
            self.versions
                .note(&target.api_version, &target.kind, namespace, object);
        }
        found
            .map(|object| serde_json::to_string(&object).map_err(|e| e.to_string()))
            .transpose()
    }

    async fn list_async(
        &self,
        kind_ref: &KindRef,
        namespace: &str,
        selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let kind = self
            .kinds
            .resolve(&kind_ref.api_version, &kind_ref.kind)
            .await
            .map_err(|e| format!("{}/{}: {e}", kind_ref.api_version, kind_ref.kind))?;
        let scope = kind.namespaced.then_some(namespace);
        if let Some(cached) =
            self.kinds
                .cache()
                .list(&kind_ref.api_version, &kind_ref.kind, scope, selector)
        {
            return cached
                .iter()
                .map(|object| {
                    self.versions
                        .note(&kind_ref.api_version, &kind_ref.kind, scope, object);
                    serde_json::to_string(&**object).map_err(|e| e.to_string())
                })
                .collect();
        }
        let client = self.kinds.client().clone();
        let api: Api<DynamicObject> = match scope {
            Some(namespace) => Api::namespaced_with(client, namespace, &kind.resource),
            None => Api::all_with(client, &kind.resource),
        };
        let mut params = ListParams::default();
        if let Some(selector) = selector {
            params = params.labels(selector);
        }
        let list = api
            .list(&params)
            .await
            .map_err(|e| format!("{}: {e}", kind_ref.kind))?;
        // List items come without apiVersion and kind; plugins see whole objects.
        let types = kube::core::TypeMeta {
            api_version: kind_ref.api_version.clone(),
            kind: kind_ref.kind.clone(),
        };
        list.items
            .into_iter()
            .map(|mut object| {
                object.types.get_or_insert_with(|| types.clone());
                self.versions
                    .note(&kind_ref.api_version, &kind_ref.kind, scope, &object);
                serde_json::to_string(&object).map_err(|e| e.to_string())
            })
            .collect()
    }
}

impl ClusterReader for LiveReader {
    fn get(&self, target: &ObjectRef, default_namespace: &str) -> Result<Option<String>, String> {
        self.handle
            .block_on(self.get_async(target, default_namespace))
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        self.handle
            .block_on(self.list_async(kind, namespace, label_selector))
    }
}
