//! The Wukong as the plugin contract sees it: typed essentials plus the whole object.

use kube::ResourceExt;

use super::{DiskBus, InterfaceBinding, LifecycleActionKind, NetworkType, RunStrategy, Wukong};
use crate::plugin::types;

/// On every object the operator applies for a Wukong: the managed-by label and the
/// Wukong's name. Defined in `wukong-model`, which the plugin SDK re-exports too.
pub use wukong_model::marks::{MANAGED_BY_LABEL, WUKONG_LABEL};

/// Graceful stop when the action does not say.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u32 = 30;

/// Maps a Wukong into the contract's `wukong` record.
pub fn to_contract(wukong: &Wukong) -> types::Wukong {
    let spec = &wukong.spec;
    let generation = wukong.metadata.generation.unwrap_or_default();
    types::Wukong {
        name: wukong.name_any(),
        namespace: wukong.namespace().unwrap_or_default(),
        uid: wukong.uid().unwrap_or_default(),
        generation,
        deleting: wukong.metadata.deletion_timestamp.is_some(),
        cpu: spec.cpu,
        memory: spec.memory.clone(),
        run_strategy: run_strategy_name(spec.run_strategy.unwrap_or_default()).to_owned(),
        disks: spec.disks.iter().map(disk).collect(),
        networks: spec.networks.iter().map(network).collect(),
        lifecycle_action: spec
            .lifecycle_action
            .as_ref()
            .map(|a| types::LifecycleAction {
                action: action_name(a.action).to_owned(),
                force: a.force,
                grace_period_seconds: a
                    .grace_period_seconds
                    .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS),
                request_id: a.request_id.clone().unwrap_or_else(|| {
                    let grace = a
                        .grace_period_seconds
                        .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS);
                    format!("{}/force={}/grace={grace}", action_name(a.action), a.force)
                }),
            }),
        migration: spec.migration.as_ref().map(|m| types::MigrationRequest {
            target_node: m.target_node.clone(),
            allow_auto_converge: m.allow_auto_converge,
            allow_post_copy: m.allow_post_copy,
            completion_timeout_per_gi_b: m.completion_timeout_per_gi_b,
            abort: m.abort,
            request_id: m.request_id.clone().unwrap_or_else(|| {
                format!("migrate/{}", m.target_node.as_deref().unwrap_or("any"))
            }),
        }),
        labels: vec![
            (MANAGED_BY_LABEL.0.to_owned(), MANAGED_BY_LABEL.1.to_owned()),
            (WUKONG_LABEL.to_owned(), wukong.name_any()),
        ],
        json: serde_json::to_string(wukong).unwrap_or_default(),
    }
}

fn disk(d: &super::DiskSpec) -> types::Disk {
    let source = match (&d.image, &d.existing_claim) {
        (Some(image), _) => types::DiskSource::Image(image.clone()),
        (None, Some(claim)) => types::DiskSource::ExistingClaim(claim.clone()),
        (None, None) => types::DiskSource::Blank,
    };
    types::Disk {
        name: d.name.clone(),
        source,
        size: d.size.clone(),
        storage_class: d.storage_class.clone(),
        backend: d.backend.clone(),
        retain: d.retain,
        boot_order: d.boot_order,
        bus: match d.bus.unwrap_or_default() {
            DiskBus::Virtio => "virtio",
            DiskBus::Sata => "sata",
            DiskBus::Scsi => "scsi",
        }
        .to_owned(),
    }
}

fn network(n: &super::NetworkSpec) -> types::Network {
    let network_type = n.network_type.unwrap_or_default();
    let binding = n.binding.unwrap_or(match network_type {
        NetworkType::Pod => InterfaceBinding::Masquerade,
        NetworkType::Multus => InterfaceBinding::Bridge,
    });
    types::Network {
        name: n.name.clone(),
        network_type: match network_type {
            NetworkType::Pod => "pod",
            NetworkType::Multus => "multus",
        }
        .to_owned(),
        nad_name: n.nad_name.clone(),
        config: n.config.as_ref().map(|c| types::NetworkConfig {
            cni_type: c.cni_type.clone().unwrap_or_else(|| "bridge".to_owned()),
            bridge: c.bridge.clone(),
            vlan: c.vlan,
            mtu: c.mtu,
            ipam: c.ipam.as_ref().map(ToString::to_string),
        }),
        backend: n.backend.clone(),
        binding: match binding {
            InterfaceBinding::Bridge => "bridge",
            InterfaceBinding::Masquerade => "masquerade",
            InterfaceBinding::Sriov => "sriov",
        }
        .to_owned(),
        mac_address: n.mac_address.clone(),
    }
}

pub fn run_strategy_name(strategy: RunStrategy) -> &'static str {
    match strategy {
        RunStrategy::Always => "Always",
        RunStrategy::Halted => "Halted",
        RunStrategy::Manual => "Manual",
        RunStrategy::RerunOnFailure => "RerunOnFailure",
        RunStrategy::Once => "Once",
    }
}

pub fn action_name(action: LifecycleActionKind) -> &'static str {
    match action {
        LifecycleActionKind::Start => "start",
        LifecycleActionKind::Stop => "stop",
        LifecycleActionKind::Restart => "restart",
        LifecycleActionKind::Suspend => "suspend",
        LifecycleActionKind::Resume => "resume",
        LifecycleActionKind::SoftReboot => "softReboot",
    }
}
