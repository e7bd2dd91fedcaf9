//! The storage suite: one volume per disk under stable names, the same outcome for the
//! same input, disks that grow and never shrink, bound only when the cluster says so,
//! and a finalize that deletes what the plugin made except retained disks.

use serde_json::{Value, json};
use wukong_model::quantity::to_bytes;

use super::harness::{CheckResult, Harness, LATER, Sim, applied, applied_names, check, wukong};
use super::{Check, DiskSources, harness};
use crate::plugin::types::Volume;
use crate::plugin::{Outcome, StepStatus};

/// The disks every scenario starts from: an image, a blank disk, a retained one and an
/// existing claim, less the sources the backend does not serve.
fn disks(sources: &DiskSources) -> Value {
    let all = [
        json!({"name": "root", "size": "20Gi", "image": "docker://quay.io/containerdisks/fedora:40", "bootOrder": 1}),
        json!({"name": "data", "size": "10Gi"}),
        json!({"name": "keep", "size": "1Gi", "retain": true}),
        json!({"name": "old", "size": "5Gi", "existingClaim": "shared-claim"}),
    ];
    Value::Array(all.into_iter().filter(|d| sources.serves(d)).collect())
}

fn manifest(disks: Value) -> Value {
    wukong(json!({"cpu": 2, "memory": "4Gi", "disks": disks}))
}

/// With `size` for the disk called `name`.
fn resized(sources: &DiskSources, name: &str, size: &str) -> Value {
    let mut disks = disks(sources);
    for disk in disks.as_array_mut().into_iter().flatten() {
        if disk["name"] == name {
            disk["size"] = json!(size);
        }
    }
    manifest(disks)
}

/// The claim the existing-claim disk names, not made by the plugin.
fn shared_claim(phase: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "shared-claim", "namespace": harness::NAMESPACE},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
        "status": {"phase": phase, "capacity": {"storage": "5Gi"}}})
}

fn volumes(outcome: &Outcome) -> Result<&[Volume], String> {
    match &outcome.status {
        StepStatus::Volumes(volumes) => Ok(volumes),
        other => Err(format!("reconcile reports {other:?}, not volumes")),
    }
}

/// What CDI and the provisioner would do: every claim bound at its requested size, every
/// import done, and the PVC CDI makes for a DataVolume.
fn bind(sim: &mut Sim) {
    let mut made = Vec::new();
    for object in sim.objects_mut().iter_mut() {
        match object["kind"].as_str() {
            Some("PersistentVolumeClaim") => {
                let size = object["spec"]["resources"]["requests"]["storage"].clone();
                object["status"] = json!({"phase": "Bound", "capacity": {"storage": size}});
            }
            Some("DataVolume") => {
                object["status"] = json!({"phase": "Succeeded", "progress": "100.0%"});
                // The apiserver gives every object a uid; CDI's PVC names it as controller.
                let uid = format!(
                    "dv-uid-{}",
                    object["metadata"]["name"].as_str().unwrap_or_default()
                );
                let uid = object["metadata"]["uid"]
                    .as_str()
                    .map_or(uid, str::to_owned);
                object["metadata"]["uid"] = json!(uid);
                let storage = match &object["spec"]["storage"] {
                    Value::Null => object["spec"]["pvc"].clone(),
                    storage => storage.clone(),
                };
                let size = storage["resources"]["requests"]["storage"].clone();
                made.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
                        "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                            "name": object["metadata"]["name"], "uid": uid, "controller": true}]},
                    "spec": storage, "status": {"phase": "Bound", "capacity": {"storage": size}}}));
            }
            _ => {}
        }
    }
    for pvc in made {
        let name = pvc["metadata"]["name"].as_str().unwrap_or_default();
        if sim.find("PersistentVolumeClaim", name).is_none() {
            sim.objects_mut().push(pvc);
        }
    }
}

/// The scenarios the checks share.
struct Setup {
    sources: DiskSources,
    wukong: Value,
    empty: Sim,
    fresh: Result<Outcome, String>,
    /// Converged with nothing bound, then with everything bound.
    converged: Result<(Sim, Sim, Outcome), String>,
}

