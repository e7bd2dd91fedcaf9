//! The ownership rule, as pure functions over objects as JSON: who may write or delete an
//! existing object, and the ownership metadata the host stamps on what it applies. The
//! guard judges a plugin's outcome with it before anything is written; the applier judges
//! again against the object it is about to write.
//!
//! # The rule
//! - A namespaced object is the Wukong's when its controller owner reference names the
//!   Wukong's uid, or names an object the Wukong owns (CDI's PVC of the Wukong's
//!   DataVolume, KubeVirt's VMI of its VirtualMachine), or — with no controller at all —
//!   when it carries the host's [`OWNER_UID_ANNOTATION`] for the Wukong (a retained disk,
//!   which has no owner reference) or a plain owner reference to it.
//! - A cluster-scoped object (a StorageClass, a MigrationPolicy) is the backend's: the host
//!   marks it with [`BACKEND_ANNOTATION`] (the backend that made it) and
//!   [`OWNER_UID_ANNOTATION`] (the Wukong it was made for). A backend writes only the
//!   objects carrying its own mark; a Wukong deletes only those it was made for.
//! - Anything else is taken: the step fails, naming the object and who holds it, and
//!   nothing is written. The marks are the host's: an outcome that carries one is refused.
//!
//! # Assumptions
//! - Kubernetes' garbage collector acts on every owner reference, controller or not: a
//!   retained object therefore carries none, only the annotation.

use serde_json::{Value, json};

/// The marks: the uid of the Wukong an object was made for, the backend that made a
/// cluster-scoped object, a plugin's request to retain one. Defined in `wukong-model`,
/// which the plugin SDK re-exports too.
pub use wukong_model::marks::{BACKEND_ANNOTATION, OWNER_UID_ANNOTATION, RETAIN_ANNOTATION};

/// The owner references the host writes name a Wukong (`api::Wukong`; a test there
/// checks these agree with the CRD).
pub const WUKONG_API_VERSION: &str = "vm.novasphere.dev/v1alpha1";
/// See [`WUKONG_API_VERSION`].
pub const WUKONG_KIND: &str = "Wukong";

/// Who asks to write: the Wukong and the backend whose plugin returned the outcome.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    /// `step/backend`, as in [`BACKEND_ANNOTATION`].
    pub backend: &'a str,
}

/// An owner reference to look up: the object is the Wukong's when this one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What the rule says of an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The claimant may write (and, as far as ownership goes, delete) it.
    Owned,
    /// Owned when `Parent` (its controller, in the same namespace) is [`Verdict::Owned`].
    ThroughController(Parent),
    /// Someone else's: who holds it, worded for a message.
    Taken(String),
}

