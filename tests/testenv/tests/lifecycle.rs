//! The aggregated API's lifecycle actions as upstream's `pkg/virt-api/rest/lifecycle.go`
//! answers them, through the real aggregator: start/stop/restart per run strategy, pending
//! state-change requests, pause/unpause/softreboot/migrate refusals, 202 for VM actions.

mod common;
mod subresource;

use std::time::Duration;

use common::*;
use serde_json::json;
use subresource::{Answer, printable, stays_gone, vm_conflict, vmi_conflict};
use wukong_testenv::{SimConfig, Simulator, TestEnv};

/// A VM whose guest exits by itself (`"succeeded"` or `"failed"`).
fn exiting_vm(name: &str, strategy: &str, exit: &str) -> serde_json::Value {
    let mut vm = vm_body(name, strategy, "512Mi", json!([]));
    vm["spec"]["template"]["metadata"]["annotations"] = json!({"sim.wukong.io/guest-exit": exit});
    vm
}

/// A VM whose only disk is a DataVolume whose import keeps failing: it never starts.
fn never_ready_vm(name: &str, strategy: &str) -> serde_json::Value {
    let disk = format!("{name}-disk");
    let mut vm = vm_body(
        name,
        strategy,
        "512Mi",
        json!([{"name": "disk", "dataVolume": {"name": disk}}]),
    );
    vm["spec"]["dataVolumeTemplates"] = json!([{
        "metadata": {"name": disk, "annotations": {"sim.wukong.io/fail-import": "true"}},
        "spec": {"source": {"http": {"url": "http://images.invalid/disk.img"}},
                 "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}]);
    vm
}

/// A VM whose guest ignores ACPI and is never killed: only grace period 0 ends it.
fn hanging_vm(name: &str, strategy: &str) -> serde_json::Value {
    let mut vm = vm_body(name, strategy, "512Mi", json!([]));
    vm["metadata"]["annotations"] = json!({"sim.wukong.io/ignore-acpi": "hang"});
    vm
}

async fn running(vmis: &kube::Api<kube::api::DynamicObject>, name: &str) -> anyhow::Result<()> {
    wait_for(vmis, name, "Running", |o| phase(o) == "Running").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_follow_the_run_strategy() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let _sim = Simulator::start(&env, SimConfig::fast()).await?;
    let c = env.client();
    let vms = util::api(&c, &util::vm(), "default");
    let vmis = util::api(&c, &util::vmi(), "default");
    let vm_kind = util::vm();
    let strategy = |o: &kube::api::DynamicObject| {
        str_at(&o.data, "/spec/runStrategy")
            .unwrap_or("")
            .to_owned()
    };

    // Always, running: start is refused as upstream words it, stop halts it (202).
    create(
        &c,
        &vm_kind,
        "default",
        vm_body("always", "Always", "512Mi", json!([])),
    )
    .await?;
    running(&vmis, "always").await?;
    let a = subresource::vm(&c, "always", "start", json!({})).await?;
    assert!(
        a.is(409, &vm_conflict("always", "VM is already running")),
        "{a:?}"
    );
    let a = subresource::vm(&c, "always", "stop", json!({})).await?;
    assert_eq!(
        a,
        Answer {
            code: 202,
            message: String::new()
        }
    );
    assert_eq!(strategy(&vms.get("always").await?), "Halted");
    wait_gone(&vmis, "always").await?;
    // Halted: start sets Always (202).
    let a = subresource::vm(&c, "always", "start", json!({})).await?;
    assert_eq!(a.code, 202, "{a:?}");
    assert_eq!(strategy(&vms.get("always").await?), "Always");
    running(&vmis, "always").await?;

    // Always with no VMI (its DataVolume never imports): start is refused all the same.
    create(&c, &vm_kind, "default", never_ready_vm("waiting", "Always")).await?;
    let a = subresource::vm(&c, "waiting", "start", json!({})).await?;
    assert!(
        a.is(
            409,
            &vm_conflict("waiting", "Always does not support manual start requests")
        ),
        "{a:?}"
    );

    // Once: its VMI finished, start is refused; stop switches it to Halted.
    create(
        &c,
        &vm_kind,
        "default",
        exiting_vm("once", "Once", "succeeded"),
    )
    .await?;
    wait_for(&vmis, "once", "Succeeded", |o| phase(o) == "Succeeded").await?;
    let a = subresource::vm(&c, "once", "start", json!({})).await?;
    assert!(
        a.is(
            409,
            &vm_conflict("once", "Once does not support manual start requests")
        ),
        "{a:?}"
    );
    assert_eq!(
        subresource::vm(&c, "once", "stop", json!({})).await?.code,
        202
    );
    assert_eq!(strategy(&vms.get("once").await?), "Halted");
    // Once with no VMI at all: stop switches it to Halted too.
    create(
        &c,
        &vm_kind,
        "default",
        never_ready_vm("once-empty", "Once"),
    )
    .await?;
    assert_eq!(
        subresource::vm(&c, "once-empty", "stop", json!({}))
            .await?
            .code,
        202
    );
    assert_eq!(strategy(&vms.get("once-empty").await?), "Halted");

    // RerunOnFailure: a Succeeded VMI is deleted and not started again.
    create(
        &c,
        &vm_kind,
        "default",
        exiting_vm("rerun", "RerunOnFailure", "succeeded"),
    )
    .await?;
    wait_for(&vms, "rerun", "started once", |o| {
        str_at(&o.data, "/status/runStrategy") == Some("RerunOnFailure")
    })
    .await?;
    wait_gone(&vmis, "rerun").await?;
    stays_gone(&vmis, "rerun", Duration::from_millis(600)).await?;
    let vm = wait_for(&vms, "rerun", "Stopped", |o| printable(o) == "Stopped").await?;
    assert_eq!(strategy(&vm), "RerunOnFailure");
    // ... until a start request (202) starts it.
    assert_eq!(
        subresource::vm(&c, "rerun", "start", json!({})).await?.code,
        202
    );
    wait_for(&vmis, "rerun", "started by request", |o| {
        !phase(o).is_empty()
    })
    .await?;

    // RerunOnFailure, running: stop adds a Stop request and keeps the strategy.
    create(
        &c,
        &vm_kind,
        "default",
        vm_body("rof", "RerunOnFailure", "512Mi", json!([])),
    )
    .await?;
    running(&vmis, "rof").await?;
    assert_eq!(
        subresource::vm(&c, "rof", "stop", json!({})).await?.code,
        202
    );
    wait_gone(&vmis, "rof").await?;
    stays_gone(&vmis, "rof", Duration::from_millis(600)).await?;
    assert_eq!(strategy(&vms.get("rof").await?), "RerunOnFailure");
    let a = subresource::vm(&c, "rof", "stop", json!({})).await?;
    assert!(a.is(409, &vm_conflict("rof", "VM is not running")), "{a:?}");

    // Manual: start and stop act through state-change requests.
    create(
        &c,
        &vm_kind,
        "default",
        vm_body("manual", "Manual", "512Mi", json!([])),
    )
    .await?;
    wait_for(&vms, "manual", "Stopped", |o| printable(o) == "Stopped").await?;
    assert_eq!(
        subresource::vm(&c, "manual", "start", json!({}))
            .await?
            .code,
        202
    );
    running(&vmis, "manual").await?;
    wait_for(&vms, "manual", "its Start request done", |o| {
        o.data.pointer("/status/stateChangeRequests").is_none()
    })
    .await?;
    assert_eq!(
        subresource::vm(&c, "manual", "stop", json!({})).await?.code,
        202
    );
    wait_gone(&vmis, "manual").await?;
    assert_eq!(strategy(&vms.get("manual").await?), "Manual");

    // Halted with a VMI still shutting down: only a shorter grace period is accepted.
    create(&c, &vm_kind, "default", hanging_vm("hang", "Always")).await?;
    running(&vmis, "hang").await?;
    assert_eq!(
        subresource::vm(&c, "hang", "stop", json!({})).await?.code,
        202
    );
    let shorter = vm_conflict(
        "hang",
        "Halted only supports manual stop requests with a shorter graceperiod",
    );
    let a = subresource::vm(&c, "hang", "stop", json!({})).await?;
    assert!(a.is(409, &shorter), "{a:?}");
    let a = subresource::vm(&c, "hang", "stop", json!({"gracePeriod": 30})).await?;
    assert!(a.is(409, &shorter), "{a:?}");
    let a = subresource::vm(&c, "hang", "stop", json!({"gracePeriod": 0})).await?;
    assert_eq!(a.code, 202, "{a:?}");
    wait_gone(&vmis, "hang").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_and_restart() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let _sim = Simulator::start(&env, SimConfig::fast()).await?;
    let c = env.client();
    let vms = util::api(&c, &util::vm(), "default");
    let vmis = util::api(&c, &util::vmi(), "default");
    let vm_kind = util::vm();
    let underway =
        "Internal error occurred: unable to complete request: stop/start already underway";

    // Manual VM waiting for its DataVolume: the Start request stays pending.
    create(&c, &vm_kind, "default", never_ready_vm("pending", "Manual")).await?;
    assert_eq!(
        subresource::vm(&c, "pending", "start", json!({}))
            .await?
            .code,
        202
    );
    let a = subresource::vm(&c, "pending", "start", json!({})).await?;
    assert!(a.is(500, underway), "{a:?}");
    let vm = vms.get("pending").await?;
    assert_eq!(
        vm.data.pointer("/status/stateChangeRequests"),
        Some(&json!([{"action": "Start"}])),
        "the list is not overwritten"
    );
    let a = subresource::vm(&c, "pending", "restart", json!({})).await?;
    assert!(
        a.is(409, &vm_conflict("pending", "VM is not running: Halted")),
        "{a:?}"
    );

    // A Stop pending while the guest hangs: restart is underway (500), a lone stop
    // replaces the pending request (202).
    create(&c, &vm_kind, "default", hanging_vm("hang", "Manual")).await?;
    assert_eq!(
        subresource::vm(&c, "hang", "start", json!({})).await?.code,
        202
    );
    running(&vmis, "hang").await?;
    wait_for(&vms, "hang", "Start done", |o| {
        o.data.pointer("/status/stateChangeRequests").is_none()
    })
    .await?;
    assert_eq!(
        subresource::vm(&c, "hang", "stop", json!({})).await?.code,
        202
    );
    let a = subresource::vm(&c, "hang", "restart", json!({"gracePeriodSeconds": 0})).await?;
    assert!(a.is(500, underway), "{a:?}");
    assert_eq!(
        vmis.get("hang")
            .await?
            .data
            .pointer("/spec/terminationGracePeriodSeconds"),
        Some(&json!(30)),
        "a refused forced restart puts the grace period back"
    );
    let a = subresource::vm(&c, "hang", "start", json!({})).await?;
    assert!(
        a.is(409, &vm_conflict("hang", "VM is already running")),
        "{a:?}"
    );
    let a = subresource::vm(&c, "hang", "stop", json!({"gracePeriod": 0})).await?;
    assert_eq!(a.code, 202, "{a:?}");
    wait_gone(&vmis, "hang").await?;

    // restart: only gracePeriodSeconds 0 (force), refused for Halted and Once.
    let a = subresource::vm(&c, "hang", "restart", json!({"gracePeriodSeconds": 5})).await?;
    assert!(
        a.is(
            400,
            "For force restart, only gracePeriod=0 is supported for now"
        ),
        "{a:?}"
    );
    let a = subresource::vm(&c, "hang", "restart", json!({"gracePeriodSeconds": -1})).await?;
    assert!(
        a.is(400, "gracePeriod has to be greater or equal to 0"),
        "{a:?}"
    );
    create(
        &c,
        &vm_kind,
        "default",
        vm_body("halted", "Halted", "512Mi", json!([])),
    )
    .await?;
    let a = subresource::vm(&c, "halted", "restart", json!({})).await?;
    let refused = "RunStategy Halted does not support manual restart requests";
    assert!(a.is(409, &vm_conflict("halted", refused)), "{a:?}");
    create(
        &c,
        &vm_kind,
        "default",
        exiting_vm("once", "Once", "succeeded"),
    )
    .await?;
    let a = subresource::vm(&c, "once", "restart", json!({})).await?;
    let refused = "RunStategy Once does not support manual restart requests";
    assert!(a.is(409, &vm_conflict("once", refused)), "{a:?}");

    // A forced restart of an Always VM: the VMI's grace period becomes 1, a new VMI runs.
    let mut stubborn = vm_body("stubborn", "Always", "512Mi", json!([]));
    stubborn["metadata"]["annotations"] = json!({"sim.wukong.io/ignore-acpi": "true"});
    create(&c, &vm_kind, "default", stubborn).await?;
    let first = wait_for(&vmis, "stubborn", "Running", |o| phase(o) == "Running").await?;
    let a = subresource::vm(&c, "stubborn", "restart", json!({"gracePeriodSeconds": 0})).await?;
    assert_eq!(a.code, 202, "{a:?}");
    let old = vmis.get("stubborn").await?;
    if old.metadata.uid == first.metadata.uid {
        assert_eq!(
            old.data.pointer("/spec/terminationGracePeriodSeconds"),
            Some(&json!(1))
        );
    }
    wait_for(&vmis, "stubborn", "recreated and Running", |o| {
        o.metadata.uid != first.metadata.uid && phase(o) == "Running"
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmi_actions_and_migrate() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let sim = Simulator::start(&env, SimConfig::fast()).await?;
    let c = env.client();
    let vms = util::api(&c, &util::vm(), "default");
    let vmis = util::api(&c, &util::vmi(), "default");
    let vm_kind = util::vm();

    create(
        &c,
        &vm_kind,
        "default",
        vm_body("vm1", "Always", "512Mi", json!([])),
    )
    .await?;
    running(&vmis, "vm1").await?;
    // VMI actions answer 200; refusals come wrapped.
    let a = subresource::vmi(&c, "vm1", "pause").await?;
    assert_eq!(
        a,
        Answer {
            code: 200,
            message: String::new()
        }
    );
    let a = subresource::vmi(&c, "vm1", "pause").await?;
    assert!(
        a.is(409, &vmi_conflict("vm1", "VMI is already paused")),
        "{a:?}"
    );
    let a = subresource::vmi(&c, "vm1", "softreboot").await?;
    assert!(a.is(409, &vmi_conflict("vm1", "VMI is paused")), "{a:?}");
    assert_eq!(subresource::vmi(&c, "vm1", "unpause").await?.code, 200);
    let a = subresource::vmi(&c, "vm1", "unpause").await?;
    assert!(
        a.is(409, &vmi_conflict("vm1", "VMI is not paused")),
        "{a:?}"
    );
    assert_eq!(subresource::vmi(&c, "vm1", "softreboot").await?.code, 200);
    assert!(
        sim.calls()
            .iter()
            .all(|c| c.user.as_deref() == Some("admin")),
        "{:?}",
        sim.calls()
    );

    // A VMI that is not Running (it fits no node).
    create(
        &c,
        &vm_kind,
        "default",
        vm_body("big", "Always", "1Ti", json!([])),
    )
    .await?;
    wait_for(&vmis, "big", "Scheduling", |o| phase(o) == "Scheduling").await?;
    let a = subresource::vmi(&c, "big", "pause").await?;
    assert!(
        a.is(409, &vmi_conflict("big", "VM is not running")),
        "{a:?}"
    );
    let a = subresource::vmi(&c, "big", "unpause").await?;
    assert!(
        a.is(409, &vmi_conflict("big", "VMI is not running")),
        "{a:?}"
    );
    let a = subresource::vmi(&c, "big", "softreboot").await?;
    assert!(
        a.is(409, &vmi_conflict("big", "VM is not running")),
        "{a:?}"
    );
    let a = subresource::vm(&c, "big", "migrate", json!({})).await?;
    assert!(a.is(409, &vm_conflict("big", "VM is not running")), "{a:?}");

    // A liveness probe other than the guest-agent ping forbids pausing.
    let mut probed = vm_body("probed", "Always", "512Mi", json!([]));
    probed["spec"]["template"]["spec"]["livenessProbe"] =
        json!({"httpGet": {"port": 1500}, "initialDelaySeconds": 120});
    create(&c, &vm_kind, "default", probed).await?;
    running(&vmis, "probed").await?;
    let a = subresource::vmi(&c, "probed", "pause").await?;
    let forbidden = "virtualmachineinstance.kubevirt.io \"probed\" is forbidden: Pausing VMIs \
                     with a non-GuestAgentPing LivenessProbe is not supported";
    assert!(a.is(403, forbidden), "{a:?}");

    // Objects that do not exist.
    let a = subresource::vmi(&c, "nope", "pause").await?;
    assert!(
        a.is(404, "virtualmachineinstance.kubevirt.io \"nope\" not found"),
        "{a:?}"
    );
    let a = subresource::vm(&c, "nope", "start", json!({})).await?;
    assert!(
        a.is(404, "virtualmachine.kubevirt.io \"nope\" not found"),
        "{a:?}"
    );
    create(
        &c,
        &vm_kind,
        "default",
        vm_body("off", "Halted", "512Mi", json!([])),
    )
    .await?;
    wait_for(&vms, "off", "Stopped", |o| printable(o) == "Stopped").await?;
    let a = subresource::vm(&c, "off", "migrate", json!({})).await?;
    assert!(
        a.is(404, "virtualmachineinstance.kubevirt.io \"off\" not found"),
        "{a:?}"
    );

    // migrate of a running VMI: 202 and a migration object.
    let a = subresource::vm(&c, "vm1", "migrate", json!({})).await?;
    assert_eq!(a.code, 202, "{a:?}");
    let vmims = util::api(&c, &util::vmim(), "default");
    let list = vmims.list(&Default::default()).await?;
    assert!(
        list.iter().any(
            |m| m.metadata.generate_name.as_deref() == Some("kubevirt-migrate-vm-")
                && str_at(&m.data, "/spec/vmiName") == Some("vm1")
        ),
        "no migration object"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_on_failure_restarts_a_failed_vmi_only() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let cfg = SimConfig {
        scheduling_delay: Duration::from_millis(300),
        ..SimConfig::fast()
    };
    let _sim = Simulator::start(&env, cfg).await?;
    let c = env.client();
    let vms = util::api(&c, &util::vm(), "default");
    let vmis = util::api(&c, &util::vmi(), "default");

    create(
        &c,
        &util::vm(),
        "default",
        exiting_vm("crashy", "RerunOnFailure", "failed"),
    )
    .await?;
    // Hold the first VMI with a finalizer of our own, so its failure stays visible.
    let first = wait_for(&vmis, "crashy", "created", |_| true).await?;
    let hold = json!({"metadata": {"finalizers": ["test.wukong.io/hold", "foregroundDeleteVirtualMachine"]}});
    vmis.patch(
        "crashy",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&hold),
    )
    .await?;
    wait_for(&vmis, "crashy", "Failed and deleted", |o| {
        phase(o) == "Failed" && o.metadata.deletion_timestamp.is_some()
    })
    .await?;
    // The VM controller asked for a restart...
    wait_for(&vms, "crashy", "a Start request", |o| {
        o.data.pointer("/status/stateChangeRequests") == Some(&json!([{"action": "Start"}]))
    })
    .await?;
    // ... and a manual start from the failed state is refused.
    let a = subresource::vm(&c, "crashy", "start", json!({})).await?;
    let refused = "RerunOnFailure does not support starting VM from failed state";
    assert!(a.is(409, &vm_conflict("crashy", refused)), "{a:?}");
    // Released, the failed VMI goes and a new one starts.
    let release = json!({"metadata": {"finalizers": null}});
    vmis.patch(
        "crashy",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&release),
    )
    .await?;
    wait_for(&vmis, "crashy", "restarted", |o| {
        o.metadata.uid != first.metadata.uid
    })
    .await?;
    Ok(())
}
