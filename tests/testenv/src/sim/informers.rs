//! Shared watch caches, as KubeVirt's and CDI's informers: one watch per kind for the whole
//! simulator, read by every controller instead of a GET per reconcile (at 1,000 Wukongs the
//! simulator's live reads were most of etcd's range requests), with claim indexes so a
//! claim's change wakes the objects that use it rather than every object of its namespace.
//!
//! A controller that reads a kind from here also subscribes to that kind's changes, and a
//! subscriber is told of a change only after the cache holds it: a read that lagged behind
//! the apiserver is followed by a wake-up that sees the newer object (informer semantics;
//! kube's shared streams would not do, they drop deletions).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::storage::claims;
use super::util;

/// Objects that use a claim, by `namespace/claim`.
type ClaimIndex = Mutex<HashMap<String, HashSet<String>>>;

/// One kind's cache, its subscribers and, for VMs and VMIs, which of them use each claim.
pub struct Informer<K: Resource + Clone + 'static>
where
    <K as Resource>::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<K>>>>,
    dyntype: <K as Resource>::DynamicType,
    /// What each object claims (VMs: their template's volumes; VMIs: their volumes).
    claims_of: Option<fn(&K) -> Vec<String>>,
    by_claim: Arc<ClaimIndex>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    <K as Resource>::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    fn new(
        dyntype: <K as Resource>::DynamicType,
        claims_of: Option<fn(&K) -> Vec<String>>,
    ) -> Self {
        let writer = reflector::store::Writer::new(dyntype.clone());
        Self {
            store: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            subscribers: Arc::default(),
            dyntype,
            claims_of,
            by_claim: Arc::default(),
        }
    }

    /// Every change from now on (deletions included), each after the cache holds it.
    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded();
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.push(sender);
        }
        receiver.map(Ok)
    }

    /// The cached object.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut key = ObjectRef::new_with(name, self.dyntype.clone());
        if let Some(namespace) = namespace {
            key = key.within(namespace);
        }
        self.store.get(&key)
    }

    /// The names of the objects in `namespace` that use `claim`.
    pub fn using_claim(&self, namespace: &str, claim: &str) -> Vec<String> {
        self.by_claim
            .lock()
            .ok()
            .and_then(|index| index.get(&format!("{namespace}/{claim}")).cloned())
            .map(|names| names.into_iter().collect())
            .unwrap_or_default()
    }

    /// Starts the watch (once; subscribe first).
    fn start(&self, api: Api<K>) -> Option<JoinHandle<()>> {
        let writer = self.writer.lock().ok()?.take()?;
        let subscribers = Arc::clone(&self.subscribers);
        let (claims_of, by_claim) = (self.claims_of, Arc::clone(&self.by_claim));
        let (store, dyntype) = (self.store.clone(), self.dyntype.clone());
        let indexed: Mutex<HashMap<String, Vec<String>>> = Mutex::default();
        let watch = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|object| object.meta_mut().managed_fields = None)
            .reflect(writer)
            .touched_objects()
            .for_each(move |object| {
                if let (Ok(object), Some(claims_of)) = (&object, claims_of) {
                    // The cache took the change first: gone from it, deleted.
                    let key = ObjectRef::from_obj_with(object, dyntype.clone());
                    let claims = match store.get(&key) {
                        Some(_) => claims_of(object),
                        None => Vec::new(),
                    };
                    reindex(&indexed, &by_claim, object, claims);
                }
                if let (Ok(object), Ok(mut subscribers)) = (object, subscribers.lock()) {
                    subscribers.retain(|s| s.unbounded_send(object.clone()).is_ok());
                }
                futures::future::ready(())
            });
        Some(tokio::spawn(watch))
    }
}

/// Moves `object` in the claim index to the claims it uses now (none once deleted).
fn reindex<K: Resource>(
    indexed: &Mutex<HashMap<String, Vec<String>>>,
    by_claim: &ClaimIndex,
    object: &K,
    claims: Vec<String>,
) {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let key = format!("{namespace}/{name}");
    let now: Vec<String> = claims
        .into_iter()
        .map(|claim| format!("{namespace}/{claim}"))
        .collect();
    let (Ok(mut indexed), Ok(mut by_claim)) = (indexed.lock(), by_claim.lock()) else {
        return;
    };
    for old in indexed.remove(&key).unwrap_or_default() {
        if let Some(names) = by_claim.get_mut(&old) {
            names.remove(&name);
            if names.is_empty() {
                by_claim.remove(&old);
            }
        }
    }
    for claim in &now {
        by_claim
            .entry(claim.clone())
            .or_default()
            .insert(name.clone());
    }
    indexed.insert(key, now);
}

/// The claims of a VM's template.
fn vm_claims(vm: &DynamicObject) -> Vec<String> {
    vm.data
        .pointer("/spec/template")
        .map(claims)
        .unwrap_or_default()
}

fn vmi_claims(vmi: &DynamicObject) -> Vec<String> {
    claims(&vmi.data)
}

/// The simulator's informers.
pub struct Informers {
    pub vms: Informer<DynamicObject>,
    pub vmis: Informer<DynamicObject>,
    pub dvs: Informer<DynamicObject>,
    pub pvcs: Informer<PersistentVolumeClaim>,
    pub nodes: Informer<Node>,
}

impl Informers {
    pub fn new() -> Self {
        Self {
            vms: Informer::new(util::vm(), Some(vm_claims)),
            vmis: Informer::new(util::vmi(), Some(vmi_claims)),
            dvs: Informer::new(util::dv(), None),
            pvcs: Informer::new((), None),
            nodes: Informer::new((), None),
        }
    }

    /// Starts every watch and waits until each has listed (subscribe before).
    pub async fn start(&self, client: &kube::Client) -> Vec<JoinHandle<()>> {
        let dynamic = |ar: &ApiResource| Api::<DynamicObject>::all_with(client.clone(), ar);
        let tasks = [
            self.vms.start(dynamic(&util::vm())),
            self.vmis.start(dynamic(&util::vmi())),
            self.dvs.start(dynamic(&util::dv())),
            self.pvcs.start(Api::all(client.clone())),
            self.nodes.start(Api::all(client.clone())),
        ];
        // A failed list retries with backoff; the controllers start on full caches (a kind
        // the cluster does not serve yet is waited for a while, then filled in later).
        let ready = async {
            let _ = self.vms.store.wait_until_ready().await;
            let _ = self.vmis.store.wait_until_ready().await;
            let _ = self.dvs.store.wait_until_ready().await;
            let _ = self.pvcs.store.wait_until_ready().await;
            let _ = self.nodes.store.wait_until_ready().await;
        };
        if tokio::time::timeout(std::time::Duration::from_secs(30), ready)
            .await
            .is_err()
        {
            tracing::warn!("simulator informers not all listed after 30 s; starting anyway");
        }
        tasks.into_iter().flatten().collect()
    }
}
