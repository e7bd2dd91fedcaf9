//! Simulated nodes (like KWOK's): Ready, allocatable CPU and memory, hostname label; and the
//! storage classes the storage controller provisions for.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Ctx;
use crate::error::Result;

/// A StorageClass the simulator creates and provisions volumes for.
#[derive(Clone, Debug)]
pub struct StorageClassSpec {
    pub name: String,
    /// `volumeBindingMode: WaitForFirstConsumer` (bind once a VMI using it is scheduled).
    pub wait_for_first_consumer: bool,
    /// Annotated as the cluster's default class.
    pub default: bool,
    /// `allowVolumeExpansion`.
    pub allow_expansion: bool,
}

impl StorageClassSpec {
    /// `standard` (default, Immediate) and `local-wffc` (WaitForFirstConsumer), both
    /// expandable.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self {
                name: "standard".into(),
                wait_for_first_consumer: false,
                default: true,
                allow_expansion: true,
            },
            Self {
                name: "local-wffc".into(),
                wait_for_first_consumer: true,
                default: false,
                allow_expansion: true,
            },
        ]
    }
}

/// Creates (or refreshes) the nodes and the storage classes.
pub(crate) async fn create(ctx: &Ctx) -> Result<()> {
    let cfg = ctx.cfg();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let pp = PatchParams::apply("kubevirt-sim").force();
    for i in 0..cfg.nodes {
        let name = format!("{}{i}", cfg.node_prefix);
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubevirt.io/schedulable": "true",
                "type": "kubevirt-sim"}},
            "spec": {},
        });
        nodes.patch(&name, &pp, &Patch::Apply(&node)).await?;
        let resources = json!({"cpu": cfg.node_cpu, "memory": cfg.node_memory, "pods": "110",
            "devices.kubevirt.io/kvm": "1k"});
        let status = json!({"status": {
            "allocatable": resources, "capacity": resources,
            "addresses": [{"type": "InternalIP", "address": format!("10.0.0.{}", i + 10)},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                "kubeletVersion": "v1.20.2-sim", "kubeProxyVersion": "v1.20.2-sim",
                "containerRuntimeVersion": "sim://1.0", "kernelVersion": "6.1.0",
                "osImage": "KubeVirt simulator", "machineID": "", "systemUUID": "", "bootID": ""},
            "conditions": [ready_condition(true)],
        }});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        sync_taint(&nodes, &name, true).await?;
    }
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    for sc in &cfg.storage_classes {
        let mut annotations = serde_json::Map::new();
        if sc.default {
            annotations.insert(
                "storageclass.kubernetes.io/is-default-class".into(),
                json!("true"),
            );
        }
        let body = json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": sc.name, "annotations": annotations},
            "provisioner": "sim.kubevirt.io/hostpath",
            "reclaimPolicy": "Delete",
            "allowVolumeExpansion": sc.allow_expansion,
            "volumeBindingMode": if sc.wait_for_first_consumer { "WaitForFirstConsumer" } else { "Immediate" },
        });
        classes.patch(&sc.name, &pp, &Patch::Apply(&body)).await?;
    }
    Ok(())
}

fn ready_condition(ready: bool) -> serde_json::Value {
    let now = super::util::now();
    json!({
        "type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": if ready { "KubeletReady" } else { "NodeStatusUnknown" },
        "message": if ready { "kubelet is posting ready status" } else { "Kubelet stopped posting node status." },
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    })
}

/// Sets the node's Ready condition.
pub(crate) async fn set_ready(client: &kube::Client, node: &str, ready: bool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {"conditions": [ready_condition(ready)]}});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&status))
        .await?;
    sync_taint(&nodes, node, ready).await
}

/// What the node lifecycle controller does: the `node.kubernetes.io/not-ready:NoSchedule`
/// taint (added to every new node by the TaintNodesByCondition admission) follows Ready.
async fn sync_taint(nodes: &Api<Node>, name: &str, ready: bool) -> Result<()> {
    const NOT_READY: &str = "node.kubernetes.io/not-ready";
    let node = nodes.get(name).await?;
    let mut taints: Vec<serde_json::Value> = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != NOT_READY)
        .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect}))
        .collect();
    if !ready {
        taints.push(json!({"key": NOT_READY, "effect": "NoSchedule"}));
    }
    let body = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}
