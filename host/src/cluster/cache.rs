//! Watch caches of the kinds the controller follows, so plugins' reads and the applier's
//! look at the live object cost no request.
//!
//! The controller's watches feed these stores before they trigger a reconcile, so a
//! reconcile sees at least the change that triggered it. A cache only holds what its watch
//! selects (every object of some kinds; objects with the Wukong label of the others): a hit
//! is answered from it. A miss in a filled cache of every object of its kind is the
//! answer "absent" for plugins' reads; anywhere else a miss is not a proof of absence and
//! goes to the apiserver (and the applier always asks the apiserver before it writes what
//! its cache does not hold, so a cache that lags never lets it overwrite an object it did
//! not see). A list is answered when the cache holds every object the selector can match. The watches fill in
//! each object's apiVersion and kind (list items come without them), so a cached object
//! is served as it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use kube::api::DynamicObject;
use kube::discovery::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};
use wukong_model::selector::Selector;

/// One kind's store, the resource its keys are built with, and the label its watch
/// selects on (`None`: every object of the kind).
struct KindCache {
    resource: ApiResource,
    store: Store<DynamicObject>,
    selected_by: Option<&'static str>,
}

impl KindCache {
    /// Whether every object matching `terms` is in the store: the watch takes every
    /// object, or the selector requires the label the watch selects on.
    fn complete_for(&self, terms: &[(&str, &str)]) -> bool {
        self.selected_by
            .is_none_or(|label| terms.iter().any(|(key, _)| *key == label))
            && self.store.wait_until_ready().now_or_never().is_some()
    }
}

/// What a cache knows of one object.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<DynamicObject>),
    /// The cache holds every object of the kind and not this one.
    Absent,
    /// The cache cannot say: ask the apiserver.
    Unknown,
}

/// The watch caches, by `apiVersion` and `kind`. Cheap to clone; clones share the stores.
#[derive(Clone, Default)]
pub struct ObjectCache {
    // A handful of kinds: a scan finds one without building a key on every read.
    kinds: Arc<RwLock<Vec<KindCache>>>,
    stats: Arc<CacheStats>,
}

/// Reads answered from a cache and reads that went to the apiserver.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl ObjectCache {
    /// Serves reads of `resource`'s kind from `store`, which a watch fills with every
    /// object of the kind (`selected_by: None`) or those carrying the label `selected_by`.
    pub fn insert(
        &self,
        resource: ApiResource,
        store: Store<DynamicObject>,
        selected_by: Option<&'static str>,
    ) {
        if let Ok(mut kinds) = self.kinds.write() {
            kinds.retain(|k| {
                (&k.resource.api_version, &k.resource.kind)
                    != (&resource.api_version, &resource.kind)
            });
            kinds.push(KindCache {
                resource,
                store,
                selected_by,
            });
        }
    }

    /// The objects of a kind in a namespace (all namespaces: `None`) matching an
    /// equality label selector, or `None` when this cache cannot answer completely (kind
    /// not cached, store not filled yet, selector it cannot judge): ask the apiserver then.
    pub fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Option<Vec<Arc<DynamicObject>>> {
        let kinds = self.kinds.read().ok()?;
        let cached = kinds
            .iter()
            .find(|k| k.resource.api_version == api_version && k.resource.kind == kind)?;
        // Only equality selectors (or none) are judged here: any other form, and one that
        // does not parse, go to the apiserver, which answers them or says what is wrong.
        let selector = Selector::parse(selector.unwrap_or_default()).ok()?;
        let terms = selector.equality_terms()?;
        if !cached.complete_for(&terms) {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        let matches = |object: &DynamicObject| {
            namespace.is_none_or(|ns| object.metadata.namespace.as_deref() == Some(ns))
                && terms.iter().all(|(key, value)| {
                    object
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get(*key))
                        .is_some_and(|v| v == value)
                })
        };
        Some(
            cached
                .store
                .state()
                .into_iter()
                .filter(|object| matches(object))
                .collect(),
        )
    }

    /// The cached object, or `None` when this cache does not hold it (kind not cached,
    /// object not seen by the watch): ask the apiserver then.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        match self.lookup(api_version, kind, namespace, name) {
            Lookup::Found(object) => Some(object),
            Lookup::Absent | Lookup::Unknown => None,
        }
    }

    /// What the cache knows of an object: found, known absent (its watch takes every
    /// object of the kind and has listed them), or unknown.
    pub fn lookup(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Lookup {
        let Ok(kinds) = self.kinds.read() else {
            return Lookup::Unknown;
        };
        let Some(cached) = kinds
            .iter()
            .find(|k| k.resource.api_version == api_version && k.resource.kind == kind)
        else {
            return Lookup::Unknown;
        };
        let mut key = ObjectRef::new_with(name, cached.resource.clone());
        if let Some(namespace) = namespace {
            key = key.within(namespace);
        }
        let (found, counter) = match cached.store.get(&key) {
            Some(object) => (Lookup::Found(object), &self.stats.hits),
            None if cached.complete_for(&[]) => (Lookup::Absent, &self.stats.hits),
            None => (Lookup::Unknown, &self.stats.misses),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_without_the_kind_sends_every_read_to_the_apiserver() {
        // `wukong plugin run --record` starts no watches: its reads must all go live.
        let cache = ObjectCache::default();
        let lookup = cache.lookup("v1", "PersistentVolumeClaim", Some("ns"), "root");
        assert!(matches!(lookup, Lookup::Unknown), "{lookup:?}");
        assert!(cache.get("v1", "Node", None, "n1").is_none());
        assert!(cache.list("v1", "Node", None, None).is_none());
        assert!(
            cache
                .list("v1", "PersistentVolumeClaim", Some("ns"), Some("a=b"))
                .is_none()
        );
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 0);
    }
}
