//! Disks to claims, shared by the storage plugins: a CDI DataVolume for an image disk, a
//! PersistentVolumeClaim for a blank one, an existing claim used as is. A backend only
//! says which storage class, access modes and volume mode its claims get ([`ClaimClass`]),
//! and may ask for its StorageClass ([`ensure_storage_class`]).
//!
//! # Expected flow
//! [`reconcile`] names each disk's claim ([`claim_names`]), builds its object when it does
//! not exist yet, reads the DataVolume and PVC back and reports one [`Volume`] per disk,
//! in spec order, with the `VolumesBound` and `DisksResized` conditions and a requeue hint
//! while a volume is not bound. [`finalize`] deletes the DataVolumes and PVCs of the disks
//! that are not retained.
//!
//! # Guarantees
//! - Names are injective over (Wukong, disk): a new disk's claim is
//!   [`names::derived`]`(wukong, disk)`, so two Wukongs never share a claim (a 50-bit hash
//!   collision is refused by the host as `NameTaken`, never shared).
//! - A disk keeps the claim it has: the name recorded in the Wukong's status, else the
//!   name of before derived names (`{wukong}-{disk}`) when the object there is this
//!   Wukong's. An upgrade neither orphans nor re-creates a disk.
//! - Existing claims (`existingClaim`) are the user's: never applied, never deleted, and no
//!   disk of the Wukong may make a claim of that name.
//! - Disks only grow: a spec size above the claim's request applies the larger request
//!   to the PVC (KubeVirt grows a disk through its PVC, never the DataVolume); a smaller
//!   one keeps the claim as it is, with `DisksResized=False` and a warning event.
//! - Existing objects are not re-applied unless they must change, so a converged Wukong
//!   costs no write. NB: a DataVolume's spec is immutable once created (CDI refuses edits),
//!   so a changed image or class applies to new disks only.
//! - Only objects carrying the Wukong's labels are deleted.
//! - Retained disks carry the [`RETAIN_ANNOTATION`], and the host guarantees they get no
//!   owner reference (only its owner-uid mark), so the garbage collector never deletes them
//!   with the Wukong, whichever way it is deleted.
//!
//! # Assumptions
//! - The host writes the ownership marks (owner references, the owner-uid annotation) and
//!   refuses to write an object of the wanted name that this Wukong does not own: the
//!   plugin reads them only to recognise its own claims under their old names.
//!
//! # Caveats
//! - CDI adds filesystem overhead to the PVC of a `Filesystem` DataVolume, so the PVC's
//!   request may exceed the disk size. Shrinking is judged against the size Wukong asked
//!   for (the DataVolume's request, or the size annotation of the last growth), not the
//!   PVC's request.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use wukong_model::marks::MANAGED_BY_LABEL;

mod import;

use crate::objects::{lookup_str, made_for};
use crate::{
    Call, Disk, DiskSource, Effects, StepError, StepResult, StorageOutcome, Volume, names, quantity,
};

/// CDI's DataVolume.
pub const DATA_VOLUME_API_VERSION: &str = "cdi.kubevirt.io/v1beta1";
/// CDI's DataVolume.
pub const DATA_VOLUME_KIND: &str = "DataVolume";
/// The size Wukong last asked for, on PVCs it created or grew.
pub const SIZE_ANNOTATION: &str = "vm.novasphere.dev/size";
/// On the claims of retained disks, written by the plugin: the host gives them no owner
/// reference, only its owner-uid mark.
pub use wukong_model::marks::RETAIN_ANNOTATION;
/// Asks CDI to import at once even on a `WaitForFirstConsumer` class, so the disk is ready
/// when the VM starts. Where CDI still waits for a consumer (`PendingPopulation`), the
/// volume reports it and the lifecycle step creates the VM, whose pod is that consumer.
const BIND_IMMEDIATE_ANNOTATION: &str = "cdi.kubevirt.io/storage.bind.immediate.requested";
/// The condition saying every volume is bound.
pub const VOLUMES_BOUND: &str = "VolumesBound";
/// The condition saying every disk has the size its spec asks for (or is growing to it).
pub const DISKS_RESIZED: &str = "DisksResized";
/// How soon to look again while a volume is not bound. NB: a backstop only: a claim or
/// DataVolume the plugin made carries the Wukong's label, so its changes wake the step at
/// once; this covers an `existingClaim` (the user's, unlabelled). At 5 s, a thousand
/// Wukongs created at once each polled while their claims waited to bind.
pub const REQUEUE_MS: u64 = 30_000;

