//! Live migration end to end on the real apiserver + KubeVirt simulator with the real
//! plugins: a manual migration (target node, MigrationPolicy tuning, PostCopy), refusals,
//! a failure, an abort, each automatic trigger, the host-wide limit on automatic
//! migrations, and an operator SIGKILLed mid-migration that still creates exactly one
//! migration object per request. Timing figures are printed (`eprintln`), never asserted.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::operator::{
    Cluster, InProcess, OperatorProcess, create, host_config, is_running, list, namespace, wait_for,
};
use wukong::api::{MigrationStatus, Wukong};

const TIMEOUT: Duration = Duration::from_secs(60);
const VMIM: &str = "VirtualMachineInstanceMigration";

/// A Wukong that can live-migrate: its one disk is a Longhorn claim (RWX, Block).
fn migratable(name: &str, policy: &str) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: [{{name: data, size: 1Gi, backend: longhorn}}]\n{policy}"
    )
}

fn policy(triggers: &str) -> String {
    format!("  migrationPolicy:\n    enabled: true\n    triggerConditions: {triggers}\n")
}

fn record(w: &Wukong) -> Option<MigrationStatus> {
    w.status.as_ref()?.migration_status.clone()
}

fn node_of(w: &Wukong) -> Option<String> {
    w.status.as_ref()?.node_name.clone()
}

fn finished(request_id: &str) -> impl Fn(&Wukong) -> bool {
    let request_id = request_id.to_owned();
    move |w| {
        record(w).is_some_and(|r| {
            r.request_id == request_id
                && matches!(
                    r.phase.as_str(),
                    "Succeeded" | "Failed" | "Aborted" | "Refused"
                )
        })
    }
}

async fn set_migration(client: &Client, ns: &str, name: &str, migration: Value) {
    Api::<Wukong>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"migration": migration}})),
        )
        .await
        .expect("patch spec.migration");
}

async fn patch_node(client: &Client, node: &str, patch: Value) {
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch node");
}

async fn cordon(client: &Client, node: &str, on: bool) {
    patch_node(client, node, json!({"spec": {"unschedulable": on}})).await;
}

async fn migrations(client: &Client, ns: &str) -> Vec<DynamicObject> {
    list(client, ns, "kubevirt.io/v1", VMIM).await
}

fn for_request(objects: &[DynamicObject], request_id: &str) -> usize {
    objects
        .iter()
        .filter(|m| {
            m.annotations()
                .get("vm.novasphere.dev/request-id")
                .is_some_and(|r| r == request_id)
        })
        .count()
}

/// Waits for the migration object of a request; prints how long it took.
async fn first_object(client: &Client, ns: &str, request_id: &str, since: Instant) {
    while for_request(&migrations(client, ns).await, request_id) == 0 {
        assert!(
            since.elapsed() < TIMEOUT,
            "no migration object for {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "[figure] {request_id}: migration object created {:?} after the spec change",
        since.elapsed()
    );
}

/// Makes a namespace with the `kubernetes.io/metadata.name` label apiservers from 1.22 set
/// on their own (the test apiserver is older): the MigrationPolicy's namespaceSelector
/// matches it.
async fn labelled_namespace(client: &Client, ns: &str) {
    namespace(client, ns).await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"kubernetes.io/metadata.name": ns}}})),
        )
        .await
        .expect("label namespace");
}

