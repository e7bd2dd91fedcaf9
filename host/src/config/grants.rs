//! What the admin lets one backend's plugin do. A plugin's manifest *asks* (the kinds it
//! reads and writes, the subresource actions it calls); the backend's `grants` in
//! `wukong.toml` *allow*. The host loads a plugin only when every ask is granted, at start
//! and on every reload, so a new plugin file or a moved OCI tag cannot give itself more.
//!
//! ```toml
//! [storage.longhorn]
//! plugin = "longhorn_storage.wasm"
//! grants = { reads = ["v1/PersistentVolumeClaim"], writes = ["v1/PersistentVolumeClaim"], actions = [] }
//! ```
//!
//! Kinds are `apiVersion/Kind` (`v1/PersistentVolumeClaim`, `storage.k8s.io/v1/StorageClass`),
//! actions `resource/subresource` (`virtualmachines/stop`) — as `wukong plugin inspect`
//! prints them. An absent `grants` grants nothing.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::{Deserialize, Serialize};

use crate::plugin::types::{Capabilities, KindRef};

/// The API group KubeVirt serves its subresource actions from.
const SUBRESOURCE_GROUP: &str = "subresources.kubevirt.io";

/// One backend's grants; also what a manifest asks, in the same shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Kinds the plugin may `get`/`list` through the `cluster` import.
    pub reads: BTreeSet<String>,
    /// Kinds the plugin may apply and delete.
    pub writes: BTreeSet<String>,
    /// Subresource actions the plugin may call.
    pub actions: BTreeSet<String>,
}

impl Grants {
    /// What a manifest asks for.
    pub fn asked_by(capabilities: &Capabilities) -> Self {
        let kinds = |kinds: &[KindRef]| {
            kinds
                .iter()
                .map(|k| format!("{}/{}", k.api_version, k.kind))
                .collect()
        };
        Self {
            reads: kinds(&capabilities.reads),
            writes: kinds(&capabilities.writes),
            actions: capabilities.actions.iter().cloned().collect(),
        }
    }

    /// Refuses an entry that is not `apiVersion/Kind` or `resource/subresource`.
    pub fn validate(&self) -> Result<(), String> {
        for (list, entries) in [("reads", &self.reads), ("writes", &self.writes)] {
            if let Some(bad) = entries.iter().find(|entry| kind_ref(entry).is_none()) {
                return Err(format!(
                    "{list}: {bad:?} is not `apiVersion/Kind` (e.g. `v1/PersistentVolumeClaim`, `storage.k8s.io/v1/StorageClass`)"
                ));
            }
        }
        if let Some(bad) = self.actions.iter().find(|entry| {
            entry.split('/').count() != 2
                || entry
                    .split('/')
                    .any(|part| part.is_empty() || !part.chars().all(|c| c.is_ascii_lowercase()))
        }) {
            return Err(format!(
                "actions: {bad:?} is not `resource/subresource` (e.g. `virtualmachines/stop`)"
            ));
        }
        Ok(())
    }

