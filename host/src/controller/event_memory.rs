//! Which events a Wukong's reconcile publishes. Plugins report what they see on every
//! call, so a converged or persistently failing Wukong would publish the same event each
//! time: an event is published when the previous reconcile did not publish it too. It is
//! published again when it comes back after a reconcile without it (a real repeat, which
//! kube's recorder folds into the event's series), and once per reconcile at most.
//!
//! Per Wukong this keeps two sets of 64-bit hashes (this reconcile's and the last one's),
//! bounded by the events one reconcile can report; a deleted Wukong's are forgotten.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

#[derive(Default)]
struct Seen {
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

#[derive(Default)]
pub struct EventMemory {
    by_uid: Mutex<HashMap<String, Seen>>,
}

impl EventMemory {
    /// A reconcile of `uid` begins: what the last one published becomes "previous".
    pub fn begin(&self, uid: &str) {
        if let Ok(mut by_uid) = self.by_uid.lock() {
            let seen = by_uid.entry(uid.to_owned()).or_default();
            seen.previous = std::mem::take(&mut seen.current);
        }
    }

    /// Whether to publish this event now; records it for this reconcile either way.
    pub fn fresh(&self, uid: &str, warning: bool, reason: &str, message: &str) -> bool {
        let mut hasher = DefaultHasher::new();
        (warning, reason, message).hash(&mut hasher);
        let key = hasher.finish();
        let Ok(mut by_uid) = self.by_uid.lock() else {
            return true;
        };
        let seen = by_uid.entry(uid.to_owned()).or_default();
        seen.current.insert(key) && !seen.previous.contains(&key)
    }

    /// A Wukong is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut by_uid) = self.by_uid.lock() {
            by_uid.remove(uid);
        }
    }

    /// Wukongs remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.by_uid.lock().map_or(0, |by_uid| by_uid.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persistent_event_is_published_once_and_again_when_it_comes_back() {
        let memory = EventMemory::default();
        let mut published = Vec::new();
        // Reconciles 1-3 report the failure, 4 does not (recovered), 5 reports it again.
        for (round, reports) in [true, true, true, false, true].into_iter().enumerate() {
            memory.begin("uid");
            if reports && memory.fresh("uid", true, "StepFailed", "disk import failed") {
                published.push(round + 1);
            }
        }
        assert_eq!(published, [1, 5]);
    }

    #[test]
    fn a_reconcile_publishes_an_event_once() {
        let memory = EventMemory::default();
        memory.begin("uid");
        assert!(memory.fresh("uid", false, "Created", "DataVolume a"));
        assert!(!memory.fresh("uid", false, "Created", "DataVolume a"));
        assert!(memory.fresh("uid", false, "Created", "DataVolume b"));
        assert!(
            memory.fresh("uid", true, "Created", "DataVolume a"),
            "type counts"
        );
        assert!(
            memory.fresh("other", false, "Created", "DataVolume a"),
            "per Wukong"
        );
    }

    #[test]
    fn a_forgotten_wukong_holds_nothing() {
        let memory = EventMemory::default();
        memory.begin("uid");
        memory.fresh("uid", false, "Created", "x");
        memory.forget("uid");
        assert_eq!(memory.remembered(), 0);
    }
}
