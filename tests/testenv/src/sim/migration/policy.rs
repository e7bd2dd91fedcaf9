//! MigrationPolicy matching (`watch/migration/migrationpolicy.go`) and the migration
//! configuration a VMI migrates with.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

use super::super::{Ctx, util};
use crate::error::Result;

/// `completionTimeoutPerGiB` when no policy sets it (KubeVirt's cluster default).
pub const DEFAULT_COMPLETION_TIMEOUT_PER_GIB: i64 = 150;

/// The migration configuration a VMI migrates with: KubeVirt's cluster defaults, then the
/// policy's fields (`allowWorkloadDisruption` follows `allowPostCopy` unless set).
pub(super) fn configuration(policy: Option<&DynamicObject>) -> Value {
    let spec = policy
        .and_then(|p| p.data.get("spec"))
        .cloned()
        .unwrap_or_default();
    let mut conf = json!({"allowAutoConverge": false, "allowPostCopy": false,
        "bandwidthPerMigration": "0Mi", "completionTimeoutPerGiB": DEFAULT_COMPLETION_TIMEOUT_PER_GIB,
        "parallelMigrationsPerCluster": 5, "parallelOutboundMigrationsPerNode": 2,
        "progressTimeout": 150});
    for k in [
        "allowAutoConverge",
        "allowPostCopy",
        "allowWorkloadDisruption",
        "completionTimeoutPerGiB",
        "bandwidthPerMigration",
    ] {
        if let Some(v) = spec.get(k) {
            conf[k] = v.clone();
        }
    }
    if conf.get("allowWorkloadDisruption").is_none() {
        conf["allowWorkloadDisruption"] = conf["allowPostCopy"].clone();
    }
    conf
}

/// `matchPolicy` (migrationpolicy.go): the policy whose selectors all match and that
/// matches the most labels (VMI and namespace together, then VMI labels alone), ties by
/// name. Empty selectors match every VMI; a selector is not checked against a VMI that has
/// no labels at all (KubeVirt's own quirk).
pub(super) async fn matching_policy(
    ctx: &Ctx,
    vmi: &DynamicObject,
) -> Result<Option<DynamicObject>> {
    let policies = Api::<DynamicObject>::all_with(ctx.client.clone(), &util::migration_policy())
        .list(&ListParams::default())
        .await?;
    if policies.items.is_empty() {
        return Ok(None);
    }
    let ns = vmi.namespace().unwrap_or_default();
    let ns_labels = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&ns)
        .await?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    Ok(best_policy(policies.items, vmi.labels(), &ns_labels))
}

/// The scoring half of [`matching_policy`], pure.
pub fn best_policy(
    policies: Vec<DynamicObject>,
    vmi_labels: &BTreeMap<String, String>,
    ns_labels: &BTreeMap<String, String>,
) -> Option<DynamicObject> {
    // countLabelsHelper: None when a selector entry does not match.
    let count = |sel: Option<&Value>, labels: &BTreeMap<String, String>| -> Option<usize> {
        let sel: BTreeMap<String, String> = sel
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        sel.iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            .then_some(sel.len())
    };
    let mut best: Option<((usize, usize), DynamicObject)> = None;
    for p in policies {
        if p.data.pointer("/spec/selectors").is_none() {
            continue;
        }
        let by_vmi = if vmi_labels.is_empty() {
            Some(0)
        } else {
            count(
                p.data
                    .pointer("/spec/selectors/virtualMachineInstanceSelector"),
                vmi_labels,
            )
        };
        let by_ns = if vmi_labels.is_empty() {
            Some(0)
        } else {
            count(
                p.data.pointer("/spec/selectors/namespaceSelector"),
                ns_labels,
            )
        };
        let (Some(v), Some(n)) = (by_vmi, by_ns) else {
            continue;
        };
        let score = (v + n, v);
        let better = best
            .as_ref()
            .is_none_or(|(s, b)| score > *s || (score == *s && p.name_any() < b.name_any()));
        if better {
            best = Some((score, p));
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, vmi: Value, ns: Value) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "migrations.kubevirt.io/v1alpha1",
            "kind": "MigrationPolicy", "metadata": {"name": name},
            "spec": {"selectors": {"virtualMachineInstanceSelector": vmi, "namespaceSelector": ns}}}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn policies_match_as_kubevirt_does() {
        let vmi = labels(&[("app", "db"), ("tier", "gold")]);
        let ns = labels(&[("team", "a")]);
        let pick = |ps: Vec<DynamicObject>| best_policy(ps, &vmi, &ns).map(|p| p.name_any());
        // Empty selectors match.
        assert_eq!(
            pick(vec![policy("any", json!({}), json!({}))]).as_deref(),
            Some("any")
        );
        // More matching labels win; a mismatching selector never matches.
        let ps = vec![
            policy("one", json!({"app": "db"}), json!({})),
            policy("two", json!({"app": "db", "tier": "gold"}), json!({})),
            policy("wrong", json!({"app": "web"}), json!({})),
        ];
        assert_eq!(pick(ps).as_deref(), Some("two"));
        // Equal totals: more VMI labels win, then the name.
        let ps = vec![
            policy("ns", json!({"app": "db"}), json!({"team": "a"})),
            policy("vmi", json!({"app": "db", "tier": "gold"}), json!({})),
        ];
        assert_eq!(pick(ps).as_deref(), Some("vmi"));
        let ps = vec![
            policy("b", json!({"app": "db"}), json!({})),
            policy("a", json!({"tier": "gold"}), json!({})),
        ];
        assert_eq!(pick(ps).as_deref(), Some("a"));
    }
}