/// What a backend decides about its claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimClass {
    /// The class for disks that name none; `None` is the cluster's default class.
    pub storage_class: Option<String>,
    /// `ReadWriteOnce`, `ReadWriteMany`, ...
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`; `None` leaves it to the cluster.
    pub volume_mode: Option<String>,
}

impl ClaimClass {
    /// Claims on `storage_class` that KubeVirt can live-migrate (`ReadWriteMany` in
    /// `Block` mode, what Longhorn and Ceph RBD share between nodes), or plain
    /// `ReadWriteOnce` `Filesystem` claims.
    pub fn shared(storage_class: &str, live_migration: bool) -> Self {
        let (access, mode) = match live_migration {
            true => ("ReadWriteMany", "Block"),
            false => ("ReadWriteOnce", "Filesystem"),
        };
        Self {
            storage_class: Some(storage_class.to_owned()),
            access_modes: vec![access.to_owned()],
            volume_mode: Some(mode.to_owned()),
        }
    }
}

/// The name of the DataVolume or PVC of a new disk: [`names::derived`] of the Wukong and
/// the disk. A disk that already has a claim keeps its name: see [`claim_names`].
pub fn claim_name(wukong: &str, disk: &str) -> String {
    names::derived(wukong, disk)
}

/// The name claims had before [`claim_name`]: `{wukong}-{disk}`, which is not injective
/// (`web` + `db-data` and `web-db` + `data` meet). Only the disks that have it keep it.
pub fn legacy_claim_name(wukong: &str, disk: &str) -> String {
    format!("{wukong}-{disk}")
}

/// The claim of every disk, by disk name. An existing claim is its own name; a disk
/// Wukong makes a claim for keeps the one it has, so an upgrade neither orphans nor
/// re-creates a disk:
/// 1. the claim the Wukong's previous status records for the disk (`status.volumes`),
///    when it is a name Wukong makes: the derived one, or the legacy one unless the object
///    there is another's (a disk that was an existing claim and became a new disk gets a
///    claim of its own; two Wukongs that shared a legacy claim do not go on sharing it);
/// 2. else the legacy name, when the object there (the DataVolume of an image disk, the
///    PVC of a blank one) is this Wukong's ([`made_for`]: its owner reference or the
///    host's owner-uid mark; another Wukong's object of that name is not);
/// 3. else [`claim_name`].
///
/// A Wukong whose status records derived names reads nothing more here.
pub fn claim_names<C>(call: &Call<'_, C>) -> StepResult<BTreeMap<String, String>> {
    let status = call.wukong_json();
    let recorded = |disk: &str| {
        status["status"]["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == disk)?["claimName"]
            .as_str()
    };
    let wukong = &call.wukong.name;
    let mut claims = BTreeMap::new();
    for disk in &call.wukong.disks {
        let (api_version, kind) = match &disk.source {
            DiskSource::ExistingClaim(claim) => {
                claims.insert(disk.name.clone(), claim.clone());
                continue;
            }
            // A plugin that reads no DataVolumes keeps an image disk on a plain claim.
            DiskSource::Image(_) if call.may_read(DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND) => {
                (DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND)
            }
            DiskSource::Image(_) | DiskSource::Blank => ("v1", "PersistentVolumeClaim"),
        };
        let derived = claim_name(wukong, &disk.name);
        let legacy = legacy_claim_name(wukong, &disk.name);
        let name = match recorded(&disk.name) {
            Some(name) if name == derived => derived,
            recorded => {
                let at_legacy: Option<Value> =
                    call.get_as(&call.object_ref(api_version, kind, &legacy))?;
                let ours = at_legacy.as_ref().map(|o| made_for(o, &call.wukong.uid));
                match (recorded == Some(legacy.as_str()), ours) {
                    (_, Some(true)) | (true, None) => legacy,
                    _ => derived,
                }
            }
        };
        claims.insert(disk.name.clone(), name);
    }
    Ok(claims)
}

/// The existing claims the spec hands in: the user's, never written or deleted.
fn existing_claims(disks: &[Disk]) -> Vec<&str> {
    disks
        .iter()
        .filter_map(|d| match &d.source {
            DiskSource::ExistingClaim(claim) => Some(claim.as_str()),
            _ => None,
        })
        .collect()
}

/// The DataVolume source for an image: `docker://` is a registry import, `http(s)://` an
/// http import. Anything else is an invalid spec.
pub fn image_source(disk: &str, image: &str) -> StepResult<Value> {
    if image.starts_with("docker://") {
        Ok(json!({"registry": {"url": image}}))
    } else if image.starts_with("http://") || image.starts_with("https://") {
        Ok(json!({"http": {"url": image}}))
    } else {
        Err(StepError::InvalidSpec(format!(
            "disk {disk}: image {image:?} has an unknown scheme: use docker://registry/image:tag or an http(s):// URL"
        )))
    }
}

