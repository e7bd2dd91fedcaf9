//! `example-storage`: the Wukong's disks as claims on any CSI driver. An image disk becomes
//! a CDI DataVolume, a blank disk a PersistentVolumeClaim, an existing claim is used as
//! is. With `provisioner` set the plugin applies its StorageClass for that CSI driver;
//! without, the class must already exist.
//!
//! The per-disk logic (create, report phase and progress, grow, never shrink, finalize)
//! is the SDK's [`wukong_plugin_sdk::disks`]; this file is what a backend decides.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use schemars::JsonSchema;
use serde::Deserialize;
use wukong_plugin_sdk::disks::{self, ClaimClass};
use wukong_plugin_sdk::{
    Call, DiskSource, Effects, Manifest, Plugin, StepError, StepResult, StorageOutcome,
    StoragePlugin,
};

/// The plugin's config, from the host config (`[storage.NAME] config = {..}`). Its JSON
/// Schema, derived here, is in the manifest: the host refuses a config that breaks it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("dependentRequired" = {"provisioner": ["storageClass"]}))]
pub struct Config {
    /// The StorageClass for disks that name none; the cluster's default class when absent.
    pub storage_class: Option<String>,
    /// A CSI driver (`ebs.csi.aws.com`, `nfs.csi.k8s.io`): the plugin applies
    /// `storageClass` for it when that class does not exist.
    pub provisioner: Option<String>,
    /// The driver's StorageClass parameters, when the plugin applies the class.
    pub parameters: BTreeMap<String, String>,
    /// Access modes of every claim. Live migration needs `ReadWriteMany`.
    #[schemars(length(min = 1))]
    pub access_modes: Vec<AccessMode>,
    pub volume_mode: VolumeMode,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            storage_class: None,
            provisioner: None,
            parameters: BTreeMap::new(),
            access_modes: vec![AccessMode::ReadWriteOnce],
            volume_mode: VolumeMode::Filesystem,
        }
    }
}

/// A PersistentVolumeClaim access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadWriteMany,
    ReadWriteOncePod,
}

/// A PersistentVolumeClaim volume mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum VolumeMode {
    Filesystem,
    Block,
}

/// The plugin.
pub struct ExampleStorage;

impl Plugin for ExampleStorage {
    type Config = Config;

    /// Who the plugin is and what it may touch: the host refuses anything else.
    fn manifest() -> Manifest {
        Manifest::new("example-storage", env!("CARGO_PKG_VERSION"))
            .description("Disks as claims on any CSI driver's StorageClass")
            .writes(disks::DATA_VOLUME_API_VERSION, disks::DATA_VOLUME_KIND)
            .writes("v1", "PersistentVolumeClaim")
            .writes("storage.k8s.io/v1", "StorageClass")
    }
}

impl StoragePlugin for ExampleStorage {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<StorageOutcome> {
        let config = &call.config;
        let mut effects = Effects::default();
        if let Some(provisioner) = &config.provisioner {
            let name = config.storage_class.as_deref().ok_or_else(|| {
                StepError::InvalidConfig(
                    "`provisioner` needs `storageClass`, the class to apply".into(),
                )
            })?;
            disks::ensure_storage_class(
                call,
                &mut effects,
                &storage_class(config, name, provisioner),
            )?;
        } else if let Some(name) = &config.storage_class
            && uses_default_class(call)
            && call.get_cluster_scoped::<StorageClass>(name)?.is_none()
        {
            // A clear message now rather than claims pending forever.
            return Err(StepError::InvalidConfig(format!(
                "StorageClass {name} does not exist: create it, or set `provisioner` so this plugin does"
            )));
        }
        let class = ClaimClass {
            storage_class: config.storage_class.clone(),
            access_modes: config
                .access_modes
                .iter()
                .map(|mode| format!("{mode:?}"))
                .collect(),
            volume_mode: Some(format!("{:?}", config.volume_mode)),
        };
        disks::reconcile(call, &class, effects)
    }

    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        disks::finalize(call)
    }
}

