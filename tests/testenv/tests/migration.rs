//! Live migration as KubeVirt does it: phases, migrationState, MigrationPolicy,
//! addedNodeSelector, refusals at create by the admission webhook, the unschedulable-target
//! timeout, abort by deletion, the completion timeout (post-copy, abort), garbage
//! collection of finished migrations, the failure knob and the `migrate` subresource.

mod common;
mod subresource;

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
    // Pre-copy: post-copy is allowed but the migration ended before the completion timeout.
    assert_eq!(state("mode"), json!("PreCopy"));
    assert_eq!(
        vmi.data
            .pointer("/status/migrationState/migrationConfiguration/allowPostCopy"),
        Some(&json!(true))
    );
    assert_eq!(state("migrationPolicyName"), json!("postcopy"));
    assert!(state("startTimestamp").is_string() && state("endTimestamp").is_string());
    // The finished migration keeps a copy of the VMI's migrationState.
    let m1 = vmims.get("m1").await?;
    assert_eq!(
        m1.data.pointer("/status/migrationState/targetNode"),
        Some(&json!(target))
    );
    assert_eq!(
        m1.data.pointer("/status/migrationState/completed"),
        Some(&json!(true))
    );
    wait_for(
        &util::api(&client, &util::vm(), "default"),
        "mover",
        "Running",
        |o| str_at(&o.data, "/status/printableStatus") == Some("Running"),
    )
    .await?;

    // No node fits the added selector: the migration waits in Scheduling (5 minutes in
    // KubeVirt, shortened here), says so in an event, then fails.
    sim.update_config(|c| c.migration_unschedulable_timeout = Duration::from_millis(1500));
    create(
        &client,
        &util::vmim(),
        "default",
        migration("nowhere", "mover", Some("no-such-node")),
    )
    .await?;
    wait_for(&vmims, "nowhere", "Scheduling", |o| {
        phase(o) == "Scheduling"
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phase(&vmims.get("nowhere").await?), "Scheduling");
    let m = wait_for(&vmims, "nowhere", "Failed", |o| phase(o) == "Failed").await?;
    assert!(
        m.data
            .pointer("/status/conditions")
            .is_none_or(|c| !c.to_string().contains("\"Failed\"")),
        "KubeVirt has no Failed condition: {:?}",
        m.data
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await?;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("nowhere"))
        .filter_map(|e| e.reason.as_deref())
        .collect();
    assert!(
        reasons.contains(&"MigrationTargetPodUnschedulable")
            && reasons.contains(&"FailedMigration"),
        "{reasons:?}"
    );

    // Refused at create by the admission webhook, with virt-api's messages.
    let refused = |name: &str, vmi: &str| {
        let client = client.clone();
        let body = migration(name, vmi, None);
        async move {
            match create(&client, &util::vmim(), "default", body).await {
                Ok(_) => anyhow::bail!("the migration was admitted"),
                Err(e) => match e.downcast_ref::<kube::Error>() {
                    Some(kube::Error::Api(s)) => Ok((s.code, s.message.clone())),
                    _ => Err(e),
                },
            }
        }
    };
    let (code, message) = refused("ghost-m", "ghost").await?;
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "admission webhook \"migration-create-validator.kubevirt.io\" denied the request: \
         the VMI \"default/ghost\" does not exist"
    );

    // Only virt-controller may set a priority.
    let mut prioritised = migration("urgent", "mover", None);
    prioritised["spec"]["priority"] = json!("user-triggered");
    let err = create(&client, &util::vmim(), "default", prioritised)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a migration with a priority was admitted"))?;
    match err.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.ends_with(
                    "denied the request: Migration priority queue, only virt-controller is allowed to set priority field"
                ),
                "{}",
                s.message
            );
        }
        _ => anyhow::bail!("{err}"),
    }

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
    let (code, message) = refused("refused", "pinned").await?;
    assert_eq!(code, 400);
    assert!(
        message.contains(
            "denied the request: Cannot migrate VMI, Reason: DisksNotLiveMigratable, Message: "
        ),
        "{message}"
    );
    assert!(vmims.get_opt("refused").await?.is_none());

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
    // Another migration of the VMI while one is in flight: refused.
    let (code, message) = refused("second", "mover").await?;
    assert_eq!(code, 400);
    assert!(
        message.contains("in-flight migration detected. Active migration job (")
            && message.contains(") is currently already in progress for VMI mover."),
        "{message}"
    );
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
    assert_eq!(
        str_at(&vmi.data, "/status/migrationState/failureReason"),
        Some("Live migration has been aborted")
    );
    assert_eq!(str_at(&vmi.data, "/status/nodeName"), Some(before.as_str()));

    // The failure knob, through the `migrate` subresource.
    sim.update_config(|c| {
        c.migration_duration = Duration::ZERO;
        c.migration_fail = true;
    });
    let code = subresource::put(
        &client,
        "default",
        "virtualmachines",
        "mover",
        "migrate",
        json!({}),
    )
    .await?
    .code;
    assert_eq!(code, 202, "KubeVirt accepts a migrate with 202");
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

