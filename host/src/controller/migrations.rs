//! The cluster-wide limit on automatic migrations (`[controller]
//! maxConcurrentAutomaticMigrations`). A plugin sees only its Wukong's namespace, so the
//! host counts: automatic migration objects carry `vm.novasphere.dev/automatic: "true"`,
//! and an outcome that would create one more than the limit allows is deferred — the object
//! is not applied, the record says it waits for a slot, and the Wukong is requeued (the
//! plugin tries again on the next call).

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use super::Context;
use super::pipeline::StepFailure;
use crate::config::Backend;
use crate::plugin::types::StepKind;
use crate::plugin::{Outcome, StepStatus};

/// Set by the migration plugin on the migration objects it starts by policy.
pub use wukong_model::marks::AUTOMATIC_LABEL;
const API_VERSION: &str = "kubevirt.io/v1";
const KIND: &str = "VirtualMachineInstanceMigration";
/// How soon a deferred Wukong asks again.
const DEFER_MS: u64 = 3_000;

/// Held from counting until the new migration object is applied, so two Wukongs reconciled
/// at once cannot both take the last slot. NB: one per process; several operator replicas
/// would need a lease (Wukong runs one active replica).
static SLOTS: Mutex<()> = Mutex::const_new(());

fn is_automatic_migration(object: &Value) -> bool {
    object["apiVersion"] == API_VERSION
        && object["kind"] == KIND
        && object["metadata"]["labels"][AUTOMATIC_LABEL] == "true"
}

fn key(object: &Value, namespace: &str) -> (String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace)
        .to_owned();
    (ns, text(&object["metadata"]["name"]))
}

/// For a migration step's outcome: `Ok(Some(guard))` when it starts an automatic
/// migration and a slot is free (keep the guard until it is applied), `Ok(None)` when there
/// is nothing to limit or the start was deferred.
pub async fn gate(
    ctx: &Context,
    limit: usize,
    step: StepKind,
    backend: &Backend,
    namespace: &str,
    outcome: &mut Outcome,
) -> Result<Option<MutexGuard<'static, ()>>, StepFailure> {
    if step != StepKind::Migration || !outcome.apply.iter().any(is_automatic_migration) {
        return Ok(None);
    }
    let guard = SLOTS.lock().await;
    let failure = |e: kube::Error| StepFailure {
        step,
        plugin: backend.plugin.id.to_string(),
        reason: "migration-limit".into(),
        message: format!("counting automatic migrations: {e}"),
        transient: true,
    };
    let kind = ctx
        .kinds
        .resolve(API_VERSION, KIND)
        .await
        .map_err(failure)?;
    let existing = Api::<DynamicObject>::all_with(ctx.client.clone(), &kind.resource)
        .list(&ListParams::default().labels(&format!("{AUTOMATIC_LABEL}=true")))
        .await
        .map_err(failure)?;
    let existing: Vec<Value> = existing
        .items
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect();
    let in_flight = existing
        .iter()
        .filter(|o| {
            o["metadata"]["deletionTimestamp"].is_null()
                && !matches!(o["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .count();
    let known: Vec<(String, String)> = existing.iter().map(|o| key(o, namespace)).collect();
    let new = outcome
        .apply
        .iter()
        .filter(|o| is_automatic_migration(o) && !known.contains(&key(o, namespace)))
        .count();
    if new == 0 || in_flight + new <= limit {
        return Ok(Some(guard));
    }
    defer(outcome, in_flight, limit);
    Ok(None)
}

/// Takes the new migration object out of the outcome and says why.
fn defer(outcome: &mut Outcome, in_flight: usize, limit: usize) {
    let message = format!(
        "waiting for a migration slot: {in_flight} of {limit} automatic migrations in flight"
    );
    tracing::info!(in_flight, limit, "automatic migration deferred");
    outcome.apply.retain(|o| !is_automatic_migration(o));
    outcome.events.retain(|e| e.reason != "MigrationStarted");
    if let StepStatus::Migration(Some(record)) = &mut outcome.status {
        record.phase = "Pending".into();
        record.migration_name = None;
        record.started_at = None;
        record.message.clone_from(&message);
    }
    for condition in &mut outcome.conditions {
        condition.reason = "WaitingForMigrationSlot".into();
        condition.message.clone_from(&message);
    }
    outcome.requeue_after_ms = Some(
        outcome
            .requeue_after_ms
            .map_or(DEFER_MS, |ms| ms.min(DEFER_MS)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Condition, Event, MigrationStatus};
    use serde_json::json;

    #[test]
    fn a_deferred_start_applies_nothing_and_says_it_waits() {
        let migration = json!({"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "vm1-auto-1", "labels": {AUTOMATIC_LABEL: "true"}}});
        let policy = json!({"apiVersion": "migrations.kubevirt.io/v1alpha1", "kind": "MigrationPolicy",
            "metadata": {"name": "ns-vm1"}});
        assert!(is_automatic_migration(&migration) && !is_automatic_migration(&policy));
        let mut outcome = Outcome {
            apply: vec![policy, migration],
            delete: Vec::new(),
            actions: Vec::new(),
            conditions: vec![Condition {
                condition_type: "AutoMigration".into(),
                status: "True".into(),
                reason: "Migrating".into(),
                message: String::new(),
            }],
            events: vec![Event {
                warning: false,
                reason: "MigrationStarted".into(),
                message: String::new(),
            }],
            requeue_after_ms: Some(30_000),
            status: StepStatus::Migration(Some(MigrationStatus {
                phase: "Pending".into(),
                request_id: "auto/nodeMaintenance".into(),
                automatic: true,
                trigger: Some("nodeMaintenance".into()),
                migration_name: Some("vm1-auto-1".into()),
                source_node: None,
                target_node: None,
                mode: None,
                started_at: Some("2026-01-01T00:00:00Z".into()),
                finished_at: None,
                failure_reason: None,
                message: String::new(),
            })),
        };
        defer(&mut outcome, 1, 1);
        assert_eq!(outcome.apply.len(), 1, "only the policy is applied");
        assert!(outcome.events.is_empty());
        assert_eq!(outcome.requeue_after_ms, Some(DEFER_MS));
        assert_eq!(outcome.conditions[0].reason, "WaitingForMigrationSlot");
        let StepStatus::Migration(Some(record)) = &outcome.status else {
            panic!("a migration record");
        };
        assert_eq!(
            record.migration_name, None,
            "nothing runs, the plugin asks again"
        );
        assert!(
            record.message.starts_with("waiting for a migration slot"),
            "{}",
            record.message
        );
    }
}
