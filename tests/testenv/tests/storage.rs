//! The storage provisioner and CDI: binding (access and volume modes kept),
//! WaitForFirstConsumer, expansion, DataVolume phases and conditions, failure, and
//! garbage collection of a DataVolume's claim.

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

    // A DataVolume: PVC owned by it, phases in order, progress, conditions.
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
    let mut seen: Vec<(String, String)> = vec![];
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(dv)) = phases.next().await {
            let p = (
                phase(&dv).to_owned(),
                str_at(&dv.data, "/status/progress")
                    .unwrap_or("")
                    .to_owned(),
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
    let order: Vec<&str> = seen
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    let mut dedup = order.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        [
            "Pending",
            "ImportScheduled",
            "ImportInProgress",
            "Succeeded"
        ],
        "{seen:?}"
    );
    assert!(seen.iter().any(|(_, p)| p == "50.0%"), "{seen:?}");
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

    // The failure knob.
    create(&client, &util::dv(), "default", json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "broken", "annotations": {"sim.wukong.io/fail-import": "true"}},
        "spec": {"source": {"http": {"url": "http://example.invalid/disk.img"}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}})).await?;
    let failed = wait_for(&dvs, "broken", "Failed", |o| phase(o) == "Failed").await?;
    assert_eq!(cond(&failed, "Ready"), "False");

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
