//! Data safety on the real apiserver + KubeVirt simulator with the real plugins: Wukong
//! never writes or deletes what it did not create (the host's ownership rule, whatever a
//! plugin returns), derived names never land two Wukongs on one object, retained disks
//! survive every kind of delete, and the status never forgets a request.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::operator::{
    Cluster, InProcess, condition, create, host_config, hostile_backend, is_running, namespace,
    start_with_metrics, wait_for, warnings,
};
use wukong::api::Wukong;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The host config with the hostile plugin as extra storage backends, one per mode.
fn config() -> String {
    let backend = |name: &str, mode: &str, target: &str| {
        hostile_backend(
            name,
            &format!(r#"{{ mode = "{mode}", target = "{target}" }}"#),
        )
    };
    let extra = [
        backend("foreign", "apply-foreign", "precious"),
        backend("others", "apply-other-wukongs", ""),
        backend("spoof", "spoof-owner-mark", "spoofed"),
        backend("rewrite", "rewrite-foreign-class", "site-default"),
        backend("stopper", "stop-other-vm", "victim"),
        backend("pather", "path-in-name", "vm-b"),
        backend("mover", "migrate-other-vmi", "victim"),
        backend("stuck", "fails-finalize", ""),
        backend("ready", "set-ready", ""),
        backend("noisy", "many-conditions", ""),
        backend("flood", "log-flood", ""),
    ]
    .concat();
    host_config("longhorn", &extra)
}

fn wukong_yaml(name: &str, disks: &str) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: {disks}\n"
    )
}

async fn pvc(client: &Client, ns: &str, name: &str) -> Option<PersistentVolumeClaim> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get pvc")
}

async fn create_pvc(client: &Client, ns: &str, name: &str, size: &str) {
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "legacy"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }))
    .expect("pvc");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create pvc");
}

