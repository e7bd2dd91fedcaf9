//! `longhorn-storage`: the Wukong's disks on Longhorn (`driver.longhorn.io`). With
//! `liveMigration` (the default) claims are `ReadWriteMany` in `Block` mode on a class with
//! `migratable: "true"`, which is what lets KubeVirt live-migrate the VM. The plugin
//! applies its StorageClass when `createStorageClass` is set, or uses an existing one.
//!
//! The disk logic is the SDK's [`wukong_plugin_sdk::disks`].

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use schemars::JsonSchema;
use serde::Deserialize;
use wukong_plugin_sdk::disks::{self, ClaimClass};
use wukong_plugin_sdk::{
    Call, Effects, Manifest, Plugin, StepResult, StorageOutcome, StoragePlugin,
};

/// Longhorn's CSI driver.
pub const PROVISIONER: &str = "driver.longhorn.io";

/// The plugin's config.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The StorageClass for disks that name none.
    pub storage_class: String,
    /// Apply that StorageClass (shared by every Wukong) when it does not exist.
    pub create_storage_class: bool,
    /// Longhorn replicas per volume.
    #[schemars(range(min = 1, max = 20))]
    pub number_of_replicas: u32,
    /// Minutes before Longhorn drops an unreachable replica.
    pub stale_replica_timeout: u32,
    /// RWX `Block` volumes with `migratable: "true"`; RWO `Filesystem` when false.
    pub live_migration: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            storage_class: "wukong-longhorn".into(),
            create_storage_class: true,
            number_of_replicas: 3,
            stale_replica_timeout: 30,
            live_migration: true,
        }
    }
}

/// The plugin.
pub struct LonghornStorage;

impl Plugin for LonghornStorage {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("longhorn-storage", env!("CARGO_PKG_VERSION"))
            .description("Disks on Longhorn, live-migratable (RWX Block, migratable=true)")
            .writes(disks::DATA_VOLUME_API_VERSION, disks::DATA_VOLUME_KIND)
            .writes("v1", "PersistentVolumeClaim")
            .writes("storage.k8s.io/v1", "StorageClass")
    }
}

impl StoragePlugin for LonghornStorage {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<StorageOutcome> {
        let config = &call.config;
        let mut effects = Effects::default();
        if config.create_storage_class {
            disks::ensure_storage_class(call, &mut effects, &storage_class(config))?;
        }
        let class = ClaimClass::shared(&config.storage_class, config.live_migration);
        disks::reconcile(call, &class, effects)
    }

    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        disks::finalize(call)
    }
}

/// The class the plugin applies: expandable (disks grow), bound at once (the VM waits for
/// bound volumes).
fn storage_class(config: &Config) -> StorageClass {
    let mut parameters = BTreeMap::from([
        (
            "numberOfReplicas".to_owned(),
            config.number_of_replicas.to_string(),
        ),
        (
            "staleReplicaTimeout".to_owned(),
            config.stale_replica_timeout.to_string(),
        ),
    ]);
    if config.live_migration {
        parameters.insert("migratable".into(), "true".into());
    }
    StorageClass {
        metadata: disks::storage_class_metadata(&config.storage_class),
        provisioner: PROVISIONER.into(),
        parameters: Some(parameters),
        allow_volume_expansion: Some(true),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..StorageClass::default()
    }
}

wukong_plugin_sdk::export_storage_plugin!(LonghornStorage);

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wukong_plugin_sdk::native::{describe, storage_reconcile};
    use wukong_plugin_sdk::{
        Context, Disk, DiskSource, FixtureCluster, StepError, StepKind, Upstream, Wukong,
    };

    fn context(config: Value) -> Context {
        let disk = Disk {
            name: "root".into(),
            source: DiskSource::Image("docker://quay.io/containerdisks/fedora:40".into()),
            size: "20Gi".into(),
            storage_class: None,
            backend: Some("longhorn".into()),
            retain: false,
            boot_order: Some(1),
            bus: "virtio".into(),
        };
        Context {
            wukong: Wukong {
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
            },
            config: config.to_string(),
            backend: "longhorn".into(),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn run(config: Value, cluster: &FixtureCluster) -> StepResult<StorageOutcome> {
        let upstream = Upstream {
            networks: vec![],
            volumes: vec![],
            lifecycle: None,
        };
        storage_reconcile::<LonghornStorage>(&context(config), &upstream, cluster)
    }

    fn applied(outcome: &StorageOutcome, kind: &str) -> Option<Value> {
        outcome
            .effects
            .apply
            .iter()
            .map(|j| serde_json::from_str::<Value>(j).unwrap())
            .find(|o| o["kind"] == kind)
    }

    #[test]
    fn creates_a_migratable_class_and_rwx_block_claims_on_it() {
        let outcome = run(json!({"numberOfReplicas": 2}), &FixtureCluster::new()).unwrap();
        let class = applied(&outcome, "StorageClass").unwrap();
        assert_eq!(class["metadata"]["name"], "wukong-longhorn");
        assert!(
            class["metadata"].get("namespace").is_none(),
            "cluster-scoped"
        );
        assert_eq!(class["provisioner"], "driver.longhorn.io");
        assert_eq!(
            class["parameters"],
            json!({"numberOfReplicas": "2", "staleReplicaTimeout": "30", "migratable": "true"})
        );
        assert_eq!(class["allowVolumeExpansion"], true);
        let dv = applied(&outcome, "DataVolume").unwrap();
        assert_eq!(dv["spec"]["storage"]["storageClassName"], "wukong-longhorn");
        assert_eq!(
            dv["spec"]["storage"]["accessModes"],
            json!(["ReadWriteMany"])
        );
        assert_eq!(dv["spec"]["storage"]["volumeMode"], "Block");
        assert_eq!(outcome.volumes[0].access_modes, ["ReadWriteMany"]);
    }

    #[test]
    fn an_existing_identical_class_is_not_reapplied_and_a_different_one_is_refused() {
        let outcome = run(json!({}), &FixtureCluster::new()).unwrap();
        let class = applied(&outcome, "StorageClass").unwrap();
        let again = run(json!({}), &FixtureCluster::new().with(class.clone())).unwrap();
        assert!(applied(&again, "StorageClass").is_none());
        let err = run(
            json!({"numberOfReplicas": 5}),
            &FixtureCluster::new().with(class),
        )
        .unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidConfig(m) if m.contains("wukong-longhorn") && m.contains("cannot change")),
            "{err:?}"
        );
    }

    #[test]
    fn uses_an_existing_class_without_migration() {
        let config = json!({"createStorageClass": false, "storageClass": "longhorn", "liveMigration": false});
        let outcome = run(config, &FixtureCluster::new()).unwrap();
        assert!(applied(&outcome, "StorageClass").is_none());
        let dv = applied(&outcome, "DataVolume").unwrap();
        assert_eq!(dv["spec"]["storage"]["storageClassName"], "longhorn");
        assert_eq!(
            dv["spec"]["storage"]["accessModes"],
            json!(["ReadWriteOnce"])
        );
        assert_eq!(dv["spec"]["storage"]["volumeMode"], "Filesystem");
    }

    #[test]
    fn manifest_may_write_storage_classes() {
        let manifest = describe::<LonghornStorage>(StepKind::Storage);
        assert!(
            manifest
                .capabilities
                .writes
                .iter()
                .any(|k| k.kind == "StorageClass")
        );
        assert!(manifest.config_schema.contains("numberOfReplicas"));
    }
}
