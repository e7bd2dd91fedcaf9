//! What a Node says about migrating to or away from it: schedulable, under maintenance,
//! failed since when, how loaded, matching the policy's node selector.
//!
//! NB: load comes from what the Node carries. The host lets a plugin read only its own
//! namespace, so the VMIs of other namespaces cannot be summed here: the requested CPU and
//! memory are read from two node annotations (names in the config), which a cluster's
//! node-level agent (or a test) keeps current, against `status.allocatable`.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use wukong_plugin_sdk::quantity::Quantity;
use wukong_plugin_sdk::selector::Selector;

use crate::Config;
use crate::record::parse_time;

pub fn name(node: &Value) -> &str {
    node["metadata"]["name"].as_str().unwrap_or_default()
}

/// Taints with these effects keep new pods (the migration's target pod) away.
fn repelling(taint: &Value) -> bool {
    matches!(taint["effect"].as_str(), Some("NoSchedule" | "NoExecute"))
}

/// Why nothing new can be scheduled on the node, or `None` when it can.
pub fn unschedulable(node: &Value) -> Option<String> {
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        return Some(format!("node {} is cordoned", name(node)));
    }
    let taint = node["spec"]["taints"]
        .as_array()?
        .iter()
        .find(|t| repelling(t))?;
    Some(format!(
        "node {} has the taint {}:{}",
        name(node),
        taint["key"].as_str().unwrap_or_default(),
        taint["effect"].as_str().unwrap_or_default()
    ))
}

/// Why the node is under maintenance (cordoned, or a maintenance taint), or `None`.
pub fn maintenance(node: &Value, config: &Config) -> Option<String> {
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        return Some(format!("node {} is cordoned", name(node)));
    }
    let taint = node["spec"]["taints"].as_array()?.iter().find(|t| {
        t["key"]
            .as_str()
            .is_some_and(|k| config.maintenance_taints.iter().any(|m| m == k))
    })?;
    Some(format!(
        "node {} has the maintenance taint {}",
        name(node),
        taint["key"].as_str().unwrap_or_default()
    ))
}

/// The node's Ready condition, as (ready, since when).
fn ready_condition(node: &Value) -> Option<(bool, Option<Timestamp>)> {
    let c = node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        c["status"] == "True",
        c["lastTransitionTime"].as_str().and_then(parse_time),
    ))
}

pub fn ready(node: &Value) -> bool {
    ready_condition(node).is_some_and(|(ready, _)| ready)
}

/// Since when the node has been NotReady (Ready False or Unknown); `None` when Ready or
/// when it does not say.
pub fn not_ready_since(node: &Value) -> Option<Timestamp> {
    match ready_condition(node)? {
        (false, since) => since,
        (true, _) => None,
    }
}

/// Cores, to the millicore as Kubernetes counts CPU (`3500m` is 3.5).
#[allow(
    clippy::cast_precision_loss,
    reason = "node sizes are far below 2^52 millicores or bytes"
)]
fn cpu_cores(quantity: &str) -> Option<f64> {
    let millicores = Quantity::parse(quantity).ok()?.milli_value()?;
    Some(millicores as f64 / 1000.0)
}

#[allow(
    clippy::cast_precision_loss,
    reason = "node sizes are far below 2^52 millicores or bytes"
)]
fn bytes(quantity: &str) -> Option<f64> {
    Quantity::parse(quantity).ok()?.to_bytes().map(|b| b as f64)
}

