//! What a user sees when KubeVirt and CDI answer as upstream does (`../shared/KUBEVIRT.md`),
//! on the real apiserver with the simulator that follows upstream and the real plugins:
//! a start KubeVirt refuses is a refusal in the status, not a loop; a suspended VM is not
//! Ready; a migration KubeVirt will not take is refused with its reason; a bad image URL
//! shows while CDI retries the import.

mod support;

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::operator::{
    Cluster, InProcess, condition, create, host_config, is_running, namespace, wait_for, warnings,
};
use wukong::api::{ActionRecord, Wukong, WukongPhase};

const TIMEOUT: Duration = Duration::from_secs(60);

fn finished(w: &Wukong, request_id: &str) -> Option<ActionRecord> {
    let state = w.status.as_ref()?.lifecycle_state.as_ref()?;
    state
        .history
        .iter()
        .find(|r| r.request_id == request_id)
        .cloned()
}

async fn patch_spec(client: &kube::Client, ns: &str, name: &str, spec: Value) {
    Api::<Wukong>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
        .expect("patch spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_readiness_follow_kubevirt() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    let ns = "fidelity";
    namespace(&client, ns).await;
    create(
        &client,
        ns,
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: vm1}\nspec: {cpu: 1, memory: 1Gi, runStrategy: Always, disks: [{name: data, size: 1Gi}]}\n",
    )
    .await;
    wait_for(&client, ns, "vm1", TIMEOUT, is_running).await;

    // `kubectl wukong start vm1` on a running Always VM: upstream answers "VM is already
    // running" (checked before the strategy's own refusal); the request is finished as
    // Refused with that reason, and no start reaches KubeVirt.
    patch_spec(
        &client,
        ns,
        "vm1",
        json!({"lifecycleAction": {"action": "start", "requestId": "start-1"}}),
    )
    .await;
    let w = wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        finished(w, "start-1").is_some()
    })
    .await;
    let record = finished(&w, "start-1").expect("record");
    assert_eq!(record.outcome, "Refused", "{record:?}");
    assert!(
        record.message.contains("VM is already running"),
        "{record:?}"
    );
    assert_eq!(cluster.sim.count_calls("start", ns, "vm1"), 0);
    assert!(is_running(&w), "the VM keeps running");

    // Suspended is not Ready, as upstream's readiness gate says; resumed, Ready again.
    patch_spec(
        &client,
        ns,
        "vm1",
        json!({"lifecycleAction": {"action": "suspend", "requestId": "suspend-1"}}),
    )
    .await;
    let w = wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(WukongPhase::Suspended)
            && finished(w, "suspend-1").is_some()
    })
    .await;
    let ready = condition(&w, "Ready").expect("Ready");
    assert_eq!(ready.0, "False", "a suspended VM is not Ready: {ready:?}");
    patch_spec(
        &client,
        ns,
        "vm1",
        json!({"lifecycleAction": {"action": "resume", "requestId": "resume-1"}}),
    )
    .await;
    wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        finished(w, "resume-1").is_some() && condition(w, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;

    // A live migration of a VM whose disk is not shared (ReadWriteOnce): KubeVirt's
    // admission refuses it; the status says so with the reason, and no migration exists.
    patch_spec(
        &client,
        ns,
        "vm1",
        json!({"migration": {"requestId": "move-1"}}),
    )
    .await;
    let w = wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        w.status
            .as_ref()
            .and_then(|s| s.migration_status.as_ref())
            .is_some_and(|m| m.request_id == "move-1" && m.phase == "Refused")
    })
    .await;
    let migration = w
        .status
        .as_ref()
        .and_then(|s| s.migration_status.clone())
        .expect("migration status");
    let said = format!(
        "{} {}",
        migration.message,
        migration.failure_reason.clone().unwrap_or_default()
    );
    assert!(said.contains("DisksNotLiveMigratable"), "{migration:?}");
    let migrations = support::operator::list(
        &client,
        ns,
        "kubevirt.io/v1",
        "VirtualMachineInstanceMigration",
    )
    .await;
    assert!(migrations.is_empty(), "nothing was created: {migrations:?}");
    assert!(is_running(&w), "the VM stays where it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_image_url_shows_while_cdi_retries() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    cluster.sim.update_config(|c| c.import_fail = true);
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    let ns = "badimage";
    namespace(&client, ns).await;
    create(
        &client,
        ns,
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: vm1}\nspec: {cpu: 1, memory: 1Gi, disks: [{name: root, size: 2Gi, image: \"http://images.example.com/missing.qcow2\"}]}\n",
    )
    .await;
    // CDI retries (restartCount rising) and never goes Failed: the Wukong says why while
    // it does, and waits rather than failing.
    let w = wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        w.status.as_ref().is_some_and(|s| {
            s.volumes
                .iter()
                .any(|v| v.message.contains("import failing, retry"))
        })
    })
    .await;
    let status = w.status.as_ref().expect("status");
    let volume = &status.volumes[0];
    assert!(
        volume.message.contains("404") || volume.message.contains("Unable to connect"),
        "the import's own error: {volume:?}"
    );
    assert!(!volume.bound, "{volume:?}");
    let bound = condition(&w, "VolumesBound").expect("VolumesBound");
    assert_eq!(
        (bound.0.as_str(), bound.1.as_str()),
        ("False", "ImportFailing")
    );
    assert_ne!(
        status.phase,
        Some(WukongPhase::Failed),
        "CDI is still trying"
    );
    let noted = async {
        while warnings(&client, ns, "ImportFailing").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, noted)
        .await
        .expect("an ImportFailing warning");
    // Fixed at the source (the simulator stops failing): the import ends and the VM runs.
    cluster.sim.update_config(|c| c.import_fail = false);
    wait_for(&client, ns, "vm1", Duration::from_secs(120), is_running).await;
}
