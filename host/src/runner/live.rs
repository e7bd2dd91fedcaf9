//! A live cluster answering a plugin's reads, for `wukong plugin run --record`.
//!
//! NB: [`ClusterReader`] is synchronous and this reader blocks on the tokio runtime given
//! to it: call the plugin on a blocking thread (`tokio::task::spawn_blocking`), never on
//! a runtime worker.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use tokio::runtime::Handle;

use crate::plugin::ClusterReader;
use crate::plugin::types::{KindRef, ObjectRef};

/// Reads from the cluster of a kube client, resolving kinds by discovery.
pub struct LiveCluster {
    client: kube::Client,
    handle: Handle,
    resources: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
}

impl LiveCluster {
    /// Reads through `client`, blocking on `handle` (see the module's note).
    pub fn new(client: kube::Client, handle: Handle) -> Self {
        Self {
            client,
            handle,
            resources: Mutex::new(HashMap::new()),
        }
    }

    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), String> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(found.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| format!("{api_version}/{kind}: not served by the cluster: {e}"))?;
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, found.clone());
        Ok(found)
    }

    fn api(
        &self,
        resource: &ApiResource,
        capabilities: &ApiCapabilities,
        namespace: &str,
    ) -> Api<DynamicObject> {
        match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), namespace, resource),
            Scope::Cluster => Api::all_with(self.client.clone(), resource),
        }
    }
}

impl ClusterReader for LiveCluster {
    fn get(&self, target: &ObjectRef, default_namespace: &str) -> Result<Option<String>, String> {
        self.handle.block_on(async {
            let (resource, capabilities) = self.resource(&target.api_version, &target.kind).await?;
            let namespace = target.namespace.as_deref().unwrap_or(default_namespace);
            let object = self
                .api(&resource, &capabilities, namespace)
                .get_opt(&target.name)
                .await
                .map_err(|e| {
                    format!(
                        "get {}/{} {}: {e}",
                        target.api_version, target.kind, target.name
                    )
                })?;
            object
                .map(|o| serde_json::to_string(&with_type(o, &resource)))
                .transpose()
                .map_err(|e| e.to_string())
        })
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: Option<&str>,
    ) -> Result<Vec<String>, String> {
        self.handle.block_on(async {
            let (resource, capabilities) = self.resource(&kind.api_version, &kind.kind).await?;
            let mut params = ListParams::default();
            if let Some(selector) = label_selector {
                params = params.labels(selector);
            }
            let list = self
                .api(&resource, &capabilities, namespace)
                .list(&params)
                .await
                .map_err(|e| format!("list {}/{}: {e}", kind.api_version, kind.kind))?;
            list.items
                .into_iter()
                .map(|o| serde_json::to_string(&with_type(o, &resource)))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())
        })
    }
}

/// Items of a list come without `apiVersion` and `kind`; plugins expect them.
fn with_type(mut object: DynamicObject, resource: &ApiResource) -> DynamicObject {
    if object.types.is_none() {
        object.types = Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
    }
    object
}
