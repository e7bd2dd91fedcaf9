//! `multus-network`: the Wukong's networks as Multus attachments. The pod network needs
//! nothing; a network naming a NetworkAttachmentDefinition uses it (and says so when it
//! does not exist); a network with a CNI config gets a NetworkAttachmentDefinition that the
//! plugin creates, keeps current and removes on finalize or when the network leaves the
//! spec.
//!
//! # Names
//! A new NAD is named [`names::derived`]`(wukong, network)`: injective, so two Wukongs
//! (`web` + `db-data`, `web-db` + `data`) never share one. A network keeps the NAD it has
//! ([`nad_name`]): the one the Wukong's status records as created for it, else the name of
//! before derived names (`<wukong>-<network>`) when the NAD there is this Wukong's.
//!
//! # Guarantees
//! - A NAD the spec names (`nadName`) is the user's: never applied, never deleted, even
//!   when it carries the Wukong's labels.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wukong_plugin_sdk::objects::made_for;
use wukong_plugin_sdk::{
    Call, Effects, Manifest, Network, NetworkAttachment, NetworkOutcome, NetworkPlugin, Plugin,
    StepError, StepResult, names,
};

/// Multus's NetworkAttachmentDefinition.
pub const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";
/// Multus's NetworkAttachmentDefinition.
pub const NAD_KIND: &str = "NetworkAttachmentDefinition";
/// The condition this step sets.
pub const NETWORKS_CONFIGURED: &str = "NetworksConfigured";
/// A missing NAD is created by someone else, whose change no watch reports: look again.
const REQUEUE_MS: u64 = 10_000;

/// The plugin's config.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Host bridge of a `bridge` network whose config names none.
    pub default_bridge: String,
    /// `cniVersion` of the CNI configs the plugin writes.
    pub cni_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_bridge: "br0".into(),
            cni_version: "0.3.1".into(),
        }
    }
}

/// The plugin.
pub struct MultusNetwork;

impl Plugin for MultusNetwork {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("multus-network", env!("CARGO_PKG_VERSION"))
            .description("Multus NetworkAttachmentDefinitions: uses a named one or creates one from the network's CNI config")
            .writes(NAD_API_VERSION, NAD_KIND)
    }
}

impl NetworkPlugin for MultusNetwork {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<NetworkOutcome> {
        let networks = &call.wukong.networks;
        if networks.iter().filter(|n| n.network_type == "pod").count() > 1 {
            return Err(StepError::InvalidSpec(
                "only one network may be the pod network".into(),
            ));
        }
        let mut effects = Effects::default();
        let mut attachments = Vec::with_capacity(networks.len());
        for network in networks {
            attachments.push(attach(call, network, &mut effects)?);
        }
        // Remove what this plugin created for networks that left the spec.
        for stale in deletable(call)? {
            let network_name = format!("{}/{stale}", call.wukong.namespace);
            if !attachments
                .iter()
                .any(|a| a.created && a.network_name == network_name)
            {
                effects
                    .delete
                    .push(call.object_ref(NAD_API_VERSION, NAD_KIND, &stale));
            }
        }
        let waiting: Vec<String> = attachments
            .iter()
            .filter(|a| !a.ready)
            .map(|a| format!("{}: {}", a.name, a.message))
            .collect();
        if waiting.is_empty() {
            let message = format!("{} network(s) attached", attachments.len());
            effects.condition(NETWORKS_CONFIGURED, true, "Configured", message);
        } else {
            let invalid = attachments
                .iter()
                .any(|a| !a.ready && a.message.contains("no usable CNI config"));
            let reason = match invalid {
                true => "NetworkAttachmentDefinitionInvalid",
                false => "NetworkAttachmentDefinitionMissing",
            };
            effects.condition(NETWORKS_CONFIGURED, false, reason, waiting.join("; "));
            effects.requeue_after(REQUEUE_MS);
        }
        Ok(NetworkOutcome {
            effects,
            attachments,
        })
    }

    /// Deletes the NADs this plugin created: those carrying the Wukong's labels. NADs
    /// named by the spec are never touched, labelled or not.
    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        let mut effects = Effects::default();
        for name in deletable(call)? {
            effects
                .delete
                .push(call.object_ref(NAD_API_VERSION, NAD_KIND, &name));
        }
        Ok(effects)
    }
}

