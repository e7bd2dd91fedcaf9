//! Live migration: phases, migrationState, MigrationPolicy, addedNodeSelector, refusals,
//! abort by deletion, the failure knob and the `migrate` subresource.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use wukong_testenv::{SimConfig, Simulator, TestEnv};

fn shared_disk_vm(name: &str) -> serde_json::Value {
    let vols = json!([{"name": "root", "dataVolume": {"name": format!("{name}-root")}}]);
    let mut vm = vm_body(name, "Always", "1Gi", vols);
    vm["spec"]["dataVolumeTemplates"] = json!([{"metadata": {"name": format!("{name}-root")},
        "spec": {"source": {"blank": {}}, "storage": {"accessModes": ["ReadWriteMany"], "volumeMode": "Block",
            "resources": {"requests": {"storage": "1Gi"}}}}}]);
    vm
}

fn migration(name: &str, vmi: &str, selector: Option<&str>) -> serde_json::Value {
    let mut m = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": name}, "spec": {"vmiName": vmi}});
    if let Some(host) = selector {
        m["spec"]["addedNodeSelector"] = json!({"kubernetes.io/hostname": host});
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let sim = Simulator::start(
        &env,
        SimConfig {
            migration_step_delay: Duration::from_millis(20),
            ..SimConfig::fast()
        },
    )
    .await?;
    let client = env.client();
    let vmis = util::api(&client, &util::vmi(), "default");
    let vmims = util::api(&client, &util::vmim(), "default");
    let policy: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "migrations.kubevirt.io/v1alpha1",
        "kind": "MigrationPolicy", "metadata": {"name": "postcopy"},
        "spec": {"allowPostCopy": true, "completionTimeoutPerGiB": 10, "selectors": {"virtualMachineInstanceSelector": {"app": "mover"}}}}),
    )?;
    Api::<DynamicObject>::all_with(client.clone(), &util::migration_policy())
        .create(&Default::default(), &policy)
        .await?;

    // A VM on a shared (RWX) DataVolume: provisioned, then Running and LiveMigratable.
    create(&client, &util::vm(), "default", shared_disk_vm("mover")).await?;
    let vmi = wait_for(&vmis, "mover", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(cond(&vmi, "LiveMigratable"), "True");
    let source = str_at(&vmi.data, "/status/nodeName")
        .unwrap_or_default()
        .to_owned();
    let target = sim
        .node_names()
        .into_iter()
        .find(|n| *n != source)
        .unwrap_or_default();

    let mut events = watcher::watcher(
        vmims.clone(),
        watcher::Config::default().fields("metadata.name=m1"),
    )
    .applied_objects()
    .boxed();
    create(
        &client,
        &util::vmim(),
        "default",
        migration("m1", "mover", Some(&target)),
    )
    .await?;
    let mut phases: Vec<String> = vec![];
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(m)) = events.next().await {
            if phases.last().map(String::as_str) != Some(phase(&m)) && !phase(&m).is_empty() {
                phases.push(phase(&m).to_owned());
            }
            if matches!(phase(&m), "Succeeded" | "Failed") {
                break;
            }
        }
    })
    .await?;
    assert_eq!(
        phases,
        [
            "Pending",
            "Scheduling",
            "Scheduled",
            "PreparingTarget",
            "TargetReady",
            "Running",
            "Succeeded"
        ]
    );
    let vmi = vmis.get("mover").await?;
    let state = |p: &str| {
        vmi.data
            .pointer(&format!("/status/migrationState/{p}"))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(str_at(&vmi.data, "/status/nodeName"), Some(target.as_str()));
    assert_eq!(
        (state("sourceNode"), state("targetNode")),
        (json!(source), json!(target))
    );
    assert_eq!(
        (state("completed"), state("failed")),
        (json!(true), json!(false))
    );
    assert_eq!(state("mode"), json!("PostCopy"));
    assert_eq!(state("migrationPolicyName"), json!("postcopy"));
    assert!(state("startTimestamp").is_string() && state("endTimestamp").is_string());
    wait_for(
        &util::api(&client, &util::vm(), "default"),
        "mover",
        "Running",
        |o| str_at(&o.data, "/status/printableStatus") == Some("Running"),
    )
    .await?;

    // No node fits the added selector: refused.
    create(
        &client,
        &util::vmim(),
        "default",
        migration("nowhere", "mover", Some("no-such-node")),
    )
    .await?;
    let m = wait_for(&vmims, "nowhere", "Failed", |o| phase(o) == "Failed").await?;
    assert!(
        str_at(&m.data, "/status/migrationState/failureReason")
            .unwrap_or("")
            .contains("0/3 nodes"),
        "{:?}",
        m.data
    );

    // A VMI on a ReadWriteOnce disk is not live-migratable: refused with the reason.
    let vols = json!([{"name": "d", "persistentVolumeClaim": {"claimName": "rwo"}}]);
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(
        json!({"metadata": {"name": "rwo"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )?;
    Api::namespaced(client.clone(), "default")
        .create(&Default::default(), &claim)
        .await?;
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("pinned", "Always", "1Gi", vols),
    )
    .await?;
    let pinned = wait_for(&vmis, "pinned", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(cond(&pinned, "LiveMigratable"), "False");
    create(
        &client,
        &util::vmim(),
        "default",
        migration("refused", "pinned", None),
    )
    .await?;
    let m = wait_for(&vmims, "refused", "Failed", |o| phase(o) == "Failed").await?;
    assert!(
        str_at(&m.data, "/status/migrationState/failureReason")
            .unwrap_or("")
            .contains("DisksNotLiveMigratable")
    );

    // Abort: delete the migration while it runs; the VMI stays on its node.
    sim.update_config(|c| c.migration_duration = Duration::from_secs(20));
    let before = str_at(&vmis.get("mover").await?.data, "/status/nodeName")
        .unwrap_or_default()
        .to_owned();
    create(
        &client,
        &util::vmim(),
        "default",
        migration("aborted", "mover", None),
    )
    .await?;
    wait_for(&vmims, "aborted", "Running", |o| phase(o) == "Running").await?;
    wait_for(
        &util::api(&client, &util::vm(), "default"),
        "mover",
        "Migrating",
        |o| str_at(&o.data, "/status/printableStatus") == Some("Migrating"),
    )
    .await?;
    vmims.delete("aborted", &DeleteParams::default()).await?;
    wait_gone(&vmims, "aborted").await?;
    let vmi = vmis.get("mover").await?;
    assert_eq!(
        str_at(&vmi.data, "/status/migrationState/abortStatus"),
        Some("Succeeded")
    );
    assert_eq!(
        vmi.data.pointer("/status/migrationState/abortRequested"),
        Some(&json!(true))
    );
    assert_eq!(str_at(&vmi.data, "/status/nodeName"), Some(before.as_str()));

    // The failure knob, through the `migrate` subresource.
    sim.update_config(|c| {
        c.migration_duration = Duration::ZERO;
        c.migration_fail = true;
    });
    let (code, _) = put_subresource(
        &client,
        "default",
        "virtualmachines",
        "mover",
        "migrate",
        json!({}),
    )
    .await?;
    assert_eq!(code, 200);
    assert_eq!(sim.count_calls("migrate", "default", "mover"), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = vmims.list(&Default::default()).await?;
        let ours = list
            .iter()
            .find(|m| m.metadata.generate_name.as_deref() == Some("kubevirt-migrate-vm-"));
        if ours.is_some_and(|m| phase(m) == "Failed") {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "migrate subresource: no failed migration"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let vmi = vmis.get("mover").await?;
    assert_eq!(
        vmi.data.pointer("/status/migrationState/failed"),
        Some(&json!(true))
    );
    assert_eq!(str_at(&vmi.data, "/status/nodeName"), Some(before.as_str()));
    Ok(())
}
