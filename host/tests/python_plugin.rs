//! The Python storage plugin (plugins/python-storage, built by componentize-py) as the
//! operator's storage backend on the real apiserver + KubeVirt simulator: a Wukong with an
//! image disk, a blank disk and a retained disk reaches Running with Ready=True on the
//! claims the plugin made, status names the plugin, disks grow and never shrink, and
//! deletion cleans up all but the retained claim.
//!
//! CPython runs inside the component: a call costs ~1–2 ms and a few tens of MiB of linear
//! memory, well inside the default runtime limits (1 s deadline, 256 MiB, 2·10¹⁰ fuel),
//! so the shared host config's limits are used unchanged. The first load compiles ~18 MB
//! of wasm (seconds); it happens in `InProcess::start`, before any timed wait.

mod support;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::json;
use support::operator::{
    Cluster, InProcess, condition, create, host_config, is_running, list, names, namespace,
    wait_for,
};
use wukong::api::Wukong;

const TIMEOUT: Duration = Duration::from_secs(60);

const WUKONG: &str = r#"
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata: {name: pyvm}
spec:
  cpu: 1
  memory: 1Gi
  disks:
  - {name: root, size: 4Gi, image: "docker://quay.io/containerdisks/fedora:40", bootOrder: 1}
  - {name: data, size: 2Gi}
  - {name: keep, size: 1Gi, retain: true}
"#;

fn disks(root: &str, data: &str) -> serde_json::Value {
    json!({"spec": {"disks": [
        {"name": "root", "size": root, "image": "docker://quay.io/containerdisks/fedora:40", "bootOrder": 1},
        {"name": "data", "size": data},
        {"name": "keep", "size": "1Gi", "retain": true},
    ]}})
}

