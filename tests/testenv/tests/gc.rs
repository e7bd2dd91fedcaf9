//! The simulator's garbage collector on the real API server, under each propagation policy:
//! dependents go with their owner (by uid), a dependent with another live owner only loses
//! the reference, an object without an owner reference always survives; foreground deletion
//! deletes the dependents while the owner still carries other finalizers (a VirtualMachine,
//! and a Wukong with the operator's finalizer) and drops `foregroundDeletion` only once no
//! blocking dependent is left; orphaning unlinks the dependents.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use serde_json::{Value, json};
use wukong_testenv::{SimConfig, Simulator, TestEnv};

const NS: &str = "default";
const HOLD: &str = "test/hold";
const OPERATOR: &str = "vm.novasphere.dev/finalizer";
const FOREGROUND: &str = "foregroundDeletion";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_follows_propagation_policy() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let config = SimConfig {
        serve_api: false,
        ..SimConfig::fast()
    };
    let _sim = Simulator::start(&env, config).await?;
    let client = env.client();
    background(&client).await?;
    foreground_vm(&client).await?;
    foreground_wukong(&client).await?;
    orphan(&client).await?;
    Ok(())
}

/// Background: dependents go once the owner is gone from the API, not before.
async fn background(client: &kube::Client) -> anyhow::Result<()> {
    let (vms, pvcs) = (api(client, &util::vm()), api(client, &pvc_ar()));
    let owner = create(client, &util::vm(), NS, vm("bg-vm", &[])).await?;
    let other = create(client, &util::vm(), NS, vm("bg-other", &[])).await?;
    let held = create(client, &util::vm(), NS, vm("bg-held", &[HOLD])).await?;
    create_pvc(client, "bg-owned", json!([controller_ref(&owner)])).await?;
    create_pvc(
        client,
        "bg-shared",
        json!([controller_ref(&owner), owner_ref(&other, false)]),
    )
    .await?;
    create_pvc(client, "bg-free", json!([])).await?;
    create_pvc(client, "bg-of-held", json!([controller_ref(&held)])).await?;

    vms.delete("bg-vm", &DeleteParams::background()).await?;
    wait_gone(&pvcs, "bg-owned").await?;
    wait_for(&pvcs, "bg-shared", "owned by bg-other only", |p| {
        owners(p) == ["bg-other"]
    })
    .await?;
    assert!(pvcs.get_opt("bg-free").await?.is_some());

    // An owner still held by a finalizer exists: its dependents stay until it is gone.
    vms.delete("bg-held", &DeleteParams::background()).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(owners(&pvcs.get("bg-of-held").await?), ["bg-held"]);
    release(&vms, "bg-held", HOLD).await?;
    wait_gone(&pvcs, "bg-of-held").await?;

    // An owner re-created under the same name is another object (another uid).
    let old = create(client, &util::vm(), NS, vm("bg-re", &[])).await?;
    vms.delete("bg-re", &DeleteParams::background()).await?;
    wait_gone(&vms, "bg-re").await?;
    create(client, &util::vm(), NS, vm("bg-re", &[])).await?;
    create_pvc(client, "bg-stale", json!([controller_ref(&old)])).await?;
    wait_gone(&pvcs, "bg-stale").await?;

    assert!(pvcs.get_opt("bg-free").await?.is_some());
    assert_eq!(owners(&pvcs.get("bg-shared").await?), ["bg-other"]);
    Ok(())
}