/// True when a disk gets a new claim on the configured class.
fn uses_default_class(call: &Call<'_, Config>) -> bool {
    call.wukong.disks.iter().any(|disk| {
        disk.storage_class.is_none() && !matches!(disk.source, DiskSource::ExistingClaim(_))
    })
}

/// The class the plugin applies: shared by every Wukong, expandable (disks grow).
fn storage_class(config: &Config, name: &str, provisioner: &str) -> StorageClass {
    StorageClass {
        metadata: disks::storage_class_metadata(name),
        provisioner: provisioner.into(),
        parameters: Some(config.parameters.clone()),
        allow_volume_expansion: Some(true),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..StorageClass::default()
    }
}

wukong_plugin_sdk::export_storage_plugin!(ExampleStorage);

/// Unit tests call the plugin natively (`cargo test`); `cases/` run the built component
/// (`wukong plugin test`).
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wukong_plugin_sdk::native::{describe, storage_reconcile};
    use wukong_plugin_sdk::{Context, Disk, FixtureCluster, StepKind, Upstream, Wukong};

    fn run(config: Value, cluster: &FixtureCluster) -> StepResult<StorageOutcome> {
        let disk = Disk {
            name: "data".into(),
            source: DiskSource::Blank,
            size: "10Gi".into(),
            storage_class: None,
            backend: None,
            retain: false,
            boot_order: None,
            bus: "virtio".into(),
        };
        let wukong = Wukong {
            name: "vm1".into(),
            namespace: "tenant-a".into(),
            uid: "uid-1".into(),
            generation: 1,
            deleting: false,
            cpu: 2,
            memory: "4Gi".into(),
            run_strategy: "Always".into(),
            disks: vec![disk],
            networks: vec![],
            lifecycle_action: None,
            migration: None,
            labels: vec![("vm.novasphere.dev/wukong".into(), "vm1".into())],
            json: "{}".into(),
        };
        let context = Context {
            wukong,
            config: config.to_string(),
            backend: "default".into(),
            now: "2026-01-01T00:00:00Z".into(),
        };
        let upstream = Upstream {
            networks: vec![],
            volumes: vec![],
            lifecycle: None,
        };
        storage_reconcile::<ExampleStorage>(&context, &upstream, cluster)
    }

    fn applied(outcome: &StorageOutcome) -> Vec<Value> {
        let parse = |json: &String| serde_json::from_str(json).unwrap();
        outcome.effects.apply.iter().map(parse).collect()
    }

    #[test]
    fn applies_the_class_for_the_driver_and_claims_on_it() {
        let config = json!({"storageClass": "wukong-csi", "provisioner": "nfs.csi.k8s.io",
            "accessModes": ["ReadWriteMany"]});
        let outcome = run(config, &FixtureCluster::new()).unwrap();
        let objects = applied(&outcome);
        assert_eq!(objects[0]["kind"], "StorageClass");
        assert_eq!(objects[0]["provisioner"], "nfs.csi.k8s.io");
        assert_eq!(objects[1]["spec"]["storageClassName"], "wukong-csi");
        assert_eq!(objects[1]["spec"]["accessModes"], json!(["ReadWriteMany"]));
    }

    #[test]
    fn without_a_provisioner_the_class_must_exist() {
        let config = json!({"storageClass": "wukong-csi"});
        let error = run(config.clone(), &FixtureCluster::new()).unwrap_err();
        assert!(matches!(error, StepError::InvalidConfig(m) if m.contains("wukong-csi")));
        let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "wukong-csi"}, "provisioner": "x"});
        let outcome = run(config, &FixtureCluster::new().with(class)).unwrap();
        assert_eq!(applied(&outcome)[0]["kind"], "PersistentVolumeClaim");
    }

    #[test]
    fn the_manifest_publishes_the_config_schema() {
        let manifest = describe::<ExampleStorage>(StepKind::Storage);
        assert_eq!(manifest.name, "example-storage");
        assert!(manifest.config_schema.contains("ReadWriteOncePod"));
    }
}
