//! `ceph-rbd-storage`: the Wukong's disks on Ceph RBD through Rook's CSI driver
//! (`rook-ceph.rbd.csi.ceph.com`). With `liveMigration` (the default) claims are
//! `ReadWriteMany` in `Block` mode — the only way RBD is shared between two nodes, which
//! KubeVirt needs to live-migrate. The plugin applies its StorageClass when
//! `createStorageClass` is set, or uses an existing one.
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

/// Rook's RBD CSI driver (`<operator namespace>.rbd.csi.ceph.com`).
pub const PROVISIONER: &str = "rook-ceph.rbd.csi.ceph.com";

/// The plugin's config. Defaults are Rook's example cluster.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The StorageClass for disks that name none.
    pub storage_class: String,
    /// Apply that StorageClass (shared by every Wukong) when it does not exist.
    pub create_storage_class: bool,
    /// The Rook cluster's namespace, which is its CSI cluster ID.
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// The RBD pool.
    pub pool: String,
    /// RBD image features.
    pub image_features: String,
    /// Namespace of the CSI secrets (Rook's operator namespace).
    pub secret_namespace: String,
    /// Secret for provisioning and expansion.
    pub provisioner_secret: String,
    /// Secret for staging volumes on nodes.
    pub node_secret: String,
    /// RWX `Block` volumes; RWO `Filesystem` when false.
    pub live_migration: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            storage_class: "wukong-ceph-rbd".into(),
            create_storage_class: true,
            cluster_id: "rook-ceph".into(),
            pool: "replicapool".into(),
            image_features: "layering".into(),
            secret_namespace: "rook-ceph".into(),
            provisioner_secret: "rook-csi-rbd-provisioner".into(),
            node_secret: "rook-csi-rbd-node".into(),
            live_migration: true,
        }
    }
}

/// The plugin.
pub struct CephRbdStorage;

impl Plugin for CephRbdStorage {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("ceph-rbd-storage", env!("CARGO_PKG_VERSION"))
            .description("Disks on Ceph RBD through Rook, live-migratable (RWX Block)")
            .writes(disks::DATA_VOLUME_API_VERSION, disks::DATA_VOLUME_KIND)
            .writes("v1", "PersistentVolumeClaim")
            .writes("storage.k8s.io/v1", "StorageClass")
    }
}

impl StoragePlugin for CephRbdStorage {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<StorageOutcome> {
        let config = &call.config;
        let mut effects = Effects::default();
        if config.create_storage_class {
            let wanted = storage_class(config);
            if !made_with_image_format(call, &wanted)? {
                disks::ensure_storage_class(call, &mut effects, &wanted)?;
            }
        }
        let class = ClaimClass::shared(&config.storage_class, config.live_migration);
        disks::reconcile(call, &class, effects)
    }

    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        disks::finalize(call)
    }
}

/// A class this plugin applied before it stopped writing `imageFormat` (ceph-csi reads no
/// such parameter; RBD images are format 2 anyway): the same class otherwise, kept as it
/// is, since a StorageClass's parameters cannot change.
fn made_with_image_format(call: &Call<'_, Config>, wanted: &StorageClass) -> StepResult<bool> {
    let name = wanted.metadata.name.as_deref().unwrap_or_default();
    let Some(existing) = call.get_cluster_scoped::<StorageClass>(name)? else {
        return Ok(false);
    };
    let mut parameters = existing.parameters.unwrap_or_default();
    let had = parameters.remove(LEGACY_IMAGE_FORMAT).is_some();
    Ok(had
        && existing.provisioner == wanted.provisioner
        && Some(&parameters) == wanted.parameters.as_ref())
}

/// A parameter of the plugin's classes of before, which ceph-csi never read.
const LEGACY_IMAGE_FORMAT: &str = "imageFormat";

