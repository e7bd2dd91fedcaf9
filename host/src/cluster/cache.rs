//! Watch caches of the kinds the controller follows, so plugins' reads and the applier's
//! look at the live object cost no request.
//!
//! The controller's watches feed these stores before they trigger a reconcile, so a
//! reconcile sees at least the change that triggered it. A cache only holds what its watch
//! selects (objects with the Wukong label): a hit is answered from it, a miss is not a
//! proof of absence and goes to the apiserver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use kube::api::DynamicObject;
use kube::discovery::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};

/// One kind's store and the resource its keys are built with.
struct KindCache {
    resource: ApiResource,
    store: Store<DynamicObject>,
}

/// The watch caches, by `apiVersion` and `kind`. Cheap to clone; clones share the stores.
#[derive(Clone, Default)]
pub struct ObjectCache {
    kinds: Arc<RwLock<HashMap<(String, String), KindCache>>>,
    stats: Arc<CacheStats>,
}

/// Reads answered from a cache and reads that went to the apiserver.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl ObjectCache {
    /// Serves reads of `resource`'s kind from `store`.
    pub fn insert(&self, resource: ApiResource, store: Store<DynamicObject>) {
        let key = (resource.api_version.clone(), resource.kind.clone());
        if let Ok(mut kinds) = self.kinds.write() {
            kinds.insert(key, KindCache { resource, store });
        }
    }

    /// The cached object, or `None` when this cache cannot say (kind not cached, object
    /// not seen by the watch): ask the apiserver then.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let kinds = self.kinds.read().ok()?;
        let cached = kinds.get(&(api_version.to_owned(), kind.to_owned()))?;
        let mut key = ObjectRef::new_with(name, cached.resource.clone());
        if let Some(namespace) = namespace {
            key = key.within(namespace);
        }
        let found = cached.store.get(&key);
        let counter = match found {
            Some(_) => &self.stats.hits,
            None => &self.stats.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
}