/// Foreground with a VirtualMachine owner: dependents go while the owner is still there;
/// `foregroundDeletion` stays while a blocking dependent is still being deleted.
async fn foreground_vm(client: &kube::Client) -> anyhow::Result<()> {
    let (vms, pvcs, nads) = (
        api(client, &util::vm()),
        api(client, &pvc_ar()),
        api(client, &util::nad()),
    );
    let owner = create(client, &util::vm(), NS, vm("fg-vm", &[HOLD])).await?;
    let keeper = create(client, &util::vm(), NS, vm("fg-keeper", &[])).await?;
    create_pvc(client, "fg-owned", json!([controller_ref(&owner)])).await?;
    create_pvc(
        client,
        "fg-shared",
        json!([controller_ref(&owner), owner_ref(&keeper, true)]),
    )
    .await?;
    create_pvc(client, "fg-free", json!([])).await?;
    // A blocking dependent that takes its time to go (a finalizer of its own).
    let slow = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "fg-slow", "finalizers": ["test/slow"],
                     "ownerReferences": [controller_ref(&owner)]},
        "spec": pvc_spec()});
    create(client, &pvc_ar(), NS, slow).await?;
    // A dependent that does not block its owner is deleted too.
    create(
        client,
        &util::nad(),
        NS,
        nad("fg-net", json!([owner_ref(&owner, false)])),
    )
    .await?;

    vms.delete("fg-vm", &DeleteParams::foreground()).await?;
    wait_gone(&pvcs, "fg-owned").await?;
    wait_gone(&nads, "fg-net").await?;
    wait_for(&pvcs, "fg-shared", "owned by fg-keeper only", |p| {
        owners(p) == ["fg-keeper"]
    })
    .await?;
    wait_for(&pvcs, "fg-slow", "being deleted", |p| {
        p.metadata.deletion_timestamp.is_some()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = vms.get("fg-vm").await?;
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting.finalizers().iter().any(|f| f == FOREGROUND),
        "fg-slow still blocks: {:?}",
        waiting.finalizers()
    );

    release(&pvcs, "fg-slow", "test/slow").await?;
    wait_gone(&pvcs, "fg-slow").await?;
    wait_for(&vms, "fg-vm", "left with its own finalizer", |o| {
        o.finalizers() == [HOLD]
    })
    .await?;
    assert!(pvcs.get_opt("fg-free").await?.is_some());
    release(&vms, "fg-vm", HOLD).await?;
    wait_gone(&vms, "fg-vm").await?;
    assert!(pvcs.get_opt("fg-free").await?.is_some());
    assert_eq!(owners(&pvcs.get("fg-shared").await?), ["fg-keeper"]);
    Ok(())
}

/// Foreground with a Wukong owner still carrying the operator's finalizer: its dependents
/// go at once (a DataVolume with its own claim too), an unreferenced claim stays, and only
/// the operator's finalizer is left for the operator to remove.
async fn foreground_wukong(client: &kube::Client) -> anyhow::Result<()> {
    let (wukongs, vms, dvs, pvcs, nads) = (
        api(client, &util::wukong()),
        api(client, &util::vm()),
        api(client, &util::dv()),
        api(client, &pvc_ar()),
        api(client, &util::nad()),
    );
    let wk = create(
        client,
        &util::wukong(),
        NS,
        json!({
        "apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
        "metadata": {"name": "wk", "finalizers": [OPERATOR]},
        "spec": {"cpu": 1, "memory": "1Gi"}}),
    )
    .await?;
    let mut vm_body = vm("wk", &[]);
    vm_body["metadata"]["ownerReferences"] = json!([controller_ref(&wk)]);
    create(client, &util::vm(), NS, vm_body).await?;
    create(client, &util::dv(), NS, json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "wk-root", "ownerReferences": [controller_ref(&wk)]},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}))
    .await?;
    // CDI's claim of the DataVolume (owned by the DataVolume, not the Wukong).
    wait_for(&pvcs, "wk-root", "created by CDI", |_| true).await?;
    create_pvc(client, "wk-data", json!([controller_ref(&wk)])).await?;
    create(
        client,
        &util::nad(),
        NS,
        nad("wk-net", json!([controller_ref(&wk)])),
    )
    .await?;
    create_pvc(client, "wk-keep", json!([])).await?;

    wukongs.delete("wk", &DeleteParams::foreground()).await?;
    wait_gone(&vms, "wk").await?;
    wait_gone(&pvcs, "wk-data").await?;
    wait_gone(&nads, "wk-net").await?;
    wait_gone(&dvs, "wk-root").await?;
    wait_gone(&pvcs, "wk-root").await?;
    let left = wait_for(&wukongs, "wk", "left with the operator's finalizer", |o| {
        o.finalizers() == [OPERATOR]
    })
    .await?;
    assert!(left.metadata.deletion_timestamp.is_some());
    assert!(pvcs.get_opt("wk-keep").await?.is_some());
    release(&wukongs, "wk", OPERATOR).await?;
    wait_gone(&wukongs, "wk").await?;
    assert!(pvcs.get_opt("wk-keep").await?.is_some());
    Ok(())
}

