//! `example-network`: a Wukong network backend. This skeleton attaches the pod network and
//! NetworkAttachmentDefinitions that already exist; creating one from a network's
//! `config` is left to you (apply it in `reconcile`, delete it in `finalize`).

use schemars::JsonSchema;
use serde::Deserialize;
use wukong_plugin_sdk::{
    Call, Manifest, NetworkAttachment, NetworkOutcome, NetworkPlugin, Plugin, StepError,
    StepResult,
};

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
            .description("Pod network and existing NetworkAttachmentDefinitions")
            .reads("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")
    }
}

impl NetworkPlugin for ExampleNetwork {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<NetworkOutcome> {
        let mut outcome = NetworkOutcome {
            effects: Default::default(),
            attachments: Vec::new(),
        };
        for network in &call.wukong.networks {
            let network_name = match (network.network_type.as_str(), &network.nad_name) {
                ("pod", _) => "pod".to_owned(),
                (_, Some(nad)) if nad.contains('/') => nad.clone(),
                (_, Some(nad)) => format!("{}/{nad}", call.wukong.namespace),
                (_, None) => {
                    return Err(StepError::InvalidSpec(format!(
                        "network {}: name an existing NetworkAttachmentDefinition (nadName)",
                        network.name
                    )));
                }
            };
            outcome.attachments.push(NetworkAttachment {
                name: network.name.clone(),
                network_name,
                binding: network.binding.clone(),
                mac_address: network.mac_address.clone(),
                created: false,
                ready: true,
                message: String::new(),
            });
        }
        Ok(outcome)
    }
}

wukong_plugin_sdk::export_network_plugin!(ExampleNetwork);
