//! The storage provisioner and CDI: binding (access and volume modes kept),
//! WaitForFirstConsumer, expansion; DataVolumes as CDI runs them (the populator flow keeps
//! the PVC Pending until the import ends, PendingPopulation, immediate binding, the legacy
//! flow's PVCBound, retries with restartCount, fatal errors) and garbage collection of a
//! DataVolume's claim.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use wukong_testenv::{SimConfig, Simulator, TestEnv};

fn pvc(
    name: &str,
    class: &str,
    mode: &str,
    volume_mode: &str,
) -> anyhow::Result<PersistentVolumeClaim> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": {
        "accessModes": [mode], "volumeMode": volume_mode, "storageClassName": class,
        "resources": {"requests": {"storage": "1Gi"}}}}),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_and_cdi() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let config = SimConfig {
        import_step_delay: Duration::from_millis(40),
        import_steps: 4,
        serve_api: false,
        ..SimConfig::fast()
    };
    let _sim = Simulator::start(&env, config).await?;
    let client = env.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pp = PostParams::default();

    // Immediate binding keeps access and volume modes.
    pvcs.create(&pp, &pvc("block", "standard", "ReadWriteMany", "Block")?)
        .await?;
    let bound = wait_pvc(&pvcs, "block", |p| phase_of(p) == "Bound").await?;
    let pv = pvs
        .get(
            bound
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or_default(),
        )
        .await?;
    let spec = pv.spec.unwrap_or_default();
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    assert_eq!(
        spec.claim_ref.and_then(|c| c.name).as_deref(),
        Some("block")
    );

    // Expansion grows status.capacity.
    let grow = json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}});
    pvcs.patch("block", &PatchParams::default(), &Patch::Merge(&grow))
        .await?;
    wait_pvc(&pvcs, "block", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.as_str())
            == Some("3Gi")
    })
    .await?;

    // WaitForFirstConsumer: pending until a VMI using it is scheduled, then bound there.
    pvcs.create(
        &pp,
        &pvc("wffc", "local-wffc", "ReadWriteOnce", "Filesystem")?,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(phase_of(&pvcs.get("wffc").await?), "Pending");
    let vols = json!([{"name": "disk", "persistentVolumeClaim": {"claimName": "wffc"}}]);
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("wffc-vm", "Always", "1Gi", vols),
    )
    .await?;
    let vmi = wait_for(
        &util::api(&client, &util::vmi(), "default"),
        "wffc-vm",
        "Running",
        |o| phase(o) == "Running",
    )
    .await?;
    let claim = pvcs.get("wffc").await?;
    assert_eq!(phase_of(&claim), "Bound");
    let selected = claim
        .metadata
        .annotations
        .unwrap_or_default()
        .get("volume.kubernetes.io/selected-node")
        .cloned();
    assert_eq!(selected.as_deref(), str_at(&vmi.data, "/status/nodeName"));
    assert_eq!(
        cond(&vmi, "LiveMigratable"),
        "False",
        "a ReadWriteOnce disk is not live-migratable"
    );

    // A DataVolume (populator flow): PVC owned by it and Pending until the import ends,
    // phases in order, progress with two decimals, conditions.
    let dvs = util::api(&client, &util::dv(), "default");
    let mut phases = watcher::watcher(
        dvs.clone(),
        watcher::Config::default().fields("metadata.name=dv1"),
    )
    .applied_objects()
    .boxed();
    create(&client, &util::dv(), "default", json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "dv1"}, "spec": {"source": {"registry": {"url": "docker://quay.io/containerdisks/fedora:39"}},
        "storage": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "2Gi"}}}}})).await?;
    let mut seen: Vec<(String, String, String)> = vec![];
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(dv)) = phases.next().await {
            let claim = pvcs.get_opt("dv1").await.ok().flatten();
            let p = (
                phase(&dv).to_owned(),
                str_at(&dv.data, "/status/progress")
                    .unwrap_or("")
                    .to_owned(),
                claim.as_ref().map(phase_of).unwrap_or("").to_owned(),
            );
            if seen.last() != Some(&p) {
                seen.push(p);
            }
            if phase(&dv) == "Succeeded" {
                return Some(dv);
            }
        }
        None
    })
    .await?;
    let dv = done.ok_or_else(|| anyhow::anyhow!("watch ended: {seen:?}"))?;
    let mut order: Vec<&str> = seen
        .iter()
        .map(|(p, _, _)| p.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    order.dedup();
    assert_eq!(
        order,
        [
            "Pending",
            "ImportScheduled",
            "ImportInProgress",
            "Succeeded"
        ],
        "{seen:?}"
    );
    assert!(seen.iter().any(|(_, p, _)| p == "50.00%"), "{seen:?}");
    assert!(
        seen.iter()
            // Read after each event, the claim may already be bound once the importer is done.
            .filter(|(p, progress, _)| p != "Succeeded" && progress != "100.0%")
            .all(|(_, _, claim)| claim != "Bound"),
        "the PVC binds only once the import ended: {seen:?}"
    );
    assert_eq!(str_at(&dv.data, "/status/progress"), Some("100.0%"));
    assert_eq!(
        (cond(&dv, "Ready"), cond(&dv, "Bound"), cond(&dv, "Running")),
        ("True", "True", "False")
    );
    let claim = pvcs.get("dv1").await?;
    assert_eq!(
        claim
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].kind.as_str()),
        Some("DataVolume")
    );
    assert_eq!(phase_of(&claim), "Bound");

    // A failing import is retried: ImportInProgress, restartCount rising, Running=False
    // with the importer's error, the PVC still Pending.
    create(&client, &util::dv(), "default", json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "broken", "annotations": {"sim.wukong.io/fail-import": "true"}},
        "spec": {"source": {"http": {"url": "http://example.invalid/disk.img"}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}})).await?;
    let retried = wait_for(&dvs, "broken", "retried twice", |o| {
        o.data
            .pointer("/status/restartCount")
            .and_then(serde_json::Value::as_i64)
            >= Some(2)
            && cond(o, "Running") == "False"
    })
    .await?;
    assert_eq!(phase(&retried), "ImportInProgress");
    assert_eq!(cond(&retried, "Ready"), "False");
    let running = retried
        .data
        .pointer("/status/conditions")
        .and_then(serde_json::Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == Some("Running")))
        .cloned()
        .unwrap_or_default();
    assert_eq!(str_at(&running, "/reason"), Some("Error"));
    assert_eq!(
        str_at(&running, "/message"),
        Some(
            "Unable to connect to http data source: expected status code 200, got 404. Status: 404 Not Found"
        )
    );
    assert_eq!(phase_of(&pvcs.get("broken").await?), "Pending");

    // A fatal error (a checksum mismatch) fails the DataVolume for good.
    create(&client, &util::dv(), "default", json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "fatal", "annotations": {"sim.wukong.io/fail-import": "fatal"}},
        "spec": {"source": {"http": {"url": "http://example.invalid/disk.img"}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}})).await?;
    let failed = wait_for(&dvs, "fatal", "Failed", |o| phase(o) == "Failed").await?;
    assert_eq!(cond(&failed, "Ready"), "False");

    // WaitForFirstConsumer with no consumer: PendingPopulation; with the immediate-binding
    // annotation the import runs and the claim binds anyway.
    let wffc_dv = |name: &str, immediate: bool| {
        let mut dv = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": name}, "spec": {"source": {"blank": {}},
            "storage": {"storageClassName": "local-wffc", "resources": {"requests": {"storage": "1Gi"}}}}});
        if immediate {
            dv["metadata"]["annotations"] =
                json!({"cdi.kubevirt.io/storage.bind.immediate.requested": "true"});
        }
        dv
    };
    create(&client, &util::dv(), "default", wffc_dv("later", false)).await?;
    create(&client, &util::dv(), "default", wffc_dv("now", true)).await?;
    wait_for(&dvs, "later", "PendingPopulation", |o| {
        phase(o) == "PendingPopulation"
    })
    .await?;
    wait_for(&dvs, "now", "Succeeded", |o| phase(o) == "Succeeded").await?;
    assert_eq!(phase_of(&pvcs.get("now").await?), "Bound");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(phase(&dvs.get("later").await?), "PendingPopulation");
    assert_eq!(phase_of(&pvcs.get("later").await?), "Pending");

    // The legacy flow (no populator): the PVC binds first, PVCBound, then the import.
    let mut legacy = watcher::watcher(
        dvs.clone(),
        watcher::Config::default().fields("metadata.name=legacy"),
    )
    .applied_objects()
    .boxed();
    create(&client, &util::dv(), "default", json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "legacy", "annotations": {"cdi.kubevirt.io/storage.usePopulator": "false"}},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}})).await?;
    let mut order: Vec<String> = vec![];
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(dv)) = legacy.next().await {
            if !phase(&dv).is_empty() && order.last().map(String::as_str) != Some(phase(&dv)) {
                order.push(phase(&dv).to_owned());
            }
            if phase(&dv) == "Succeeded" {
                break;
            }
        }
    })
    .await?;
    assert_eq!(
        order,
        [
            "Pending",
            "PVCBound",
            "ImportScheduled",
            "ImportInProgress",
            "Succeeded"
        ]
    );

    // Deleting the DataVolume deletes its claim (and releases its protection finalizer).
    dvs.delete("dv1", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pvcs.get_opt("dv1").await?.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "PVC dv1 was not garbage-collected"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

fn phase_of(p: &PersistentVolumeClaim) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn wait_pvc(
    api: &Api<PersistentVolumeClaim>,
    name: &str,
    pred: impl Fn(&PersistentVolumeClaim) -> bool,
) -> anyhow::Result<PersistentVolumeClaim> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = api.get(name).await?;
        if pred(&p) {
            return Ok(p);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out on PVC {name}: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
