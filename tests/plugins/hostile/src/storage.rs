//! A small storage backend that keeps every disk on a PersistentVolumeClaim, correct in
//! mode `well-behaved-storage` and with one flaw per other storage mode, so the host's
//! conformance tests can prove the kit passes a good plugin and names each flaw.

use serde_json::{Value, json};
use wukong_plugin_sdk::marks::RETAIN_ANNOTATION;
use wukong_plugin_sdk::{
    Call, DiskSource, Effects, StepError, StepResult, StorageOutcome, Volume, quantity,
};

use crate::Config;

/// What is wrong with the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    None,
    /// Claim names carry the time of the call.
    UnstableNames,
    /// A smaller size is applied to the claim.
    Shrinks,
    /// Finalize deletes nothing.
    LeaksOnFinalize,
    /// Finalize deletes the claims of retained disks too.
    DeletesRetained,
    /// Every volume is reported bound.
    AlwaysBound,
    /// A size that is no 128-bit quantity panics.
    PanicsOnOddSizes,
    /// Not a flaw: image disks are refused (`invalid-spec`), as a backend with no importer
    /// rightly does.
    RefusesImages,
}

const PVC: &str = "PersistentVolumeClaim";

/// Injective, as the conformance suite asks (`names::derived`); the unstable flaw adds
/// the time of the call.
fn claim_name(call: &Call<'_, Config>, disk: &str, flaw: Flaw) -> String {
    let name = wukong_plugin_sdk::names::derived(&call.wukong.name, disk);
    match flaw {
        Flaw::UnstableNames => {
            let stamp: String = call.now.chars().filter(char::is_ascii_digit).collect();
            format!("{name}-{stamp}")
        }
        _ => name,
    }
}

fn bytes(disk: &str, size: &str, flaw: Flaw) -> StepResult<u128> {
    if flaw == Flaw::PanicsOnOddSizes {
        return Ok(quantity::to_bytes(size)
            .unwrap_or_else(|| panic!("disk {disk}: {size} is not a size I know")));
    }
    quantity::to_bytes(size).ok_or_else(|| {
        StepError::InvalidSpec(format!("disk {disk}: size {size:?} is not a quantity"))
    })
}

fn claim(call: &Call<'_, Config>, name: &str, size: &str, retain: bool) -> StepResult<String> {
    let mut metadata = serde_json::to_value(call.metadata(name))
        .map_err(|e| StepError::Internal(e.to_string()))?;
    if retain {
        metadata["annotations"] = json!({RETAIN_ANNOTATION: "true"});
    }
    Ok(
        json!({"apiVersion": "v1", "kind": PVC, "metadata": metadata,
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}})
        .to_string(),
    )
}

pub fn reconcile(call: &Call<'_, Config>, flaw: Flaw) -> StepResult<StorageOutcome> {
    let mut effects = Effects::default();
    let mut volumes = Vec::new();
    let mut refused = Vec::new();
    for disk in &call.wukong.disks {
        if flaw == Flaw::RefusesImages && matches!(disk.source, DiskSource::Image(_)) {
            return Err(StepError::InvalidSpec(format!(
                "disk {}: this backend imports no images; use a blank disk or an existing claim",
                disk.name
            )));
        }
        let size = bytes(&disk.name, &disk.size, flaw)?;
        let (name, own) = match &disk.source {
            DiskSource::ExistingClaim(existing) => (existing.clone(), false),
            _ => (claim_name(call, &disk.name, flaw), true),
        };
        let live: Option<Value> = call.get_as(&call.object_ref("v1", PVC, &name))?;
        let current = live
            .as_ref()
            .and_then(|l| l["spec"]["resources"]["requests"]["storage"].as_str())
            .map(str::to_owned);
        let mut requested = disk.size.clone();
        if own {
            match current.as_deref().map(|c| (c, quantity::to_bytes(c))) {
                None => effects
                    .apply
                    .push(claim(call, &name, &disk.size, disk.retain)?),
                Some((_, Some(now))) if size > now => {
                    effects
                        .apply
                        .push(claim(call, &name, &disk.size, disk.retain)?);
                }
                Some((_, Some(now))) if size < now && flaw == Flaw::Shrinks => {
                    effects
                        .apply
                        .push(claim(call, &name, &disk.size, disk.retain)?);
                }
                Some((text, Some(now))) if size < now => {
                    refused.push(format!(
                        "disk {}: size {} is smaller than its claim's {text}",
                        disk.name, disk.size
                    ));
                    requested = text.to_owned();
                }
                _ => {}
            }
        }
        let bound = flaw == Flaw::AlwaysBound
            || live
                .as_ref()
                .is_some_and(|l| l["status"]["phase"] == "Bound");
        volumes.push(Volume {
            name: disk.name.clone(),
            claim_name: name,
            data_volume: false,
            phase: if bound { "Bound" } else { "Pending" }.into(),
            bound,
            progress: None,
            requested,
            capacity: None,
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: None,
            storage_class: None,
            retain: disk.retain,
            boot_order: disk.boot_order,
            bus: disk.bus.clone(),
            message: String::new(),
        });
    }
    let all_bound = volumes.iter().all(|v| v.bound);
    effects.condition(
        "VolumesBound",
        all_bound,
        if all_bound { "Bound" } else { "Pending" },
        "",
    );
    if !refused.is_empty() {
        effects.condition("DisksResized", false, "ShrinkRefused", refused.join("; "));
    }
    Ok(StorageOutcome { effects, volumes })
}

pub fn finalize(call: &Call<'_, Config>, flaw: Flaw) -> StepResult<Effects> {
    let mut effects = Effects::default();
    if flaw == Flaw::LeaksOnFinalize {
        return Ok(effects);
    }
    for disk in &call.wukong.disks {
        if matches!(disk.source, DiskSource::ExistingClaim(_))
            || (disk.retain && flaw != Flaw::DeletesRetained)
        {
            continue;
        }
        let target = call.object_ref("v1", PVC, &claim_name(call, &disk.name, flaw));
        if call.get_as::<Value>(&target)?.is_some() {
            effects.delete.push(target);
        }
    }
    Ok(effects)
}