fn setup(h: &Harness<'_>, sources: DiskSources) -> Setup {
    let wukong = manifest(disks(&sources));
    let empty = Sim::new([shared_claim("Pending")]);
    let fresh = h.reconcile(&wukong, None, &empty);
    let converged = (|| {
        let mut unbound = empty.clone();
        let mut w = wukong.clone();
        h.converge(&mut w, None, &mut unbound)?;
        let mut bound = unbound.clone();
        bind(&mut bound);
        if let Some(claim) = bound.find_mut("PersistentVolumeClaim", "shared-claim") {
            claim["status"]["phase"] = json!("Bound");
        }
        let outcome = h
            .converge(&mut w, None, &mut bound)
            .map_err(|e| format!("once every claim is bound: {e}"))?;
        Ok((unbound, bound, outcome))
    })();
    Setup {
        sources,
        wukong,
        empty,
        fresh,
        converged,
    }
}

pub fn run(h: &Harness<'_>, sources: DiskSources) -> Vec<Check> {
    let s = setup(h, sources);
    let mut checks = vec![
        check("one volume per disk", one_volume_per_disk(h, &s)),
        check("stable names across calls", stable_names(h, &s)),
        check("idempotent and converges", idempotent(h, &s)),
        check("grows but never shrinks", grows_never_shrinks(h, &s)),
        check(
            "reports bound only when the fixture says bound",
            bound_only_when_bound(h, &s),
        ),
        check(
            "finalize deletes what it created, never a retained disk",
            finalize(h, &s),
        ),
        check(
            "Wukongs whose names read alike get distinct claims",
            alike_wukongs(h, &s),
        ),
    ];
    if !s.sources.all() {
        checks.push(check(
            "refuses the disk sources it does not serve",
            refuses_unserved(h, &s),
        ));
    }
    checks
}

/// A disk of a source the backend does not serve fails the step (the user sees why in
/// `StepFailed`) rather than being passed over.
fn refuses_unserved(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let everything = disks(&DiskSources::default());
    for disk in everything.as_array().into_iter().flatten() {
        if s.sources.serves(disk) {
            continue;
        }
        let name = disk["name"].as_str().unwrap_or_default();
        if let Ok(outcome) = h.reconcile(&manifest(json!([disk])), None, &s.empty) {
            return Err(format!(
                "disk {name} ({}) is of a source it does not serve, yet the step succeeds (applied: {:?})",
                DiskSources::source_of(disk),
                applied_names(&outcome)
            ));
        }
    }
    Ok(())
}

/// `web` + disk `db-data` and `web-db` + disk `data`: one claim each.
fn alike_wukongs(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let spec =
        |disk: &str| json!({"cpu": 2, "memory": "4Gi", "disks": [{"name": disk, "size": "1Gi"}]});
    let claims = |outcome: &Outcome| -> Result<Vec<String>, String> {
        Ok(volumes(outcome)?
            .iter()
            .map(|v| v.claim_name.clone())
            .collect())
    };
    harness::alike_wukongs_get_distinct_objects(h, &s.empty, &spec, &claims)
}

fn names(volumes: &[Volume]) -> Vec<&str> {
    volumes.iter().map(|v| v.name.as_str()).collect()
}

fn one_volume_per_disk(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let disks = disks(&s.sources);
    let want: Vec<&str> = disks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .collect();
    let fresh = s.fresh.clone()?;
    let got = names(volumes(&fresh)?);
    if got != want {
        return Err(format!("disks {want:?} gave volumes {got:?}"));
    }
    let mut claims: Vec<&str> = volumes(&fresh)?
        .iter()
        .map(|v| v.claim_name.as_str())
        .collect();
    claims.sort_unstable();
    claims.dedup();
    if claims.len() != want.len() {
        return Err(format!(
            "two disks share a claim: {:?}",
            volumes(&fresh)?
                .iter()
                .map(|v| (&v.name, &v.claim_name))
                .collect::<Vec<_>>()
        ));
    }
    let (_, _, converged) = s.converged.clone()?;
    let got = names(volumes(&converged)?);
    if got != want {
        return Err(format!(
            "once converged, disks {want:?} gave volumes {got:?}"
        ));
    }
    let none = h.reconcile(&manifest(json!([])), None, &s.empty)?;
    let got = names(volumes(&none)?);
    if !got.is_empty() {
        return Err(format!("a Wukong without disks gave volumes {got:?}"));
    }
    Ok(())
}

