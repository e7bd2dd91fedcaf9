//! Node selection for VMIs and migration targets, as the kube-scheduler would do it for a
//! virt-launcher pod: Ready, not cordoned, tolerated taints, node selector and affinity,
//! and enough unreserved CPU and memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Node;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use serde_json::Value;
use wukong_model::Quantity;
use wukong_model::selector::Operator;

use super::Ctx;
use super::util::str_at;
use crate::error::Result;

/// What the scheduler places from: watch caches of every Node and VMI, as kube-scheduler's
/// informers (a LIST of every VMI per placement made the harness quadratic), and the
/// placements made but not yet seen in the cache, so two VMIs placed in quick succession
/// do not both take the last room on a node (the scheduler cache's "assumed pods").
pub struct Placement {
    nodes: Store<Node>,
    vmis: Store<DynamicObject>,
    /// VMI uid → the node it was placed on (or is migrating to), what it asks, and when.
    assumed: Mutex<HashMap<String, (String, Request, std::time::Instant)>>,
}

impl Placement {
    /// Places from the informers' caches of Nodes and VMIs.
    pub fn new(nodes: Store<Node>, vmis: Store<DynamicObject>) -> Self {
        Self {
            nodes,
            vmis,
            assumed: Mutex::default(),
        }
    }

    /// Waits (a few seconds at most) until the cache holds `count` nodes, so the first
    /// placements after start see the nodes just created.
    pub async fn wait_for_nodes(&self, count: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.nodes.state().len() < count && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn assume(&self, vmi: &DynamicObject, node: &str) {
        if let (Some(uid), Ok(mut assumed)) = (vmi.metadata.uid.clone(), self.assumed.lock()) {
            assumed.insert(
                uid,
                (
                    node.to_owned(),
                    requests(&vmi.data),
                    std::time::Instant::now(),
                ),
            );
        }
    }
}

/// CPU (cores) and memory (bytes) a VMI's launcher pod requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request {
    pub cpu: f64,
    pub memory: f64,
}

/// KubeVirt requests 1/10 of a core per vCPU (cpuAllocationRatio 10) unless the VMI sets
/// `resources.requests.cpu`; memory is `resources.requests.memory` or `memory.guest`.
pub fn requests(vmi: &Value) -> Request {
    let d = |p: &str| vmi.pointer(&format!("/spec/domain{p}"));
    let num = |v: Option<&Value>| v.and_then(Value::as_f64).unwrap_or(1.0);
    let cpu = match d("/resources/requests/cpu").and_then(quantity_of) {
        Some(c) => c,
        None => num(d("/cpu/cores")) * num(d("/cpu/sockets")) * num(d("/cpu/threads")) / 10.0,
    };
    let memory = d("/resources/requests/memory")
        .or_else(|| d("/memory/guest"))
        .and_then(quantity_of)
        .unwrap_or(0.0);
    Request { cpu, memory }
}

/// A quantity written as a string (`500m`, `2Gi`) or a bare JSON number, in base units.
fn quantity_of(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => Quantity::parse(s).ok().map(Quantity::as_f64),
        other => other.as_f64(),
    }
}

