//! virt-controller and the aggregated API: run strategies, phases, printableStatus,
//! pause/unpause/softreboot/start/stop/restart/migrate and KubeVirt's refusals.

mod common;

use common::*;
use serde_json::json;
use wukong_testenv::{SimConfig, Simulator, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_lifecycle_and_subresources() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let sim = Simulator::start(&env, SimConfig::fast()).await?;
    let client = env.client();
    let vms = util::api(&client, &util::vm(), "default");
    let vmis = util::api(&client, &util::vmi(), "default");

    // Always → a VMI owned by the VM, Running on a simulated node.
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("vm1", "Always", "1Gi", json!([])),
    )
    .await?;
    let vmi = wait_for(&vmis, "vm1", "Running", |o| phase(o) == "Running").await?;
    let node = str_at(&vmi.data, "/status/nodeName")
        .unwrap_or_default()
        .to_owned();
    assert!(sim.node_names().contains(&node), "scheduled on {node}");
    assert_eq!(
        vmi.metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].kind.as_str()),
        Some("VirtualMachine")
    );
    assert_eq!(cond(&vmi, "Ready"), "True");
    assert_eq!(cond(&vmi, "AgentConnected"), "True");
    assert!(str_at(&vmi.data, "/status/interfaces/0/ipAddress").is_some());
    let vm = wait_for(&vms, "vm1", "Running", |o| {
        str_at(&o.data, "/status/printableStatus") == Some("Running")
    })
    .await?;
    assert_eq!(vm.data.pointer("/status/ready"), Some(&json!(true)));

    // pause / unpause / softreboot and their refusals.
    let r = |a: &'static str| {
        put_subresource(
            &client,
            "default",
            "virtualmachineinstances",
            "vm1",
            a,
            json!({}),
        )
    };
    let (code, msg) = r("pause").await?;
    assert_eq!(code, 200, "{msg}; calls: {:?}", sim.calls());
    wait_for(&vms, "vm1", "Paused", |o| {
        str_at(&o.data, "/status/printableStatus") == Some("Paused")
    })
    .await?;
    assert_eq!(cond(&vmis.get("vm1").await?, "Paused"), "True");
    let (code, msg) = r("pause").await?;
    assert_eq!((code, msg.as_str()), (409, "VMI is already paused"));
    let (code, msg) = r("softreboot").await?;
    assert_eq!((code, msg.as_str()), (409, "VMI is paused"));
    assert_eq!(r("unpause").await?.0, 200);
    let (code, msg) = r("unpause").await?;
    assert_eq!((code, msg.as_str()), (409, "VMI is not paused"));
    assert_eq!(r("softreboot").await?.0, 200);
    wait_for(&vms, "vm1", "Running again", |o| {
        str_at(&o.data, "/status/printableStatus") == Some("Running")
    })
    .await?;
    assert_eq!(sim.count_calls("pause", "default", "vm1"), 2);
    let calls = sim.calls();
    assert!(
        calls.iter().all(|c| c.user.as_deref() == Some("admin")),
        "{calls:?}"
    );

    // start of a running VM is refused; stop with a grace period halts it.
    let v =
        |a: &'static str, b| put_subresource(&client, "default", "virtualmachines", "vm1", a, b);
    let (code, msg) = v("start", json!({})).await?;
    assert_eq!((code, msg.as_str()), (409, "VM is already running"));
    assert_eq!(v("stop", json!({"gracePeriod": 0})).await?.0, 200);
    let vm = vms.get("vm1").await?;
    assert_eq!(str_at(&vm.data, "/spec/runStrategy"), Some("Halted"));
    wait_gone(&vmis, "vm1").await?;
    wait_for(&vms, "vm1", "Stopped", |o| {
        str_at(&o.data, "/status/printableStatus") == Some("Stopped")
    })
    .await?;
    let (code, msg) = v("stop", json!({})).await?;
    assert_eq!((code, msg.as_str()), (409, "VM is not running"));
    let (code, _) = r("pause").await?;
    assert_eq!(code, 404, "pause of a VMI that does not exist");

    // start sets Always; restart makes a new VMI.
    assert_eq!(v("start", json!({})).await?.0, 200);
    assert_eq!(
        str_at(&vms.get("vm1").await?.data, "/spec/runStrategy"),
        Some("Always")
    );
    let first = wait_for(&vmis, "vm1", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(v("restart", json!({})).await?.0, 200);
    wait_for(&vmis, "vm1", "recreated and Running", |o| {
        o.metadata.uid != first.metadata.uid && phase(o) == "Running"
    })
    .await?;

    // Manual: nothing starts by itself; start / stop act through stateChangeRequests.
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("manual", "Manual", "1Gi", json!([])),
    )
    .await?;
    wait_for(&vms, "manual", "Stopped", |o| {
        str_at(&o.data, "/status/printableStatus") == Some("Stopped")
    })
    .await?;
    assert!(vmis.get_opt("manual").await?.is_none());
    let m = |a: &'static str| {
        put_subresource(
            &client,
            "default",
            "virtualmachines",
            "manual",
            a,
            json!({}),
        )
    };
    assert_eq!(m("start").await?.0, 200);
    wait_for(&vmis, "manual", "Running", |o| phase(o) == "Running").await?;
    assert_eq!(m("stop").await?.0, 200);
    assert_eq!(
        str_at(&vms.get("manual").await?.data, "/spec/runStrategy"),
        Some("Manual")
    );
    Ok(())
}