/// The class the plugin applies, as Rook's example: secrets for provisioning, expansion
/// (disks grow) and node staging. Only parameters ceph-csi reads.
fn storage_class(config: &Config) -> StorageClass {
    let mut parameters: BTreeMap<String, String> = [
        ("clusterID", &config.cluster_id),
        ("pool", &config.pool),
        ("imageFeatures", &config.image_features),
        ("csi.storage.k8s.io/fstype", &"ext4".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.clone()))
    .collect();
    for (role, secret) in [
        ("provisioner", &config.provisioner_secret),
        ("controller-expand", &config.provisioner_secret),
        ("node-stage", &config.node_secret),
    ] {
        let key = format!("csi.storage.k8s.io/{role}-secret");
        parameters.insert(format!("{key}-name"), secret.clone());
        parameters.insert(format!("{key}-namespace"), config.secret_namespace.clone());
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

wukong_plugin_sdk::export_storage_plugin!(CephRbdStorage);

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wukong_plugin_sdk::native::{storage_finalize, storage_reconcile};
    use wukong_plugin_sdk::{Context, Disk, DiskSource, FixtureCluster, Upstream, Wukong};

    fn context(config: Value) -> Context {
        let disk = Disk {
            name: "data".into(),
            source: DiskSource::Blank,
            size: "50Gi".into(),
            storage_class: None,
            backend: Some("ceph-rbd".into()),
            retain: false,
            boot_order: None,
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
            backend: "ceph-rbd".into(),
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

    fn applied(outcome: &StorageOutcome, kind: &str) -> Option<Value> {
        outcome
            .effects
            .apply
            .iter()
            .map(|j| serde_json::from_str::<Value>(j).unwrap())
            .find(|o| o["kind"] == kind)
    }

    #[test]
    fn creates_a_rook_rbd_class_and_rwx_block_claims_on_it() {
        let config = json!({"pool": "vms", "clusterID": "storage"});
        let outcome = storage_reconcile::<CephRbdStorage>(
            &context(config),
            &upstream(),
            &FixtureCluster::new(),
        )
        .unwrap();
        let class = applied(&outcome, "StorageClass").unwrap();
        assert_eq!(class["provisioner"], "rook-ceph.rbd.csi.ceph.com");
        assert!(
            class["metadata"].get("namespace").is_none(),
            "cluster-scoped"
        );
        let parameters = &class["parameters"];
        assert_eq!(
            (
                parameters["pool"].as_str(),
                parameters["clusterID"].as_str()
            ),
            (Some("vms"), Some("storage"))
        );
        assert_eq!(parameters["imageFeatures"], "layering");
        assert!(
            parameters.get("imageFormat").is_none(),
            "ceph-csi reads none"
        );
        assert_eq!(
            parameters["csi.storage.k8s.io/provisioner-secret-name"],
            "rook-csi-rbd-provisioner"
        );
        assert_eq!(
            parameters["csi.storage.k8s.io/controller-expand-secret-namespace"],
            "rook-ceph"
        );
        assert_eq!(
            parameters["csi.storage.k8s.io/node-stage-secret-name"],
            "rook-csi-rbd-node"
        );
        let pvc = applied(&outcome, "PersistentVolumeClaim").unwrap();
        assert_eq!(
            pvc["spec"],
            json!({"accessModes": ["ReadWriteMany"], "volumeMode": "Block", "storageClassName": "wukong-ceph-rbd",
                "resources": {"requests": {"storage": "50Gi"}}})
        );
    }

    #[test]
    fn uses_an_existing_class_and_finalize_deletes_the_claim() {
        let config = json!({"createStorageClass": false, "storageClass": "rook-ceph-block", "liveMigration": false});
        let outcome = storage_reconcile::<CephRbdStorage>(
            &context(config.clone()),
            &upstream(),
            &FixtureCluster::new(),
        )
        .unwrap();
        assert!(applied(&outcome, "StorageClass").is_none());
        let pvc = applied(&outcome, "PersistentVolumeClaim").unwrap();
        assert_eq!(pvc["spec"]["storageClassName"], "rook-ceph-block");
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        let effects = storage_finalize::<CephRbdStorage>(
            &context(config),
            &upstream(),
            &FixtureCluster::new().with(pvc),
        )
        .unwrap();
        assert_eq!(effects.delete.len(), 1);
        assert_eq!(effects.delete[0].name, disks::claim_name("vm1", "data"));
    }

    #[test]
    fn a_class_made_with_the_old_image_format_parameter_is_kept_as_it_is() {
        let config = json!({"pool": "vms"});
        let parsed: Config = serde_json::from_value(config.clone()).unwrap();
        let mut old = wukong_plugin_sdk::objects::with_type(&storage_class(&parsed)).unwrap();
        old["parameters"]["imageFormat"] = json!("2");
        let outcome = storage_reconcile::<CephRbdStorage>(
            &context(config.clone()),
            &upstream(),
            &FixtureCluster::new().with(old.clone()),
        )
        .unwrap();
        assert!(applied(&outcome, "StorageClass").is_none());
        // Another pool is still a config error.
        old["parameters"]["pool"] = json!("other");
        let err = storage_reconcile::<CephRbdStorage>(
            &context(config),
            &upstream(),
            &FixtureCluster::new().with(old),
        )
        .unwrap_err();
        assert!(
            format!("{err:?}").contains("configure another storageClass"),
            "{err:?}"
        );
    }
}
