//! The last full copy of each Wukong the operator has seen — the answer to its last status
//! write or to its last read — so a reconcile reads the Wukong from the apiserver only
//! when someone else changed it.
//!
//! The controller watches Wukongs' metadata only (see `controller::WukongMeta`), which
//! carries each one's current resourceVersion. Plugins keep their memory in the status (a
//! one-shot action's stage), so the status a reconcile wrote must be what the next one
//! reads: the copy is used while the watch shows its version or an older one (the watch has
//! not brought the write back yet), and dropped for a newer one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use crate::api::Wukong;

#[derive(Default)]
pub struct KnownCopies {
    by_uid: Mutex<HashMap<String, Known>>,
}

struct Known {
    copy: Arc<Wukong>,
    /// The copy is the answer to the operator's own status write.
    written: bool,
}

impl KnownCopies {
    /// The apiserver answered a read with this copy.
    pub fn remember(&self, wukong: Wukong) -> Arc<Wukong> {
        self.keep(wukong, false)
    }

    /// The apiserver answered the operator's own status write with this copy.
    pub fn remember_written(&self, wukong: Wukong) -> Arc<Wukong> {
        self.keep(wukong, true)
    }

    fn keep(&self, wukong: Wukong, written: bool) -> Arc<Wukong> {
        let copy = Arc::new(wukong);
        if let Ok(mut by_uid) = self.by_uid.lock() {
            let known = Known {
                copy: Arc::clone(&copy),
                written,
            };
            by_uid.insert(copy.uid().unwrap_or_default(), known);
        }
        copy
    }

    /// Whether `version` is the operator's own last status write of the Wukong `uid`.
    pub fn is_own_write(&self, uid: &str, version: &str) -> bool {
        self.by_uid.lock().is_ok_and(|by_uid| {
            by_uid.get(uid).is_some_and(|known| {
                known.written && known.copy.resource_version().as_deref() == Some(version)
            })
        })
    }

    /// The known copy, when it is at least as new as `watched` (the resourceVersion the
    /// watch shows now); `None`: read it again.
    pub fn recall(&self, uid: &str, watched: &str) -> Option<Arc<Wukong>> {
        let by_uid = self.by_uid.lock().ok()?;
        let known = &by_uid.get(uid)?.copy;
        let version = known.resource_version().unwrap_or_default();
        // resourceVersions are opaque, but etcd's are increasing integers: an older one
        // in the watch is a write of ours it has not brought back yet. Otherwise only an
        // equal version is known to be this copy.
        let current = match (version.parse::<u64>(), watched.parse::<u64>()) {
            (Ok(known), Ok(watched)) => known >= watched,
            _ => version == watched,
        };
        current.then(|| Arc::clone(known))
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut by_uid) = self.by_uid.lock() {
            by_uid.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wukong(version: &str, vm: &str) -> Wukong {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
            "metadata": {"name": "vm", "namespace": "ns", "uid": "u1", "resourceVersion": version},
            "spec": {"cpu": 1, "memory": "1Gi"},
            "status": {"vmName": vm}
        }))
        .unwrap()
    }

    fn vm(wukong: &Wukong) -> Option<String> {
        wukong.status.as_ref().and_then(|s| s.vm_name.clone())
    }

    #[test]
    fn a_written_copy_serves_while_the_watch_shows_it_or_an_older_version() {
        let known = KnownCopies::default();
        known.remember(wukong("11", "written"));
        assert_eq!(
            known.recall("u1", "10").as_deref().and_then(vm).as_deref(),
            Some("written")
        );
        assert_eq!(
            known.recall("u1", "11").as_deref().and_then(vm).as_deref(),
            Some("written")
        );
        assert!(
            known.recall("u1", "12").is_none(),
            "someone else wrote since: read again"
        );
        assert!(known.recall("other", "11").is_none());
    }

    #[test]
    fn only_the_answer_to_a_status_write_is_an_own_write() {
        let known = KnownCopies::default();
        known.remember(wukong("11", "read"));
        assert!(!known.is_own_write("u1", "11"));
        known.remember_written(wukong("12", "written"));
        assert!(known.is_own_write("u1", "12"));
        assert!(!known.is_own_write("u1", "13"), "someone wrote after us");
    }

    #[test]
    fn opaque_versions_must_match() {
        let known = KnownCopies::default();
        known.remember(wukong("b", "written"));
        assert!(known.recall("u1", "b").is_some());
        assert!(known.recall("u1", "a").is_none());
    }

    #[test]
    fn a_forgotten_wukong_is_read_again() {
        let known = KnownCopies::default();
        known.remember(wukong("11", "written"));
        known.forget("u1");
        assert!(known.recall("u1", "11").is_none());
    }
}
