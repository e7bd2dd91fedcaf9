//! A small garbage collector (there is no kube-controller-manager here): when a
//! VirtualMachine or a DataVolume is deleted, its dependents (by ownerReference) go too.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::Ctx;
use super::util::{self, ok_unless_conflict};
use crate::error::Result;

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let pvc = ApiResource::erase::<PersistentVolumeClaim>(&());
    futures::join!(
        collect_for(ctx.clone(), util::vm(), vec![util::vmi(), util::dv()]),
        collect_for(ctx, util::dv(), vec![pvc]),
    );
}

async fn collect_for(ctx: Arc<Ctx>, owner: ApiResource, dependents: Vec<ApiResource>) {
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &owner);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Delete(obj)) => {
                if let Err(e) = delete_dependents(&ctx, &obj, &dependents).await {
                    tracing::warn!("gc: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("gc watch: {e}"),
        }
    }
}

async fn delete_dependents(ctx: &Ctx, owner: &DynamicObject, kinds: &[ApiResource]) -> Result<()> {
    let ns = owner.namespace().unwrap_or_default();
    let uid = owner.uid().unwrap_or_default();
    for ar in kinds {
        let api = util::api(&ctx.client, ar, &ns);
        for dep in api.list(&ListParams::default()).await? {
            if dep.owner_references().iter().any(|o| o.uid == uid) {
                tracing::info!(kind = %ar.kind, name = %dep.name_any(), "garbage-collecting");
                ok_unless_conflict(
                    api.delete(&dep.name_any(), &DeleteParams::background())
                        .await,
                )?;
            }
        }
    }
    Ok(())
}