fn claim_of<'v>(volumes: &'v [Volume], disk: &str) -> Option<&'v str> {
    volumes
        .iter()
        .find(|v| v.name == disk)
        .map(|v| v.claim_name.as_str())
}

fn stable_names(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let fresh = s.fresh.clone()?;
    let (unbound, _, converged) = s.converged.clone()?;
    let mut later = s.wukong.clone();
    later["metadata"]["generation"] = json!(2);
    let at_later = h.reconcile_at(LATER, &later, None, &s.empty)?;
    let mut reversed_disks = disks(&s.sources);
    if let Some(list) = reversed_disks.as_array_mut() {
        list.reverse();
    }
    let reversed = h.reconcile(&manifest(reversed_disks), None, &unbound)?;
    let first = volumes(&fresh)?;
    for (what, outcome) in [
        ("once its objects exist", &converged),
        ("at another time and generation", &at_later),
        ("with the disks in another order", &reversed),
    ] {
        let other = volumes(outcome)?;
        for volume in first {
            let again = claim_of(other, &volume.name);
            if again != Some(volume.claim_name.as_str()) {
                return Err(format!(
                    "disk {} is claim {:?}, but {what} it is {again:?}",
                    volume.name, volume.claim_name
                ));
            }
        }
    }
    harness::same_applied_names(&fresh, &at_later)
}

fn idempotent(h: &Harness<'_>, s: &Setup) -> CheckResult {
    harness::same_outcome(h, &s.wukong, None, &s.empty)?;
    let (_, bound, _) = s.converged.clone()?;
    harness::same_outcome(h, &s.wukong, None, &bound)
}

/// The storage an applied claim or DataVolume requests, in bytes.
fn request(object: &Value) -> Option<u128> {
    [
        "/spec/resources/requests/storage",
        "/spec/storage/resources/requests/storage",
        "/spec/pvc/resources/requests/storage",
    ]
    .iter()
    .find_map(|at| object.pointer(at).and_then(Value::as_str))
    .and_then(to_bytes)
}