/// Requested over allocatable, in percent, the larger of CPU and memory; `None` when the
/// node carries no requested annotations (its load is unknown).
pub fn load_percent(node: &Value, config: &Config) -> Option<f64> {
    let annotation = |key: &str| node["metadata"]["annotations"][key].as_str();
    let allocatable = |key: &str| node["status"]["allocatable"][key].as_str();
    let ratio =
        |requested: Option<&str>, allocatable: Option<&str>, parse: fn(&str) -> Option<f64>| {
            let (r, a) = (parse(requested?)?, parse(allocatable?)?);
            (a > 0.0).then(|| r * 100.0 / a)
        };
    let cpu = ratio(
        annotation(&config.requested_cpu_annotation),
        allocatable("cpu"),
        cpu_cores,
    );
    let memory = ratio(
        annotation(&config.requested_memory_annotation),
        allocatable("memory"),
        bytes,
    );
    match (cpu, memory) {
        (Some(c), Some(m)) => Some(c.max(m)),
        (one, other) => one.or(other),
    }
}

/// `80%` → 80.
pub fn threshold_percent(threshold: &str) -> Option<f64> {
    threshold.trim().strip_suffix('%')?.trim().parse().ok()
}

/// The policy's `targetNodeSelector` (a Kubernetes label selector: `matchLabels`, and
/// `matchExpressions` with In, NotIn, Exists, DoesNotExist); `Ok(None)` when it has none,
/// which every node matches. `Err` says why it is not a selector.
pub fn target_selector(policy: &Value) -> Result<Option<Selector>, String> {
    match policy.get("targetNodeSelector") {
        None | Some(Value::Null) => Ok(None),
        Some(selector) => Selector::from_label_selector(selector)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// True when the node's labels satisfy the selector; no selector matches every node.
pub fn selected(selector: Option<&Selector>, node: &Value) -> bool {
    selector.is_none_or(|s| s.matches(&node["metadata"]["labels"]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cordon_and_repelling_taints_make_a_node_unschedulable() {
        assert!(unschedulable(&json!({"metadata": {"name": "n"}, "spec": {}})).is_none());
        let cordoned = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert_eq!(unschedulable(&cordoned).unwrap(), "node n is cordoned");
        let tainted = json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "NoSchedule"}]}});
        assert_eq!(
            unschedulable(&tainted).unwrap(),
            "node n has the taint b:NoSchedule"
        );
    }

    #[test]
    fn load_is_the_larger_ratio_of_cpu_and_memory() {
        let config = Config::default();
        let node = json!({"metadata": {"annotations": {
                "wukong.novasphere.dev/requested-cpu": "3500m",
                "wukong.novasphere.dev/requested-memory": "8Gi"}},
            "status": {"allocatable": {"cpu": "4", "memory": "32Gi"}}});
        assert_eq!(load_percent(&node, &config), Some(87.5));
        assert_eq!(load_percent(&json!({}), &config), None);
        assert_eq!(threshold_percent("80%"), Some(80.0));
        assert_eq!(threshold_percent("80"), None);
        let fractional = json!({"metadata": {"annotations": {
                "wukong.novasphere.dev/requested-cpu": "750m"}},
            "status": {"allocatable": {"cpu": "1.5"}}});
        assert_eq!(load_percent(&fractional, &config), Some(50.0));
    }

    #[test]
    fn selectors_with_labels_and_expressions() {
        let node = json!({"metadata": {"labels": {"node-type": "compute", "zone": "a"}}});
        let select = |policy: Value| target_selector(&policy).unwrap();
        assert!(select(json!({})).is_none());
        assert!(selected(None, &node));
        let compute =
            select(json!({"targetNodeSelector": {"matchLabels": {"node-type": "compute"}}}));
        assert!(selected(compute.as_ref(), &node));
        let gpu = select(json!({"targetNodeSelector": {"matchLabels": {"node-type": "gpu"}}}));
        assert!(!selected(gpu.as_ref(), &node));
        let expressions = select(json!({"targetNodeSelector": {"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "gpu", "operator": "DoesNotExist"}]}}));
        assert!(selected(expressions.as_ref(), &node));
        let bogus = json!({"targetNodeSelector": {"matchExpressions": [
            {"key": "x", "operator": "Bogus"}]}});
        assert!(target_selector(&bogus).unwrap_err().contains("Bogus"));
    }
}