fn annotation<'a>(object: &'a DynamicObject, key: &str) -> Option<&'a str> {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn labelled_with<'a>(objects: &'a [DynamicObject], wukong: &str) -> Vec<&'a DynamicObject> {
    objects
        .iter()
        .filter(|o| {
            o.labels()
                .get("vm.novasphere.dev/wukong")
                .map(String::as_str)
                == Some(wukong)
        })
        .collect()
}

/// What plugins/python-storage's manifest asks for.
const PYTHON_GRANTS: &str = r#"grants = { reads = ["cdi.kubevirt.io/v1beta1/DataVolume", "v1/PersistentVolumeClaim", "storage.k8s.io/v1/StorageClass"], writes = ["cdi.kubevirt.io/v1beta1/DataVolume", "v1/PersistentVolumeClaim"] }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_storage_backs_a_wukong_end_to_end() {
    let wasm = support::plugin_wasm("python-storage");
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let python = format!(
        "[storage.python]\nplugin = \"{}\"\nconfig = {{ accessModes = [\"ReadWriteOnce\"], volumeMode = \"Filesystem\" }}\n{}\n",
        wasm.display(),
        PYTHON_GRANTS
    );
    let operator = InProcess::start(client.clone(), &host_config("python", &python)).await;
    let ns = "py";
    namespace(&client, ns).await;

    // Running and Ready on the claims the Python plugin made.
    create(&client, ns, WUKONG).await;
    let pyvm = wait_for(&client, ns, "pyvm", TIMEOUT, is_running).await;
    let status = pyvm.status.clone().expect("status");
    let storage = status
        .plugins
        .iter()
        .find(|p| p.step == "storage")
        .expect("a storage plugin record");
    assert_eq!(
        (
            storage.name.as_str(),
            storage.backend.as_str(),
            storage.digest.len()
        ),
        ("python-storage", "python", 64),
        "status names the Python plugin for the storage step"
    );
    for ready in ["Ready", "VolumesBound", "DisksResized"] {
        assert_eq!(
            condition(&pyvm, ready).map(|c| c.0).as_deref(),
            Some("True"),
            "{ready}"
        );
    }
    assert_eq!(
        status
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.claim_name.as_str(), v.bound))
            .collect::<Vec<_>>(),
        [
            ("root", "pyvm-root-3424gnsyfh", true),
            ("data", "pyvm-data-lu6wczazm7", true),
            ("keep", "pyvm-keep-kuontwimtl", true)
        ]
    );
    let dvs = list(&client, ns, "cdi.kubevirt.io/v1beta1", "DataVolume").await;
    assert_eq!(
        names(&dvs),
        ["pyvm-root-3424gnsyfh"],
        "one DataVolume, for the image disk"
    );
    let pvcs = list(&client, ns, "v1", "PersistentVolumeClaim").await;
    let ours = labelled_with(&pvcs, "pyvm");
    let mut claims: Vec<String> = ours.iter().map(|p| p.name_any()).collect();
    claims.sort();
    assert_eq!(
        claims,
        ["pyvm-data-lu6wczazm7", "pyvm-keep-kuontwimtl"],
        "a PVC per blank disk"
    );
    let data = ours
        .iter()
        .find(|p| p.name_any() == "pyvm-data-lu6wczazm7")
        .expect("pyvm-data-lu6wczazm7");
    assert_eq!(annotation(data, "vm.novasphere.dev/size"), Some("2Gi"));
    assert_eq!(
        data.data["spec"]["accessModes"],
        json!(["ReadWriteOnce"]),
        "the plugin's config reached the claim"
    );
    let keep = ours
        .iter()
        .find(|p| p.name_any() == "pyvm-keep-kuontwimtl")
        .expect("pyvm-keep-kuontwimtl");
    assert_eq!(annotation(keep, "vm.novasphere.dev/retain"), Some("true"));
    assert_eq!(
        names(&list(&client, ns, "kubevirt.io/v1", "VirtualMachine").await),
        ["pyvm"],
        "the lifecycle step built the VM on the Python plugin's volumes"
    );

    // Disks grow through their PVC; a smaller size is refused with a clear condition.
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    api.patch(
        "pyvm",
        &PatchParams::default(),
        &Patch::Merge(disks("4Gi", "3Gi")),
    )
    .await
    .expect("grow");
    wait_for(&client, ns, "pyvm", TIMEOUT, |w| {
        w.status.as_ref().is_some_and(|s| {
            s.volumes
                .iter()
                .any(|v| v.name == "data" && v.capacity.as_deref() == Some("3Gi"))
        })
    })
    .await;
    api.patch(
        "pyvm",
        &PatchParams::default(),
        &Patch::Merge(disks("4Gi", "1Gi")),
    )
    .await
    .expect("shrink");
    let refused = wait_for(&client, ns, "pyvm", TIMEOUT, |w| {
        condition(w, "DisksResized").is_some_and(|c| c.0 == "False")
    })
    .await;
    let (_, reason, message) = condition(&refused, "DisksResized").expect("DisksResized");
    assert_eq!(reason, "ShrinkRefused");
    assert!(
        message.contains("disk data: size 1Gi is smaller than its claim's 3Gi"),
        "{message}"
    );
    let data_pvc = list(&client, ns, "v1", "PersistentVolumeClaim")
        .await
        .into_iter()
        .find(|p| p.name_any() == "pyvm-data-lu6wczazm7")
        .expect("pyvm-data-lu6wczazm7");
    assert_eq!(
        data_pvc.data["spec"]["resources"]["requests"]["storage"], "3Gi",
        "never shrunk"
    );

    // Deletion: finalize removes the DataVolume and the unretained PVC; the retained one
    // stays, without an owner reference to the Wukong.
    api.delete("pyvm", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = async {
        while api.get_opt("pyvm").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, gone)
        .await
        .expect("the finalizer completes");
    assert!(
        list(&client, ns, "cdi.kubevirt.io/v1beta1", "DataVolume")
            .await
            .is_empty(),
        "the DataVolume is removed"
    );
    let cleaned = async {
        loop {
            let pvcs = list(&client, ns, "v1", "PersistentVolumeClaim").await;
            let left: Vec<String> = pvcs
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(ResourceExt::name_any)
                .collect();
            if left == ["pyvm-keep-kuontwimtl"] {
                return pvcs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let pvcs = tokio::time::timeout(TIMEOUT, cleaned)
        .await
        .expect("only the retained claim stays");
    let kept = pvcs
        .iter()
        .find(|p| p.name_any() == "pyvm-keep-kuontwimtl")
        .expect("pyvm-keep-kuontwimtl");
    assert!(
        kept.metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.iter().all(|o| o.kind != "Wukong")),
        "the retained claim is orphaned"
    );
    operator.stop();
}
