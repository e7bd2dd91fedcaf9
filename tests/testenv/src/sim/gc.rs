//! A garbage collector (there is no kube-controller-manager here) that follows the
//! semantics of kube-controller-manager's `pkg/controller/garbagecollector` for the kinds
//! the tests use.
//!
//! - [`Gc::attempt_to_delete`] is `attemptToDeleteItem` with `classifyReferences`: each owner
//!   reference of a live object is *solid* (the owner exists with that uid), *dangling* (no
//!   such owner, or one re-created under the same name with another uid) or *waiting* (the
//!   owner is being deleted in the foreground). With a solid owner the object only loses its
//!   dangling and waiting references; without one it is deleted: in the foreground when an
//!   owner waits and the object has dependents of its own, else as its own `orphan` or
//!   `foregroundDeletion` finalizer asks, else in the background.
//! - [`Gc::delete_dependents`] is `processDeletingDependentsItem` (plus the graph builder
//!   queueing every dependent when an owner starts deleting them): an object with a
//!   deletionTimestamp and the `foregroundDeletion` finalizer has its dependents attempted,
//!   and loses that finalizer (its other finalizers kept) once no dependent with
//!   `blockOwnerDeletion: true` references it any more.
//! - [`Gc::orphan`] is `orphanDependents`: every dependent loses its reference to an owner
//!   carrying the `orphan` finalizer, then the finalizer goes.
//!
//! Followed kinds, as owners and as dependents: Wukong, VirtualMachine,
//! VirtualMachineInstance, VirtualMachineInstanceMigration, DataVolume,
//! NetworkAttachmentDefinition and PersistentVolumeClaim. Each has a reflector store; a
//! watch whose CRD is missing retries with backoff until it exists.
//!
//! Simplified against upstream: no dependency graph, dependents are found by scanning the
//! stores; an owner missing from a store (or there under another uid) is confirmed with a
//! live GET, there is no absent-owner cache; references to kinds not followed here (or not
//! served yet) count as solid, as upstream keeps retrying an owner it cannot resolve; only
//! owners in the dependent's namespace; no cycle breaking (`unblockOwnerReferences`). Work
//! comes from watch events and from a resync every 2 s, which catches missed events (e.g.
//! deletions during a re-list).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::mpsc;

use super::Ctx;
use super::util::{self, ok_unless_conflict};
use crate::error::Result;

/// The finalizer the API server adds on a foreground deletion.
const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer the API server adds on an orphaning deletion.
const ORPHAN: &str = "orphan";
/// How often every object is looked at again.
const RESYNC: Duration = Duration::from_secs(2);

/// A kind's store state: not listed yet, listed (the store is complete), or not served.
const PENDING: u8 = 0;
const SYNCED: u8 = 1;
const ABSENT: u8 = 2;

/// The followed kinds.
fn followed() -> Vec<ApiResource> {
    vec![
        util::wukong(),
        util::vm(),
        util::vmi(),
        util::vmim(),
        util::dv(),
        util::nad(),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
    ]
}

struct Kind {
    ar: ApiResource,
    store: Store<DynamicObject>,
    state: AtomicU8,
}

/// An object to look at: its kind (an index into [`Gc::kinds`]), namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: usize,
    ns: String,
    name: String,
}

/// How an owner reference classifies (`classifyReferences`).
enum Owner {
    Solid,
    Dangling,
    Waiting,
}

struct Gc {
    client: kube::Client,
    kinds: Vec<Kind>,
    queue: mpsc::UnboundedSender<Key>,
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let (queue, rx) = mpsc::unbounded_channel();
    let (kinds, writers): (Vec<_>, Vec<_>) = followed()
        .into_iter()
        .map(|ar| {
            let writer = Writer::new(ar.clone());
            let store = writer.as_reader();
            let state = AtomicU8::new(PENDING);
            (Kind { ar, store, state }, writer)
        })
        .unzip();
    let gc = Gc {
        client: ctx.client.clone(),
        kinds,
        queue,
    };
    let watches = writers
        .into_iter()
        .enumerate()
        .map(|(kind, writer)| gc.watch(kind, writer));
    futures::join!(futures::future::join_all(watches), gc.resync(), gc.work(rx));
}