    /// What `asked` holds that these grants do not.
    pub fn missing_from(&self, asked: &Self) -> Self {
        let minus = |asked: &BTreeSet<String>, granted: &BTreeSet<String>| {
            asked.difference(granted).cloned().collect()
        };
        Self {
            reads: minus(&asked.reads, &self.reads),
            writes: minus(&asked.writes, &self.writes),
            actions: minus(&asked.actions, &self.actions),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && self.actions.is_empty()
    }

    /// `reads A, B; writes C; actions D` — the non-empty lists, for messages.
    pub fn describe(&self) -> String {
        [
            ("reads", &self.reads),
            ("writes", &self.writes),
            ("actions", &self.actions),
        ]
        .iter()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(list, entries)| {
            format!(
                "{list} {}",
                entries.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
    }

    /// The `grants = { ... }` line to paste under a backend in `wukong.toml`.
    pub fn to_toml(&self) -> String {
        let list = |entries: &BTreeSet<String>| {
            let quoted: Vec<String> = entries.iter().map(|e| format!("{e:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        format!(
            "grants = {{ reads = {}, writes = {}, actions = {} }}",
            list(&self.reads),
            list(&self.writes),
            list(&self.actions)
        )
    }

    /// The RBAC rules the operator's service account needs for these grants: a read is a
    /// `get` or `list`; a write is a server-side apply after a `get` of the live object
    /// (`patch`, and `create` for an apply that creates) or a `delete`; an action is a `PUT`
    /// on KubeVirt's subresource API (`update`). The host's own watches are in the
    /// operator's role already (deploy/clusterrole.yaml).
    /// Resource names follow Kubernetes' plural convention (checked against
    /// `kubectl api-resources` for every kind the bundled plugins use).
    pub fn cluster_role_rules(&self) -> Vec<PolicyRule> {
        const READ: &[&str] = &["get", "list"];
        const WRITE: &[&str] = &["get", "create", "patch", "delete"];
        const READ_WRITE: &[&str] = &["get", "list", "create", "patch", "delete"];
        let mut rules: Vec<PolicyRule> = Vec::new();
        let mut add = |group: &str, resource: String, verbs: &[&str]| {
            let verbs: Vec<String> = verbs.iter().map(|v| (*v).to_owned()).collect();
            match rules.iter_mut().find(|rule| {
                rule.api_groups.as_deref() == Some(&[group.to_owned()][..]) && rule.verbs == verbs
            }) {
                Some(rule) => rule.resources.get_or_insert_default().push(resource),
                None => rules.push(PolicyRule {
                    api_groups: Some(vec![group.to_owned()]),
                    resources: Some(vec![resource]),
                    verbs,
                    ..PolicyRule::default()
                }),
            }
        };
        for entry in &self.writes {
            if let Some((group, kind)) = kind_ref(entry) {
                let verbs = if self.reads.contains(entry) {
                    READ_WRITE
                } else {
                    WRITE
                };
                add(group, plural(kind), verbs);
            }
        }
        for entry in self.reads.difference(&self.writes) {
            if let Some((group, kind)) = kind_ref(entry) {
                add(group, plural(kind), READ);
            }
        }
        for action in &self.actions {
            add(SUBRESOURCE_GROUP, action.clone(), &["update"]);
        }
        rules
    }

    /// [`Grants::cluster_role_rules`] as the `rules:` of a ClusterRole, in YAML.
    pub fn cluster_role_yaml(&self, name: &str) -> String {
        let mut yaml = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {name}\nrules:\n"
        );
        for rule in self.cluster_role_rules() {
            let list = |items: &[String]| {
                items
                    .iter()
                    .map(|i| format!("{i:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                yaml,
                "  - apiGroups: [{}]\n    resources: [{}]\n    verbs: [{}]\n",
                list(rule.api_groups.as_deref().unwrap_or_default()),
                list(rule.resources.as_deref().unwrap_or_default()),
                list(&rule.verbs),
            );
        }
        yaml
    }
}

/// `(group, Kind)` of an `apiVersion/Kind` entry (the core group is `""`).
fn kind_ref(entry: &str) -> Option<(&str, &str)> {
    let (api_version, kind) = entry.rsplit_once('/')?;
    let starts_upper = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    if !starts_upper || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let group = match api_version.split_once('/') {
        Some((group, version)) if !group.is_empty() && !version.contains('/') => group,
        Some(_) => return None,
        None => "",
    };
    let version = api_version.rsplit('/').next().unwrap_or_default();
    let version_ok = version.starts_with('v')
        && version
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    version_ok.then_some((group, kind))
}

/// A kind's resource name. Multus names its one kind with dashes, unlike everyone else.
fn plural(kind: &str) -> String {
    if kind == "NetworkAttachmentDefinition" {
        return "network-attachment-definitions".into();
    }
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
        return format!("{lower}es");
    }
    format!("{lower}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(reads: &[&str], writes: &[&str], actions: &[&str]) -> Grants {
        let set = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Grants {
            reads: set(reads),
            writes: set(writes),
            actions: set(actions),
        }
    }

    #[test]
    fn missing_lists_only_what_is_not_granted() {
        let granted = grants(
            &["v1/PersistentVolumeClaim"],
            &[],
            &["virtualmachines/stop"],
        );
        let asked = grants(
            &["v1/PersistentVolumeClaim", "v1/Node"],
            &["storage.k8s.io/v1/StorageClass"],
            &["virtualmachines/stop"],
        );
        let missing = granted.missing_from(&asked);
        assert_eq!(
            missing.describe(),
            "reads v1/Node; writes storage.k8s.io/v1/StorageClass"
        );
        assert!(asked.missing_from(&asked).is_empty());
        assert!(
            asked.missing_from(&granted).is_empty(),
            "a wider grant covers a narrower ask"
        );
    }

    #[test]
    fn the_toml_line_parses_back_to_the_same_grants() {
        let asked = grants(
            &["v1/Node", "kubevirt.io/v1/VirtualMachine"],
            &["kubevirt.io/v1/VirtualMachine"],
            &["virtualmachines/stop"],
        );
        #[derive(Deserialize)]
        struct Holder {
            grants: Grants,
        }
        let parsed: Holder = toml::from_str(&asked.to_toml()).unwrap();
        assert_eq!(parsed.grants, asked);
    }

    #[test]
    fn malformed_entries_are_refused_naming_the_list() {
        for (bad, list) in [
            (grants(&["PersistentVolumeClaim"], &[], &[]), "reads"),
            (grants(&[], &["v1/persistentvolumeclaims"], &[]), "writes"),
            (grants(&[], &["a/b/c/Kind"], &[]), "writes"),
            (grants(&[], &[], &["virtualmachines"]), "actions"),
            (grants(&[], &[], &["virtualmachines/stop/x"]), "actions"),
        ] {
            let message = bad.validate().unwrap_err();
            assert!(message.starts_with(list), "{message}");
        }
        grants(
            &["v1/Node", "storage.k8s.io/v1/StorageClass"],
            &["cdi.kubevirt.io/v1beta1/DataVolume"],
            &["virtualmachineinstances/softreboot"],
        )
        .validate()
        .unwrap();
    }

    #[test]
    fn rules_cover_each_grant_with_its_verbs() {
        let rules = grants(
            &["v1/Node", "migrations.kubevirt.io/v1alpha1/MigrationPolicy"],
            &[
                "migrations.kubevirt.io/v1alpha1/MigrationPolicy",
                "k8s.cni.cncf.io/v1/NetworkAttachmentDefinition",
                "storage.k8s.io/v1/StorageClass",
            ],
            &["virtualmachines/stop"],
        )
        .cluster_role_rules();
        let find = |resource: &str| {
            rules
                .iter()
                .find(|r| {
                    r.resources
                        .as_ref()
                        .is_some_and(|rs| rs.iter().any(|x| x == resource))
                })
                .unwrap_or_else(|| panic!("no rule for {resource}: {rules:?}"))
        };
        assert_eq!(find("nodes").verbs, ["get", "list"]);
        assert_eq!(
            find("nodes").api_groups.as_deref(),
            Some(&["".to_owned()][..])
        );
        assert_eq!(
            find("migrationpolicies").verbs,
            ["get", "list", "create", "patch", "delete"]
        );
        assert_eq!(
            find("storageclasses").verbs,
            ["get", "create", "patch", "delete"]
        );
        assert!(
            find("network-attachment-definitions")
                .verbs
                .contains(&"patch".to_owned())
        );
        let stop = find("virtualmachines/stop");
        assert_eq!(stop.verbs, ["update"]);
        assert_eq!(
            stop.api_groups.as_deref(),
            Some(&["subresources.kubevirt.io".to_owned()][..])
        );
    }

    #[test]
    fn plurals_follow_kubernetes() {
        for (kind, resource) in [
            ("PersistentVolumeClaim", "persistentvolumeclaims"),
            ("StorageClass", "storageclasses"),
            ("MigrationPolicy", "migrationpolicies"),
            (
                "VirtualMachineInstanceMigration",
                "virtualmachineinstancemigrations",
            ),
            ("DataVolume", "datavolumes"),
            ("Node", "nodes"),
            ("Gateway", "gateways"),
        ] {
            assert_eq!(plural(kind), resource);
        }
    }
}
