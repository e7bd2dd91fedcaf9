//! Which Wukongs a Node change concerns. Nodes carry no Wukong label, and most of their
//! updates are heartbeats: only a change of what placement and evacuation judge —
//! `spec.unschedulable`, the taints, the `Ready` condition — wakes the Wukongs whose VMIs
//! run on the node. The first sight of a node (the watch's initial list) wakes nobody:
//! every Wukong is reconciled at start anyway.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};

use super::WukongMeta;
use crate::api::WUKONG_LABEL;

/// The mapper for the Node watch: the Wukongs of the VMIs (from `vmis`) on a node whose
/// schedulability changed.
pub fn wukongs_on_changed_node(
    vmis: Store<DynamicObject>,
) -> impl Fn(DynamicObject) -> Vec<ObjectRef<WukongMeta>> + Send + Sync + 'static {
    let seen: Mutex<HashMap<String, u64>> = Mutex::default();
    move |node| {
        let name = node.name_any();
        let print = fingerprint(&node);
        let before = seen
            .lock()
            .map(|mut seen| seen.insert(name.clone(), print))
            .unwrap_or(Some(print));
        if before.is_none_or(|before| before == print) {
            return Vec::new();
        }
        vmis.state()
            .iter()
            .filter(|vmi| vmi.data["status"]["nodeName"] == name.as_str())
            .filter_map(|vmi| {
                let namespace = vmi.namespace().unwrap_or_default();
                vmi.labels()
                    .get(WUKONG_LABEL)
                    .map(|wukong| ObjectRef::new(wukong).within(&namespace))
            })
            .collect()
    }
}

/// What of a Node placement and evacuation depend on.
fn fingerprint(node: &DynamicObject) -> u64 {
    let ready = node.data["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].to_string());
    let mut hasher = DefaultHasher::new();
    node.data["spec"]["unschedulable"]
        .to_string()
        .hash(&mut hasher);
    node.data["spec"]["taints"].to_string().hash(&mut hasher);
    ready.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(unschedulable: bool, ready: &str, heartbeat: &str) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]}}))
        .expect("node")
    }

    #[test]
    fn heartbeats_do_not_change_the_fingerprint_but_a_cordon_and_readiness_do() {
        let base = fingerprint(&node(false, "True", "t0"));
        assert_eq!(base, fingerprint(&node(false, "True", "t1")));
        assert_ne!(base, fingerprint(&node(true, "True", "t1")));
        assert_ne!(base, fingerprint(&node(false, "Unknown", "t1")));
    }
}