/// A MigrationPolicy matching the `app` label, with a 1 s/GiB completion timeout.
async fn quick_policy(
    client: &kube::Client,
    name: &str,
    app: &str,
    post_copy: bool,
) -> anyhow::Result<()> {
    let policy: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "migrations.kubevirt.io/v1alpha1",
        "kind": "MigrationPolicy", "metadata": {"name": name},
        "spec": {"allowPostCopy": post_copy, "completionTimeoutPerGiB": 1,
                 "selectors": {"virtualMachineInstanceSelector": {"app": app}}}}))?;
    Api::<DynamicObject>::all_with(client.clone(), &util::migration_policy())
        .create(&Default::default(), &policy)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_timeout_pending_and_garbage_collection() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let sim = Simulator::start(&env, SimConfig::fast()).await?;
    let client = env.client();
    let vmis = util::api(&client, &util::vmi(), "default");
    let vmims = util::api(&client, &util::vmim(), "default");
    quick_policy(&client, "postcopy", "slow-pc", true).await?;
    quick_policy(&client, "precopy-only", "slow-abort", false).await?;
    create(&client, &util::vm(), "default", shared_disk_vm("slow-pc")).await?;
    create(
        &client,
        &util::vm(),
        "default",
        shared_disk_vm("slow-abort"),
    )
    .await?;
    wait_for(&vmis, "slow-pc", "Running", |o| phase(o) == "Running").await?;
    wait_for(&vmis, "slow-abort", "Running", |o| phase(o) == "Running").await?;

    // 1 GiB at 1 s/GiB: after one second a migration that allows post-copy switches to it.
    sim.update_config(|c| c.migration_duration = Duration::from_millis(2500));
    create(
        &client,
        &util::vmim(),
        "default",
        migration("pc", "slow-pc", None),
    )
    .await?;
    let mode = |o: &DynamicObject| {
        str_at(&o.data, "/status/migrationState/mode")
            .unwrap_or("")
            .to_owned()
    };
    wait_for(&vmis, "slow-pc", "migrating in PreCopy", |o| {
        mode(o) == "PreCopy"
            && str_at(&o.data, "/status/migrationState/completed").is_none()
            && o.data.pointer("/status/migrationState/completed") == Some(&json!(false))
    })
    .await?;
    wait_for(&vmis, "slow-pc", "in PostCopy", |o| mode(o) == "PostCopy").await?;
    wait_for(&vmims, "pc", "Succeeded", |o| phase(o) == "Succeeded").await?;

    // Neither post-copy nor workload disruption allowed: aborted at the timeout.
    create(
        &client,
        &util::vmim(),
        "default",
        migration("ab", "slow-abort", None),
    )
    .await?;
    let m = wait_for(&vmims, "ab", "Failed", |o| phase(o) == "Failed").await?;
    assert_eq!(
        str_at(&m.data, "/status/migrationState/failureReason"),
        Some("Live migration has been aborted")
    );
    let vmi = vmis.get("slow-abort").await?;
    assert_eq!(
        str_at(&vmi.data, "/status/migrationState/abortStatus"),
        Some("Succeeded")
    );

    // Only the newest five finished migrations of a VMI are kept.
    sim.update_config(|c| c.migration_duration = Duration::ZERO);
    for i in 0..7 {
        let name = format!("gc-{i}");
        create(
            &client,
            &util::vmim(),
            "default",
            migration(&name, "slow-pc", None),
        )
        .await?;
        wait_for(&vmims, &name, "finished", |o| {
            matches!(phase(o), "Succeeded" | "Failed")
        })
        .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lp = kube::api::ListParams::default().labels("kubevirt.io/vmi-name=slow-pc");
        let names: Vec<String> = vmims
            .list(&lp)
            .await?
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .map(kube::ResourceExt::name_any)
            .collect();
        if names.len() == 5 {
            assert!(
                !names.contains(&"pc".to_owned()) && names.contains(&"gc-6".to_owned()),
                "{names:?}"
            );
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "kept {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A VMI that is not running: its migration stays Pending.
    let mut big = vm_body("waiting", "Always", "1000Gi", json!([]));
    big["spec"]["template"]["metadata"]["labels"]["app"] = json!("waiting");
    create(&client, &util::vm(), "default", big).await?;
    wait_for(&vmis, "waiting", "created", |_| true).await?;
    create(
        &client,
        &util::vmim(),
        "default",
        migration("early", "waiting", None),
    )
    .await?;
    wait_for(&vmims, "early", "Pending", |o| phase(o) == "Pending").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phase(&vmims.get("early").await?), "Pending");

    // Its VMI deleted, the migration is deleted too.
    util::api(&client, &util::vm(), "default")
        .delete("waiting", &DeleteParams::default())
        .await?;
    wait_gone(&vmims, "early").await?;
    Ok(())
}