/// One network's attachment, applying its NAD when the plugin makes it.
fn attach(
    call: &Call<'_, Config>,
    network: &Network,
    effects: &mut Effects,
) -> StepResult<NetworkAttachment> {
    let namespace = &call.wukong.namespace;
    let mut attachment = NetworkAttachment {
        name: network.name.clone(),
        network_name: "pod".into(),
        binding: network.binding.clone(),
        mac_address: network.mac_address.clone(),
        created: false,
        ready: true,
        message: String::new(),
    };
    match (
        network.network_type.as_str(),
        &network.nad_name,
        &network.config,
    ) {
        ("pod", _, _) => {}
        ("multus", Some(nad), _) => {
            let (nad_namespace, name) = nad.split_once('/').unwrap_or((namespace, nad));
            attachment.network_name = format!("{nad_namespace}/{name}");
            if nad_namespace == namespace {
                let existing: Option<Value> =
                    call.get_as(&call.object_ref(NAD_API_VERSION, NAD_KIND, name))?;
                let unusable = existing
                    .as_ref()
                    .and_then(|nad| nad["spec"]["config"].as_str())
                    .and_then(cni_config_error);
                if existing.is_none() {
                    attachment.ready = false;
                    attachment.message = format!(
                        "NetworkAttachmentDefinition {nad_namespace}/{name} does not exist"
                    );
                } else if let Some(why) = unusable {
                    // Multus would fail the VM's pod on it.
                    attachment.ready = false;
                    attachment.message = format!(
                        "NetworkAttachmentDefinition {nad_namespace}/{name} has no usable CNI config: {why}"
                    );
                }
            } else {
                // NB: plugins may read only the Wukong's namespace; Multus reports a
                // missing NAD on the VM's pod.
                attachment.message = format!(
                    "NetworkAttachmentDefinition in namespace {nad_namespace} is not checked"
                );
            }
        }
        ("multus", None, Some(_)) => {
            let name = nad_name(call, network)?;
            if named_by_spec(call).contains(&name.as_str()) {
                return Err(StepError::InvalidSpec(format!(
                    "network {}: its NetworkAttachmentDefinition {name} is also named by another network's nadName; \
                     a named NAD is used as is, never made or written by Wukong",
                    network.name
                )));
            }
            let desired = nad(call, network, &name)?;
            let existing: Option<Value> =
                call.get_as(&call.object_ref(NAD_API_VERSION, NAD_KIND, &name))?;
            // Re-apply only a changed config: a converged Wukong costs no write.
            if existing.is_none_or(|e| e["spec"]["config"] != desired["spec"]["config"]) {
                effects.apply(&desired)?;
            }
            attachment.network_name = format!("{namespace}/{name}");
            attachment.created = true;
        }
        ("multus", None, None) => {
            return Err(StepError::InvalidSpec(format!(
                "network {}: a multus network needs nadName (an existing NetworkAttachmentDefinition) or config (to create one)",
                network.name
            )));
        }
        (other, _, _) => {
            return Err(StepError::InvalidSpec(format!(
                "network {}: unknown type {other:?}; use pod or multus",
                network.name
            )));
        }
    }
    Ok(attachment)
}

/// Why a NAD's `spec.config` is not a CNI config Multus can use, as Multus' admission
/// controller judges it (`validateNetworkAttachmentDefinition`): a JSON object with a
/// `cniVersion` and a `type`, or a `name`d list of `plugins` that each have a `type`. An
/// absent config is fine (Multus reads the node's file of the NAD's name).
pub fn cni_config_error(config: &str) -> Option<String> {
    let parsed: Value = match serde_json::from_str(config) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return Some("not a JSON object".into()),
        Err(e) => return Some(format!("not JSON: {e}")),
    };
    let text = |v: &Value, key: &str| v[key].as_str().filter(|t| !t.is_empty()).is_some();
    if !text(&parsed, "cniVersion") {
        return Some("missing 'cniVersion'".into());
    }
    match &parsed["plugins"] {
        Value::Null => (!text(&parsed, "type")).then(|| "missing 'type'".into()),
        Value::Array(_) if !text(&parsed, "name") => Some("a plugin list needs a 'name'".into()),
        Value::Array(plugins) if plugins.is_empty() => Some("no plugins in the list".into()),
        Value::Array(plugins) => plugins
            .iter()
            .any(|p| !text(p, "type"))
            .then(|| "a plugin in the list misses 'type'".into()),
        _ => Some("'plugins' is not a list".into()),
    }
}