/// Reconciles every disk of the Wukong on `class`, adding to `effects` (which may already
/// hold, say, the backend's StorageClass).
pub fn reconcile<C>(
    call: &Call<'_, C>,
    class: &ClaimClass,
    mut effects: Effects,
) -> StepResult<StorageOutcome> {
    let claims = claim_names(call)?;
    let users = existing_claims(&call.wukong.disks);
    let mut volumes = Vec::with_capacity(call.wukong.disks.len());
    let mut resizes = Vec::new();
    for disk in &call.wukong.disks {
        let claim = claims.get(&disk.name).cloned().unwrap_or_default();
        if !matches!(disk.source, DiskSource::ExistingClaim(_)) && users.contains(&claim.as_str()) {
            return Err(StepError::InvalidSpec(format!(
                "disk {}: its claim {claim} is also another disk's existingClaim; \
                 an existing claim is used as is, never made or written by Wukong",
                disk.name
            )));
        }
        let (volume, resize) = reconcile_disk(call, class, disk, claim, &mut effects)?;
        volumes.push(volume);
        resizes.extend(resize);
    }
    report_bound(&volumes, &mut effects);
    report_resizes(resizes, &mut effects);
    Ok(StorageOutcome { effects, volumes })
}

/// Deletes the DataVolumes and PVCs of the disks that are not retained and that carry
/// the Wukong's labels, under the names [`claim_names`] gives. Existing claims are never
/// deleted, nor any object of an existing claim's name. DataVolumes are looked for only
/// by a plugin whose manifest reads them (a PVC-only backend made none).
pub fn finalize<C>(call: &Call<'_, C>) -> StepResult<Effects> {
    let mut effects = Effects::default();
    let claims = claim_names(call)?;
    let users = existing_claims(&call.wukong.disks);
    for disk in call.wukong.disks.iter().filter(|d| !d.retain) {
        let Some(name) = claims
            .get(&disk.name)
            .filter(|n| !users.contains(&n.as_str()))
        else {
            continue;
        };
        let mut targets = vec![("v1", "PersistentVolumeClaim")];
        match disk.source {
            DiskSource::ExistingClaim(_) => continue,
            DiskSource::Image(_) if call.may_read(DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND) => {
                targets.insert(0, (DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND));
            }
            DiskSource::Image(_) => {}
            DiskSource::Blank => {}
        }
        for (api_version, kind) in targets {
            let target = call.object_ref(api_version, kind, name);
            let existing: Option<Value> = call.get_as(&target)?;
            if existing.is_some_and(|o| carries_labels(&o, &call.labels())) {
                effects.delete.push(target);
            }
        }
    }
    Ok(effects)
}

