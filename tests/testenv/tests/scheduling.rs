//! Scheduling (cordon, taints, fit, node selector), graceful shutdown (grace period, a
//! guest that ignores ACPI, forced stop), NotReady nodes and the run strategies
//! RerunOnFailure and Once.

mod common;
mod subresource;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use wukong_testenv::{SimConfig, Simulator, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_shutdown_and_strategies() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let config = SimConfig {
        nodes: 2,
        node_memory: "4Gi".into(),
        guest_shutdown_delay: Duration::from_millis(200),
        ..SimConfig::fast()
    };
    let sim = Simulator::start(&env, config).await?;
    let client = env.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let vms = util::api(&client, &util::vm(), "default");
    let vmis = util::api(&client, &util::vmi(), "default");
    let printable = |s: &'static str| {
        move |o: &kube::api::DynamicObject| str_at(&o.data, "/status/printableStatus") == Some(s)
    };
    let [n0, n1] = [sim.node_names()[0].clone(), sim.node_names()[1].clone()];
    let patch = |b: serde_json::Value| Patch::Merge(b);

    // Cordon one node and taint the other: nothing fits.
    nodes
        .patch(
            &n0,
            &PatchParams::default(),
            &patch(json!({"spec": {"unschedulable": true}})),
        )
        .await?;
    nodes
        .patch(
            &n1,
            &PatchParams::default(),
            &patch(json!({"spec": {"taints": [{"key": "maintenance", "effect": "NoSchedule"}]}})),
        )
        .await?;
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("big", "Always", "3Gi", json!([])),
    )
    .await?;
    wait_for(
        &vms,
        "big",
        "ErrorUnschedulable",
        printable("ErrorUnschedulable"),
    )
    .await?;
    let vmi = vmis.get("big").await?;
    assert_eq!(phase(&vmi), "Scheduling");
    // Lifting the taint lets it run there.
    nodes
        .patch(
            &n1,
            &PatchParams::default(),
            &patch(json!({"spec": {"taints": null}})),
        )
        .await?;
    let vmi = wait_for(&vmis, "big", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(str_at(&vmi.data, "/status/nodeName"), Some(n1.as_str()));
    // Memory: a second 3Gi VM does not fit next to it, and n0 is still cordoned.
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("big2", "Always", "3Gi", json!([])),
    )
    .await?;
    wait_for(
        &vms,
        "big2",
        "ErrorUnschedulable",
        printable("ErrorUnschedulable"),
    )
    .await?;
    nodes
        .patch(
            &n0,
            &PatchParams::default(),
            &patch(json!({"spec": {"unschedulable": null}})),
        )
        .await?;
    let vmi = wait_for(&vmis, "big2", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(str_at(&vmi.data, "/status/nodeName"), Some(n0.as_str()));

    // A node selector by hostname.
    let mut pinned = vm_body("pinned", "Always", "512Mi", json!([]));
    pinned["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": n1});
    create(&client, &util::vm(), "default", pinned).await?;
    let vmi = wait_for(&vmis, "pinned", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(str_at(&vmi.data, "/status/nodeName"), Some(n1.as_str()));

    // Graceful stop: a guest that honours ACPI stops quickly.
    let started = Instant::now();
    subresource::put(
        &client,
        "default",
        "virtualmachines",
        "pinned",
        "stop",
        json!({}),
    )
    .await?;
    wait_for(&vms, "pinned", "Stopping", printable("Stopping")).await?;
    wait_gone(&vmis, "pinned").await?;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A guest that ignores ACPI stops only when its grace period (2 s) runs out...
    let mut stubborn = vm_body("stubborn", "Always", "512Mi", json!([]));
    stubborn["metadata"]["annotations"] = json!({"sim.wukong.io/ignore-acpi": "true"});
    stubborn["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(2);
    create(&client, &util::vm(), "default", stubborn).await?;
    wait_for(&vmis, "stubborn", "Running", |o| phase(o) == "Running").await?;
    let started = Instant::now();
    subresource::put(
        &client,
        "default",
        "virtualmachines",
        "stubborn",
        "stop",
        json!({}),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        vmis.get_opt("stubborn").await?.is_some(),
        "gone before the grace period ended"
    );
    wait_gone(&vmis, "stubborn").await?;
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    // ...unless stopped with gracePeriod 0.
    subresource::put(
        &client,
        "default",
        "virtualmachines",
        "stubborn",
        "start",
        json!({}),
    )
    .await?;
    wait_for(&vmis, "stubborn", "Running", |o| phase(o) == "Running").await?;
    let started = Instant::now();
    subresource::put(
        &client,
        "default",
        "virtualmachines",
        "stubborn",
        "stop",
        json!({"gracePeriod": 0}),
    )
    .await?;
    wait_gone(&vmis, "stubborn").await?;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // RerunOnFailure: a node going NotReady fails the VMI; a new one runs elsewhere.
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("rerun", "RerunOnFailure", "256Mi", json!([])),
    )
    .await?;
    let first = wait_for(&vmis, "rerun", "Running", |o| phase(o) == "Running").await?;
    let node = str_at(&first.data, "/status/nodeName")
        .unwrap_or_default()
        .to_owned();
    sim.set_node_ready(&node, false).await?;
    let second = wait_for(&vmis, "rerun", "rerun", |o| {
        o.metadata.uid != first.metadata.uid && phase(o) == "Running"
    })
    .await?;
    assert_ne!(
        str_at(&second.data, "/status/nodeName"),
        Some(node.as_str())
    );
    sim.set_node_ready(&node, true).await?;

    // Once: the guest shutting down ends it for good.
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("once", "Once", "256Mi", json!([])),
    )
    .await?;
    wait_for(&vmis, "once", "Running", |o| phase(o) == "Running").await?;
    vmis.patch(
        "once",
        &PatchParams::default(),
        &patch(json!({"metadata": {"annotations": {"sim.wukong.io/guest-exit": "succeeded"}}})),
    )
    .await?;
    wait_for(&vmis, "once", "Succeeded", |o| phase(o) == "Succeeded").await?;
    wait_for(&vms, "once", "Stopped", printable("Stopped")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        phase(&vmis.get("once").await?),
        "Succeeded",
        "Once must not restart"
    );
    Ok(())
}