/// The NAD for a network with a config: CNI config as a JSON string, keys sorted so the
/// same spec always gives the same string.
fn nad(call: &Call<'_, Config>, network: &Network, name: &str) -> StepResult<Value> {
    let Some(config) = &network.config else {
        return Err(StepError::Internal(format!(
            "network {}: no config",
            network.name
        )));
    };
    let mut cni = Map::new();
    cni.insert("cniVersion".into(), json!(call.config.cni_version));
    cni.insert("name".into(), json!(name));
    cni.insert("type".into(), json!(config.cni_type));
    if config.cni_type == "bridge" {
        let bridge = config
            .bridge
            .as_deref()
            .unwrap_or(&call.config.default_bridge);
        cni.insert("bridge".into(), json!(bridge));
    }
    if let Some(vlan) = config.vlan {
        cni.insert("vlan".into(), json!(vlan));
    }
    if let Some(mtu) = config.mtu {
        cni.insert("mtu".into(), json!(mtu));
    }
    let ipam = match &config.ipam {
        Some(ipam) => serde_json::from_str(ipam).map_err(|e| {
            StepError::InvalidSpec(format!("network {}: ipam is not JSON: {e}", network.name))
        })?,
        // KubeVirt's bridge binding hands the address to the guest: no IPAM on the pod side.
        None => json!({}),
    };
    cni.insert("ipam".into(), ipam);
    let metadata = serde_json::to_value(call.metadata(name))
        .map_err(|e| StepError::Internal(format!("metadata: {e}")))?;
    Ok(json!({
        "apiVersion": NAD_API_VERSION,
        "kind": NAD_KIND,
        "metadata": metadata,
        "spec": {"config": Value::Object(cni).to_string()},
    }))
}

/// The name of the NAD this plugin makes for `network` (one with a config). A network
/// keeps the NAD it has, so an upgrade neither orphans nor re-creates it:
/// 1. the NAD the Wukong's previous status records as created for the network
///    (`status.networks[].networkName`, `namespace/name`), when it is a name this plugin
///    makes: the derived one, or the legacy one unless the NAD there is another's (a
///    network that named a NAD and now has a config gets a NAD of its own);
/// 2. else the legacy name `<wukong>-<network>`, when the NAD there is this Wukong's (an
///    owner reference to it, or the host's owner-uid mark);
/// 3. else [`names::derived`]`(wukong, network)`.
pub fn nad_name<C>(call: &Call<'_, C>, network: &Network) -> StepResult<String> {
    let wukong = &call.wukong.name;
    let derived = names::derived(wukong, &network.name);
    let legacy = format!("{wukong}-{}", network.name);
    let status = call.wukong_json();
    let recorded = status["status"]["networks"].as_array().and_then(|list| {
        let entry = list
            .iter()
            .find(|n| n["name"] == network.name.as_str() && n["created"] == true)?;
        let (namespace, name) = entry["networkName"].as_str()?.split_once('/')?;
        (namespace == call.wukong.namespace).then_some(name)
    });
    if recorded == Some(derived.as_str()) {
        return Ok(derived);
    }
    let at_legacy: Option<Value> =
        call.get_as(&call.object_ref(NAD_API_VERSION, NAD_KIND, &legacy))?;
    let ours = at_legacy
        .as_ref()
        .map(|nad| made_for(nad, &call.wukong.uid));
    Ok(match (recorded == Some(legacy.as_str()), ours) {
        (_, Some(true)) | (true, None) => legacy,
        _ => derived,
    })
}

/// The NADs in the Wukong's namespace that the spec names (`nadName`): the user's.
fn named_by_spec<'a, C>(call: &Call<'a, C>) -> Vec<&'a str> {
    let namespace = call.wukong.namespace.as_str();
    call.wukong
        .networks
        .iter()
        .filter_map(|n| {
            let nad = n.nad_name.as_deref()?;
            match nad.split_once('/') {
                Some((ns, name)) => (ns == namespace).then_some(name),
                None => Some(nad),
            }
        })
        .collect()
}

