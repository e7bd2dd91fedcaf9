//! The versions of objects the operator itself just wrote, so the watch bringing a write
//! back wakes nobody: the reconcile that wrote it went on with what it wrote (each step's
//! objects are what the next step reads), so the event carries no news. What KubeVirt or
//! CDI write next (a finalizer, a status) is a newer version and wakes the Wukong as ever.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::api::DynamicObject;

/// `apiVersion`, kind, namespace and name.
type Key = (String, String, String, String);

#[derive(Default)]
pub struct OwnWrites {
    /// The version each object's last write by the operator returned (one per object).
    versions: Mutex<HashMap<Key, String>>,
}

fn key(object: &DynamicObject) -> Option<Key> {
    let types = object.types.as_ref()?;
    Some((
        types.api_version.clone(),
        types.kind.clone(),
        object.namespace().unwrap_or_default(),
        object.name_any(),
    ))
}

impl OwnWrites {
    /// The apiserver answered a write of the operator's with `written`.
    pub fn note(&self, written: &DynamicObject) {
        if let (Some(key), Some(version), Ok(mut versions)) = (
            key(written),
            written.resource_version(),
            self.versions.lock(),
        ) {
            versions.insert(key, version);
        }
    }

    /// Whether `watched` is the operator's own last write coming back (then forgotten:
    /// any later event of the object is someone else's or a newer write's).
    pub fn is_own(&self, watched: &DynamicObject) -> bool {
        let (Some(key), Some(version), Ok(mut versions)) = (
            key(watched),
            watched.resource_version(),
            self.versions.lock(),
        ) else {
            return false;
        };
        match versions.get(&key) {
            Some(written) if *written == version => {
                versions.remove(&key);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(version: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "ns", "resourceVersion": version}
        }))
        .expect("object")
    }

    #[test]
    fn only_the_version_written_is_own_and_only_once() {
        let own = OwnWrites::default();
        own.note(&object("5"));
        assert!(!own.is_own(&object("4")), "an older event is not the write");
        assert!(own.is_own(&object("5")));
        assert!(!own.is_own(&object("5")), "forgotten once seen");
        assert!(
            !own.is_own(&object("6")),
            "a later change is someone else's"
        );
    }
}