fn grows_never_shrinks(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let (_, bound, _) = s.converged.clone()?;
    let fresh = s.fresh.clone()?;
    let first = volumes(&fresh)?;
    let claim_for = |disk: &str| {
        claim_of(first, disk).ok_or_else(|| format!("reconcile reports no volume for disk {disk}"))
    };
    let grown = [("data", "10Gi", "15Gi"), ("root", "20Gi", "30Gi")];
    for (disk, from, to) in grown
        .into_iter()
        .filter(|(disk, _, _)| *disk != "root" || s.sources.image)
    {
        let claim = claim_for(disk)?;
        let outcome = h.reconcile(&resized(&s.sources, disk, to), None, &bound)?;
        let grown = applied(&outcome, "PersistentVolumeClaim")
            .any(|o| o["metadata"]["name"] == claim && request(o) == to_bytes(to));
        if !grown {
            return Err(format!(
                "growing disk {disk} from {from} to {to} applies no PersistentVolumeClaim {claim} requesting {to} (applied: {:?})",
                applied_names(&outcome)
            ));
        }
    }
    let claim = claim_for("data")?;
    let outcome = h.reconcile(&resized(&s.sources, "data", "5Gi"), None, &bound)?;
    let shrunk: Vec<String> = outcome
        .apply
        .iter()
        .filter(|o| o["metadata"]["name"] == claim)
        .filter(|o| request(o).is_some_and(|r| Some(r) < to_bytes("10Gi")))
        .map(|o| format!("{} {}", o["kind"].as_str().unwrap_or("?"), claim))
        .collect();
    if !shrunk.is_empty() {
        return Err(format!(
            "shrinking disk data from 10Gi to 5Gi applies the smaller request to {shrunk:?}"
        ));
    }
    let refused = outcome
        .conditions
        .iter()
        .any(|c| c.status == "False" && c.message.contains("data"));
    if !refused {
        return Err(format!(
            "shrinking disk data from 10Gi to 5Gi sets no False condition naming the disk (conditions: {:?})",
            outcome
                .conditions
                .iter()
                .map(|c| format!("{}={} {}", c.condition_type, c.status, c.message))
                .collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Every volume reported bound has a Bound claim (and a finished import, if it has a
/// DataVolume) in `sim`.
fn bound_matches(outcome: &Outcome, sim: &Sim, scenario: &str) -> CheckResult {
    for volume in volumes(outcome)?.iter().filter(|v| v.bound) {
        let claim = &volume.claim_name;
        let pvc_bound = sim
            .find("PersistentVolumeClaim", claim)
            .is_some_and(|p| p["status"]["phase"] == "Bound");
        let import_done = sim
            .find("DataVolume", claim)
            .is_none_or(|d| d["status"]["phase"] == "Succeeded");
        if !(pvc_bound && import_done) {
            return Err(format!(
                "{scenario}: volume {} is reported bound, but the cluster has its claim {claim} {}",
                volume.name,
                if pvc_bound {
                    "still importing"
                } else {
                    "not Bound"
                }
            ));
        }
    }
    Ok(())
}

fn bound_only_when_bound(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let (unbound, bound, converged) = s.converged.clone()?;
    bound_matches(&s.fresh.clone()?, &s.empty, "before any claim exists")?;
    let outcome = h.reconcile(&s.wukong, None, &unbound)?;
    bound_matches(&outcome, &unbound, "with every claim Pending")?;
    let data = claim_of(volumes(&converged)?, "data")
        .unwrap_or_default()
        .to_owned();
    let root = claim_of(volumes(&converged)?, "root")
        .unwrap_or_default()
        .to_owned();
    let mut partly = unbound.clone();
    if let Some(pvc) = partly.find_mut("PersistentVolumeClaim", &data) {
        pvc["status"] = json!({"phase": "Bound", "capacity": {"storage": "10Gi"}});
    }
    let outcome = h.reconcile(&s.wukong, None, &partly)?;
    bound_matches(&outcome, &partly, "with only disk data's claim Bound")?;
    let mut importing = bound.clone();
    if let Some(dv) = importing.find_mut("DataVolume", &root) {
        dv["status"] = json!({"phase": "ImportInProgress", "progress": "45.0%"});
    }
    let outcome = h.reconcile(&s.wukong, None, &importing)?;
    bound_matches(&outcome, &importing, "with disk root still importing")?;
    let unbound_volumes: Vec<&str> = volumes(&converged)?
        .iter()
        .filter(|v| !v.bound)
        .map(|v| v.name.as_str())
        .collect();
    if !unbound_volumes.is_empty() {
        return Err(format!(
            "with every claim Bound and every import done, volumes {unbound_volumes:?} are reported not bound"
        ));
    }
    bound_matches(&converged, &bound, "with every claim Bound")
}

fn finalize(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let nothing = h.finalize(&s.wukong, None, &s.empty)?;
    harness::check_finalize(&nothing, &s.empty, &|_| false)
        .map_err(|e| format!("on a cluster holding nothing of the Wukong: {e}"))?;
    let (_, bound, converged) = s.converged.clone()?;
    let retained: Vec<String> = volumes(&converged)?
        .iter()
        .filter(|v| v.retain)
        .map(|v| v.claim_name.clone())
        .chain(["shared-claim".to_owned()])
        .collect();
    let outcome = h.finalize(&s.wukong, None, &bound)?;
    let deleted_retained: Vec<String> = harness::deletes(&outcome)
        .filter(|t| retained.contains(&t.name))
        .map(|t| format!("{} {}", t.kind, t.name))
        .collect();
    if !deleted_retained.is_empty() {
        return Err(format!(
            "deletes {deleted_retained:?}, of a retained disk or an existing claim"
        ));
    }
    harness::check_finalize(&outcome, &bound, &|created| {
        created.made_for_the_wukong() && !retained.contains(&created.key.name)
    })
}