/// The NADs this plugin created for the Wukong (those with its labels) that it may
/// delete: all but those the spec names.
fn deletable(call: &Call<'_, Config>) -> StepResult<Vec<String>> {
    let named = named_by_spec(call);
    let mut names = created(call)?;
    names.retain(|name| !named.contains(&name.as_str()));
    Ok(names)
}

/// The names of the NADs this plugin created for the Wukong: those with its labels.
fn created(call: &Call<'_, Config>) -> StepResult<Vec<String>> {
    if call.wukong.labels.is_empty() {
        // An empty selector matches every NAD of the namespace: claim none.
        return Ok(Vec::new());
    }
    let selector = call
        .labels()
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let nads: Vec<Value> = call.list_as(
        NAD_API_VERSION,
        NAD_KIND,
        Some(&call.wukong.namespace),
        Some(&selector),
    )?;
    let mut names: Vec<String> = nads
        .iter()
        .filter_map(|nad| nad["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

wukong_plugin_sdk::export_network_plugin!(MultusNetwork);

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use super::*;
    use wukong_plugin_sdk::native::{network_finalize, network_reconcile};
    use wukong_plugin_sdk::{Context, FixtureCluster, NetworkConfig, Upstream, Wukong};

    fn network(name: &str, network_type: &str) -> Network {
        Network {
            name: name.into(),
            network_type: network_type.into(),
            nad_name: None,
            config: None,
            backend: None,
            binding: if network_type == "pod" {
                "masquerade"
            } else {
                "bridge"
            }
            .into(),
            mac_address: None,
        }
    }

    fn bridged(name: &str, bridge: Option<&str>) -> Network {
        let mut network = network(name, "multus");
        network.config = Some(NetworkConfig {
            cni_type: "bridge".into(),
            bridge: bridge.map(Into::into),
            vlan: Some(100),
            mtu: Some(9000),
            ipam: Some(r#"{"type":"whereabouts","range":"10.10.0.0/24"}"#.into()),
        });
        network
    }

    fn named(name: &str, nad: &str) -> Network {
        let mut network = network(name, "multus");
        network.nad_name = Some(nad.into());
        network
    }

    fn context(networks: Vec<Network>) -> Context {
        Context {
            wukong: Wukong {
                name: "vm1".into(),
                namespace: "tenant-a".into(),
                uid: "uid-1".into(),
                generation: 1,
                deleting: false,
                cpu: 1,
                memory: "1Gi".into(),
                run_strategy: "Always".into(),
                disks: vec![],
                networks,
                lifecycle_action: None,
                migration: None,
                labels: vec![
                    ("app.kubernetes.io/managed-by".into(), "wukong".into()),
                    ("vm.novasphere.dev/wukong".into(), "vm1".into()),
                ],
                json: "{}".into(),
            },
            config: r#"{"defaultBridge": "br-default"}"#.into(),
            backend: "default".into(),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn upstream() -> Upstream {
        Upstream {
            networks: vec![],
            volumes: vec![],
            lifecycle: None,
        }
    }

    fn run(networks: Vec<Network>, cluster: &FixtureCluster) -> StepResult<NetworkOutcome> {
        network_reconcile::<MultusNetwork>(&context(networks), &upstream(), cluster)
    }

    fn nad_object(name: &str, wukong: Option<&str>) -> Value {
        let labels = wukong.map_or(
            json!({}),
            |w| json!({"app.kubernetes.io/managed-by": "wukong", "vm.novasphere.dev/wukong": w}),
        );
        json!({"apiVersion": NAD_API_VERSION, "kind": NAD_KIND,
            "metadata": {"name": name, "namespace": "tenant-a", "labels": labels},
            "spec": {"config": r#"{"cniVersion":"0.3.1","name":"storage-net","type":"bridge","bridge":"br1"}"#}})
    }

    fn configured(outcome: &NetworkOutcome) -> (&str, &str) {
        let c = outcome
            .effects
            .conditions
            .iter()
            .find(|c| c.condition_type == NETWORKS_CONFIGURED)
            .unwrap();
        (&c.status, &c.message)
    }

    #[test]
    fn pod_network_is_attached_with_masquerade() {
        let outcome = run(vec![network("default", "pod")], &FixtureCluster::new()).unwrap();
        let pod = &outcome.attachments[0];
        assert_eq!(
            (pod.network_name.as_str(), pod.binding.as_str()),
            ("pod", "masquerade")
        );
        assert!(pod.ready && !pod.created);
        assert!(outcome.effects.apply.is_empty());
        assert_eq!(configured(&outcome).0, "True");
    }

    #[test]
    fn a_config_creates_a_bridge_nad() {
        let mut lan = bridged("lan", Some("br1"));
        lan.mac_address = Some("02:00:00:00:00:01".into());
        let outcome = run(vec![lan], &FixtureCluster::new()).unwrap();
        let nad: Value = serde_json::from_str(&outcome.effects.apply[0]).unwrap();
        assert_eq!(nad["kind"], NAD_KIND);
        // The derived name (see wukong_plugin_sdk::names).
        assert_eq!(nad["metadata"]["name"], "vm1-lan-nxmorxvged");
        assert_eq!(nad["metadata"]["namespace"], "tenant-a");
        assert_eq!(nad["metadata"]["labels"]["vm.novasphere.dev/wukong"], "vm1");
        let cni: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(
            cni,
            json!({"cniVersion": "0.3.1", "name": "vm1-lan-nxmorxvged", "type": "bridge", "bridge": "br1",
            "vlan": 100, "mtu": 9000, "ipam": {"type": "whereabouts", "range": "10.10.0.0/24"}})
        );
        let lan = &outcome.attachments[0];
        assert_eq!(lan.network_name, "tenant-a/vm1-lan-nxmorxvged");
        assert_eq!(lan.mac_address.as_deref(), Some("02:00:00:00:00:01"));
        assert!(lan.created && lan.ready);
    }

    #[test]
    fn the_default_bridge_fills_in_and_an_unchanged_nad_is_not_reapplied() {
        let outcome = run(vec![bridged("lan", None)], &FixtureCluster::new()).unwrap();
        let nad: Value = serde_json::from_str(&outcome.effects.apply[0]).unwrap();
        assert!(
            nad["spec"]["config"]
                .as_str()
                .unwrap()
                .contains(r#""bridge":"br-default""#)
        );
        let again = run(vec![bridged("lan", None)], &FixtureCluster::new().with(nad)).unwrap();
        assert!(again.effects.apply.is_empty() && again.effects.delete.is_empty());
    }

    #[test]
    fn a_named_nad_is_used_and_a_missing_one_is_reported() {
        let cluster = FixtureCluster::new().with(nad_object("storage-net", None));
        let outcome = run(
            vec![named("san", "storage-net"), named("lan", "tenant-a/absent")],
            &cluster,
        )
        .unwrap();
        assert!(outcome.effects.apply.is_empty());
        let (san, lan) = (&outcome.attachments[0], &outcome.attachments[1]);
        assert_eq!(san.network_name, "tenant-a/storage-net");
        assert!(san.ready && !san.created);
        assert!(!lan.ready);
        let (status, message) = configured(&outcome);
        assert_eq!(status, "False");
        assert!(
            message.contains("NetworkAttachmentDefinition tenant-a/absent does not exist"),
            "{message}"
        );
        assert_eq!(outcome.effects.requeue_after_ms, Some(REQUEUE_MS));
    }

    #[test]
    fn a_named_nad_without_a_usable_cni_config_is_not_ready() {
        let mut empty = nad_object("storage-net", None);
        empty["spec"]["config"] = json!("{}");
        let outcome = run(
            vec![named("san", "storage-net")],
            &FixtureCluster::new().with(empty),
        )
        .unwrap();
        let san = &outcome.attachments[0];
        assert!(!san.ready);
        assert_eq!(
            san.message,
            "NetworkAttachmentDefinition tenant-a/storage-net has no usable CNI config: missing 'cniVersion'"
        );
        let c = outcome
            .effects
            .conditions
            .iter()
            .find(|c| c.condition_type == NETWORKS_CONFIGURED)
            .unwrap();
        assert_eq!(c.reason, "NetworkAttachmentDefinitionInvalid");
        for (config, ok) in [
            (r#"{"cniVersion":"0.3.1","type":"bridge"}"#, true),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"tuning"}]}"#,
                true,
            ),
            (r#"{"cniVersion":"0.3.1"}"#, false),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                false,
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, false),
            ("[]", false),
            ("not json", false),
        ] {
            assert_eq!(cni_config_error(config).is_none(), ok, "{config}");
        }
    }

    #[test]
    fn a_nad_in_another_namespace_is_used_without_reading_it() {
        let outcome = run(
            vec![named("lan", "shared/vlan-100")],
            &FixtureCluster::new(),
        )
        .unwrap();
        let lan = &outcome.attachments[0];
        assert_eq!(lan.network_name, "shared/vlan-100");
        assert!(lan.ready);
        assert!(lan.message.contains("not checked"));
    }

    #[test]
    fn invalid_networks_are_refused_with_a_clear_message() {
        let cases = [
            (vec![network("lan", "multus")], "needs nadName"),
            (
                vec![network("a", "pod"), network("b", "pod")],
                "only one network",
            ),
            (vec![network("x", "sriov-magic")], "unknown type"),
        ];
        for (networks, expected) in cases {
            let err = run(networks, &FixtureCluster::new()).unwrap_err();
            assert!(
                matches!(&err, StepError::InvalidSpec(m) if m.contains(expected)),
                "{err:?}"
            );
        }
        let mut bad_ipam = bridged("lan", None);
        if let Some(config) = bad_ipam.config.as_mut() {
            config.ipam = Some("{not json".into());
        }
        assert!(
            matches!(run(vec![bad_ipam], &FixtureCluster::new()), Err(StepError::InvalidSpec(m)) if m.contains("ipam"))
        );
    }

    #[test]
    fn a_network_that_left_the_spec_loses_its_nad() {
        let cluster = FixtureCluster::new()
            .with(nad_object("vm1-old", Some("vm1")))
            .with(nad_object("vm2-lan", Some("vm2")));
        let outcome = run(vec![network("default", "pod")], &cluster).unwrap();
        let deleted: Vec<_> = outcome
            .effects
            .delete
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(deleted, ["vm1-old"]);
    }

    #[test]
    fn finalize_deletes_only_the_nads_it_created() {
        let cluster = FixtureCluster::new()
            .with(nad_object("vm1-lan", Some("vm1")))
            .with(nad_object("storage-net", None))
            .with(nad_object("vm2-lan", Some("vm2")));
        let networks = vec![bridged("lan", None), named("san", "storage-net")];
        let effects =
            network_finalize::<MultusNetwork>(&context(networks), &upstream(), &cluster).unwrap();
        let deleted: Vec<_> = effects
            .delete
            .iter()
            .map(|r| (r.kind.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(deleted, [(NAD_KIND, "vm1-lan")]);
    }

    fn context_of(name: &str, uid: &str, wukong: Value, networks: Vec<Network>) -> Context {
        let mut ctx = context(networks);
        ctx.wukong.name = name.into();
        ctx.wukong.uid = uid.into();
        ctx.wukong.labels = vec![
            ("app.kubernetes.io/managed-by".into(), "wukong".into()),
            ("vm.novasphere.dev/wukong".into(), name.into()),
        ];
        ctx.wukong.json = wukong.to_string();
        ctx
    }

    fn applied_names(outcome: &NetworkOutcome) -> Vec<String> {
        outcome
            .effects
            .apply
            .iter()
            .map(|j| {
                serde_json::from_str::<Value>(j).unwrap()["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn wukongs_whose_names_read_alike_get_distinct_nads() {
        let web = context_of("web", "uid-web", json!({}), vec![bridged("db-data", None)]);
        let web_db = context_of(
            "web-db",
            "uid-web-db",
            json!({}),
            vec![bridged("data", None)],
        );
        let cluster = FixtureCluster::new();
        let a = network_reconcile::<MultusNetwork>(&web, &upstream(), &cluster).unwrap();
        let b = network_reconcile::<MultusNetwork>(&web_db, &upstream(), &cluster).unwrap();
        assert_ne!(applied_names(&a), applied_names(&b));
        assert_ne!(a.attachments[0].network_name, b.attachments[0].network_name);

        // `web` made `web-db-data` the old way: it keeps it; `web-db` makes its own.
        let mut legacy = nad_object("web-db-data", Some("web"));
        legacy["metadata"]["ownerReferences"] = json!([{"uid": "uid-web", "controller": true}]);
        let cluster = FixtureCluster::new().with(legacy);
        let a = network_reconcile::<MultusNetwork>(&web, &upstream(), &cluster).unwrap();
        let b = network_reconcile::<MultusNetwork>(&web_db, &upstream(), &cluster).unwrap();
        assert_eq!(a.attachments[0].network_name, "tenant-a/web-db-data");
        assert_eq!(applied_names(&b), [names::derived("web-db", "data")]);
        // Both were on `web-db-data` before derived names; web-db does not stay there.
        let shared = json!({"status": {"networks": [{"name": "data", "networkName": "tenant-a/web-db-data", "created": true}]}});
        let web_db = context_of("web-db", "uid-web-db", shared, vec![bridged("data", None)]);
        let b = network_reconcile::<MultusNetwork>(&web_db, &upstream(), &cluster).unwrap();
        assert_eq!(applied_names(&b), [names::derived("web-db", "data")]);
    }

    #[test]
    fn an_upgraded_wukong_keeps_the_nad_it_made_the_old_way() {
        let first = run(vec![bridged("lan", None)], &FixtureCluster::new()).unwrap();
        let mut legacy: Value = serde_json::from_str(&first.effects.apply[0]).unwrap();
        // As made before derived names: `vm1-lan`, the same config, the host's reference.
        let config = legacy["spec"]["config"]
            .as_str()
            .unwrap()
            .replace("vm1-lan-nxmorxvged", "vm1-lan");
        legacy["metadata"]["name"] = json!("vm1-lan");
        legacy["spec"]["config"] = json!(config);
        legacy["metadata"]["ownerReferences"] = json!([{"uid": "uid-1", "controller": true}]);
        let cluster = FixtureCluster::new().with(legacy);
        let outcome = run(vec![bridged("lan", None)], &cluster).unwrap();
        assert!(outcome.effects.apply.is_empty() && outcome.effects.delete.is_empty());
        assert_eq!(outcome.attachments[0].network_name, "tenant-a/vm1-lan");

        // The status remembers it; a recorded NAD the plugin did not create is not taken.
        let recorded = |name: &str, created: bool| json!({"status": {"networks": [{"name": "lan", "networkName": format!("tenant-a/{name}"), "created": created}]}});
        let ctx = context_of(
            "vm1",
            "uid-1",
            recorded("vm1-lan", true),
            vec![bridged("lan", None)],
        );
        let outcome =
            network_reconcile::<MultusNetwork>(&ctx, &upstream(), &FixtureCluster::new()).unwrap();
        assert_eq!(applied_names(&outcome), ["vm1-lan"]);
        let ctx = context_of(
            "vm1",
            "uid-1",
            recorded("storage-net", false),
            vec![bridged("lan", None)],
        );
        let outcome =
            network_reconcile::<MultusNetwork>(&ctx, &upstream(), &FixtureCluster::new()).unwrap();
        assert_eq!(applied_names(&outcome), ["vm1-lan-nxmorxvged"]);
    }

    #[test]
    fn a_named_nad_is_never_applied_or_deleted() {
        // Even labelled like the Wukong's own NADs.
        let cluster = FixtureCluster::new().with(nad_object("storage-net", Some("vm1")));
        let networks = || vec![named("san", "storage-net")];
        let outcome = run(networks(), &cluster).unwrap();
        assert!(outcome.effects.apply.is_empty() && outcome.effects.delete.is_empty());
        let also = vec![named("san", "tenant-a/storage-net")];
        assert!(run(also, &cluster).unwrap().effects.delete.is_empty());
        let effects =
            network_finalize::<MultusNetwork>(&context(networks()), &upstream(), &cluster).unwrap();
        assert!(effects.delete.is_empty());

        // A network whose own NAD is the one another network names is refused.
        let mut legacy = nad_object("vm1-lan", Some("vm1"));
        legacy["metadata"]["ownerReferences"] = json!([{"uid": "uid-1", "controller": true}]);
        let cluster = FixtureCluster::new().with(legacy);
        let err = run(
            vec![bridged("lan", None), named("san", "vm1-lan")],
            &cluster,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidSpec(m) if m.contains("nadName")),
            "{err:?}"
        );
    }
}