/// Applies the backend's StorageClass when it does not exist. One that exists with another
/// provisioner or other parameters is a config error: its parameters are immutable.
pub fn ensure_storage_class<C>(
    call: &Call<'_, C>,
    effects: &mut Effects,
    class: &StorageClass,
) -> StepResult<()> {
    let name = class.metadata.name.clone().unwrap_or_default();
    match call.get_cluster_scoped::<StorageClass>(&name)? {
        None => effects.apply(&crate::objects::with_type(class)?),
        Some(existing)
            if existing.provisioner == class.provisioner
                && existing.parameters.clone().unwrap_or_default()
                    == class.parameters.clone().unwrap_or_default() =>
        {
            Ok(())
        }
        Some(existing) => Err(StepError::InvalidConfig(format!(
            "StorageClass {name} exists with provisioner {} and parameters {:?}, not {} and {:?}; \
             a StorageClass cannot change: delete it or configure another storageClass name",
            existing.provisioner,
            existing.parameters.unwrap_or_default(),
            class.provisioner,
            class.parameters.clone().unwrap_or_default(),
        ))),
    }
}

/// Metadata for a StorageClass a backend shares between Wukongs: no namespace (it is
/// cluster-scoped) and no Wukong label (it belongs to no single Wukong).
pub fn storage_class_metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.0.to_owned(),
            MANAGED_BY_LABEL.1.to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

/// A refused shrink or an expansion, for the `DisksResized` condition.
enum Resize {
    Grow(String),
    Refused(String),
}

/// What the cluster holds for one disk.
struct Observed {
    claim: String,
    data_volume: bool,
    pvc: Option<Value>,
    dv: Option<Value>,
    storage_class: Option<String>,
}

fn reconcile_disk<C>(
    call: &Call<'_, C>,
    class: &ClaimClass,
    disk: &Disk,
    claim: String,
    effects: &mut Effects,
) -> StepResult<(Volume, Option<Resize>)> {
    let size = bytes(&disk.name, "size", &disk.size)?;
    let data_volume = match &disk.source {
        DiskSource::ExistingClaim(_) | DiskSource::Blank => false,
        DiskSource::Image(image) => {
            image_source(&disk.name, image)?; // refuse a bad image even once imported
            true
        }
    };
    let pvc = call.get_as(&call.object_ref("v1", "PersistentVolumeClaim", &claim))?;
    let dv = match data_volume {
        true => call.get_as(&call.object_ref(DATA_VOLUME_API_VERSION, DATA_VOLUME_KIND, &claim))?,
        false => None,
    };
    let storage_class = disk
        .storage_class
        .clone()
        .or_else(|| class.storage_class.clone());
    // Built only for a disk whose object does not exist yet: a converged call builds none.
    let spec = || storage(&disk.size, storage_class.as_deref(), class);
    match (&disk.source, &dv, &pvc) {
        (DiskSource::Image(image), None, _) => {
            let mut metadata = metadata(call, &claim, disk, None)?;
            metadata["annotations"][BIND_IMMEDIATE_ANNOTATION] = json!("true");
            effects.apply(&json!({
                "apiVersion": DATA_VOLUME_API_VERSION, "kind": DATA_VOLUME_KIND, "metadata": metadata,
                "spec": {"source": image_source(&disk.name, image)?, "storage": spec()},
            }))?;
        }
        (DiskSource::Blank, _, None) => {
            effects.apply(&claim_object(call, &claim, disk, spec())?)?;
        }
        _ => {}
    }
    let seen = Observed {
        claim,
        data_volume,
        pvc,
        dv,
        storage_class,
    };
    let (requested, resize) = match (&disk.source, &seen.pvc) {
        (DiskSource::ExistingClaim(_), _) | (_, None) => (disk.size.clone(), None),
        (_, Some(pvc)) => resize(call, disk, size, &seen, pvc, effects)?,
    };
    let volume = volume(call, disk, requested, seen, class)?;
    if !volume.bound {
        effects.requeue_after(REQUEUE_MS);
    }
    Ok((volume, resize))
}

