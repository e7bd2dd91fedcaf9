//! The operator as a separate process: killed mid-reconcile and restarted, it converges
//! with no duplicate objects; and a storage backend is swapped by config change alone.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use kube::{Api, ResourceExt};
use support::operator::{
    Cluster, OperatorProcess, create, host_config, is_running, list, namespace, wait_for,
};
use wukong::api::Wukong;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `config_toml` next to the test's logs and starts the operator with it.
fn start_operator(
    cluster: &Cluster,
    config_toml: &str,
    dir: &tempfile::TempDir,
    tag: &str,
) -> OperatorProcess {
    let config = dir.path().join(format!("wukong-{tag}.toml"));
    std::fs::write(&config, config_toml).expect("write config");
    OperatorProcess::start(
        cluster,
        &config,
        &dir.path().join(format!("operator-{tag}.log")),
    )
}

fn wukong_yaml(name: &str, backend: Option<&str>) -> String {
    let backend = backend
        .map(|b| format!(", backend: {b}"))
        .unwrap_or_default();
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks:\n  - {{name: root, size: 2Gi, image: \"docker://quay.io/containerdisks/fedora:40\"{backend}}}\n  - {{name: scratch, size: 1Gi{backend}}}\n  networks:\n  - {{name: lan, config: {{bridge: br0}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reconcile_the_operator_converges_without_duplicates() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = "restart";
    namespace(&client, ns).await;
    let config = host_config("cdi", "");

    let first = start_operator(&cluster, &config, &dir, "first");
    let names: Vec<String> = (0..6).map(|i| format!("vm{i}")).collect();
    for name in &names {
        create(&client, ns, &wukong_yaml(name, None)).await;
    }
    // Let it get part of the way: some objects made, not all Wukongs converged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill();

    let _second = start_operator(&cluster, &config, &dir, "second");
    for name in &names {
        wait_for(&client, ns, name, TIMEOUT, is_running).await;
    }
    let count = |objects: &[kube::api::DynamicObject], name: &str| {
        objects
            .iter()
            .filter(|o| {
                o.labels()
                    .get("vm.novasphere.dev/wukong")
                    .map(String::as_str)
                    == Some(name)
            })
            .count()
    };
    let dvs = list(&client, ns, "cdi.kubevirt.io/v1beta1", "DataVolume").await;
    let pvcs = list(&client, ns, "v1", "PersistentVolumeClaim").await;
    let nads = list(
        &client,
        ns,
        "k8s.cni.cncf.io/v1",
        "NetworkAttachmentDefinition",
    )
    .await;
    let vms = list(&client, ns, "kubevirt.io/v1", "VirtualMachine").await;
    let vmis = list(&client, ns, "kubevirt.io/v1", "VirtualMachineInstance").await;
    let wukongs = Api::<Wukong>::namespaced(client.clone(), ns);
    for name in &names {
        let wukong = wukongs.get(name).await.expect("wukong");
        let scratch = wukong
            .status
            .as_ref()
            .and_then(|s| s.volumes.iter().find(|v| v.name == "scratch"))
            .map(|v| v.claim_name.clone())
            .expect("the scratch disk's claim");
        assert_eq!(count(&dvs, name), 1, "{name}: one DataVolume");
        assert_eq!(count(&nads, name), 1, "{name}: one NAD");
        assert_eq!(count(&vms, name), 1, "{name}: one VM");
        assert_eq!(count(&vmis, name), 1, "{name}: one VMI");
        let blank = pvcs.iter().filter(|p| p.name_any() == scratch).count();
        assert_eq!(blank, 1, "{name}: one blank PVC");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_backend_is_swapped_by_config_alone() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = "swap";
    namespace(&client, ns).await;

    // The same Wukong, no backend named: the host config's default decides.
    let longhorn = start_operator(&cluster, &host_config("longhorn", ""), &dir, "longhorn");
    create(&client, ns, &wukong_yaml("on-longhorn", None)).await;
    let first = wait_for(&client, ns, "on-longhorn", TIMEOUT, is_running).await;
    longhorn.kill();

    let _ceph = start_operator(&cluster, &host_config("ceph-rbd", ""), &dir, "ceph");
    create(&client, ns, &wukong_yaml("on-ceph", None)).await;
    let second = wait_for(&client, ns, "on-ceph", TIMEOUT, is_running).await;

    let plugin_of = |w: &Wukong| {
        w.status.as_ref().and_then(|s| {
            s.plugins
                .iter()
                .find(|p| p.step == "storage")
                .map(|p| p.name.clone())
        })
    };
    assert_eq!(plugin_of(&first).as_deref(), Some("longhorn-storage"));
    assert_eq!(plugin_of(&second).as_deref(), Some("ceph-rbd-storage"));
    let classes = list(&client, "", "storage.k8s.io/v1", "StorageClass").await;
    let provisioner_of = |class: &str| {
        classes
            .iter()
            .find(|c| c.name_any() == class)
            .and_then(|c| c.data["provisioner"].as_str().map(str::to_owned))
    };
    let class_of = |w: &Wukong| {
        w.status
            .as_ref()
            .and_then(|s| s.volumes.first())
            .and_then(|v| v.storage_class.clone())
            .expect("storage class in status")
    };
    assert_eq!(
        provisioner_of(&class_of(&first)).as_deref(),
        Some("driver.longhorn.io")
    );
    assert_eq!(
        provisioner_of(&class_of(&second)).as_deref(),
        Some("rook-ceph.rbd.csi.ceph.com")
    );
    let ceph_volume = second
        .status
        .as_ref()
        .and_then(|s| s.volumes.first())
        .expect("volume");
    assert_eq!(
        ceph_volume.volume_mode.as_deref(),
        Some("Block"),
        "Ceph RBD disks are raw block devices"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_is_read_from_a_configmap_and_a_bad_one_stops_the_operator_naming_the_key() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let ns = "from-configmap";
    namespace(&client, ns).await;
    let map: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "wukong-config", "namespace": ns},
        "data": {"wukong.toml": host_config("cdi", "")}
    }))
    .expect("configmap");
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
        .create(&Default::default(), &map)
        .await
        .expect("create configmap");
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args([
            "run",
            "--config-map",
            &format!("{ns}/wukong-config"),
            "--kubeconfig",
        ])
        .arg(cluster.env.kubeconfig_path())
        // Any free port: 8080 may be taken on the machine.
        .env("WUKONG_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("wukong run");
    create(&client, ns, &wukong_yaml("configured", None)).await;
    wait_for(&client, ns, "configured", TIMEOUT, is_running).await;
    let _ = child.kill();
    let _ = child.wait();

    // A config whose plugin config fails the plugin's schema: refused at start, naming the key.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        host_config("cdi", "").replace(
            "[storage.cdi]\nplugin = \"cdi_storage.wasm\"",
            "[storage.cdi]\nplugin = \"cdi_storage.wasm\"\nconfig = { accessModes = \"everyone\" }",
        ),
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(["run", "--config"])
        .arg(&bad)
        .arg("--kubeconfig")
        .arg(cluster.env.kubeconfig_path())
        .env("WUKONG_METRICS_ADDR", "127.0.0.1:0")
        .output()
        .expect("wukong run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a bad config stops the operator");
    assert!(
        stderr.contains("storage.cdi.config") && stderr.contains("accessModes"),
        "{stderr}"
    );
}