fn request(claim: &PersistentVolumeClaim) -> String {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

fn claim_of(wukong: &Wukong, disk: &str) -> String {
    wukong
        .status
        .as_ref()
        .and_then(|s| s.volumes.iter().find(|v| v.name == disk))
        .map(|v| v.claim_name.clone())
        .unwrap_or_default()
}

fn step_failed(wukong: &Wukong) -> Option<(String, String)> {
    condition(wukong, "StepFailed")
        .filter(|c| c.0 == "True")
        .map(|c| (c.1, c.2))
}

async fn delete_and_wait(client: &Client, ns: &str, name: &str, params: &DeleteParams) {
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    api.delete(name, params).await.expect("delete wukong");
    let gone = async {
        while api.get_opt(name).await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, gone)
        .await
        .unwrap_or_else(|_| panic!("{ns}/{name} was not deleted"));
}

/// Deletes a finalized Wukong whose finalize cannot succeed and returns the message of the
/// `FinalizeFailed` it then reports.
async fn delete_until_stuck(client: &Client, ns: &str, name: &str) -> String {
    wait_for(client, ns, name, TIMEOUT, |w| {
        w.finalizers()
            .iter()
            .any(|f| f == "vm.novasphere.dev/cleanup")
            && w.status.as_ref().and_then(|s| s.observed_generation) == w.metadata.generation
    })
    .await;
    Api::<Wukong>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let stuck = wait_for(client, ns, name, TIMEOUT, |w| {
        step_failed(w).is_some_and(|(reason, _)| reason == "FinalizeFailed")
    })
    .await;
    step_failed(&stuck).expect("StepFailed").1
}

async fn dynamic(client: &Client, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .expect("discovery");
    Api::namespaced_with(client.clone(), ns, &resource)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_objects_are_neither_adopted_nor_deleted() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "foreign";
    namespace(&client, ns).await;

    // Someone else's claim at the name Wukong once derived for vm1's disk `data`.
    create_pvc(&client, ns, "vm1-data", "1Gi").await;
    create(
        &client,
        ns,
        &wukong_yaml("vm1", "[{name: data, size: 2Gi}]"),
    )
    .await;
    let vm1 = wait_for(&client, ns, "vm1", TIMEOUT, is_running).await;
    assert_ne!(
        claim_of(&vm1, "data"),
        "vm1-data",
        "the foreign claim is not used"
    );
    let foreign = pvc(&client, ns, "vm1-data").await.expect("still there");
    assert!(foreign.metadata.owner_references.is_none(), "not adopted");
    assert_eq!(request(&foreign), "1Gi", "not resized");
    assert!(!foreign.labels().contains_key("vm.novasphere.dev/wukong"));

    // A hand-made VirtualMachine of the Wukong's name: refused, left as it is.
    let vms = dynamic(&client, ns, "kubevirt.io/v1", "VirtualMachine").await;
    let legacy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "legacy"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}},
    }))
    .expect("vm");
    vms.create(&PostParams::default(), &legacy)
        .await
        .expect("create vm");
    create(&client, ns, &wukong_yaml("legacy", "[]")).await;
    let refused = wait_for(&client, ns, "legacy", TIMEOUT, |w| step_failed(w).is_some()).await;
    let (reason, message) = step_failed(&refused).expect("StepFailed");
    assert_eq!(reason, "NameTaken", "{message}");
    assert!(
        message.contains("VirtualMachine legacy") && message.contains("no owner"),
        "names the object and its owner: {message}"
    );
    let status = refused.status.as_ref().expect("status");
    assert_eq!(status.observed_generation, refused.metadata.generation);
    let vm = vms.get("legacy").await.expect("vm");
    assert_eq!(vm.data["spec"]["runStrategy"], "Halted", "not started");
    assert!(vm.metadata.owner_references.is_none(), "not adopted");
    let noted = async {
        while warnings(&client, ns, "NameTaken").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, noted)
        .await
        .expect("a NameTaken warning event");

    for name in ["vm1", "legacy"] {
        delete_and_wait(&client, ns, name, &DeleteParams::default()).await;
    }
    assert!(
        pvc(&client, ns, "vm1-data").await.is_some(),
        "the foreign PVC survives"
    );
    assert!(
        vms.get_opt("legacy").await.expect("get").is_some(),
        "the foreign VM survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wukongs_whose_names_collide_get_distinct_disks() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "collide";
    namespace(&client, ns).await;
    create(
        &client,
        ns,
        &wukong_yaml("web", "[{name: db-data, size: 1Gi}]"),
    )
    .await;
    create(
        &client,
        ns,
        &wukong_yaml("web-db", "[{name: data, size: 1Gi}]"),
    )
    .await;
    let web = wait_for(&client, ns, "web", TIMEOUT, is_running).await;
    let web_db = wait_for(&client, ns, "web-db", TIMEOUT, is_running).await;
    let (a, b) = (claim_of(&web, "db-data"), claim_of(&web_db, "data"));
    assert_ne!(a, b, "two Wukongs, two claims");
    for (claim, owner) in [(&a, &web), (&b, &web_db)] {
        assert!(claim.len() <= 63, "{claim} fits a DNS label");
        let claim = pvc(&client, ns, claim).await.expect("claim");
        let controller = claim
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .expect("controller");
        assert_eq!(Some(&controller.uid), owner.metadata.uid.as_ref());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_write_nothing_that_is_not_theirs() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "hostile";
    namespace(&client, ns).await;
    let refusal = |name: &'static str| {
        let client = client.clone();
        async move { wait_for(&client, ns, name, TIMEOUT, |w| step_failed(w).is_some()).await }
    };

    // Onto a claim nobody gave it.
    create_pvc(&client, ns, "precious", "1Gi").await;
    create(
        &client,
        ns,
        &wukong_yaml("h1", "[{name: d, size: 1Gi, backend: foreign}]"),
    )
    .await;
    let (reason, message) = step_failed(&refusal("h1").await).expect("refused");
    assert_eq!(reason, "NameTaken", "{message}");
    let precious = pvc(&client, ns, "precious").await.expect("precious");
    assert!(
        !precious.labels().contains_key("hostile"),
        "nothing written"
    );
    assert!(precious.metadata.owner_references.is_none());

    // Onto another Wukong's claim.
    create(
        &client,
        ns,
        &wukong_yaml("victim", "[{name: data, size: 1Gi}]"),
    )
    .await;
    let victim = wait_for(&client, ns, "victim", TIMEOUT, is_running).await;
    create(
        &client,
        ns,
        &wukong_yaml("h2", "[{name: d, size: 1Gi, backend: others}]"),
    )
    .await;
    let (reason, message) = step_failed(&refusal("h2").await).expect("refused");
    assert_eq!(reason, "NameTaken", "{message}");
    assert!(message.contains("controlled by Wukong victim"), "{message}");
    let victims = pvc(&client, ns, &claim_of(&victim, "data"))
        .await
        .expect("claim");
    assert!(!victims.labels().contains_key("hostile"), "nothing written");

    // Its own ownership marks on a cluster-scoped object.
    create(
        &client,
        ns,
        &wukong_yaml("h3", "[{name: d, size: 1Gi, backend: spoof}]"),
    )
    .await;
    let (reason, message) = step_failed(&refusal("h3").await).expect("refused");
    assert_eq!(reason, "Capability", "{message}");
    assert!(message.contains("ownership mark"), "{message}");
    let classes = Api::<StorageClass>::all(client.clone());
    assert!(
        classes.get_opt("spoofed").await.expect("get").is_none(),
        "nothing written"
    );

    // A cluster-scoped object the backend did not make.
    let site: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "site-default"}, "provisioner": "site.example.com"}))
    .expect("class");
    classes
        .create(&PostParams::default(), &site)
        .await
        .expect("create class");
    create(
        &client,
        ns,
        &wukong_yaml("h4", "[{name: d, size: 1Gi, backend: rewrite}]"),
    )
    .await;
    let (reason, message) = step_failed(&refusal("h4").await).expect("refused");
    assert_eq!(reason, "NameTaken", "{message}");
    let site = classes.get("site-default").await.expect("class");
    assert!(site.parameters.is_none(), "nothing written");
    assert!(site.annotations().is_empty(), "no mark added");

    // A good plugin's next call goes through.
    create(
        &client,
        ns,
        &wukong_yaml("good", "[{name: data, size: 1Gi}]"),
    )
    .await;
    wait_for(&client, ns, "good", TIMEOUT, is_running).await;
    wait_for(&client, ns, "victim", TIMEOUT, is_running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_keeps_the_request_record_and_reports_the_failure() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "stale";
    namespace(&client, ns).await;
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    create(
        &client,
        ns,
        &wukong_yaml("vm1", "[{name: data, size: 1Gi}]"),
    )
    .await;
    wait_for(&client, ns, "vm1", TIMEOUT, is_running).await;

    let patch = |spec: Value| {
        let api = api.clone();
        async move {
            api.patch(
                "vm1",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .expect("patch")
        }
    };
    patch(json!({"lifecycleAction": {"action": "restart", "requestId": "r1"}})).await;
    let done = |w: &Wukong| {
        w.status
            .as_ref()
            .and_then(|s| s.lifecycle_state.as_ref())
            .is_some_and(|l| {
                l.current_action.is_none()
                    && l.history.first().is_some_and(|r| r.request_id == "r1")
            })
    };
    wait_for(&client, ns, "vm1", TIMEOUT, |w| done(w) && is_running(w)).await;
    let calls = || {
        (
            cluster.sim.count_calls("stop", ns, "vm1"),
            cluster.sim.count_calls("start", ns, "vm1"),
        )
    };
    let restarted = calls();

    // The disk's backend goes away: the failure shows at the current generation, and the
    // lifecycle record (the only memory of r1) stays.
    let broken =
        patch(json!({"disks": [{"name": "data", "size": "1Gi", "backend": "nope"}]})).await;
    let failed = wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        step_failed(w).is_some()
            && w.status.as_ref().and_then(|s| s.observed_generation) == broken.metadata.generation
    })
    .await;
    let (reason, message) = step_failed(&failed).expect("StepFailed");
    assert_eq!(reason, "UnknownBackend", "{message}");
    assert!(done(&failed), "r1's record is kept: {:?}", failed.status);
    assert_eq!(
        condition(&failed, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert!(
        !claim_of(&failed, "data").is_empty(),
        "the volume is kept too"
    );

    // Mended: Running again, and r1 is not done a second time.
    patch(json!({"disks": [{"name": "data", "size": "1Gi", "backend": null}]})).await;
    let mended = wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        is_running(w) && step_failed(w).is_none()
    })
    .await;
    assert!(done(&mended));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls(), restarted, "restart r1 ran exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_disks_survive_a_foreground_delete() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "retain";
    namespace(&client, ns).await;
    create(
        &client,
        ns,
        &wukong_yaml(
            "keep",
            "[{name: data, size: 1Gi, retain: true}, {name: scratch, size: 1Gi}, {name: old, size: 1Gi, retain: true}]",
        ),
    )
    .await;
    let keep = wait_for(&client, ns, "keep", TIMEOUT, is_running).await;
    let uid = keep.metadata.uid.clone().expect("uid");
    let (data, scratch, old) = (
        claim_of(&keep, "data"),
        claim_of(&keep, "scratch"),
        claim_of(&keep, "old"),
    );
    let claim = pvc(&client, ns, &data).await.expect("data");
    assert!(
        claim.metadata.owner_references.is_none(),
        "no reference the GC acts on"
    );
    assert_eq!(
        claim.annotations().get("vm.novasphere.dev/owner-uid"),
        Some(&uid)
    );
    assert!(
        pvc(&client, ns, &scratch)
            .await
            .expect("scratch")
            .metadata
            .owner_references
            .is_some_and(|o| o.iter().any(|o| o.uid == uid))
    );

    // A retained claim as the previous version left it (our controller reference) loses
    // the reference on the next reconcile.
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    claims
        .patch(
            &data,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"ownerReferences": [{
                "apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong", "name": "keep",
                "uid": uid, "controller": true, "blockOwnerDeletion": true}]}})),
        )
        .await
        .expect("patch");
    let released = async {
        while pvc(&client, ns, &data)
            .await
            .is_some_and(|c| c.metadata.owner_references.is_some_and(|o| !o.is_empty()))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, released)
        .await
        .expect("the old reference is dropped");

    // A retained disk removed from the spec stays retained.
    Api::<Wukong>::namespaced(client.clone(), ns)
        .patch(
            "keep",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"disks": [
                {"name": "data", "size": "1Gi", "retain": true}, {"name": "scratch", "size": "1Gi"}]}})),
        )
        .await
        .expect("patch");
    wait_for(&client, ns, "keep", TIMEOUT, |w| {
        w.status.as_ref().and_then(|s| s.observed_generation) == w.metadata.generation
            && is_running(w)
    })
    .await;

    delete_and_wait(&client, ns, "keep", &DeleteParams::foreground()).await;
    assert!(
        pvc(&client, ns, &data).await.is_some(),
        "the retained disk survives"
    );
    assert!(
        pvc(&client, ns, &old).await.is_some(),
        "the one removed from the spec too"
    );
    let scratch_gone = async {
        while pvc(&client, ns, &scratch).await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, scratch_gone)
        .await
        .expect("the disk not retained goes");
}