/// Grows the claim when the spec asks for more than its request; refuses to shrink it
/// below what Wukong asked for. Returns the size in effect.
fn resize<C>(
    call: &Call<'_, C>,
    disk: &Disk,
    size: u128,
    seen: &Observed,
    pvc: &Value,
    effects: &mut Effects,
) -> StepResult<(String, Option<Resize>)> {
    let text = |o: &Value, at: &[&str]| lookup_str(o, at).map(str::to_owned);
    let current = text(pvc, &["spec", "resources", "requests", "storage"]).unwrap_or_default();
    let asked = text(pvc, &["metadata", "annotations", SIZE_ANNOTATION])
        .or_else(|| {
            seen.dv
                .as_ref()
                .and_then(|d| text(d, &["spec", "storage", "resources", "requests", "storage"]))
        })
        .unwrap_or_else(|| current.clone());
    let name = &disk.name;
    if size < bytes(name, "claim request", &asked)? {
        let message = format!(
            "disk {name}: size {} is smaller than its claim's {asked}; disks never shrink, keeping {asked}",
            disk.size
        );
        return Ok((asked, Some(Resize::Refused(message))));
    }
    if quantity::to_bytes(&current).is_some_and(|current| size <= current) {
        return Ok((disk.size.clone(), None));
    }
    let mut spec = json!({"resources": {"requests": {"storage": disk.size}}});
    if !seen.data_volume {
        // A blank disk's PVC is Wukong's: apply the same fields as at creation, immutable
        // ones as they are, since under server-side apply a field left out is removed. A
        // DataVolume's PVC is CDI's: apply only the request.
        let mut full = pvc["spec"].clone();
        full["resources"] = spec["resources"].take();
        if let Some(fields) = full.as_object_mut() {
            for filled_by_server in ["volumeName", "dataSource", "dataSourceRef"] {
                fields.remove(filled_by_server);
            }
        }
        spec = full;
    }
    effects.apply(&claim_object(call, &seen.claim, disk, spec)?)?;
    let message = format!("disk {name}: expanding from {current} to {}", disk.size);
    Ok((disk.size.clone(), Some(Resize::Grow(message))))
}

/// `spec.storage` of a DataVolume, also the spec of a blank PVC: the same shape.
fn storage(size: &str, storage_class: Option<&str>, class: &ClaimClass) -> Value {
    let mut storage = json!({
        "accessModes": class.access_modes,
        "resources": {"requests": {"storage": size}},
    });
    if let Some(mode) = &class.volume_mode {
        storage["volumeMode"] = json!(mode);
    }
    if let Some(name) = storage_class {
        storage["storageClassName"] = json!(name);
    }
    storage
}

/// A PVC of a disk, annotated with the size Wukong asked for.
fn claim_object<C>(call: &Call<'_, C>, name: &str, disk: &Disk, spec: Value) -> StepResult<Value> {
    let size = spec["resources"]["requests"]["storage"].as_str();
    Ok(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": metadata(call, name, disk, size)?, "spec": spec,
    }))
}

fn metadata<C>(
    call: &Call<'_, C>,
    name: &str,
    disk: &Disk,
    size: Option<&str>,
) -> StepResult<Value> {
    let mut metadata = serde_json::to_value(call.metadata(name))
        .map_err(|e| StepError::Internal(format!("metadata: {e}")))?;
    metadata["annotations"] = json!({});
    if let Some(size) = size {
        metadata["annotations"][SIZE_ANNOTATION] = json!(size);
    }
    if disk.retain {
        metadata["annotations"][RETAIN_ANNOTATION] = json!("true");
    }
    Ok(metadata)
}

