//! Resolving `apiVersion` + `kind` to an API resource (plural, scope) once per kind; the
//! watch caches of the kinds the controller follows travel with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

use super::ObjectCache;

/// A resolved kind.
#[derive(Debug, Clone)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// A memo of discovered kinds and the watch caches, shared by the reader and the applier.
#[derive(Clone)]
pub struct Kinds {
    client: Client,
    known: Arc<Mutex<HashMap<(String, String), Kind>>>,
    cache: ObjectCache,
}

impl Kinds {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            known: Arc::default(),
            cache: ObjectCache::default(),
        }
    }

    /// The API resource for `apiVersion`/`kind`, discovered on first use.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<Kind, kube::Error> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self
            .known
            .lock()
            .ok()
            .and_then(|known| known.get(&key).cloned())
        {
            return Ok(found);
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities): (ApiResource, ApiCapabilities) =
            kube::discovery::pinned_kind(&self.client, &gvk).await?;
        let found = Kind {
            resource,
            namespaced: capabilities.scope == Scope::Namespaced,
        };
        if let Ok(mut known) = self.known.lock() {
            known.insert(key, found.clone());
        }
        Ok(found)
    }

    /// The watch caches (empty until the controller starts its watches).
    pub fn cache(&self) -> &ObjectCache {
        &self.cache
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