impl Gc {
    /// Keeps one kind's store and queues what each event concerns: the object itself, the
    /// owners it references that are being deleted (before and after the change), and, once
    /// it is gone, its dependents.
    async fn watch(&self, kind: usize, mut writer: Writer<DynamicObject>) {
        let k = &self.kinds[kind];
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &k.ar);
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                    k.state.store(ABSENT, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(kind = %k.ar.kind, "gc watch: {e}");
                    continue;
                }
            };
            let old = match &event {
                Event::Apply(obj) => self.get(&key_of(kind, obj)),
                _ => None,
            };
            writer.apply_watcher_event(&event);
            match &event {
                Event::Apply(obj) => {
                    self.push(key_of(kind, obj));
                    self.push_deleting_owners(obj);
                    if let Some(old) = old {
                        self.push_deleting_owners(&old);
                    }
                }
                Event::Delete(obj) => {
                    self.push_deleting_owners(obj);
                    for (key, _) in self.dependents(&obj.uid().unwrap_or_default()) {
                        self.push(key);
                    }
                }
                Event::InitDone => {
                    k.state.store(SYNCED, Ordering::Relaxed);
                    for obj in k.store.state() {
                        self.push(key_of(kind, &obj));
                    }
                }
                Event::Init | Event::InitApply(_) => {}
            }
        }
    }

    /// Queues every object that has owners or waits for its dependents, every [`RESYNC`].
    async fn resync(&self) {
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tick.tick().await;
            for (i, k) in self.kinds.iter().enumerate() {
                for obj in k.store.state() {
                    let deleting = obj.metadata.deletion_timestamp.is_some();
                    if (deleting && (has(&obj, FOREGROUND) || has(&obj, ORPHAN)))
                        || (!deleting && !obj.owner_references().is_empty())
                    {
                        self.push(key_of(i, &obj));
                    }
                }
            }
        }
    }

    /// Works the queue, each key once per batch. A failure is retried by the resync.
    async fn work(&self, mut rx: mpsc::UnboundedReceiver<Key>) {
        while let Some(first) = rx.recv().await {
            let mut batch = HashSet::from([first]);
            while let Ok(key) = rx.try_recv() {
                batch.insert(key);
            }
            for key in batch {
                if let Err(e) = self.process(&key).await {
                    tracing::warn!(kind = %self.kind(&key), ns = %key.ns, name = %key.name, "gc: {e}");
                }
            }
        }
    }

    async fn process(&self, key: &Key) -> Result<()> {
        let Some(obj) = self.get(key) else {
            return Ok(());
        };
        if obj.metadata.deletion_timestamp.is_some() {
            if has(&obj, ORPHAN) {
                self.orphan(key, &obj).await
            } else if has(&obj, FOREGROUND) {
                self.delete_dependents(key, &obj).await
            } else {
                Ok(())
            }
        } else if obj.owner_references().is_empty() {
            Ok(())
        } else {
            self.attempt_to_delete(key, &obj).await
        }
    }

    /// `attemptToDeleteItem`: keep, unlink from gone or waiting owners, or delete.
    async fn attempt_to_delete(&self, key: &Key, obj: &DynamicObject) -> Result<()> {
        let (mut solid, mut waiting, mut unlink) = (false, false, Vec::new());
        for r in obj.owner_references() {
            match self.classify(&key.ns, r).await? {
                Owner::Solid => solid = true,
                Owner::Dangling => unlink.push(r.uid.as_str()),
                Owner::Waiting => {
                    waiting = true;
                    unlink.push(r.uid.as_str());
                }
            }
        }
        if solid {
            if !unlink.is_empty() {
                self.unlink(key, obj, &unlink).await?;
            }
            return Ok(());
        }
        let uid = obj.uid().unwrap_or_default();
        let policy = if waiting && !self.dependents(&uid).is_empty() {
            DeleteParams::foreground()
        } else if has(obj, ORPHAN) {
            DeleteParams::orphan()
        } else if has(obj, FOREGROUND) {
            DeleteParams::foreground()
        } else {
            DeleteParams::background()
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.uid(),
                resource_version: obj.resource_version(),
            }),
            ..policy
        };
        if ok_unless_conflict(self.api(key).delete(&key.name, &params).await)? {
            tracing::info!(kind = %self.kind(key), ns = %key.ns, name = %key.name, "garbage-collected");
        }
        Ok(())
    }

    /// `processDeletingDependentsItem`: delete (or unlink) the dependents, then drop the
    /// `foregroundDeletion` finalizer once nothing blocks the owner.
    async fn delete_dependents(&self, key: &Key, owner: &DynamicObject) -> Result<()> {
        let uid = owner.uid().unwrap_or_default();
        let dependents = self.dependents(&uid);
        for (k, dep) in &dependents {
            if dep.metadata.deletion_timestamp.is_none()
                && let Err(e) = self.attempt_to_delete(k, dep).await
            {
                tracing::warn!(kind = %self.kind(k), ns = %k.ns, name = %k.name, owner = %key.name, "gc: {e}");
            }
        }
        let blocked = dependents.iter().any(|(_, dep)| {
            dep.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
        });
        if !blocked && self.synced() {
            self.remove_finalizer(key, owner, FOREGROUND).await?;
        }
        Ok(())
    }

    /// `orphanDependents`: every dependent loses its reference, then the `orphan` finalizer goes.
    async fn orphan(&self, key: &Key, owner: &DynamicObject) -> Result<()> {
        if !self.synced() {
            return Ok(());
        }
        let uid = owner.uid().unwrap_or_default();
        let mut all = true;
        for (k, dep) in self.dependents(&uid) {
            all &= self.unlink(&k, &dep, &[uid.as_str()]).await?;
        }
        if all {
            self.remove_finalizer(key, owner, ORPHAN).await?;
        }
        Ok(())
    }

    /// Classifies one owner reference of an object in `ns`; the store first, a live GET
    /// when the store does not hold that owner.
    async fn classify(&self, ns: &str, r: &OwnerReference) -> Result<Owner> {
        let Some(kind) = self.kind_of(r) else {
            return Ok(Owner::Solid);
        };
        if self.kinds[kind].state.load(Ordering::Relaxed) != SYNCED {
            return Ok(Owner::Solid);
        }
        let key = Key {
            kind,
            ns: ns.to_owned(),
            name: r.name.clone(),
        };
        let owner = match self.get(&key) {
            Some(o) if o.uid().as_deref() == Some(r.uid.as_str()) => o,
            _ => match self.api(&key).get_opt(&r.name).await? {
                Some(o) => Arc::new(o),
                None => return Ok(Owner::Dangling),
            },
        };
        Ok(if owner.uid().as_deref() != Some(r.uid.as_str()) {
            Owner::Dangling
        } else if owner.metadata.deletion_timestamp.is_some() && has(&owner, FOREGROUND) {
            Owner::Waiting
        } else {
            Owner::Solid
        })
    }

    /// Removes the references to `uids` (a merge patch guarded by resourceVersion).
    /// `Ok(false)` on a conflict: the watch brings the newer object.
    async fn unlink(&self, key: &Key, obj: &DynamicObject, uids: &[&str]) -> Result<bool> {
        let keep: Vec<&OwnerReference> = obj
            .owner_references()
            .iter()
            .filter(|r| !uids.contains(&r.uid.as_str()))
            .collect();
        let body = json!({"metadata": {"ownerReferences": keep}});
        let done = util::patch_object(&self.api(key), obj, body).await?;
        if done {
            tracing::info!(kind = %self.kind(key), ns = %key.ns, name = %key.name, ?uids, "removed owner references");
        }
        Ok(done)
    }

    /// Removes one finalizer, keeping the others; on a conflict reads the object again.
    async fn remove_finalizer(
        &self,
        key: &Key,
        obj: &DynamicObject,
        finalizer: &str,
    ) -> Result<()> {
        let api = self.api(key);
        let mut current = obj.clone();
        for _ in 0..5 {
            if !has(&current, finalizer) || current.uid() != obj.uid() {
                return Ok(());
            }
            if util::set_finalizer(&api, &current, finalizer, false).await? {
                tracing::info!(kind = %self.kind(key), ns = %key.ns, name = %key.name, finalizer, "removed finalizer");
                return Ok(());
            }
            match api.get_opt(&key.name).await? {
                Some(o) => current = o,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// The objects (of any followed kind) that reference `uid` as an owner.
    fn dependents(&self, uid: &str) -> Vec<(Key, Arc<DynamicObject>)> {
        if uid.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, k) in self.kinds.iter().enumerate() {
            for obj in k
                .store
                .state_filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
            {
                out.push((key_of(i, &obj), obj));
            }
        }
        out
    }

    /// Queues the owners of `obj` that are being deleted (they may be waiting for it).
    fn push_deleting_owners(&self, obj: &DynamicObject) {
        let ns = obj.namespace().unwrap_or_default();
        for r in obj.owner_references() {
            let Some(kind) = self.kind_of(r) else {
                continue;
            };
            let key = Key {
                kind,
                ns: ns.clone(),
                name: r.name.clone(),
            };
            if self
                .get(&key)
                .is_some_and(|o| o.metadata.deletion_timestamp.is_some())
            {
                self.push(key);
            }
        }
    }

    /// The followed kind an owner reference names (any version of its group).
    fn kind_of(&self, r: &OwnerReference) -> Option<usize> {
        let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.kinds
            .iter()
            .position(|k| k.ar.group == group && k.ar.kind == r.kind)
    }

    fn push(&self, key: Key) {
        // Fails only when the worker is gone, i.e. the simulator is stopping.
        let _ = self.queue.send(key);
    }

    /// Every store is complete (or its kind is not served).
    fn synced(&self) -> bool {
        self.kinds
            .iter()
            .all(|k| k.state.load(Ordering::Relaxed) != PENDING)
    }

    fn get(&self, key: &Key) -> Option<Arc<DynamicObject>> {
        let k = &self.kinds[key.kind];
        k.store
            .get(&ObjectRef::new_with(&key.name, k.ar.clone()).within(&key.ns))
    }

    fn kind(&self, key: &Key) -> &str {
        &self.kinds[key.kind].ar.kind
    }

    fn api(&self, key: &Key) -> Api<DynamicObject> {
        util::api(&self.client, &self.kinds[key.kind].ar, &key.ns)
    }
}

fn key_of(kind: usize, obj: &DynamicObject) -> Key {
    Key {
        kind,
        ns: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
    }
}

fn has(obj: &DynamicObject, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}