/// The volume as the cluster has it: bound once the PVC is (and, for an image, the import
/// succeeded); otherwise the DataVolume's or PVC's phase and why it waits.
fn volume<C>(
    call: &Call<'_, C>,
    disk: &Disk,
    requested: String,
    seen: Observed,
    class: &ClaimClass,
) -> StepResult<Volume> {
    let (pvc, dv) = (seen.pvc.as_ref(), seen.dv.as_ref());
    let (pvc_phase, dv_phase) = (
        field(pvc, &["status", "phase"]),
        field(dv, &["status", "phase"]),
    );
    let bound = pvc_phase == Some("Bound") && (!seen.data_volume || dv_phase == Some("Succeeded"));
    let mut phase = match bound {
        true => "Bound",
        false => dv_phase.or(pvc_phase).unwrap_or("Pending"),
    }
    .to_owned();
    let progress = dv
        .and_then(import::progress)
        .filter(|_| !bound)
        .map(str::to_owned);
    let claim = &seen.claim;
    // An importing DataVolume speaks for itself: its PVC stays Pending until the import
    // ends (CDI's populators), which is no problem of its own.
    let importing = dv
        .filter(|_| !bound)
        .and_then(|dv| import::describe(dv, claim));
    let message = match (&disk.source, pvc, importing) {
        _ if bound => String::new(),
        (DiskSource::ExistingClaim(_), None, _) => {
            phase = "Missing".into();
            format!("PersistentVolumeClaim {claim} does not exist")
        }
        (_, _, Some(importing)) => importing,
        _ if pvc_phase == Some("Lost") => format!("PersistentVolumeClaim {claim} lost its volume"),
        (_, Some(pvc), _) if pvc_phase == Some("Pending") => pending_reason(call, pvc, &mut phase)?,
        _ => format!("waiting for {claim}"),
    };
    let spec = pvc.map(|p| &p["spec"]);
    let access_modes = spec.and_then(|s| s["accessModes"].as_array()).map(|modes| {
        modes
            .iter()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect()
    });
    Ok(Volume {
        name: disk.name.clone(),
        claim_name: seen.claim.clone(),
        data_volume: seen.data_volume,
        phase,
        bound,
        progress,
        requested,
        capacity: field(pvc, &["status", "capacity", "storage"]).map(str::to_owned),
        access_modes: access_modes.unwrap_or_else(|| class.access_modes.clone()),
        volume_mode: field(pvc, &["spec", "volumeMode"])
            .map(str::to_owned)
            .or_else(|| class.volume_mode.clone()),
        storage_class: field(pvc, &["spec", "storageClassName"])
            .map(str::to_owned)
            .or(seen.storage_class),
        retain: disk.retain,
        boot_order: disk.boot_order,
        bus: disk.bus.clone(),
        message,
    })
}

/// Why a PVC is pending: its class binds on first consumer (then the VM may be created),
/// or the class does not exist.
fn pending_reason<C>(call: &Call<'_, C>, pvc: &Value, phase: &mut String) -> StepResult<String> {
    let Some(class) = pvc["spec"]["storageClassName"].as_str() else {
        return Ok("waiting for a volume".into());
    };
    Ok(match call.get_cluster_scoped::<StorageClass>(class)? {
        None => format!("StorageClass {class} does not exist"),
        Some(sc) if sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
            *phase = "WaitForFirstConsumer".into();
            format!("StorageClass {class} binds when the VM is scheduled")
        }
        Some(_) => format!("waiting for StorageClass {class} to provide a volume"),
    })
}

fn report_bound(volumes: &[Volume], effects: &mut Effects) {
    let waiting: Vec<String> = volumes
        .iter()
        .filter(|v| !v.bound)
        .map(|v| match &v.message {
            m if m.is_empty() => format!("{}: {}", v.name, v.phase),
            m => format!("{}: {} ({m})", v.name, v.phase),
        })
        .collect();
    if waiting.is_empty() {
        let message = format!("{} volume(s) bound", volumes.len());
        return effects.condition(VOLUMES_BOUND, true, "Bound", message);
    }
    let failed = volumes
        .iter()
        .any(|v| matches!(v.phase.as_str(), "Failed" | "Lost" | "Missing"));
    // CDI retries a failing import: said loudly, but not `Failed`.
    let failing: Vec<String> = volumes
        .iter()
        .filter(|v| !v.bound && v.message.starts_with("import failing"))
        .map(|v| format!("disk {}: {}", v.name, v.message))
        .collect();
    for message in &failing {
        effects.warning("ImportFailing", message.clone());
    }
    let reason = match (failed, failing.is_empty()) {
        (true, _) => "Failed",
        (false, false) => "ImportFailing",
        (false, true) => "Pending",
    };
    effects.condition(VOLUMES_BOUND, false, reason, waiting.join("; "));
}

