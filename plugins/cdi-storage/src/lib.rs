//! `cdi-storage`: the Wukong's disks on any storage class through CDI. An image disk
//! becomes a DataVolume (registry or http import), a blank disk a PVC, an existing claim
//! is used as is. Disks grow by patching the PVC and never shrink.
//!
//! The disk logic is the SDK's [`wukong_plugin_sdk::disks`]; this plugin only says which
//! storage class, access modes and volume mode its claims get.

use schemars::JsonSchema;
use serde::Deserialize;
use wukong_plugin_sdk::disks::{self, ClaimClass};
use wukong_plugin_sdk::{
    Call, Effects, Manifest, Plugin, StepResult, StorageOutcome, StoragePlugin,
};

/// The plugin's config.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// StorageClass for disks that name none; the cluster's default class when absent.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Access modes of every claim.
    #[serde(default = "default_access_modes")]
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`.
    #[serde(default = "default_volume_mode")]
    pub volume_mode: String,
}

fn default_access_modes() -> Vec<String> {
    vec!["ReadWriteOnce".into()]
}

fn default_volume_mode() -> String {
    "Filesystem".into()
}

/// The plugin.
pub struct CdiStorage;

impl Plugin for CdiStorage {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("cdi-storage", env!("CARGO_PKG_VERSION"))
            .description("Disks as CDI DataVolumes (image) and PVCs (blank) on any storage class")
            .writes(disks::DATA_VOLUME_API_VERSION, disks::DATA_VOLUME_KIND)
            .writes("v1", "PersistentVolumeClaim")
            .reads("storage.k8s.io/v1", "StorageClass")
    }
}

impl StoragePlugin for CdiStorage {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<StorageOutcome> {
        let class = ClaimClass {
            storage_class: call.config.storage_class.clone(),
            access_modes: call.config.access_modes.clone(),
            volume_mode: Some(call.config.volume_mode.clone()),
        };
        disks::reconcile(call, &class, Effects::default())
    }

    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        disks::finalize(call)
    }
}

wukong_plugin_sdk::export_storage_plugin!(CdiStorage);

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wukong_plugin_sdk::marks::{OWNER_UID_ANNOTATION, RETAIN_ANNOTATION};
    use wukong_plugin_sdk::native::{storage_finalize, storage_reconcile};
    use wukong_plugin_sdk::{
        Context, Disk, DiskSource, FixtureCluster, StepError, Upstream, Wukong,
    };

    fn disk(name: &str, source: DiskSource, size: &str) -> Disk {
        Disk {
            name: name.into(),
            source,
            size: size.into(),
            storage_class: None,
            backend: None,
            retain: false,
            boot_order: None,
            bus: "virtio".into(),
        }
    }

    fn image(name: &str, url: &str, size: &str) -> Disk {
        disk(name, DiskSource::Image(url.into()), size)
    }

    fn context(config: Value, disks: Vec<Disk>) -> Context {
        Context {
            wukong: Wukong {
                name: "vm1".into(),
                namespace: "tenant-a".into(),
                uid: "00000000-0000-4000-8000-000000000001".into(),
                generation: 1,
                deleting: false,
                cpu: 2,
                memory: "4Gi".into(),
                run_strategy: "Always".into(),
                disks,
                networks: vec![],
                lifecycle_action: None,
                migration: None,
                labels: vec![
                    ("app.kubernetes.io/managed-by".into(), "wukong".into()),
                    ("vm.novasphere.dev/wukong".into(), "vm1".into()),
                ],
                json: "{}".into(),
            },
            config: config.to_string(),
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

    fn run(disks: Vec<Disk>, cluster: &FixtureCluster) -> StepResult<StorageOutcome> {
        storage_reconcile::<CdiStorage>(
            &context(json!({"storageClass": "fast"}), disks),
            &upstream(),
            cluster,
        )
    }

    /// The claim name Wukong derives for a disk of `vm1`.
    fn own(disk: &str) -> String {
        disks::claim_name("vm1", disk)
    }

    fn labels() -> Value {
        json!({"app.kubernetes.io/managed-by": "wukong", "vm.novasphere.dev/wukong": "vm1"})
    }

    fn dv(name: &str, size: &str, phase: &str, progress: &str) -> Value {
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": name, "namespace": "tenant-a", "labels": labels()},
            "spec": {"storage": {"resources": {"requests": {"storage": size}}}},
            "status": {"phase": phase, "progress": progress}})
    }

    fn pvc(name: &str, request: &str, phase: &str, capacity: Option<&str>) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "tenant-a", "labels": labels()},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem", "storageClassName": "fast",
                "volumeName": "pv-1", "resources": {"requests": {"storage": request}}},
            "status": {"phase": phase, "capacity": capacity.map(|c| json!({"storage": c}))}})
    }

    fn applied(outcome: &StorageOutcome) -> Vec<Value> {
        outcome
            .effects
            .apply
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect()
    }

    fn condition<'a>(outcome: &'a StorageOutcome, kind: &str) -> (&'a str, &'a str, &'a str) {
        let c = outcome
            .effects
            .conditions
            .iter()
            .find(|c| c.condition_type == kind)
            .unwrap();
        (&c.status, &c.reason, &c.message)
    }

    #[test]
    fn registry_image_becomes_a_data_volume_with_spec_storage() {
        let outcome = run(
            vec![image(
                "root",
                "docker://quay.io/containerdisks/fedora:40",
                "20Gi",
            )],
            &FixtureCluster::new(),
        )
        .unwrap();
        let [dv] = applied(&outcome).try_into().unwrap();
        assert_eq!(dv["kind"], "DataVolume");
        // The derived name (see wukong_plugin_sdk::names), pinned: python-storage gives the same.
        assert_eq!(dv["metadata"]["name"], "vm1-root-egsh6yjvhj");
        assert_eq!(dv["metadata"]["namespace"], "tenant-a");
        assert_eq!(dv["metadata"]["labels"], labels());
        assert_eq!(
            dv["spec"]["source"],
            json!({"registry": {"url": "docker://quay.io/containerdisks/fedora:40"}})
        );
        assert_eq!(
            dv["spec"]["storage"],
            json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
            "storageClassName": "fast", "resources": {"requests": {"storage": "20Gi"}}})
        );
        assert!(dv["spec"].get("pvc").is_none(), "spec.pvc is the old API");
        let volume = &outcome.volumes[0];
        assert!(volume.data_volume && !volume.bound);
        assert_eq!(
            (volume.claim_name.as_str(), volume.phase.as_str()),
            ("vm1-root-egsh6yjvhj", "Pending")
        );
        assert_eq!(
            outcome.effects.requeue_after_ms,
            Some(wukong_plugin_sdk::disks::REQUEUE_MS)
        );
        assert_eq!(condition(&outcome, "VolumesBound").0, "False");
    }

    #[test]
    fn http_image_is_an_http_import_and_an_unknown_scheme_is_refused() {
        let outcome = run(
            vec![image("root", "https://example.com/disk.qcow2", "1Gi")],
            &FixtureCluster::new(),
        )
        .unwrap();
        assert_eq!(
            applied(&outcome)[0]["spec"]["source"],
            json!({"http": {"url": "https://example.com/disk.qcow2"}})
        );
        let err = run(
            vec![image("root", "ftp://example.com/disk.img", "1Gi")],
            &FixtureCluster::new(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidSpec(m) if m.contains("disk root") && m.contains("unknown scheme")),
            "{err:?}"
        );
    }

    #[test]
    fn a_size_that_is_not_a_quantity_is_an_invalid_spec() {
        let err = run(
            vec![disk("data", DiskSource::Blank, "ten gigs")],
            &FixtureCluster::new(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidSpec(m) if m.contains("not a quantity")),
            "{err:?}"
        );
    }

    #[test]
    fn blank_disk_becomes_a_pvc_and_an_existing_claim_is_used_as_is() {
        let cluster = FixtureCluster::new().with(pvc("shared", "5Gi", "Bound", Some("5Gi")));
        let disks = vec![
            disk("data", DiskSource::Blank, "10Gi"),
            disk("old", DiskSource::ExistingClaim("shared".into()), "5Gi"),
        ];
        let outcome = run(disks, &cluster).unwrap();
        let [claim] = applied(&outcome).try_into().unwrap();
        assert_eq!(
            (claim["kind"].as_str(), claim["metadata"]["name"].as_str()),
            (Some("PersistentVolumeClaim"), Some(own("data").as_str()))
        );
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
        assert_eq!(claim["spec"]["storageClassName"], "fast");
        let old = &outcome.volumes[1];
        assert!(old.bound && !old.data_volume);
        assert_eq!(
            (old.claim_name.as_str(), old.capacity.as_deref()),
            ("shared", Some("5Gi"))
        );
    }

    #[test]
    fn a_missing_existing_claim_is_reported() {
        let outcome = run(
            vec![disk("old", DiskSource::ExistingClaim("gone".into()), "5Gi")],
            &FixtureCluster::new(),
        )
        .unwrap();
        assert!(outcome.effects.apply.is_empty());
        assert_eq!(outcome.volumes[0].phase, "Missing");
        let (status, reason, message) = condition(&outcome, "VolumesBound");
        assert_eq!((status, reason), ("False", "Failed"));
        assert!(
            message.contains("PersistentVolumeClaim gone does not exist"),
            "{message}"
        );
    }

    #[test]
    fn import_progress_is_reported_and_the_data_volume_is_not_reapplied() {
        let cluster =
            FixtureCluster::new().with(dv(&own("root"), "20Gi", "ImportInProgress", "45.2%"));
        let outcome = run(vec![image("root", "docker://x/y:1", "20Gi")], &cluster).unwrap();
        assert!(outcome.effects.apply.is_empty());
        let volume = &outcome.volumes[0];
        assert_eq!(
            (volume.phase.as_str(), volume.progress.as_deref()),
            ("ImportInProgress", Some("45.2%"))
        );
        assert!(condition(&outcome, "VolumesBound").2.contains("45.2%"));
        assert!(outcome.effects.requeue_after_ms.is_some());
    }

    #[test]
    fn bound_only_when_the_import_succeeded_and_the_pvc_is_bound() {
        let cluster = FixtureCluster::new()
            .with(dv(&own("root"), "20Gi", "Succeeded", "100.0%"))
            .with(pvc(&own("root"), "21Gi", "Bound", Some("21Gi")));
        let outcome = run(vec![image("root", "docker://x/y:1", "20Gi")], &cluster).unwrap();
        let volume = &outcome.volumes[0];
        assert!(volume.bound);
        assert_eq!(
            (
                volume.phase.as_str(),
                volume.capacity.as_deref(),
                volume.progress.as_deref()
            ),
            ("Bound", Some("21Gi"), None)
        );
        assert_eq!(condition(&outcome, "VolumesBound").0, "True");
        // CDI's filesystem overhead made the PVC bigger than asked: that is no shrink.
        assert_eq!(condition(&outcome, "DisksResized").1, "AsRequested");
        assert!(outcome.effects.apply.is_empty() && outcome.effects.requeue_after_ms.is_none());

        let pending = FixtureCluster::new()
            .with(dv(&own("root"), "20Gi", "Succeeded", "100.0%"))
            .with(pvc(&own("root"), "21Gi", "Pending", None));
        assert!(
            !run(vec![image("root", "docker://x/y:1", "20Gi")], &pending)
                .unwrap()
                .volumes[0]
                .bound
        );
    }

    #[test]
    fn growing_an_image_disk_applies_only_the_larger_request_to_its_pvc() {
        let cluster = FixtureCluster::new()
            .with(dv(&own("root"), "20Gi", "Succeeded", "100.0%"))
            .with(pvc(&own("root"), "21Gi", "Bound", Some("21Gi")));
        let outcome = run(vec![image("root", "docker://x/y:1", "30Gi")], &cluster).unwrap();
        let [patch] = applied(&outcome).try_into().unwrap();
        assert_eq!(patch["kind"], "PersistentVolumeClaim");
        assert_eq!(
            patch["spec"],
            json!({"resources": {"requests": {"storage": "30Gi"}}})
        );
        assert_eq!(
            patch["metadata"]["annotations"]["vm.novasphere.dev/size"],
            "30Gi"
        );
        assert_eq!(condition(&outcome, "DisksResized").1, "Expanding");
        assert!(
            outcome
                .effects
                .events
                .iter()
                .any(|e| e.reason == "DiskExpanding" && !e.warning)
        );
    }

    #[test]
    fn growing_a_blank_disk_keeps_its_immutable_fields() {
        let cluster = FixtureCluster::new().with(pvc(&own("data"), "10Gi", "Bound", Some("10Gi")));
        let outcome = run(vec![disk("data", DiskSource::Blank, "15Gi")], &cluster).unwrap();
        let [claim] = applied(&outcome).try_into().unwrap();
        assert_eq!(
            claim["spec"],
            json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
            "storageClassName": "fast", "resources": {"requests": {"storage": "15Gi"}}})
        );
    }

    #[test]
    fn shrinking_is_refused_and_the_claim_keeps_its_size() {
        let cluster = FixtureCluster::new().with(pvc(&own("data"), "20Gi", "Bound", Some("20Gi")));
        let outcome = run(vec![disk("data", DiskSource::Blank, "10Gi")], &cluster).unwrap();
        assert!(
            outcome.effects.apply.is_empty(),
            "nothing may shrink the claim"
        );
        assert_eq!(outcome.volumes[0].requested, "20Gi");
        let (status, reason, message) = condition(&outcome, "DisksResized");
        assert_eq!((status, reason), ("False", "ShrinkRefused"));
        assert!(
            message.contains("disk data: size 10Gi is smaller than its claim's 20Gi"),
            "{message}"
        );
        assert!(
            outcome
                .effects
                .events
                .iter()
                .any(|e| e.warning && e.reason == "DiskShrinkRefused")
        );
        assert_eq!(condition(&outcome, "VolumesBound").0, "True");
    }

    #[test]
    fn a_pending_claim_says_why() {
        let wffc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
            "provisioner": "x", "volumeBindingMode": "WaitForFirstConsumer"});
        let cluster = FixtureCluster::new().with(pvc(&own("data"), "10Gi", "Pending", None));
        let missing = run(vec![disk("data", DiskSource::Blank, "10Gi")], &cluster).unwrap();
        assert!(
            missing.volumes[0]
                .message
                .contains("StorageClass fast does not exist")
        );
        let outcome = run(
            vec![disk("data", DiskSource::Blank, "10Gi")],
            &cluster.with(wffc),
        )
        .unwrap();
        assert_eq!(outcome.volumes[0].phase, "WaitForFirstConsumer");
    }

    #[test]
    fn a_failed_import_says_why() {
        let mut failed = dv(&own("root"), "20Gi", "Failed", "N/A");
        failed["status"]["conditions"] = json!([{"type": "Running", "status": "False", "message": "Unable to connect to http data source"}]);
        let outcome = run(
            vec![image("root", "docker://x/y:1", "20Gi")],
            &FixtureCluster::new().with(failed),
        )
        .unwrap();
        let (status, reason, message) = condition(&outcome, "VolumesBound");
        assert_eq!((status, reason), ("False", "Failed"));
        assert!(message.contains("Unable to connect"), "{message}");
        assert_eq!(outcome.volumes[0].progress, None);
    }

    #[test]
    fn a_retried_import_shows_its_retries_and_error_while_the_phase_stays_importing() {
        // CDI retries a bad URL: ImportInProgress, restartCount rising, Running=False.
        let mut retrying = dv(&own("root"), "20Gi", "ImportInProgress", "N/A");
        retrying["status"]["restartCount"] = json!(2);
        retrying["status"]["conditions"] = json!([{"type": "Running", "status": "False", "reason": "Error",
            "message": "Unable to connect to http data source: expected status code 200, got 404"}]);
        let wffc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
            "provisioner": "x", "volumeBindingMode": "WaitForFirstConsumer"});
        // Its PVC stays Pending until the import ends: that is not the story told.
        let cluster = FixtureCluster::new()
            .with(retrying)
            .with(pvc(&own("root"), "20Gi", "Pending", None))
            .with(wffc);
        let outcome = run(vec![image("root", "https://x/disk.img", "20Gi")], &cluster).unwrap();
        let volume = &outcome.volumes[0];
        assert_eq!(
            (volume.phase.as_str(), volume.bound, volume.message.as_str()),
            (
                "ImportInProgress",
                false,
                "import failing, retry 2: Unable to connect to http data source: expected status code 200, got 404"
            )
        );
        let (status, reason, message) = condition(&outcome, "VolumesBound");
        assert_eq!((status, reason), ("False", "ImportFailing"));
        assert!(message.contains("retry 2"), "{message}");
        assert!(
            outcome
                .effects
                .events
                .iter()
                .any(|e| e.warning && e.reason == "ImportFailing" && e.message.contains("retry 2"))
        );
    }

    #[test]
    fn a_pending_population_data_volume_waits_for_a_consumer_not_an_error() {
        let waiting = dv(&own("root"), "20Gi", "PendingPopulation", "N/A");
        let cluster =
            FixtureCluster::new()
                .with(waiting)
                .with(pvc(&own("root"), "20Gi", "Pending", None));
        let outcome = run(vec![image("root", "docker://x/y:1", "20Gi")], &cluster).unwrap();
        let volume = &outcome.volumes[0];
        assert_eq!(
            (volume.phase.as_str(), volume.bound),
            ("PendingPopulation", false)
        );
        assert!(
            volume.message.starts_with("waiting for a consumer"),
            "{}",
            volume.message
        );
        assert_eq!(condition(&outcome, "VolumesBound").1, "Pending");
        assert!(!outcome.effects.events.iter().any(|e| e.warning));
    }

    #[test]
    fn two_decimal_progress_is_read_while_the_target_pvc_is_pending() {
        let cluster = FixtureCluster::new()
            .with(dv(&own("root"), "20Gi", "ImportInProgress", "45.20%"))
            .with(pvc(&own("root"), "20Gi", "Pending", None));
        let outcome = run(vec![image("root", "docker://x/y:1", "20Gi")], &cluster).unwrap();
        let volume = &outcome.volumes[0];
        assert_eq!(
            (volume.progress.as_deref(), volume.message.as_str()),
            (Some("45.20%"), "importing: 45.20%")
        );
        assert_eq!(condition(&outcome, "VolumesBound").1, "Pending");
    }

    #[test]
    fn config_defaults_and_retain_annotation() {
        let mut retained = image("root", "docker://x/y:1", "20Gi");
        retained.retain = true;
        let outcome = storage_reconcile::<CdiStorage>(
            &context(json!({}), vec![retained]),
            &upstream(),
            &FixtureCluster::new(),
        )
        .unwrap();
        let dv = &applied(&outcome)[0];
        assert!(
            dv["spec"]["storage"].get("storageClassName").is_none(),
            "no class: the cluster default"
        );
        assert_eq!(
            dv["spec"]["storage"]["accessModes"],
            json!(["ReadWriteOnce"])
        );
        assert_eq!(dv["metadata"]["annotations"][RETAIN_ANNOTATION], "true");
        let bad = storage_reconcile::<CdiStorage>(
            &context(json!({"replicas": 3}), vec![]),
            &upstream(),
            &FixtureCluster::new(),
        );
        assert!(matches!(bad, Err(StepError::InvalidConfig(_))));
    }

    #[test]
    fn finalize_deletes_only_unretained_claims_it_made() {
        let mut retained = disk("keep", DiskSource::Blank, "1Gi");
        retained.retain = true;
        let mut foreign = pvc(&own("other"), "1Gi", "Bound", None);
        foreign["metadata"]["labels"] = json!({});
        let cluster = FixtureCluster::new()
            .with(dv(&own("root"), "20Gi", "Succeeded", "100.0%"))
            .with(pvc(&own("keep"), "1Gi", "Bound", None))
            .with(pvc("shared", "1Gi", "Bound", None))
            .with(foreign);
        let disks = vec![
            image("root", "docker://x/y:1", "20Gi"),
            retained,
            disk("old", DiskSource::ExistingClaim("shared".into()), "1Gi"),
            disk("other", DiskSource::Blank, "1Gi"),
        ];
        let effects =
            storage_finalize::<CdiStorage>(&context(json!({}), disks), &upstream(), &cluster)
                .unwrap();
        let deleted: Vec<_> = effects
            .delete
            .iter()
            .map(|r| (r.kind.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(deleted, [("DataVolume", own("root").as_str())]);
    }

    #[test]
    fn same_input_same_outcome() {
        let cluster =
            FixtureCluster::new().with(dv(&own("root"), "20Gi", "ImportInProgress", "3%"));
        let disks = || {
            vec![
                image("root", "docker://x/y:1", "20Gi"),
                disk("data", DiskSource::Blank, "5Gi"),
            ]
        };
        assert_eq!(
            run(disks(), &cluster).unwrap(),
            run(disks(), &cluster).unwrap()
        );
    }

    const UID: &str = "00000000-0000-4000-8000-000000000001";

    /// A Wukong other than `vm1`, with its uid and its object as JSON (status included).
    fn context_of(name: &str, uid: &str, wukong: Value, disks: Vec<Disk>) -> Context {
        let mut ctx = context(json!({"storageClass": "fast"}), disks);
        ctx.wukong.name = name.into();
        ctx.wukong.uid = uid.into();
        ctx.wukong.labels = vec![
            ("app.kubernetes.io/managed-by".into(), "wukong".into()),
            ("vm.novasphere.dev/wukong".into(), name.into()),
        ];
        ctx.wukong.json = wukong.to_string();
        ctx
    }

    fn claims(outcome: &StorageOutcome) -> Vec<&str> {
        outcome
            .volumes
            .iter()
            .map(|v| v.claim_name.as_str())
            .collect()
    }

    fn owned_by(mut object: Value, uid: &str) -> Value {
        object["metadata"]["ownerReferences"] = json!([{"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong", "name": "vm1", "uid": uid, "controller": true}]);
        object
    }

    #[test]
    fn wukongs_whose_names_read_alike_get_distinct_claims() {
        let web = context_of(
            "web",
            "uid-web",
            json!({}),
            vec![disk("db-data", DiskSource::Blank, "1Gi")],
        );
        let web_db = context_of(
            "web-db",
            "uid-web-db",
            json!({}),
            vec![disk("data", DiskSource::Blank, "1Gi")],
        );
        let cluster = FixtureCluster::new();
        let a = storage_reconcile::<CdiStorage>(&web, &upstream(), &cluster).unwrap();
        let b = storage_reconcile::<CdiStorage>(&web_db, &upstream(), &cluster).unwrap();
        assert_eq!(claims(&a), ["web-db-data-7x5wfd44db"]);
        assert_eq!(claims(&b), ["web-db-data-sohhfprpg7"]);
        assert_eq!(applied(&a)[0]["metadata"]["name"], "web-db-data-7x5wfd44db");

        // `web` made `web-db-data` the old way: it keeps it, and `web-db` does not take it.
        let legacy = owned_by(pvc("web-db-data", "1Gi", "Bound", Some("1Gi")), "uid-web");
        let cluster = FixtureCluster::new().with(legacy);
        let a = storage_reconcile::<CdiStorage>(&web, &upstream(), &cluster).unwrap();
        let b = storage_reconcile::<CdiStorage>(&web_db, &upstream(), &cluster).unwrap();
        assert_eq!(claims(&a), ["web-db-data"]);
        assert!(a.effects.apply.is_empty(), "nothing re-created");
        assert_eq!(claims(&b), ["web-db-data-sohhfprpg7"]);
        assert_eq!(applied(&b)[0]["metadata"]["name"], "web-db-data-sohhfprpg7");
        let finalized = storage_finalize::<CdiStorage>(&web_db, &upstream(), &cluster).unwrap();
        assert!(
            finalized.delete.is_empty(),
            "web's claim is not web-db's to delete"
        );

        // Before derived names both landed on `web-db-data`, and web-db's status says so:
        // it does not go on sharing web's claim.
        let shared = json!({"status": {"volumes": [{"name": "data", "claimName": "web-db-data"}]}});
        let web_db = context_of(
            "web-db",
            "uid-web-db",
            shared,
            vec![disk("data", DiskSource::Blank, "1Gi")],
        );
        let b = storage_reconcile::<CdiStorage>(&web_db, &upstream(), &cluster).unwrap();
        assert_eq!(claims(&b), ["web-db-data-sohhfprpg7"]);
    }

    #[test]
    fn an_upgraded_wukong_keeps_the_claims_it_made_the_old_way() {
        // As made before derived names: the host's controller reference on the DataVolume
        // and the blank PVC, its owner-uid mark on a retained claim.
        let mut keep = pvc("vm1-keep", "1Gi", "Bound", Some("1Gi"));
        keep["metadata"]["annotations"] = json!({OWNER_UID_ANNOTATION: UID});
        let cluster = FixtureCluster::new()
            .with(owned_by(dv("vm1-root", "20Gi", "Succeeded", "100.0%"), UID))
            .with(pvc("vm1-root", "20Gi", "Bound", Some("20Gi")))
            .with(owned_by(
                pvc("vm1-data", "10Gi", "Bound", Some("10Gi")),
                UID,
            ))
            .with(keep);
        let mut retained = disk("keep", DiskSource::Blank, "1Gi");
        retained.retain = true;
        let disks = || {
            vec![
                image("root", "docker://x/y:1", "20Gi"),
                disk("data", DiskSource::Blank, "10Gi"),
                retained.clone(),
            ]
        };
        let ctx = context_of("vm1", UID, json!({}), disks());
        let outcome = storage_reconcile::<CdiStorage>(&ctx, &upstream(), &cluster).unwrap();
        assert_eq!(claims(&outcome), ["vm1-root", "vm1-data", "vm1-keep"]);
        assert!(outcome.effects.apply.is_empty(), "no disk re-created");
        assert!(outcome.volumes.iter().all(|v| v.bound));
        let deleted: Vec<_> = storage_finalize::<CdiStorage>(&ctx, &upstream(), &cluster)
            .unwrap()
            .delete
            .into_iter()
            .map(|r| (r.kind, r.name))
            .collect();
        assert_eq!(
            deleted,
            [
                ("DataVolume".to_owned(), "vm1-root".to_owned()),
                ("PersistentVolumeClaim".to_owned(), "vm1-root".to_owned()),
                ("PersistentVolumeClaim".to_owned(), "vm1-data".to_owned()),
            ]
        );

        // The status remembers the name even when the object is not there to be read.
        let status = json!({"status": {"volumes": [{"name": "data", "claimName": "vm1-data"}]}});
        let ctx = context_of(
            "vm1",
            UID,
            status,
            vec![disk("data", DiskSource::Blank, "10Gi")],
        );
        let outcome =
            storage_reconcile::<CdiStorage>(&ctx, &upstream(), &FixtureCluster::new()).unwrap();
        assert_eq!(claims(&outcome), ["vm1-data"]);
    }

    #[test]
    fn a_recorded_name_wukong_did_not_make_is_not_kept() {
        // `data` was the existing claim `shared` and is now a blank disk: a claim of its own.
        let status = json!({"status": {"volumes": [{"name": "data", "claimName": "shared"}]}});
        let cluster = FixtureCluster::new().with(pvc("shared", "5Gi", "Bound", Some("5Gi")));
        let ctx = context_of(
            "vm1",
            UID,
            status,
            vec![disk("data", DiskSource::Blank, "10Gi")],
        );
        let outcome = storage_reconcile::<CdiStorage>(&ctx, &upstream(), &cluster).unwrap();
        assert_eq!(claims(&outcome), [own("data").as_str()]);
        // A legacy object that is not this Wukong's (no owner) is not taken either.
        let cluster = FixtureCluster::new().with(pvc("vm1-data", "5Gi", "Bound", Some("5Gi")));
        let ctx = context_of(
            "vm1",
            UID,
            json!({}),
            vec![disk("data", DiskSource::Blank, "10Gi")],
        );
        let outcome = storage_reconcile::<CdiStorage>(&ctx, &upstream(), &cluster).unwrap();
        assert_eq!(claims(&outcome), [own("data").as_str()]);
    }

    #[test]
    fn an_existing_claim_is_never_applied_or_deleted() {
        // Even labelled like the Wukong's own claims, and asked to grow.
        let mut shared = pvc("shared", "5Gi", "Bound", Some("5Gi"));
        shared["metadata"]["ownerReferences"] = json!([{"uid": UID, "controller": true}]);
        let cluster = FixtureCluster::new().with(shared);
        let disks = || {
            vec![disk(
                "old",
                DiskSource::ExistingClaim("shared".into()),
                "50Gi",
            )]
        };
        let outcome = run(disks(), &cluster).unwrap();
        assert!(outcome.effects.apply.is_empty());
        let ctx = context(json!({}), disks());
        let effects = storage_finalize::<CdiStorage>(&ctx, &upstream(), &cluster).unwrap();
        assert!(effects.delete.is_empty());

        // A disk whose own claim is another disk's existing claim is refused, and finalize
        // leaves that claim alone.
        let legacy = owned_by(pvc("vm1-data", "1Gi", "Bound", Some("1Gi")), UID);
        let disks = vec![
            disk("data", DiskSource::Blank, "1Gi"),
            disk("old", DiskSource::ExistingClaim("vm1-data".into()), "1Gi"),
        ];
        let ctx = context_of("vm1", UID, json!({}), disks);
        let cluster = FixtureCluster::new().with(legacy);
        let err = storage_reconcile::<CdiStorage>(&ctx, &upstream(), &cluster).unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidSpec(m) if m.contains("existingClaim")),
            "{err:?}"
        );
        let effects = storage_finalize::<CdiStorage>(&ctx, &upstream(), &cluster).unwrap();
        assert!(effects.delete.is_empty());
    }
}
