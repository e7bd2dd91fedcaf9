//! `example-network`: a Wukong network backend. The pod network is attached as is, a
//! NetworkAttachmentDefinition the spec names is referenced, and a network with a `config`
//! gets its own NAD (a CNI config from it), deleted again on finalize. SR-IOV, IPAM
//! policies and the like are left to you.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wukong_plugin_sdk::{
    Call, Effects, Manifest, Network, NetworkAttachment, NetworkOutcome, NetworkPlugin, Plugin,
    StepError, StepResult, names,
};

const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";
const NAD_KIND: &str = "NetworkAttachmentDefinition";

/// The plugin's config (none yet: add fields here); its JSON Schema is in the manifest.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {}

/// The plugin.
pub struct ExampleNetwork;

impl Plugin for ExampleNetwork {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("example-network", env!("CARGO_PKG_VERSION"))
            .description("Pod network and NetworkAttachmentDefinitions")
            .writes(NAD_API_VERSION, NAD_KIND)
    }
}

impl NetworkPlugin for ExampleNetwork {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<NetworkOutcome> {
        let mut effects = Effects::default();
        let mut attachments = Vec::new();
        for network in &call.wukong.networks {
            let namespace = &call.wukong.namespace;
            let (network_name, created) = match (network.network_type.as_str(), &network.nad_name) {
                ("pod", _) => ("pod".to_owned(), false),
                (_, Some(nad)) if nad.contains('/') => (nad.clone(), false),
                (_, Some(nad)) => (format!("{namespace}/{nad}"), false),
                (_, None) => {
                    let name = nad_name(call, network);
                    if call
                        .get_as::<Value>(&call.object_ref(NAD_API_VERSION, NAD_KIND, &name))?
                        .is_none()
                    {
                        effects.apply(&nad(call, network, &name)?)?;
                    }
                    (format!("{namespace}/{name}"), true)
                }
            };
            attachments.push(NetworkAttachment {
                name: network.name.clone(),
                network_name,
                binding: network.binding.clone(),
                mac_address: network.mac_address.clone(),
                created,
                ready: true,
                message: String::new(),
            });
        }
        Ok(NetworkOutcome {
            effects,
            attachments,
        })
    }

    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        let mut effects = Effects::default();
        for network in call
            .wukong
            .networks
            .iter()
            .filter(|n| n.network_type != "pod" && n.nad_name.is_none())
        {
            let target = call.object_ref(NAD_API_VERSION, NAD_KIND, &nad_name(call, network));
            if call.get_as::<Value>(&target)?.is_some() {
                effects.delete.push(target);
            }
        }
        Ok(effects)
    }
}

/// The NAD this plugin makes for a network: named after the Wukong and the network by
/// [`names::derived`], which is injective (`format!("{wukong}-{network}")` is not: Wukong
/// `web` + network `db-data` and `web-db` + `data` would share one NAD). The host refuses
/// to write or delete a NAD of that name that is not this Wukong's.
fn nad_name(call: &Call<'_, Config>, network: &Network) -> String {
    names::derived(&call.wukong.name, &network.name)
}

/// A NetworkAttachmentDefinition whose CNI config comes from the network's `config`.
fn nad(call: &Call<'_, Config>, network: &Network, name: &str) -> StepResult<Value> {
    let Some(config) = &network.config else {
        return Err(StepError::InvalidSpec(format!(
            "network {}: give nadName or a config",
            network.name
        )));
    };
    let mut cni = json!({"cniVersion": "0.3.1", "name": name, "type": config.cni_type});
    if let Some(bridge) = &config.bridge {
        cni["bridge"] = json!(bridge);
    }
    if let Some(vlan) = config.vlan {
        cni["vlan"] = json!(vlan);
    }
    if let Some(mtu) = config.mtu {
        cni["mtu"] = json!(mtu);
    }
    if let Some(ipam) = &config.ipam {
        cni["ipam"] = serde_json::from_str(ipam)
            .map_err(|e| StepError::InvalidSpec(format!("network {}: ipam: {e}", network.name)))?;
    }
    Ok(
        json!({"apiVersion": NAD_API_VERSION, "kind": NAD_KIND, "metadata": call.metadata(name),
        "spec": {"config": cni.to_string()}}),
    )
}

wukong_plugin_sdk::export_network_plugin!(ExampleNetwork);
