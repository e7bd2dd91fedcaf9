//! The operator on the real apiserver + KubeVirt simulator with the real compiled
//! plugins: a Wukong reaches Running, status follows the VM, disks grow (never shrink),
//! deletion cleans up and honours retain, bad input is refused, a broken plugin fails only
//! its own Wukong, and a converged Wukong costs no writes.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::operator::{
    Cluster, InProcess, condition, create, host_config, is_running, list, names, namespace,
    wait_for,
};
use wukong::api::Wukong;

const TIMEOUT: Duration = Duration::from_secs(30);

const TWO_DISKS_ONE_NETWORK: &str = r#"
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata: {name: web}
spec:
  cpu: 2
  memory: 2Gi
  disks:
  - {name: root, size: 10Gi, image: "docker://quay.io/containerdisks/fedora:40", bootOrder: 1}
  - {name: data, size: 20Gi, image: "https://images.example.com/data.qcow2", retain: true}
  networks:
  - name: lan
    config: {bridge: br-lan, vlan: 100}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_end_to_end() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let broken = support::operator::hostile_backend("broken", r#"{ mode = "trap" }"#);
    let operator = InProcess::start(client.clone(), &host_config("cdi", &broken)).await;
    let ns = "e2e";
    namespace(&client, ns).await;

    // A Wukong with two image disks and one Multus network reaches Running.
    create(&client, ns, TWO_DISKS_ONE_NETWORK).await;
    let web = wait_for(&client, ns, "web", TIMEOUT, is_running).await;
    let status = web.status.clone().expect("status");
    assert_eq!(
        names(
            &list(
                &client,
                ns,
                "k8s.cni.cncf.io/v1",
                "NetworkAttachmentDefinition"
            )
            .await
        ),
        ["web-lan-wfb72t3f5w"]
    );
    assert_eq!(
        names(&list(&client, ns, "cdi.kubevirt.io/v1beta1", "DataVolume").await),
        ["web-data-onl6gswubp", "web-root-yaruyclkno"]
    );
    assert_eq!(
        names(&list(&client, ns, "kubevirt.io/v1", "VirtualMachine").await),
        ["web"]
    );
    let vmis = list(&client, ns, "kubevirt.io/v1", "VirtualMachineInstance").await;
    assert_eq!(names(&vmis), ["web"]);
    let vmi_node = vmis[0].data["status"]["nodeName"]
        .as_str()
        .map(str::to_owned);
    assert!(vmi_node.is_some(), "the VMI is scheduled");
    assert_eq!(status.node_name, vmi_node, "status follows the VMI's node");
    for ready in ["Ready", "NetworksConfigured", "VolumesBound"] {
        assert_eq!(
            condition(&web, ready).map(|c| c.0).as_deref(),
            Some("True"),
            "{ready}"
        );
    }
    assert_eq!(
        condition(&web, "StepFailed").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(status.observed_generation, web.metadata.generation);
    assert_eq!(
        status
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.bound))
            .collect::<Vec<_>>(),
        [("root", true), ("data", true)]
    );
    let steps: Vec<&str> = status.plugins.iter().map(|p| p.step.as_str()).collect();
    assert_eq!(steps, ["network", "storage", "lifecycle", "migration"]);
    assert!(
        status
            .plugins
            .iter()
            .all(|p| p.digest.len() == 64 && !p.version.is_empty())
    );
    let vm = &list(&client, ns, "kubevirt.io/v1", "VirtualMachine").await[0];
    assert_eq!(vm.data["spec"]["runStrategy"], "Always");
    assert!(
        vm.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o.uid == web.uid().unwrap_or_default()))
    );

    // A converged Wukong makes no write: poke it (a label change reconciles it) and count.
    // Converged means the status has stopped moving (the VM's own status lags its VMI).
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    let mut status_before = web.status.clone();
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = api.get("web").await.expect("get").status;
        if now == status_before {
            break;
        }
        status_before = now;
    }
    let writes_before = operator.ctx.applier.stats.writes();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"poke": "1"}}})),
    )
    .await
    .expect("poke");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        operator.ctx.applier.stats.writes(),
        writes_before,
        "a converged reconcile writes nothing"
    );
    assert_eq!(
        api.get("web").await.expect("get").status,
        status_before,
        "status unchanged"
    );
    assert!(
        operator.ctx.applier.stats.skipped.load(Ordering::Relaxed) > 0,
        "the reconcile ran and found everything in place"
    );

    // Growing a disk expands its claim; shrinking is refused with a clear condition.
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"disks": [
        {"name": "root", "size": "10Gi", "image": "docker://quay.io/containerdisks/fedora:40", "bootOrder": 1},
        {"name": "data", "size": "30Gi", "image": "https://images.example.com/data.qcow2", "retain": true}]}})))
        .await
        .expect("grow");
    wait_for(&client, ns, "web", TIMEOUT, |w| {
        w.status.as_ref().is_some_and(|s| {
            s.volumes
                .iter()
                .any(|v| v.name == "data" && v.capacity.as_deref() == Some("30Gi"))
        })
    })
    .await;
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"disks": [
        {"name": "root", "size": "5Gi", "image": "docker://quay.io/containerdisks/fedora:40", "bootOrder": 1},
        {"name": "data", "size": "30Gi", "image": "https://images.example.com/data.qcow2", "retain": true}]}})))
        .await
        .expect("shrink");
    let refused = wait_for(&client, ns, "web", TIMEOUT, |w| {
        w.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.status == "False" && c.message.to_lowercase().contains("shrink"))
        })
    })
    .await;
    let root = refused
        .status
        .as_ref()
        .and_then(|s| s.volumes.iter().find(|v| v.name == "root").cloned())
        .expect("root volume");
    assert_eq!(root.capacity.as_deref(), Some("10Gi"), "never shrunk");

    // A plugin that traps fails its own Wukong only.
    create(&client, ns, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: doomed}\nspec: {cpu: 1, memory: 1Gi, disks: [{name: root, size: 1Gi, backend: broken}]}\n").await;
    create(&client, ns, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: fine}\nspec: {cpu: 1, memory: 1Gi, disks: [{name: root, size: 1Gi}]}\n").await;
    let doomed = wait_for(&client, ns, "doomed", TIMEOUT, |w| {
        condition(w, "StepFailed").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition(&doomed, "StepFailed").expect("condition");
    assert_eq!(reason, "Trap");
    assert!(
        message.contains("hostile@0.1.0") && message.contains("storage"),
        "names the step and the plugin: {message}"
    );
    wait_for(&client, ns, "fine", TIMEOUT, is_running).await;

    // Deletion: finalizers run, objects go, the retained disk stays (without its owner).
    api.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = async {
        while api.get_opt("web").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, gone)
        .await
        .expect("the finalizer completes");
    assert!(
        list(
            &client,
            ns,
            "k8s.cni.cncf.io/v1",
            "NetworkAttachmentDefinition"
        )
        .await
        .is_empty(),
        "the created NAD is removed"
    );
    let dvs = list(&client, ns, "cdi.kubevirt.io/v1beta1", "DataVolume").await;
    let kept: Vec<_> = dvs
        .iter()
        .filter(|d| d.name_any().starts_with("web-"))
        .collect();
    assert_eq!(
        kept.iter().map(|d| d.name_any()).collect::<Vec<_>>(),
        ["web-data-onl6gswubp"],
        "only the retained disk stays"
    );
    assert!(
        kept[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.iter().all(|o| o.kind != "Wukong")),
        "retained disk is orphaned"
    );
    operator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_wukongs_are_refused_by_the_apiserver() {
    let cluster = Cluster::start().await;
    let api = Api::<Wukong>::namespaced(cluster.client(), "default");
    let cases = [
        (
            "negative cpu",
            json!({"cpu": -1, "memory": "1Gi"}),
            "spec.cpu",
        ),
        (
            "bad memory",
            json!({"cpu": 1, "memory": "lots"}),
            "spec.memory",
        ),
        (
            "unknown action",
            json!({"cpu": 1, "memory": "1Gi", "lifecycleAction": {"action": "explode"}}),
            "spec.lifecycleAction.action",
        ),
        (
            "missing disk size",
            json!({"cpu": 1, "memory": "1Gi", "disks": [{"name": "root"}]}),
            "size",
        ),
        (
            "bad disk name",
            json!({"cpu": 1, "memory": "1Gi", "disks": [{"name": "Root_Disk", "size": "1Gi"}]}),
            "spec.disks.name",
        ),
        // Integers past what the operator decodes would make the Wukong unreadable (and,
        // in a list, every Wukong with it): the schema bounds each of them.
        (
            "huge boot order",
            json!({"cpu": 1, "memory": "1Gi", "disks": [{"name": "root", "size": "1Gi", "bootOrder": 1_u64 << 40}]}),
            "spec.disks.bootOrder",
        ),
        (
            "huge completion timeout",
            json!({"cpu": 1, "memory": "1Gi", "migration": {"completionTimeoutPerGiB": 1_u64 << 62}}),
            "spec.migration.completionTimeoutPerGiB",
        ),
        (
            "huge trigger grace",
            json!({"cpu": 1, "memory": "1Gi", "migrationPolicy": {"triggerConditions": [{"type": "nodeFailure", "gracePeriodSeconds": 1_u64 << 33}]}}),
            "gracePeriodSeconds",
        ),
        (
            "too many disks",
            json!({"cpu": 1, "memory": "1Gi", "disks": (0..65).map(|i| json!({"name": format!("d{i}"), "size": "1Gi"})).collect::<Vec<_>>()}),
            "spec.disks",
        ),
        (
            "overlong request id",
            json!({"cpu": 1, "memory": "1Gi", "lifecycleAction": {"action": "stop", "requestId": "r".repeat(1025)}}),
            "spec.lifecycleAction.requestId",
        ),
    ];
    for (what, spec, field) in cases {
        let object: Wukong = serde_json::from_value(json!({"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong", "metadata": {"name": "bad"}, "spec": {"cpu": 1, "memory": "1Gi"}})).expect("base");
        let mut value = serde_json::to_value(&object).expect("value");
        value["spec"] = spec;
        let request =
            http::Request::post("/apis/vm.novasphere.dev/v1alpha1/namespaces/default/wukongs")
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&value).expect("body"))
                .expect("request");
        let error = cluster
            .client()
            .request_text(request)
            .await
            .expect_err(what);
        let message = error.to_string();
        assert!(
            message.contains(field),
            "{what}: the message names {field}: {message}"
        );
    }
    // The seeds' YAML is accepted as written.
    for seed in ["restart", "stop"] {
        let yaml = format!(
            "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: seed-{seed}}}\nspec:\n  cpu: 2\n  memory: 4Gi\n  lifecycleAction:\n    action: {seed}\n    force: false\n    gracePeriodSeconds: 60\n"
        );
        let wukong: Wukong = serde_yaml::from_str(&yaml).expect("seed yaml");
        api.create(&PostParams::default(), &wukong)
            .await
            .expect("seed accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wukong_the_operator_cannot_read_stops_no_other() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let ns = "unreadable";
    namespace(&client, ns).await;
    // Nested past serde_json's depth limit: the apiserver stores it, no typed client
    // (and no list of Wukongs) can decode it.
    let mut ipam = json!({"type": "static"});
    for _ in 0..200 {
        ipam = json!({"nested": ipam});
    }
    let deep = json!({"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
        "metadata": {"name": "deep"},
        "spec": {"cpu": 1, "memory": "1Gi", "networks": [{"name": "lan", "config": {"ipam": ipam}}]}});
    let request = http::Request::post(format!(
        "/apis/vm.novasphere.dev/v1alpha1/namespaces/{ns}/wukongs"
    ))
    .header("Content-Type", "application/json")
    .body(serde_json::to_vec(&deep).expect("body"))
    .expect("request");
    client
        .request_text(request)
        .await
        .expect("the apiserver stores it");

    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    create(
        &client,
        ns,
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: fine}\nspec: {cpu: 1, memory: 1Gi}\n",
    )
    .await;
    wait_for(&client, ns, "fine", TIMEOUT, is_running).await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns);
    let reported = async {
        loop {
            let found = events
                .list(&Default::default())
                .await
                .expect("events")
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Unreadable")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("deep")
                });
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, reported)
        .await
        .expect("an Unreadable warning on the Wukong it cannot read");
}
