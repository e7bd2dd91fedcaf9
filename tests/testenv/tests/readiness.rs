//! Readiness and printable status as upstream's virt-controller writes them: a paused VMI
//! is not Ready (the pod's readiness gate), the VMI's `Ready` reasons per phase, the VM's
//! conditions mirrored from its VMI, no VMI before the DataVolumes are populated, and
//! `printableStatus` (Provisioning, DataVolumeError, ErrorPvcNotFound, ErrorUnschedulable,
//! Starting, Stopping, Terminating, Stopped), LiveMigratable and the pod network binding.

mod common;
mod subresource;

use std::time::Duration;

use common::*;
use kube::api::DeleteParams;
use serde_json::json;
use subresource::{cond_reason, condition, printable, stays_gone};
use wukong_testenv::{SimConfig, Simulator, TestEnv};

fn pair(s: &str, r: &str) -> (String, String) {
    (s.to_owned(), r.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_is_not_ready_and_conditions_mirror() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let _sim = Simulator::start(&env, SimConfig::fast()).await?;
    let c = env.client();
    let vms = util::api(&c, &util::vm(), "default");
    let vmis = util::api(&c, &util::vmi(), "default");

    create(
        &c,
        &util::vm(),
        "default",
        vm_body("vm1", "Always", "512Mi", json!([])),
    )
    .await?;
    wait_for(&vms, "vm1", "Running and ready", |o| {
        printable(o) == "Running" && o.data.pointer("/status/ready") == Some(&json!(true))
    })
    .await?;
    let vm = vms.get("vm1").await?;
    assert_eq!(cond_reason(&vm, "Ready"), pair("True", ""));
    assert_eq!(cond_reason(&vm, "LiveMigratable"), pair("True", ""));
    assert_eq!(cond_reason(&vm, "AgentConnected"), pair("True", ""));

    assert_eq!(subresource::vmi(&c, "vm1", "pause").await?.code, 200);
    let gate = "the status of pod readiness gate \"kubevirt.io/virtual-machine-unpaused\" is not \"True\", but False";
    let vmi = wait_for(&vmis, "vm1", "not Ready", |o| cond(o, "Ready") == "False").await?;
    assert_eq!(
        cond_reason(&vmi, "Ready"),
        pair("False", "ReadinessGatesNotReady")
    );
    assert_eq!(condition(&vmi, "Ready")["message"], gate);
    assert_eq!(cond_reason(&vmi, "Paused"), pair("True", "PausedByUser"));
    let vm = wait_for(&vms, "vm1", "Paused, not ready", |o| {
        printable(o) == "Paused" && o.data.pointer("/status/ready").is_none()
    })
    .await?;
    assert_eq!(
        cond_reason(&vm, "Ready"),
        pair("False", "ReadinessGatesNotReady")
    );
    assert_eq!(cond_reason(&vm, "Paused"), pair("True", "PausedByUser"));

    assert_eq!(subresource::vmi(&c, "vm1", "unpause").await?.code, 200);
    let vm = wait_for(&vms, "vm1", "Running and ready again", |o| {
        printable(o) == "Running" && o.data.pointer("/status/ready") == Some(&json!(true))
    })
    .await?;
    assert_eq!(
        condition(&vm, "Paused"),
        serde_json::Value::Null,
        "dropped with the VMI's"
    );

    // A bridge-bound pod network is not live-migratable.
    let mut bridged = vm_body("bridged", "Always", "512Mi", json!([]));
    bridged["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] =
        json!([{"name": "default", "bridge": {}}]);
    create(&c, &util::vm(), "default", bridged).await?;
    let vmi = wait_for(&vmis, "bridged", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(
        cond_reason(&vmi, "LiveMigratable"),
        pair("False", "InterfaceNotLiveMigratable")
    );
    assert_eq!(
        condition(&vmi, "LiveMigratable")["message"],
        "cannot migrate VMI which does not use masquerade or a migratable plugin to connect to the pod network"
    );

    // Stopping, then Stopped with Ready VMINotExists; a deleted VMI is PodTerminating.
    let mut slow = vm_body("slow", "Always", "512Mi", json!([]));
    slow["metadata"]["annotations"] = json!({"sim.wukong.io/ignore-acpi": "hang"});
    create(&c, &util::vm(), "default", slow).await?;
    wait_for(&vmis, "slow", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(
        subresource::vm(&c, "slow", "stop", json!({})).await?.code,
        202
    );
    let vmi = wait_for(&vmis, "slow", "terminating", |o| {
        cond_reason(o, "Ready") == pair("False", "PodTerminating")
    })
    .await?;
    assert_eq!(phase(&vmi), "Running");
    wait_for(&vms, "slow", "Stopping", |o| printable(o) == "Stopping").await?;
    subresource::vm(&c, "slow", "stop", json!({"gracePeriod": 0})).await?;
    // Stopped already while the final VMI is still there, then without it.
    wait_for(&vms, "slow", "Stopped", |o| printable(o) == "Stopped").await?;
    wait_gone(&vmis, "slow").await?;
    let vm = wait_for(&vms, "slow", "without a VMI", |o| {
        cond_reason(o, "Ready") == pair("False", "VMINotExists")
    })
    .await?;
    assert_eq!(printable(&vm), "Stopped");
    assert_eq!(vm.data.pointer("/status/created"), None);

    // Deleting the VM: Terminating while its VMI shuts down, then gone.
    let mut held = vm_body("held", "Always", "512Mi", json!([]));
    held["metadata"]["annotations"] = json!({"sim.wukong.io/ignore-acpi": "hang"});
    create(&c, &util::vm(), "default", held).await?;
    wait_for(&vmis, "held", "Running", |o| phase(o) == "Running").await?;
    vms.delete("held", &DeleteParams::default()).await?;
    let vm = wait_for(&vms, "held", "Terminating", |o| {
        printable(o) == "Terminating"
    })
    .await?;
    assert!(
        vm.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"kubevirt.io/virtualMachineControllerFinalize".to_owned())
    );
    let patch = json!({"spec": {"terminationGracePeriodSeconds": 0}});
    vmis.patch(
        "held",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    wait_gone(&vms, "held").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmi_waits_for_its_volumes() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let cfg = SimConfig {
        import_step_delay: Duration::from_millis(300),
        import_steps: 3,
        pvc_bind_delay: Duration::from_millis(800),
        scheduling_delay: Duration::from_millis(200),
        ..SimConfig::fast()
    };
    let _sim = Simulator::start(&env, cfg).await?;
    let c = env.client();
    let vms = util::api(&c, &util::vm(), "default");
    let vmis = util::api(&c, &util::vmi(), "default");
    let dvs = util::api(&c, &util::dv(), "default");

    // A VM with an imported disk: Provisioning and no VMI until the import succeeds.
    let vols = json!([{"name": "root", "dataVolume": {"name": "imp-root"}}]);
    let mut vm = vm_body("imp", "Always", "512Mi", vols);
    vm["spec"]["dataVolumeTemplates"] = json!([{"metadata": {"name": "imp-root"},
        "spec": {"source": {"http": {"url": "http://images.example/root.img"}},
                 "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}]);
    create(&c, &util::vm(), "default", vm).await?;
    let vm = wait_for(&vms, "imp", "Provisioning", |o| {
        printable(o) == "Provisioning"
    })
    .await?;
    assert_eq!(cond_reason(&vm, "Ready"), pair("False", "VMINotExists"));
    loop {
        let dv = dvs.get("imp-root").await?;
        let done = phase(&dv) == "Succeeded";
        let vmi = vmis.get_opt("imp").await?;
        if !done {
            assert!(
                vmi.is_none(),
                "a VMI before its DataVolume is populated: {:?}",
                phase(&dv)
            );
        } else {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let vmi = wait_for(&vmis, "imp", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(
        cond_reason(&vmi, "DataVolumesReady"),
        pair("True", "AllDVsReady")
    );
    let vm = wait_for(&vms, "imp", "Running", |o| printable(o) == "Running").await?;
    assert_eq!(
        cond_reason(&vm, "DataVolumesReady"),
        pair("True", "AllDVsReady")
    );

    // A WaitForFirstConsumer disk: the VMI is its first consumer, so it is created
    // before the disk is populated, and runs once it is.
    let vols = json!([{"name": "root", "dataVolume": {"name": "wffc-root"}}]);
    let mut vm = vm_body("wffc", "Always", "512Mi", vols);
    vm["spec"]["dataVolumeTemplates"] = json!([{"metadata": {"name": "wffc-root"},
        "spec": {"source": {"http": {"url": "http://images.example/root.img"}},
                 "storage": {"storageClassName": "local-wffc",
                             "resources": {"requests": {"storage": "1Gi"}}}}}]);
    create(&c, &util::vm(), "default", vm).await?;
    wait_for(&vmis, "wffc", "Running", |o| phase(o) == "Running").await?;
    // DataVolumesReady follows the DataVolume, also once the VMI runs.
    wait_for(&vmis, "wffc", "AllDVsReady", |o| {
        cond_reason(o, "DataVolumesReady") == pair("True", "AllDVsReady")
    })
    .await?;
    assert_eq!(phase(&dvs.get("wffc-root").await?), "Succeeded");

    // An import that keeps failing: DataVolumeError, and still no VMI.
    let vols = json!([{"name": "root", "dataVolume": {"name": "bad-root"}}]);
    let mut vm = vm_body("bad", "Always", "512Mi", vols);
    vm["spec"]["dataVolumeTemplates"] = json!([{"metadata": {"name": "bad-root",
            "annotations": {"sim.wukong.io/fail-import": "true"}},
        "spec": {"source": {"http": {"url": "http://images.invalid/root.img"}},
                 "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}]);
    create(&c, &util::vm(), "default", vm).await?;
    wait_for(&vms, "bad", "DataVolumeError", |o| {
        printable(o) == "DataVolumeError"
    })
    .await?;
    stays_gone(&vmis, "bad", Duration::from_millis(300)).await?;

    // A claim that does not exist: the VMI stays Pending, FailedPvcNotFound.
    let vols = json!([{"name": "root", "persistentVolumeClaim": {"claimName": "missing"}}]);
    create(
        &c,
        &util::vm(),
        "default",
        vm_body("nopvc", "Always", "512Mi", vols),
    )
    .await?;
    let vmi = wait_for(&vmis, "nopvc", "FailedPvcNotFound", |o| {
        cond(o, "Synchronized") == "False"
    })
    .await?;
    assert_eq!(phase(&vmi), "Pending");
    assert_eq!(
        cond_reason(&vmi, "Synchronized"),
        pair("False", "FailedPvcNotFound")
    );
    assert_eq!(
        condition(&vmi, "Synchronized")["message"],
        "PVC default/missing does not exist, waiting for it to appear"
    );
    assert_eq!(
        cond_reason(&vmi, "PodScheduled"),
        pair("False", "Unschedulable")
    );
    assert_eq!(cond_reason(&vmi, "Ready"), pair("False", "PodNotExists"));
    wait_for(&vms, "nopvc", "ErrorPvcNotFound", |o| {
        printable(o) == "ErrorPvcNotFound"
    })
    .await?;

    // Starting while the VMI is Pending and Scheduling.
    create(
        &c,
        &util::vm(),
        "default",
        vm_body("plain", "Always", "512Mi", json!([])),
    )
    .await?;
    wait_for(&vms, "plain", "Starting", |o| printable(o) == "Starting").await?;
    wait_for(&vms, "plain", "Running", |o| printable(o) == "Running").await?;

    // A claim not bound yet: WaitingForVolumeBinding until it binds.
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "slow-claim"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                 "resources": {"requests": {"storage": "1Gi"}}}});
    kube::Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
        c.clone(),
        "default",
    )
    .create(&Default::default(), &serde_json::from_value(claim)?)
    .await?;
    let vols = json!([{"name": "root", "persistentVolumeClaim": {"claimName": "slow-claim"}}]);
    create(
        &c,
        &util::vm(),
        "default",
        vm_body("binding", "Always", "512Mi", vols),
    )
    .await?;
    wait_for(&vms, "binding", "WaitingForVolumeBinding", |o| {
        printable(o) == "WaitingForVolumeBinding"
    })
    .await?;
    wait_for(&vms, "binding", "Running", |o| printable(o) == "Running").await?;

    // A VMI that fits no node: ErrorUnschedulable, Ready GuestNotRunning.
    create(
        &c,
        &util::vm(),
        "default",
        vm_body("big", "Always", "1Ti", json!([])),
    )
    .await?;
    let vmi = wait_for(&vmis, "big", "unschedulable", |o| {
        cond(o, "PodScheduled") == "False"
    })
    .await?;
    assert_eq!(cond_reason(&vmi, "Ready"), pair("False", "GuestNotRunning"));
    let vm = wait_for(&vms, "big", "ErrorUnschedulable", |o| {
        printable(o) == "ErrorUnschedulable"
    })
    .await?;
    assert_eq!(cond_reason(&vm, "Ready"), pair("False", "GuestNotRunning"));
    assert_eq!(
        cond_reason(&vm, "PodScheduled"),
        pair("False", "Unschedulable")
    );
    Ok(())
}