/// Orphan: the dependents lose the reference and survive the owner.
async fn orphan(client: &kube::Client) -> anyhow::Result<()> {
    let (vms, pvcs, nads) = (
        api(client, &util::vm()),
        api(client, &pvc_ar()),
        api(client, &util::nad()),
    );
    let owner = create(client, &util::vm(), NS, vm("or-vm", &[])).await?;
    let other = create(client, &util::vm(), NS, vm("or-other", &[])).await?;
    create_pvc(client, "or-owned", json!([controller_ref(&owner)])).await?;
    create_pvc(
        client,
        "or-shared",
        json!([controller_ref(&owner), owner_ref(&other, true)]),
    )
    .await?;
    create(
        client,
        &util::nad(),
        NS,
        nad("or-net", json!([controller_ref(&owner)])),
    )
    .await?;

    vms.delete("or-vm", &DeleteParams::orphan()).await?;
    wait_gone(&vms, "or-vm").await?;
    // Past a resync: nothing comes back for them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(owners(&pvcs.get("or-owned").await?).is_empty());
    assert_eq!(owners(&pvcs.get("or-shared").await?), ["or-other"]);
    assert!(owners(&nads.get("or-net").await?).is_empty());
    Ok(())
}

fn pvc_ar() -> ApiResource {
    ApiResource::erase::<PersistentVolumeClaim>(&())
}

fn api(client: &kube::Client, ar: &ApiResource) -> Api<DynamicObject> {
    util::api(client, ar, NS)
}

/// A halted VirtualMachine (the simulator starts nothing for it) with finalizers.
fn vm(name: &str, finalizers: &[&str]) -> Value {
    let mut body = vm_body(name, "Halted", "1Gi", json!([]));
    body["metadata"]["finalizers"] = json!(finalizers);
    body
}

fn nad(name: &str, owners: Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "ownerReferences": owners},
        "spec": {"config": "{\"cniVersion\": \"0.3.1\", \"type\": \"bridge\"}"}})
}

fn pvc_spec() -> Value {
    json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
        "resources": {"requests": {"storage": "1Gi"}}})
}

async fn create_pvc(client: &kube::Client, name: &str, owners: Value) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "ownerReferences": owners}, "spec": pvc_spec()});
    create(client, &pvc_ar(), NS, body).await?;
    Ok(())
}

/// A controller reference to `owner`, blocking its foreground deletion.
fn controller_ref(owner: &DynamicObject) -> Value {
    let mut r = owner_ref(owner, true);
    r["controller"] = json!(true);
    r
}

/// A plain owner reference to `owner`.
fn owner_ref(owner: &DynamicObject, block: bool) -> Value {
    let types = owner.types.clone().unwrap_or_default();
    json!({"apiVersion": types.api_version, "kind": types.kind, "name": owner.name_any(),
        "uid": owner.uid(), "blockOwnerDeletion": block})
}

/// The names of an object's owners.
fn owners(obj: &DynamicObject) -> Vec<String> {
    obj.owner_references()
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

/// Removes one finalizer of ours (a JSON patch would do too; a merge patch keeps it short).
async fn release(api: &Api<DynamicObject>, name: &str, finalizer: &str) -> anyhow::Result<()> {
    for _ in 0..10 {
        let obj = api.get(name).await?;
        if util::set_finalizer(api, &obj, finalizer, false).await? {
            return Ok(());
        }
    }
    anyhow::bail!("could not remove {finalizer} from {name}")
}