fn report_resizes(resizes: Vec<Resize>, effects: &mut Effects) {
    let (mut refused, mut grown) = (Vec::new(), Vec::new());
    for resize in resizes {
        match resize {
            Resize::Refused(message) => refused.push(message),
            Resize::Grow(message) => grown.push(message),
        }
    }
    for message in &grown {
        effects.event("DiskExpanding", message.clone());
    }
    if !refused.is_empty() {
        effects.warning("DiskShrinkRefused", refused.join("; "));
        effects.condition(DISKS_RESIZED, false, "ShrinkRefused", refused.join("; "));
    } else if !grown.is_empty() {
        effects.condition(DISKS_RESIZED, true, "Expanding", grown.join("; "));
    } else {
        effects.condition(
            DISKS_RESIZED,
            true,
            "AsRequested",
            "every disk has its requested size",
        );
    }
}

fn bytes(disk: &str, what: &str, value: &str) -> StepResult<u128> {
    quantity::to_bytes(value).ok_or_else(|| {
        StepError::InvalidSpec(format!(
            "disk {disk}: {what} {value:?} is not a quantity (e.g. 20Gi)"
        ))
    })
}

/// True when `object` carries every one of `labels`.
pub fn carries_labels(object: &Value, labels: &BTreeMap<String, String>) -> bool {
    labels
        .iter()
        .all(|(key, value)| object["metadata"]["labels"][key].as_str() == Some(value.as_str()))
}

/// A string field of an optional object, by its path of keys.
fn field<'a>(object: Option<&'a Value>, path: &[&str]) -> Option<&'a str> {
    lookup_str(object?, path)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::{Cluster, Context, KindRef, ObjectRef, Upstream, Wukong};

    /// Records the kinds read; holds nothing.
    #[derive(Default)]
    struct Reads(RefCell<Vec<String>>);

    impl Cluster for Reads {
        fn get(&self, object: &ObjectRef) -> Result<Option<String>, String> {
            self.0.borrow_mut().push(object.kind.clone());
            Ok(None)
        }

        fn list(
            &self,
            kind: &KindRef,
            _: Option<&str>,
            _: Option<&str>,
        ) -> Result<Vec<String>, String> {
            self.0.borrow_mut().push(kind.kind.clone());
            Ok(Vec::new())
        }
    }

    fn context() -> Context {
        let disk = Disk {
            name: "root".into(),
            source: DiskSource::Image("docker://quay.io/containerdisks/fedora:40".into()),
            size: "10Gi".into(),
            storage_class: None,
            backend: None,
            retain: false,
            boot_order: None,
            bus: "virtio".into(),
        };
        Context {
            wukong: Wukong {
                name: "vm1".into(),
                namespace: "tenant-a".into(),
                uid: "00000000-0000-4000-8000-000000000001".into(),
                generation: 1,
                deleting: true,
                cpu: 1,
                memory: "1Gi".into(),
                run_strategy: "Always".into(),
                disks: vec![disk],
                networks: vec![],
                lifecycle_action: None,
                migration: None,
                labels: vec![],
                json: "{}".into(),
            },
            config: "{}".into(),
            backend: "default".into(),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn finalize_looks_for_data_volumes_only_when_the_manifest_reads_them() {
        let context = context();
        let upstream = Upstream {
            networks: vec![],
            volumes: vec![],
            lifecycle: None,
        };
        let pvc_only = Reads::default();
        let mut call: Call<'_, serde_json::Value> =
            Call::new(&context, &upstream, &pvc_only).expect("call");
        call.manifest =
            Some(|| crate::Manifest::new("pvc-only", "0.1.0").reads("v1", "PersistentVolumeClaim"));
        finalize(&call).expect("finalize");
        let read = pvc_only.0.borrow();
        assert!(
            !read.is_empty() && read.iter().all(|k| k == "PersistentVolumeClaim"),
            "a PVC-only plugin reads only claims: {read:?}"
        );

        let cdi = Reads::default();
        let call: Call<'_, serde_json::Value> = Call::new(&context, &upstream, &cdi).expect("call");
        finalize(&call).expect("finalize");
        let read = cdi.0.borrow();
        assert!(read.iter().any(|k| k == "DataVolume"), "{read:?}");
    }
}