/// Whether `live` is the claimant's to write (`deleting`: to delete; for a cluster-scoped
/// object that also needs it to have been made for this Wukong).
pub fn judge(live: &Value, claimant: &Claimant<'_>, deleting: bool) -> Verdict {
    let metadata = &live["metadata"];
    let annotation = |key: &str| metadata["annotations"][key].as_str();
    let namespaced = metadata["namespace"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    if !namespaced {
        let made_for_us = annotation(OWNER_UID_ANNOTATION) == Some(claimant.uid);
        return match annotation(BACKEND_ANNOTATION) {
            Some(backend) if backend == claimant.backend && (!deleting || made_for_us) => {
                Verdict::Owned
            }
            Some(backend) if backend == claimant.backend => Verdict::Taken(format!(
                "made by backend {backend} for another Wukong ({})",
                annotation(OWNER_UID_ANNOTATION).unwrap_or("unknown uid")
            )),
            Some(backend) => Verdict::Taken(format!("made by backend {backend}")),
            // Made before the host marked cluster-scoped objects (the plugin wrote the uid).
            None if made_for_us => Verdict::Owned,
            None => Verdict::Taken("not made by Wukong (no ownership mark)".into()),
        };
    }
    let owners = metadata["ownerReferences"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if let Some(controller) = owners.iter().find(|o| o["controller"] == true) {
        if controller["uid"] == claimant.uid {
            return Verdict::Owned;
        }
        let text = |key: &str| controller[key].as_str().unwrap_or_default().to_owned();
        return Verdict::ThroughController(Parent {
            api_version: text("apiVersion"),
            kind: text("kind"),
            name: text("name"),
            uid: text("uid"),
        });
    }
    if annotation(OWNER_UID_ANNOTATION) == Some(claimant.uid)
        || owners.iter().any(|o| o["uid"] == claimant.uid)
    {
        return Verdict::Owned;
    }
    Verdict::Taken(match owners.first() {
        Some(o) => format!(
            "owned by {} {}",
            o["kind"].as_str().unwrap_or("?"),
            o["name"].as_str().unwrap_or("?")
        ),
        None => "not created by Wukong (no owner)".into(),
    })
}

/// The final word on an object controlled by `parent`, given the parent as read (`None`:
/// absent): `Err` says who holds it. Only one level: the parent must be the claimant's
/// directly.
pub fn judge_through(
    parent: &Parent,
    live_parent: Option<&Value>,
    claimant: &Claimant<'_>,
) -> Result<(), String> {
    match live_parent {
        Some(p)
            if p["metadata"]["uid"] == parent.uid.as_str()
                && judge(p, claimant, false) == Verdict::Owned =>
        {
            Ok(())
        }
        _ => Err(format!("controlled by {} {}", parent.kind, parent.name)),
    }
}

/// An ownership mark in `object`'s annotations, which only the host may write.
pub fn carried_mark(object: &Value) -> Option<&'static str> {
    let annotations = &object["metadata"]["annotations"];
    [OWNER_UID_ANNOTATION, BACKEND_ANNOTATION]
        .into_iter()
        .find(|key| !annotations[*key].is_null())
}

/// Whether a plugin asked for `object` to outlive its Wukong.
pub fn is_retained(object: &Value) -> bool {
    object["metadata"]["annotations"][RETAIN_ANNOTATION] == "true"
}

/// Whether `live` carries an owner reference to `uid` (which the garbage collector acts on).
pub fn has_owner_reference(live: &Value, uid: &str) -> bool {
    live["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|owners| owners.iter().any(|o| o["uid"] == uid))
}

/// Adds the host's ownership metadata to `object` (the desired state a plugin returned,
/// `namespaced` as its kind is), given the live object if there is one:
/// - namespaced, not retained: the Wukong as controller owner, when the host creates it or
///   already controls it (an object owned through its controller gets no reference);
/// - namespaced, retained: no owner reference, the owner-uid annotation;
/// - cluster-scoped: the backend mark, and the uid of the Wukong it was first made for.
pub fn stamp(object: &mut Value, claimant: &Claimant<'_>, namespaced: bool, live: Option<&Value>) {
    let live_annotation = |key: &str| {
        live.and_then(|l| l["metadata"]["annotations"][key].as_str())
            .map(str::to_owned)
    };
    let mut annotations: Vec<(&str, String)> = Vec::new();
    let mut owner_references = None;
    if namespaced {
        let marked = live_annotation(OWNER_UID_ANNOTATION).as_deref() == Some(claimant.uid);
        if is_retained(object) || marked {
            annotations.push((OWNER_UID_ANNOTATION, claimant.uid.to_owned()));
        }
        let controlled = live.is_none_or(|l| {
            l["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| {
                    o.iter()
                        .any(|o| o["controller"] == true && o["uid"] == claimant.uid)
                })
        });
        if !is_retained(object) && controlled {
            owner_references = Some(json!([{
                "apiVersion": WUKONG_API_VERSION, "kind": WUKONG_KIND, "name": claimant.name,
                "uid": claimant.uid, "controller": true, "blockOwnerDeletion": true,
            }]));
        }
    } else {
        annotations.push((BACKEND_ANNOTATION, claimant.backend.to_owned()));
        let made_for =
            live_annotation(OWNER_UID_ANNOTATION).unwrap_or_else(|| claimant.uid.to_owned());
        annotations.push((OWNER_UID_ANNOTATION, made_for));
    }
    // NB: not `object["metadata"]`, which panics on anything but an object.
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if !annotations.is_empty() {
        let map = metadata.entry("annotations").or_insert_with(|| json!({}));
        if !map.is_object() {
            *map = json!({});
        }
        for (key, value) in annotations {
            map[key] = Value::String(value);
        }
    }
    match owner_references {
        Some(references) => {
            metadata.insert("ownerReferences".into(), references);
        }
        None => {
            metadata.remove("ownerReferences");
        }
    }
}

/// A Kubernetes object name: a DNS-1123 subdomain, safe in a URL path as it is.
pub fn is_object_name(name: &str) -> bool {
    let alphanumeric = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            matches!((bytes.first(), bytes.last()), (Some(&a), Some(&z)) if alphanumeric(a) && alphanumeric(z))
                && bytes.iter().all(|&c| alphanumeric(c) || c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "uid-1";

    fn claimant() -> Claimant<'static> {
        Claimant {
            name: "vm1",
            uid: UID,
            backend: "storage/longhorn",
        }
    }

    fn pvc(metadata: Value) -> Value {
        let mut object =
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata});
        object["metadata"]["namespace"] = json!("ns");
        object["metadata"]["name"] = json!("vm1-data");
        object
    }

    #[test]
    fn a_foreign_namespaced_object_is_taken() {
        assert_eq!(
            judge(&pvc(json!({})), &claimant(), false),
            Verdict::Taken("not created by Wukong (no owner)".into())
        );
        let other = pvc(
            json!({"ownerReferences": [{"kind": "Wukong", "name": "web", "uid": "uid-2", "controller": true}]}),
        );
        assert!(
            matches!(judge(&other, &claimant(), false), Verdict::ThroughController(p) if p.uid == "uid-2")
        );
        // The parent, another Wukong, is not ours either.
        let parent = Parent {
            api_version: "vm.novasphere.dev/v1alpha1".into(),
            kind: "Wukong".into(),
            name: "web".into(),
            uid: "uid-2".into(),
        };
        let web = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "uid-2"}});
        assert_eq!(
            judge_through(&parent, Some(&web), &claimant()),
            Err("controlled by Wukong web".into())
        );
    }

    #[test]
    fn owned_directly_through_a_controller_or_by_the_retain_mark() {
        let ours = pvc(json!({"ownerReferences": [{"uid": UID, "controller": true}]}));
        assert_eq!(judge(&ours, &claimant(), false), Verdict::Owned);
        let retained = pvc(json!({"annotations": {OWNER_UID_ANNOTATION: UID}}));
        assert_eq!(judge(&retained, &claimant(), true), Verdict::Owned);
        // CDI's PVC of our DataVolume.
        let parent = Parent {
            api_version: "cdi.kubevirt.io/v1beta1".into(),
            kind: "DataVolume".into(),
            name: "vm1-root".into(),
            uid: "dv-uid".into(),
        };
        let dv = json!({"metadata": {"name": "vm1-root", "namespace": "ns", "uid": "dv-uid",
            "ownerReferences": [{"uid": UID, "controller": true}]}});
        assert_eq!(judge_through(&parent, Some(&dv), &claimant()), Ok(()));
        // A parent re-created under the same name is another object.
        let recreated = json!({"metadata": {"name": "vm1-root", "namespace": "ns", "uid": "new-uid",
            "ownerReferences": [{"uid": UID, "controller": true}]}});
        assert!(judge_through(&parent, Some(&recreated), &claimant()).is_err());
        assert!(judge_through(&parent, None, &claimant()).is_err());
    }

    #[test]
    fn cluster_scoped_objects_belong_to_the_backend_that_marked_them() {
        let class = |annotations: Value| json!({"metadata": {"name": "longhorn", "annotations": annotations}});
        let ours =
            class(json!({BACKEND_ANNOTATION: "storage/longhorn", OWNER_UID_ANNOTATION: "uid-2"}));
        assert_eq!(judge(&ours, &claimant(), false), Verdict::Owned);
        assert!(
            matches!(judge(&ours, &claimant(), true), Verdict::Taken(_)),
            "made for another Wukong"
        );
        let other_backend = class(json!({BACKEND_ANNOTATION: "storage/ceph-rbd"}));
        assert!(matches!(
            judge(&other_backend, &claimant(), false),
            Verdict::Taken(_)
        ));
        assert!(matches!(
            judge(&class(json!({})), &claimant(), false),
            Verdict::Taken(_)
        ));
        // What the plugin marked itself before the host did.
        assert_eq!(
            judge(
                &class(json!({OWNER_UID_ANNOTATION: UID})),
                &claimant(),
                true
            ),
            Verdict::Owned
        );
    }

    #[test]
    fn stamping_owns_what_it_creates_and_never_references_a_retained_object() {
        let mut created = pvc(json!({}));
        stamp(&mut created, &claimant(), true, None);
        assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], UID);
        assert_eq!(
            created["metadata"]["ownerReferences"][0]["controller"],
            true
        );

        let mut retained = pvc(json!({"annotations": {RETAIN_ANNOTATION: "true"}}));
        let legacy = pvc(json!({"ownerReferences": [{"uid": UID, "controller": true}]}));
        stamp(&mut retained, &claimant(), true, Some(&legacy));
        assert!(retained["metadata"]["ownerReferences"].is_null());
        assert_eq!(
            retained["metadata"]["annotations"][OWNER_UID_ANNOTATION],
            UID
        );

        // CDI's PVC of a DataVolume: written, but no reference of ours.
        let mut resized = pvc(json!({}));
        let cdi = pvc(json!({"ownerReferences": [{"uid": "dv-uid", "controller": true}]}));
        stamp(&mut resized, &claimant(), true, Some(&cdi));
        assert!(resized["metadata"]["ownerReferences"].is_null());

        let mut class = json!({"metadata": {"name": "longhorn"}});
        let live = json!({"metadata": {"name": "longhorn", "annotations": {BACKEND_ANNOTATION: "storage/longhorn", OWNER_UID_ANNOTATION: "uid-2"}}});
        stamp(&mut class, &claimant(), false, Some(&live));
        assert_eq!(
            class["metadata"]["annotations"][BACKEND_ANNOTATION],
            "storage/longhorn"
        );
        assert_eq!(
            class["metadata"]["annotations"][OWNER_UID_ANNOTATION], "uid-2",
            "the first Wukong's stays"
        );
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        for good in ["vm1", "vm1.data", "a-b.c-d", "0"] {
            assert!(is_object_name(good), "{good}");
        }
        for bad in [
            "",
            "vm2/stop",
            "vm1?x=1",
            "VM1",
            "-a",
            "a.",
            "a..b",
            &"a".repeat(254),
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn marks_in_an_outcome_are_found() {
        assert_eq!(
            carried_mark(&json!({"metadata": {"annotations": {BACKEND_ANNOTATION: "x"}}})),
            Some(BACKEND_ANNOTATION)
        );
        assert_eq!(
            carried_mark(&json!({"metadata": {"annotations": {RETAIN_ANNOTATION: "true"}}})),
            None
        );
    }
}
