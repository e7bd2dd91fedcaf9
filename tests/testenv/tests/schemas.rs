//! The external kinds' CRDs are strict: what the bundled plugins write survives the
//! apiserver's pruning whole, and an unknown field is pruned as upstream's schemas prune
//! it. Objects go through a dry-run create, whose answer is the object as it would be
//! stored (pruned).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use wukong_testenv::TestEnv;

/// The kinds whose CRDs live in `tests/testenv/crds/`, by `apiVersion/kind`.
fn resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    match (api_version, kind) {
        ("kubevirt.io/v1", "VirtualMachine") => Some(util::vm()),
        ("kubevirt.io/v1", "VirtualMachineInstanceMigration") => Some(util::vmim()),
        ("migrations.kubevirt.io/v1alpha1", "MigrationPolicy") => Some(util::migration_policy()),
        ("cdi.kubevirt.io/v1beta1", "DataVolume") => Some(util::dv()),
        ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => Some(util::nad()),
        _ => None,
    }
}

/// Paths present (non-null) in `sent` but missing from `stored`.
fn pruned(sent: &Value, stored: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let here = format!("{path}.{k}");
                match b.get(k) {
                    None => out.push(here),
                    Some(w) => pruned(v, w, &here, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, v) in a.iter().enumerate() {
                match b.get(i) {
                    None => out.push(format!("{path}[{i}]")),
                    Some(w) => pruned(v, w, &format!("{path}[{i}]"), out),
                }
            }
        }
        _ => {}
    }
}

/// Dry-run creates `obj` and returns what the apiserver would store.
async fn stored(client: &kube::Client, mut obj: Value, n: usize) -> anyhow::Result<(Value, Value)> {
    let api_version = str_at(&obj, "/apiVersion").unwrap_or_default().to_owned();
    let kind = str_at(&obj, "/kind").unwrap_or_default().to_owned();
    let ar = resource(&api_version, &kind)
        .ok_or_else(|| anyhow::anyhow!("no CRD for {api_version} {kind}"))?;
    if str_at(&obj, "/metadata/name").is_none() {
        obj["metadata"]["name"] = json!(format!("schema-{n}"));
    }
    let cluster_scoped = kind == "MigrationPolicy";
    let ns = str_at(&obj, "/metadata/namespace")
        .unwrap_or("default")
        .to_owned();
    if cluster_scoped {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
    } else {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let api: Api<DynamicObject> = if cluster_scoped {
        Api::all_with(client.clone(), &ar)
    } else {
        util::api(client, &ar, &ns)
    };
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = api
        .create(&pp, &serde_json::from_value(obj.clone())?)
        .await
        .map_err(|e| anyhow::anyhow!("{kind} {}: {e}", obj["metadata"]["name"]))?;
    Ok((obj, serde_json::to_value(created)?))
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Representative objects, field for field as the bundled plugins build them
/// (`kubevirt-lifecycle` vm.rs, `kubevirt-migration` objects.rs, `cdi-storage`,
/// `multus-network`), with every optional field those builders can set.
fn representative() -> Vec<Value> {
    let labels =
        json!({"app.kubernetes.io/managed-by": "wukong", "vm.novasphere.dev/wukong": "vm1"});
    vec![
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "tenant-a", "labels": labels,
                "annotations": {"vm.novasphere.dev/run-strategy": "Always"}},
            "spec": {"running": null, "runStrategy": "Always", "updateVolumesStrategy": "Migration",
                "dataVolumeTemplates": [{"metadata": {"name": "vm1-root"}, "spec": {
                    "source": {"registry": {"url": "docker://quay.io/containerdisks/fedora:40"}},
                    "storage": {"accessModes": ["ReadWriteMany"], "volumeMode": "Block",
                        "storageClassName": "fast", "resources": {"requests": {"storage": "20Gi"}}}}}],
                "template": {"metadata": {"labels": {"vm.novasphere.dev/wukong": "vm1"}}, "spec": {
                    "domain": {"cpu": {"cores": 4}, "memory": {"guest": "8Gi"},
                        "resources": {"requests": {"memory": "8Gi"}},
                        "devices": {
                            "disks": [{"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
                                      {"name": "data", "disk": {"bus": "sata"}}],
                            "interfaces": [{"name": "default", "masquerade": {}},
                                           {"name": "lan", "bridge": {}, "macAddress": "02:00:00:00:00:01"},
                                           {"name": "fast", "sriov": {}}]}},
                    "networks": [{"name": "default", "pod": {}},
                                 {"name": "lan", "multus": {"networkName": "tenant-a/vm1-lan"}},
                                 {"name": "fast", "multus": {"networkName": "sriov-net"}}],
                    "volumes": [{"name": "root", "dataVolume": {"name": "vm1-root"}},
                                {"name": "data", "persistentVolumeClaim": {"claimName": "vm1-data"}}],
                    "terminationGracePeriodSeconds": 30,
                    "evictionStrategy": "LiveMigrate"}}}}),
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": "vm1-migrate", "namespace": "tenant-a",
                "labels": {"vm.novasphere.dev/automatic": "false"},
                "annotations": {"vm.novasphere.dev/request-id": "migrate/node-1"}},
            "spec": {"vmiName": "vm1", "addedNodeSelector": {"kubernetes.io/hostname": "node-1"}}}),
        json!({"apiVersion": "migrations.kubevirt.io/v1alpha1", "kind": "MigrationPolicy",
            "metadata": {"name": "tenant-a-vm1", "labels": labels},
            "spec": {"allowAutoConverge": true, "allowPostCopy": true, "completionTimeoutPerGiB": 800,
                "bandwidthPerMigration": "64Mi",
                "selectors": {"virtualMachineInstanceSelector": {"vm.novasphere.dev/wukong": "vm1"},
                    "namespaceSelector": {"kubernetes.io/metadata.name": "tenant-a"}}}}),
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "vm1-root", "namespace": "tenant-a", "labels": labels},
            "spec": {"source": {"http": {"url": "https://example.com/disk.qcow2"}},
                "storage": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                    "storageClassName": "fast", "resources": {"requests": {"storage": "20Gi"}}}}}),
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "vm1-blank", "namespace": "tenant-a"},
            "spec": {"source": {"blank": {}}, "pvc": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}}),
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "vm1-lan", "namespace": "tenant-a", "labels": labels},
            "spec": {"config": "{\"bridge\":\"br0\",\"cniVersion\":\"0.3.1\",\"ipam\":{},\"name\":\"vm1-lan\",\"type\":\"bridge\",\"vlan\":100}"}}),
    ]
}