/// Picks the fitting node with the most free memory. `Ok(Err(reason))` when none fits.
pub async fn pick(
    ctx: &Ctx,
    vmi: &DynamicObject,
    exclude: Option<&str>,
    extra_selector: &BTreeMap<String, String>,
) -> Result<std::result::Result<String, String>> {
    let placement = &ctx.placement;
    let nodes = placement.nodes.state();
    let vmis = placement.vmis.state();
    let me = vmi.metadata.uid.clone();
    let mut used: HashMap<String, Request> = HashMap::new();
    let mut charge_to = |node: &str, r: Request| {
        let u = used.entry(node.to_owned()).or_default();
        u.cpu += r.cpu;
        u.memory += r.memory;
    };
    // Placements the cache does not show yet; those it shows (or that ended) are dropped.
    if let Ok(mut assumed) = placement.assumed.lock() {
        // One pass over the cache, not one per assumption (hundreds in flight at scale).
        let by_uid: HashMap<&str, &DynamicObject> = vmis
            .iter()
            .filter_map(|v| Some((v.metadata.uid.as_deref()?, v.as_ref())))
            .collect();
        assumed.retain(|uid, (node, request, at)| {
            let cached = by_uid.get(uid.as_str());
            // Not in the cache a while after its placement: deleted, not late.
            let gone = cached.is_none() && at.elapsed() > std::time::Duration::from_secs(1);
            let seen = gone
                || cached.is_some_and(|v| {
                    str_at(&v.data, "/status/nodeName") == Some(node.as_str())
                        || str_at(&v.data, "/status/migrationState/targetNode")
                            == Some(node.as_str())
                        || matches!(
                            str_at(&v.data, "/status/phase"),
                            Some("Succeeded" | "Failed")
                        )
                });
            if !seen && Some(uid) != me.as_ref() {
                charge_to(node, *request);
            }
            !seen
        });
    }
    for other in &vmis {
        if other.metadata.uid == me {
            continue;
        }
        let phase = str_at(&other.data, "/status/phase").unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let r = requests(&other.data);
        let mut charge = |node: &str| charge_to(node, r);
        if let Some(n) = str_at(&other.data, "/status/nodeName") {
            charge(n);
        }
        let migrating =
            other.data.pointer("/status/migrationState/completed") != Some(&Value::Bool(true));
        if let Some(t) =
            str_at(&other.data, "/status/migrationState/targetNode").filter(|_| migrating)
        {
            charge(t);
        }
    }
    let want = requests(&vmi.data);
    let mut selector: BTreeMap<String, String> = vmi
        .data
        .pointer("/spec/nodeSelector")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    selector.extend(extra_selector.clone());
    let tolerations = vmi
        .data
        .pointer("/spec/tolerations")
        .and_then(Value::as_array);
    let affinity = vmi
        .data
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);

    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut best: Option<(f64, String)> = None;
    for node in nodes.iter().map(|n| &**n) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let alloc = |k: &str| {
            status
                .allocatable
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(|q| Quantity::parse(&q.0).ok())
                .map_or(0.0, Quantity::as_f64)
        };
        let u = used.get(&name).copied().unwrap_or_default();
        let untolerated = spec.taints.iter().flatten().any(|t| {
            matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tolerated(tolerations, &t.key, t.value.as_deref(), &t.effect)
        });
        let reason = if Some(name.as_str()) == exclude {
            Some("node(s) were the migration source")
        } else if !ready {
            Some("node(s) were not ready")
        } else if spec.unschedulable == Some(true) {
            Some("node(s) were unschedulable")
        } else if untolerated {
            Some("node(s) had taints that the pod didn't tolerate")
        } else if !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            || !affinity.is_none_or(|terms| terms.iter().any(|t| term_matches(t, &name, &labels)))
        {
            Some("node(s) didn't match node selector")
        } else if u.cpu + want.cpu > alloc("cpu") + 1e-9 {
            Some("Insufficient cpu")
        } else if u.memory + want.memory > alloc("memory") {
            Some("Insufficient memory")
        } else {
            None
        };
        match reason {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => {
                let free = alloc("memory") - u.memory;
                if best
                    .as_ref()
                    .is_none_or(|(f, n)| free > *f || (free == *f && name < *n))
                {
                    best = Some((free, name));
                }
            }
        }
    }
    Ok(match best {
        Some((_, name)) => {
            placement.assume(vmi, &name);
            Ok(name)
        }
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            Err(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                detail.join(", ")
            ))
        }
    })
}

fn tolerated(
    tolerations: Option<&Vec<Value>>,
    key: &str,
    value: Option<&str>,
    effect: &str,
) -> bool {
    tolerations.into_iter().flatten().any(|t| {
        let op = str_at(t, "/operator").unwrap_or("Equal");
        let key_ok = match str_at(t, "/key") {
            None | Some("") => op == "Exists",
            Some(k) => k == key,
        };
        let value_ok = op == "Exists" || str_at(t, "/value") == value;
        let effect_ok = str_at(t, "/effect").is_none_or(|e| e.is_empty() || e == effect);
        key_ok && value_ok && effect_ok
    })
}

fn term_matches(term: &Value, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.get("matchExpressions").and_then(Value::as_array);
    let fields = term.get("matchFields").and_then(Value::as_array);
    // Kubernetes' requirement evaluation (`Gt` and `Lt` included; an unknown operator
    // matches nothing), on a label for `matchExpressions`, on the node's name for
    // `matchFields`.
    let check = |e: &Value, actual: Option<&str>| {
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|vs| vs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        str_at(e, "/operator")
            .and_then(Operator::from_api_name)
            .is_some_and(|op| op.admits(actual, &values))
    };
    exprs.into_iter().flatten().all(|e| {
        let key = str_at(e, "/key").unwrap_or("");
        check(e, labels.get(key).map(String::as_str))
    }) && fields.into_iter().flatten().all(|e| {
        let actual = (str_at(e, "/key") == Some("metadata.name")).then_some(name);
        check(e, actual)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn node_selector_terms_match_labels_and_the_node_name() {
        let labels = BTreeMap::from([
            ("zone".to_owned(), "a".to_owned()),
            ("cores".to_owned(), "8".to_owned()),
        ]);
        let term = |t: Value| term_matches(&t, "node-1", &labels);
        assert!(term(json!({"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "gpu", "operator": "DoesNotExist"},
            {"key": "cores", "operator": "Gt", "values": ["4"]}]})));
        assert!(!term(
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]})
        ));
        assert!(!term(
            json!({"matchExpressions": [{"key": "zone", "operator": "Bogus"}]})
        ));
        assert!(term(json!({"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]})));
        assert!(!term(json!({"matchFields": [
            {"key": "metadata.name", "operator": "NotIn", "values": ["node-1"]}]})));
    }
}