/// The newest finished request's id and outcome, once nothing is in progress.
fn last_request(w: &Wukong) -> Option<(String, String, String)> {
    let state = w.status.as_ref()?.lifecycle_state.as_ref()?;
    if state.current_action.is_some() {
        return None;
    }
    state
        .history
        .first()
        .map(|r| (r.request_id.clone(), r.outcome.clone(), r.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_request_is_not_run_again_and_a_refused_reboot_is_not_a_success() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "once";
    namespace(&client, ns).await;
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    // Guests without an agent: a soft reboot is then an ACPI power-button press.
    cluster.sim.update_config(|c| c.guest_agent = false);
    create(&client, ns, &wukong_yaml("vm1", "[]")).await;
    wait_for(&client, ns, "vm1", TIMEOUT, is_running).await;
    let act = |action: Value| {
        let api = api.clone();
        async move {
            api.patch(
                "vm1",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"lifecycleAction": action}})),
            )
            .await
            .expect("patch")
        }
    };
    let finished = |id: &'static str| {
        let client = client.clone();
        async move {
            wait_for(&client, ns, "vm1", TIMEOUT, |w| {
                last_request(w).is_some_and(|r| r.0 == id)
            })
            .await
        }
    };

    act(json!({"action": "stop", "requestId": "s1", "gracePeriodSeconds": 1})).await;
    finished("s1").await;
    act(json!({"action": "start", "requestId": "s2"})).await;
    finished("s2").await;
    wait_for(&client, ns, "vm1", TIMEOUT, is_running).await;
    let stops = cluster.sim.count_calls("stop", ns, "vm1");

    // GitOps rolls the manifest back to the stop request that already ran.
    let rolled_back =
        act(json!({"action": "stop", "requestId": "s1", "gracePeriodSeconds": 1})).await;
    let seen = wait_for(&client, ns, "vm1", TIMEOUT, |w| {
        w.status.as_ref().and_then(|s| s.observed_generation) == rolled_back.metadata.generation
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.sim.count_calls("stop", ns, "vm1"),
        stops,
        "s1 is not run again"
    );
    assert_eq!(last_request(&seen).map(|r| r.0).as_deref(), Some("s2"));
    wait_for(&client, ns, "vm1", TIMEOUT, is_running).await;

    // A guest without agent and with ACPI off cannot be soft-rebooted: KubeVirt says 409.
    let vmis = dynamic(&client, ns, "kubevirt.io/v1", "VirtualMachineInstance").await;
    let vmi = vmis.get("vm1").await.expect("vmi");
    let conditions = vmi.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !conditions.iter().any(|c| c["type"] == "AgentConnected"),
        "no guest agent"
    );
    vmis.patch(
        "vm1",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"domain": {"features": {"acpi": {"enabled": false}}}}})),
    )
    .await
    .expect("patch vmi");
    act(json!({"action": "softReboot", "requestId": "b1"})).await;
    let rebooted = finished("b1").await;
    let (_, outcome, message) = last_request(&rebooted).expect("record");
    assert_eq!(outcome, "Refused", "{message}");
    assert!(message.contains("ACPI"), "KubeVirt's words: {message}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.sim.count_calls("softreboot", ns, "vm1"),
        1,
        "asked once, not again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_reach_only_the_wukongs_own_vm() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "actions";
    namespace(&client, ns).await;
    create(&client, ns, &wukong_yaml("victim", "[]")).await;
    wait_for(&client, ns, "victim", TIMEOUT, is_running).await;
    let refused = |name: &'static str| {
        let client = client.clone();
        async move { wait_for(&client, ns, name, TIMEOUT, |w| step_failed(w).is_some()).await }
    };
    let cases = [
        (
            "h-stop",
            "stopper",
            "VirtualMachine victim is not the Wukong h-stop's",
        ),
        ("h-path", "pather", "is not a valid object name"),
        (
            "h-move",
            "mover",
            "VirtualMachineInstance victim is not the Wukong h-move's",
        ),
    ];
    for (name, backend, expected) in cases {
        create(
            &client,
            ns,
            &wukong_yaml(
                name,
                &format!("[{{name: d, size: 1Gi, backend: {backend}}}]"),
            ),
        )
        .await;
        let (reason, message) = step_failed(&refused(name).await).expect("refused");
        assert_eq!(reason, "Capability", "{message}");
        assert!(message.contains(expected), "{name}: {message}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.sim.count_calls("stop", ns, "victim"),
        0,
        "nothing reached the victim"
    );
    let migrations = dynamic(
        &client,
        ns,
        "kubevirt.io/v1",
        "VirtualMachineInstanceMigration",
    )
    .await;
    assert!(
        migrations
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    wait_for(&client, ns, "victim", TIMEOUT, is_running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_stuck_on_a_failing_finalize_says_why_and_the_way_out() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "stuck";
    namespace(&client, ns).await;
    create(
        &client,
        ns,
        &wukong_yaml("vm1", "[{name: d, size: 1Gi, backend: stuck}]"),
    )
    .await;
    let message = delete_until_stuck(&client, ns, "vm1").await;
    let stuck = Api::<Wukong>::namespaced(client.clone(), ns)
        .get("vm1")
        .await
        .expect("get");
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    for part in [
        "storage step",
        "hostile@0.1.0",
        "unreachable",
        "remove the finalizer",
    ] {
        assert!(message.contains(part), "names {part:?}: {message}");
    }
    assert_eq!(
        stuck.status.as_ref().and_then(|s| s.phase),
        Some(wukong::api::WukongPhase::Terminating)
    );
    let noted = async {
        while warnings(&client, ns, "FinalizeFailed").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, noted)
        .await
        .expect("a FinalizeFailed warning event");

    // The documented way out.
    api.patch(
        "vm1",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "remove", "path": "/metadata/finalizers"}
            ]))
            .expect("json patch"),
        ),
    )
    .await
    .expect("remove the finalizer");
    let gone = async {
        while api.get_opt("vm1").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, gone)
        .await
        .expect("the Wukong goes");

    // A backend that is not (or no longer) configured is reported the same way.
    create(
        &client,
        ns,
        &wukong_yaml("vm2", "[{name: d, size: 1Gi, backend: removed}]"),
    )
    .await;
    let message = delete_until_stuck(&client, ns, "vm2").await;
    for part in [
        "storage backend \"removed\" is not configured",
        "remove the finalizer",
    ] {
        assert!(message.contains(part), "names {part:?}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_logs_past_their_bounds_fail_only_their_step() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &config()).await;
    let ns = "bounded";
    namespace(&client, ns).await;
    let cases = [
        (
            "h-ready",
            "ready",
            "OutcomeLimit",
            "condition Ready is the lifecycle step's",
        ),
        (
            "h-noisy",
            "noisy",
            "OutcomeLimit",
            "5000 conditions, at most 16",
        ),
        ("h-flood", "flood", "LogLimit", "log limit of 200 messages"),
    ];
    for (name, backend, _, _) in cases {
        create(
            &client,
            ns,
            &wukong_yaml(
                name,
                &format!("[{{name: d, size: 1Gi, backend: {backend}}}]"),
            ),
        )
        .await;
    }
    for (name, _, reason, expected) in cases {
        let failed = wait_for(&client, ns, name, TIMEOUT, |w| step_failed(w).is_some()).await;
        let (got, message) = step_failed(&failed).expect("StepFailed");
        assert_eq!(got, reason, "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message}");
        let status = failed.status.as_ref().expect("status");
        assert!(
            !status
                .conditions
                .iter()
                .any(|c| c.condition_type.starts_with("Noise")),
            "{name}: none of the plugin's conditions reached the status"
        );
    }
    create(
        &client,
        ns,
        &wukong_yaml("good", "[{name: data, size: 1Gi}]"),
    )
    .await;
    wait_for(&client, ns, "good", TIMEOUT, is_running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_asking_to_be_called_again_at_once_waits_for_the_floor() {
    use support::telemetry::{get, sample};
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let eager = hostile_backend("eager", r#"{ mode = "requeue-zero" }"#);
    let (_operator, address) = start_with_metrics(&cluster, dir.path(), "longhorn", &eager).await;
    let ns = "eager";
    namespace(&client, ns).await;
    create(
        &client,
        ns,
        &wukong_yaml("eager", "[{name: d, size: 1Gi, backend: eager}]"),
    )
    .await;
    let calls = || async {
        let (_, text) = get(address, "/metrics").await;
        sample(
            &text,
            "wukong_plugin_call_duration_seconds_count",
            &[("plugin", "hostile"), ("phase", "reconcile")],
        )
    };
    let started = std::time::Instant::now();
    while calls().await == 0.0 {
        assert!(started.elapsed() < TIMEOUT, "the plugin is never called");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the first reconciles (each status write brings one), the requeue alone drives it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = calls().await;
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let during = calls().await - before;
    eprintln!("[figure] requeue-0 plugin: {during} calls in {window:?}");
    // The 250 ms floor allows 16 in 4 s; without it, a call every few milliseconds.
    assert!(
        during <= 24.0,
        "{during} calls in {window:?}: the floor does not hold"
    );
    assert!(during >= 2.0, "{during} calls: the requeue is not honoured");
    create(
        &client,
        ns,
        &wukong_yaml("good", "[{name: data, size: 1Gi}]"),
    )
    .await;
    wait_for(&client, ns, "good", TIMEOUT, is_running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_repeating_an_event_every_call_publishes_it_once() {
    use support::telemetry::{get, sample};
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let loud = hostile_backend("loud", r#"{ mode = "event-flood" }"#);
    let (_operator, address) = start_with_metrics(&cluster, dir.path(), "longhorn", &loud).await;
    let ns = "loud";
    namespace(&client, ns).await;
    create(
        &client,
        ns,
        &wukong_yaml("loud", "[{name: d, size: 1Gi, backend: loud}]"),
    )
    .await;
    let metrics = || async { get(address, "/metrics").await.1 };
    let event_writes = |text: &str| {
        sample(
            text,
            "wukong_kube_requests_total",
            &[("verb", "create"), ("resource", "events")],
        ) + sample(
            text,
            "wukong_kube_requests_total",
            &[("verb", "patch"), ("resource", "events")],
        )
    };
    let calls = |text: &str| {
        sample(
            text,
            "wukong_plugin_call_duration_seconds_count",
            &[("plugin", "hostile"), ("phase", "reconcile")],
        )
    };
    let started = std::time::Instant::now();
    while warnings(&client, ns, "Flooding").await.is_empty() {
        assert!(started.elapsed() < TIMEOUT, "the event is never published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = metrics().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = metrics().await;
    let reconciles = calls(&after) - calls(&before);
    let writes = event_writes(&after) - event_writes(&before);
    eprintln!(
        "[figure] event flood: {reconciles} calls of 32 identical events each, {writes} event writes"
    );
    assert!(
        reconciles >= 4.0,
        "{reconciles} calls: the plugin was not called again"
    );
    assert_eq!(
        writes, 0.0,
        "a repeated event is written once, not per call"
    );
    assert_eq!(
        warnings(&client, ns, "Flooding").await.len(),
        1,
        "one Event object for the repeated event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_decided_on_a_stale_read_never_lands() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::sync::{Arc, Mutex};
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let undoer = hostile_backend(
        "undoer",
        r#"{ mode = "undoes-from-stale-read", target = "counted" }"#,
    );
    let (_operator, _) = start_with_metrics(&cluster, dir.path(), "longhorn", &undoer).await;
    let ns = "stale";
    namespace(&client, ns).await;
    // Every version of the claim the apiserver holds, in order.
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let watch = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut claims = std::pin::pin!(
                watcher(
                    claims,
                    watcher::Config::default().fields("metadata.name=counted")
                )
                .applied_objects()
            );
            while let Some(Ok(claim)) = claims.next().await {
                let count = claim
                    .labels()
                    .get("hostile-counter")
                    .and_then(|n| n.parse().ok());
                if let (Some(count), Ok(mut seen)) = (count, seen.lock()) {
                    seen.push(count);
                }
            }
        })
    };
    create(
        &client,
        ns,
        &wukong_yaml("undo", "[{name: d, size: 1Gi, backend: undoer}]"),
    )
    .await;
    // Each call writes count+1, then count again on what is by then a stale read: the
    // second write is refused every time, and once it keeps happening the status says so.
    let stuck = wait_for(&client, ns, "undo", TIMEOUT, |w| {
        step_failed(w).is_some_and(|(reason, _)| reason == "StaleRead")
    })
    .await;
    let (_, message) = step_failed(&stuck).unwrap_or_default();
    assert!(
        message.contains("PersistentVolumeClaim counted") && message.contains("changed after"),
        "StepFailed says which object moved: {message}"
    );
    let counted = claims_counter(&client, ns).await;
    // Let the watch deliver what was written up to now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.abort();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        counted >= 2,
        "the plugin ran and wrote several times ({counted})"
    );
    assert!(seen.len() >= 2, "the watch saw the writes: {seen:?}");
    eprintln!("[figure] stale undo: counter versions {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "a write decided on a stale read landed (the counter went back): {seen:?}"
    );
}

async fn claims_counter(client: &Client, ns: &str) -> u64 {
    pvc(client, ns, "counted")
        .await
        .and_then(|c| c.labels().get("hostile-counter").cloned())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
}
