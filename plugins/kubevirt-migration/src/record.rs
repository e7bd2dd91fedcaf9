//! `status.migrationStatus`: the one record of the last (or running) migration, read
//! back from the Wukong, and what it means — running or finished, which request it
//! answered, when the VM last moved — plus the `Migrated` condition it gives.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use wukong_plugin_sdk::{Call, Effects, MigrationRequest, MigrationStatus};

/// The condition every call sets from the record.
pub const MIGRATED: &str = "Migrated";

/// Phases of a migration that is still going (KubeVirt's are folded into these).
const ACTIVE: &[&str] = &["Pending", "Scheduling", "Running"];

/// The record the host holds in `status.migrationStatus`, if any.
pub fn previous<C>(call: &Call<'_, C>) -> Option<MigrationStatus> {
    let json = call.wukong_json();
    let r = json.pointer("/status/migrationStatus")?;
    let text = |key: &str| r[key].as_str().map(str::to_owned);
    Some(MigrationStatus {
        phase: text("phase")?,
        request_id: text("requestId").unwrap_or_default(),
        automatic: r["automatic"].as_bool().unwrap_or(false),
        trigger: text("trigger"),
        migration_name: text("migrationName"),
        source_node: text("sourceNode"),
        target_node: text("targetNode"),
        mode: text("mode"),
        started_at: text("startedAt"),
        finished_at: text("finishedAt"),
        failure_reason: text("failureReason"),
        message: text("message").unwrap_or_default(),
    })
}

/// A migration object exists for it and has not ended. A `Pending` record without a
/// migration name is one the host deferred (no slot): nothing runs.
pub fn is_active(record: &MigrationStatus) -> bool {
    ACTIVE.contains(&record.phase.as_str()) && record.migration_name.is_some()
}

/// Whether `request` was already handled. The record keeps the last manual request's id,
/// automatic migrations included (they carry it over), so a request is never redone.
pub fn done(previous: Option<&MigrationStatus>, request: &MigrationRequest) -> bool {
    previous.is_some_and(|p| p.request_id == request.request_id)
}

/// When the VM last moved (or a move was tried and failed), for the cool-down.
pub fn last_move(previous: Option<&MigrationStatus>) -> Option<Timestamp> {
    previous
        .filter(|p| matches!(p.phase.as_str(), "Succeeded" | "Failed" | "Restarted"))
        .and_then(|p| p.finished_at.as_deref())
        .and_then(parse_time)
}

pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// Seconds from `earlier` to `now` (negative when the clocks disagree).
pub fn seconds_since(now: &str, earlier: Timestamp) -> Option<i64> {
    Some(parse_time(now)?.as_second() - earlier.as_second())
}

/// A short stable hash (FNV-1a, 32 bits) for object names: the same request gives the
/// same name, so re-creating after a crash is a no-op.
pub fn short_hash(parts: &[&str]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    format!("{hash:08x}")
}

/// A record with only what every new one has.
pub fn new_record(phase: &str, request_id: &str, automatic: bool) -> MigrationStatus {
    MigrationStatus {
        phase: phase.into(),
        request_id: request_id.into(),
        automatic,
        trigger: None,
        migration_name: None,
        source_node: None,
        target_node: None,
        mode: None,
        started_at: None,
        finished_at: None,
        failure_reason: None,
        message: String::new(),
    }
}

/// The `Migrated` condition from the record: True only once a migration succeeded.
pub fn condition(record: Option<&MigrationStatus>, effects: &mut Effects) {
    let Some(r) = record else {
        return;
    };
    let phase = r.phase.as_str();
    let (ok, reason) = match phase {
        "Succeeded" => (true, "Succeeded"),
        "Pending" | "Scheduling" | "Running" => (false, "InProgress"),
        "Restarted" => (false, "RestartedAfterNodeFailure"),
        other => (false, other),
    };
    let message = if r.message.is_empty() {
        format!("migration {}", phase.to_lowercase())
    } else {
        r.message.clone()
    };
    effects.condition(MIGRATED, ok, reason, message);
}

/// `status.<key>` of an object as text.
pub fn status_text(object: &Value, key: &str) -> Option<String> {
    object["status"][key].as_str().map(str::to_owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(short_hash(&["a", "b"]), short_hash(&["a", "b"]));
        assert_ne!(short_hash(&["ab", ""]), short_hash(&["a", "b"]));
        assert_eq!(short_hash(&["x"]).len(), 8);
    }

    #[test]
    fn seconds_between_rfc3339_times() {
        let earlier = parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(seconds_since("2026-01-01T00:05:01Z", earlier), Some(301));
        assert_eq!(seconds_since("not a time", earlier), None);
    }
}