/// The complete objects the plugins' own fixtures expect them to apply.
fn from_fixtures() -> anyhow::Result<Vec<(String, Value)>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let mut out = Vec::new();
    for plugin in [
        "kubevirt-lifecycle",
        "kubevirt-migration",
        "cdi-storage",
        "multus-network",
    ] {
        let Ok(dir) = std::fs::read_dir(root.join(plugin).join("cases")) else {
            continue;
        };
        let mut files: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            let case: Value = serde_yaml::from_str(&text)?;
            let applied = case
                .pointer("/expect/outcome/apply")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for obj in applied {
                let (Some(v), Some(k)) = (str_at(&obj, "/apiVersion"), str_at(&obj, "/kind"))
                else {
                    continue;
                };
                if resource(v, k).is_some() && obj.get("spec").is_some() {
                    out.push((file.display().to_string(), obj));
                }
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_objects_survive_pruning_and_unknown_fields_do_not() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let client = env.client();
    ensure_namespace(&client, "tenant-a").await?;

    let fixtures = from_fixtures()?;
    let kinds: BTreeSet<String> = fixtures
        .iter()
        .filter_map(|(_, o)| str_at(o, "/kind").map(str::to_owned))
        .collect();
    assert!(
        kinds.len() >= 4,
        "the plugins' fixtures should cover the VM, migration, policy and DataVolume kinds: {kinds:?}"
    );
    let mut objects: Vec<(String, Value)> = representative()
        .into_iter()
        .map(|o| ("representative".to_owned(), o))
        .collect();
    objects.extend(fixtures);
    let mut failures = Vec::new();
    for (n, (origin, obj)) in objects.into_iter().enumerate() {
        if let Some(ns) = str_at(&obj, "/metadata/namespace") {
            ensure_namespace(&client, ns).await?;
        }
        let (sent, back) = stored(&client, obj, n).await?;
        let mut lost = Vec::new();
        pruned(&sent["spec"], &back["spec"], "spec", &mut lost);
        pruned(&sent["metadata"], &back["metadata"], "metadata", &mut lost);
        if !lost.is_empty() {
            failures.push(format!("{origin} {}: pruned {lost:?}", sent["kind"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Unknown fields are pruned, at every level a plugin writes, as upstream prunes them.
    let mut vm = representative()[0].clone();
    vm["metadata"]["name"] = json!("vm-unknown");
    vm["spec"]["bogus"] = json!(true);
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["bogus"] = json!(1);
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["disk"]["bogus"] = json!(1);
    vm["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["bogus"] = json!(1);
    vm["spec"]["template"]["spec"]["networks"][1]["multus"]["bogus"] = json!(1);
    vm["spec"]["dataVolumeTemplates"][0]["spec"]["storage"]["bogus"] = json!(1);
    let (_, back) = stored(&client, vm, 1000).await?;
    let spec = &back["spec"];
    assert!(spec.get("bogus").is_none(), "{spec}");
    let t = &spec["template"]["spec"];
    assert!(
        t["domain"]["devices"]["interfaces"][0]
            .get("bogus")
            .is_none()
    );
    assert!(
        t["domain"]["devices"]["disks"][0]["disk"]
            .get("bogus")
            .is_none()
    );
    assert!(t["volumes"][0]["dataVolume"].get("bogus").is_none());
    assert!(t["networks"][1]["multus"].get("bogus").is_none());
    assert!(
        spec["dataVolumeTemplates"][0]["spec"]["storage"]
            .get("bogus")
            .is_none()
    );
    // The seeds' target-node field does not exist on a migration: pruned.
    let vmim = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "seed-style", "namespace": "tenant-a"},
        "spec": {"vmiName": "vm1", "targetNode": "node-1"}});
    let (_, back) = stored(&client, vmim, 1001).await?;
    assert!(back["spec"].get("targetNode").is_none(), "{}", back["spec"]);
    let dv = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "dv-unknown", "namespace": "tenant-a"},
        "spec": {"source": {"http": {"url": "https://example.com/d.img", "bogus": 1}},
                 "storage": {"resources": {"requests": {"storage": "1Gi"}}}, "bogus": 1}});
    let (_, back) = stored(&client, dv, 1002).await?;
    assert!(
        back["spec"].get("bogus").is_none()
            && back["spec"]["source"]["http"].get("bogus").is_none()
    );
    let policy = json!({"apiVersion": "migrations.kubevirt.io/v1alpha1", "kind": "MigrationPolicy",
        "metadata": {"name": "unknown"}, "spec": {"selectors": {}, "allowPostcopy": true}});
    let (_, back) = stored(&client, policy, 1003).await?;
    assert!(
        back["spec"].get("allowPostcopy").is_none(),
        "a misspelt field is pruned"
    );
    // A quantity that is not one is refused, as upstream's pattern refuses it.
    let mut bad = representative()[0].clone();
    bad["metadata"]["name"] = json!("vm-bad-memory");
    bad["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = json!("eight gigs");
    assert!(stored(&client, bad, 1004).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_attachment_definition_needs_a_cni_config() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    let config = wukong_testenv::SimConfig {
        serve_api: false,
        ..wukong_testenv::SimConfig::fast()
    };
    let _sim = wukong_testenv::Simulator::start(&env, config).await?;
    let client = env.client();
    let nad = |name: &str, config: &str| {
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name}, "spec": {"config": config}})
    };
    create(
        &client,
        &util::nad(),
        "default",
        nad(
            "good",
            r#"{"cniVersion":"0.3.1","name":"good","type":"bridge","bridge":"br0"}"#,
        ),
    )
    .await?;
    let err = create(&client, &util::nad(), "default", nad("empty", "{}"))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a NAD with config {{}} was admitted"))?;
    let message = err.to_string();
    assert!(
        message.contains(
            "denied the request: invalid config: error parsing configuration: missing 'cniVersion'"
        ),
        "{message}"
    );
    Ok(())
}