fn other_node(cluster: &Cluster, not: &[&str]) -> String {
    cluster
        .sim
        .node_names()
        .into_iter()
        .find(|n| !not.contains(&n.as_str()))
        .expect("a free node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_migration_succeeds_refuses_fails_and_aborts() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    let ns = "migrate";
    labelled_namespace(&client, ns).await;
    create(&client, ns, &migratable("mover", "")).await;
    let w = wait_for(&client, ns, "mover", TIMEOUT, is_running).await;
    let source = node_of(&w).expect("node");
    let target = other_node(&cluster, &[&source]);

    // Success: the node becomes the target, the tuning is in the MigrationPolicy.
    let started = Instant::now();
    set_migration(
        &client,
        ns,
        "mover",
        json!({"targetNode": target, "allowAutoConverge": true,
        "allowPostCopy": true, "completionTimeoutPerGiB": 800}),
    )
    .await;
    let id = format!("migrate/{target}");
    first_object(&client, ns, &id, started).await;
    let w = wait_for(&client, ns, "mover", TIMEOUT, |w| {
        finished(&id)(w) && node_of(w).as_deref() == Some(target.as_str())
    })
    .await;
    eprintln!(
        "[figure] {id}: succeeded {:?} after the spec change",
        started.elapsed()
    );
    let r = record(&w).expect("record");
    assert_eq!(r.phase, "Succeeded", "{r:?}");
    assert_eq!(
        (
            r.source_node.as_deref(),
            r.target_node.as_deref(),
            r.mode.as_deref()
        ),
        (
            Some(source.as_str()),
            Some(target.as_str()),
            // As upstream: post-copy is allowed, but a migration starts pre-copy and
            // switches only past its completion timeout, which this one never reaches.
            Some("PreCopy")
        )
    );
    assert!(r.started_at.is_some() && r.finished_at.is_some(), "{r:?}");
    let policies = list(
        &client,
        "",
        "migrations.kubevirt.io/v1alpha1",
        "MigrationPolicy",
    )
    .await;
    // Found by the host's marks: made by the migration backend for this Wukong.
    let policy_name = policies
        .iter()
        .find(|p| {
            let marks = p.annotations();
            marks.get("vm.novasphere.dev/owner-uid") == w.metadata.uid.as_ref()
                && marks.get("vm.novasphere.dev/backend").map(String::as_str)
                    == Some("migration/kubevirt")
        })
        .map(ResourceExt::name_any)
        .expect("the MigrationPolicy of mover");
    let policy = policies
        .iter()
        .find(|p| p.name_any() == policy_name)
        .expect("policy");
    assert_eq!(policy.data["spec"]["allowPostCopy"], true);
    assert_eq!(policy.data["spec"]["allowAutoConverge"], true);
    assert_eq!(policy.data["spec"]["completionTimeoutPerGiB"], 800);
    let objects = migrations(&client, ns).await;
    assert_eq!(objects.len(), 1, "one migration object");
    assert_eq!(
        objects[0].data["spec"]["addedNodeSelector"]["kubernetes.io/hostname"],
        target.as_str()
    );

    // A node that does not exist, and a cordoned node: refused, with the reason.
    set_migration(&client, ns, "mover", json!({"targetNode": "nowhere"})).await;
    let w = wait_for(&client, ns, "mover", TIMEOUT, finished("migrate/nowhere")).await;
    let r = record(&w).expect("record");
    assert_eq!(r.phase, "Refused");
    assert!(
        r.message.contains("target node nowhere does not exist"),
        "{}",
        r.message
    );
    let migrated = support::operator::condition(&w, "Migrated").expect("Migrated condition");
    assert_eq!(
        (migrated.0.as_str(), migrated.1.as_str()),
        ("False", "Refused")
    );
    let cordoned = other_node(&cluster, &[&target]);
    cordon(&client, &cordoned, true).await;
    set_migration(&client, ns, "mover", json!({"targetNode": cordoned})).await;
    let w = wait_for(
        &client,
        ns,
        "mover",
        TIMEOUT,
        finished(&format!("migrate/{cordoned}")),
    )
    .await;
    let r = record(&w).expect("record");
    assert_eq!(r.phase, "Refused");
    assert!(r.message.contains("cordoned"), "{}", r.message);
    cordon(&client, &cordoned, false).await;
    assert_eq!(
        migrations(&client, ns).await.len(),
        1,
        "refusals create nothing"
    );

    // A failing migration: reported with KubeVirt's reason, the VM stays.
    let vmis: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "kubevirt.io",
            "v1",
            "VirtualMachineInstance",
        )),
    );
    let fail = |on: bool| json!({"metadata": {"annotations": {"sim.wukong.io/fail-migration": if on { json!("true") } else { Value::Null }}}});
    vmis.patch("mover", &PatchParams::default(), &Patch::Merge(&fail(true)))
        .await
        .expect("annotate VMI");
    set_migration(
        &client,
        ns,
        "mover",
        json!({"targetNode": source, "requestId": "fail-1"}),
    )
    .await;
    let w = wait_for(&client, ns, "mover", TIMEOUT, finished("fail-1")).await;
    let r = record(&w).expect("record");
    assert_eq!(r.phase, "Failed", "{r:?}");
    assert!(
        r.failure_reason
            .as_deref()
            .is_some_and(|f| f.contains("simulated failure")),
        "{r:?}"
    );
    assert_eq!(node_of(&w).as_deref(), Some(target.as_str()));
    vmis.patch(
        "mover",
        &PatchParams::default(),
        &Patch::Merge(&fail(false)),
    )
    .await
    .expect("unannotate VMI");

    // Abort: the migration object is deleted, the record says Aborted.
    cluster
        .sim
        .update_config(|c| c.migration_duration = Duration::from_secs(30));
    set_migration(
        &client,
        ns,
        "mover",
        json!({"targetNode": source, "requestId": "abort-1"}),
    )
    .await;
    wait_for(&client, ns, "mover", TIMEOUT, |w| {
        record(w).is_some_and(|r| r.request_id == "abort-1" && r.phase == "Running")
    })
    .await;
    set_migration(
        &client,
        ns,
        "mover",
        json!({"targetNode": source, "requestId": "abort-1", "abort": true}),
    )
    .await;
    let w = wait_for(&client, ns, "mover", TIMEOUT, finished("abort-1")).await;
    assert_eq!(record(&w).expect("record").phase, "Aborted");
    let started = Instant::now();
    while for_request(&migrations(&client, ns).await, "abort-1") > 0 {
        assert!(
            started.elapsed() < TIMEOUT,
            "the aborted migration object stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
        .sim
        .update_config(|c| c.migration_duration = Duration::ZERO);

    // Deleting the Wukong deletes its cluster-scoped MigrationPolicy.
    Api::<Wukong>::namespaced(client.clone(), ns)
        .delete("mover", &Default::default())
        .await
        .expect("delete");
    let started = Instant::now();
    loop {
        let policies = list(
            &client,
            "",
            "migrations.kubevirt.io/v1alpha1",
            "MigrationPolicy",
        )
        .await;
        if policies.iter().all(|p| p.name_any() != policy_name) {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "MigrationPolicy not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_migration_on_maintenance_pressure_and_failure() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    let ns = "evacuate";
    labelled_namespace(&client, ns).await;

    // nodeMaintenance: cordon the VM's node, the VM moves.
    create(
        &client,
        ns,
        &migratable("evac", &policy("[{type: nodeMaintenance}]")),
    )
    .await;
    let w = wait_for(&client, ns, "evac", TIMEOUT, is_running).await;
    let first = node_of(&w).expect("node");
    let started = Instant::now();
    cordon(&client, &first, true).await;
    let w = wait_for(&client, ns, "evac", TIMEOUT, |w| {
        record(w).is_some_and(|r| r.automatic && r.phase == "Succeeded")
            && node_of(w).is_some_and(|n| n != first)
    })
    .await;
    eprintln!(
        "[figure] nodeMaintenance: moved {:?} after the cordon",
        started.elapsed()
    );
    let r = record(&w).expect("record");
    assert_eq!(r.trigger.as_deref(), Some("nodeMaintenance"));
    cordon(&client, &first, false).await;

    // resourcePressure: the node's requests pass 80%: to the least loaded node.
    create(
        &client,
        ns,
        &migratable(
            "hot",
            &policy("[{type: resourcePressure, threshold: \"80%\"}]"),
        ),
    )
    .await;
    let w = wait_for(&client, ns, "hot", TIMEOUT, is_running).await;
    let hot = node_of(&w).expect("node");
    let others: Vec<String> = cluster
        .sim
        .node_names()
        .into_iter()
        .filter(|n| *n != hot)
        .collect();
    let load = |cpu: &str| json!({"metadata": {"annotations": {"wukong.novasphere.dev/requested-cpu": cpu}}});
    patch_node(&client, &others[0], load("6")).await;
    patch_node(&client, &others[1], load("1")).await;
    patch_node(&client, &hot, load("7500m")).await;
    let w = wait_for(&client, ns, "hot", TIMEOUT, |w| {
        record(w).is_some_and(|r| r.phase == "Succeeded")
            && node_of(w).as_deref() == Some(others[1].as_str())
    })
    .await;
    assert_eq!(
        record(&w).expect("record").trigger.as_deref(),
        Some("resourcePressure")
    );
    for node in cluster.sim.node_names() {
        patch_node(
            &client,
            &node,
            json!({"metadata": {"annotations": {"wukong.novasphere.dev/requested-cpu": null}}}),
        )
        .await;
    }

    // nodeFailure: NotReady past the grace time: the VM restarts on another node.
    cluster
        .sim
        .update_config(|c| c.node_failure_delay = Duration::from_secs(600));
    create(
        &client,
        ns,
        &migratable(
            "fragile",
            &policy("[{type: nodeFailure, gracePeriodSeconds: 2}]"),
        ),
    )
    .await;
    let w = wait_for(&client, ns, "fragile", TIMEOUT, is_running).await;
    let failing = node_of(&w).expect("node");
    let started = Instant::now();
    cluster
        .sim
        .set_node_ready(&failing, false)
        .await
        .expect("node NotReady");
    let w = wait_for(&client, ns, "fragile", TIMEOUT, |w| {
        record(w).is_some_and(|r| r.phase == "Restarted")
            && is_running(w)
            && node_of(w).is_some_and(|n| n != failing)
    })
    .await;
    eprintln!(
        "[figure] nodeFailure: running elsewhere {:?} after NotReady",
        started.elapsed()
    );
    let r = record(&w).expect("record");
    assert_eq!(
        (r.trigger.as_deref(), r.source_node.as_deref()),
        (Some("nodeFailure"), Some(failing.as_str()))
    );
    assert!(
        r.message.contains("live migration is impossible"),
        "{}",
        r.message
    );
    cluster
        .sim
        .set_node_ready(&failing, true)
        .await
        .expect("node Ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_the_limit_of_automatic_migrations_run_at_once() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let extra = "[controller]\nmaxConcurrentAutomaticMigrations = 1\n";
    let _operator = InProcess::start(client.clone(), &host_config("cdi", extra)).await;
    let ns = "limit";
    labelled_namespace(&client, ns).await;
    let nodes = cluster.sim.node_names();
    // Both VMs on the first node: the others cordoned while they start.
    for node in &nodes[1..] {
        cordon(&client, node, true).await;
    }
    for name in ["a", "b"] {
        create(
            &client,
            ns,
            &migratable(name, &policy("[{type: nodeMaintenance}]")),
        )
        .await;
    }
    for name in ["a", "b"] {
        wait_for(&client, ns, name, TIMEOUT, is_running).await;
    }
    for node in &nodes[1..] {
        cordon(&client, node, false).await;
    }
    cluster
        .sim
        .update_config(|c| c.migration_duration = Duration::from_secs(2));
    cordon(&client, &nodes[0], true).await;

    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    let (mut most, mut waited) = (0, false);
    let started = Instant::now();
    loop {
        let in_flight = migrations(&client, ns)
            .await
            .iter()
            .filter(|m| {
                !matches!(
                    m.data["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed")
                )
            })
            .count();
        most = most.max(in_flight);
        let mut moved = 0;
        for name in ["a", "b"] {
            let w = api.get(name).await.expect("get");
            let r = record(&w);
            waited |= r
                .as_ref()
                .is_some_and(|r| r.message.contains("waiting for a migration slot"));
            if r.is_some_and(|r| r.phase == "Succeeded")
                && node_of(&w).is_some_and(|n| n != nodes[0])
            {
                moved += 1;
            }
        }
        if moved == 2 {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "both VMs did not move");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "[figure] limit 1: both moved in {:?}, at most {most} in flight",
        started.elapsed()
    );
    assert_eq!(most, 1, "never more than one automatic migration in flight");
    assert!(waited, "one VM waited for a slot");
    assert_eq!(migrations(&client, ns).await.len(), 2);
}

/// A pseudo-random delay (no rand crate): the std hasher is seeded randomly per process.
fn random_ms(below: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % below
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_migration_the_operator_creates_one_migration_object_per_request() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wukong.toml");
    std::fs::write(&config, host_config("cdi", "")).expect("config");
    let log = dir.path().join("operator.log");
    let ns = "crash";
    labelled_namespace(&client, ns).await;
    cluster
        .sim
        .update_config(|c| c.migration_duration = Duration::from_millis(1500));

    let mut operator = Some(OperatorProcess::start(&cluster, &config, &log));
    create(&client, ns, &migratable("vm", "")).await;
    let w = wait_for(&client, ns, "vm", TIMEOUT, is_running).await;
    let mut here = node_of(&w).expect("node");
    let mut kills = 0;
    for round in 0..4 {
        let there = other_node(&cluster, &[&here]);
        let id = format!("crash-{round}");
        let started = Instant::now();
        set_migration(
            &client,
            ns,
            "vm",
            json!({"targetNode": there, "requestId": id}),
        )
        .await;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(random_ms(600))).await;
            drop(operator.take());
            kills += 1;
            operator = Some(OperatorProcess::start(&cluster, &config, &log));
        }
        let w = wait_for(&client, ns, "vm", TIMEOUT, finished(&id)).await;
        eprintln!(
            "[figure] {id}: finished {:?} after the spec change, 5 kills",
            started.elapsed()
        );
        assert_eq!(record(&w).expect("record").phase, "Succeeded");
        assert_eq!(node_of(&w).as_deref(), Some(there.as_str()));
        assert_eq!(
            for_request(&migrations(&client, ns).await, &id),
            1,
            "{id}: one migration object"
        );
        here = there;
    }
    eprintln!("[figure] {kills} SIGKILLs mid-migration, 0 duplicate migration objects");
    assert_eq!(migrations(&client, ns).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordon_starts_the_evacuation_at_once_not_at_the_next_poll() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    // The migration step polls every 10 minutes here: only the Node watch can be quick.
    let config =
        host_config("cdi", "").replace("watchIntervalSeconds = 1", "watchIntervalSeconds = 600");
    assert!(config.contains("watchIntervalSeconds = 600"), "{config}");
    let _operator = InProcess::start(client.clone(), &config).await;
    let ns = "prompt";
    labelled_namespace(&client, ns).await;
    create(
        &client,
        ns,
        &migratable("prompt", &policy("[{type: nodeMaintenance}]")),
    )
    .await;
    let w = wait_for(&client, ns, "prompt", TIMEOUT, is_running).await;
    // Past the reconciles the start itself brings.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = node_of(&w).expect("node");
    let started = Instant::now();
    cordon(&client, &first, true).await;
    wait_for(&client, ns, "prompt", TIMEOUT, |w| {
        record(w).is_some_and(|r| r.automatic && r.phase == "Succeeded")
            && node_of(w).is_some_and(|n| n != first)
    })
    .await;
    eprintln!(
        "[figure] cordon to evacuated, polling every 600 s: {:?}",
        started.elapsed()
    );
    cordon(&client, &first, false).await;
}
