//! `kubevirt-migration`: live migration of a Wukong's VM on request (`spec.migration`)
//! and automatic evacuation by Wukong's own policy (`spec.migrationPolicy`).
//!
//! # Expected flow
//! One record, `status.migrationStatus`, says what ran last. Each call, in order:
//! 1. a running migration is followed (phase, nodes, mode, times, failure) and aborted
//!    when `spec.migration.abort` is set or a manual request is removed;
//! 2. a migration object the record does not know (the host crashed after creating it)
//!    is picked up and followed;
//! 3. a manual request whose id is not the record's is checked and refused or started:
//!    a `MigrationPolicy` (named `names::derived(namespace, name)`, or `<ns>-<name>` when
//!    the Wukong has that one from before) with the tuning options, then a
//!    `VirtualMachineInstanceMigration` `<name>-<hash>` targeting the node through
//!    `addedNodeSelector`;
//! 4. otherwise the automatic policy is evaluated ([`auto`]).
//!
//! # Guarantees
//! - One migration at a time per Wukong: a new request waits for the running one.
//! - A request runs once: its id stays in the record (automatic migrations carry the last
//!   manual id over), and the migration object's name is derived from the request and the
//!   previous record, so re-creating it after a crash is a no-op.
//! - The user's spec is never edited.
//!
//! # Caveats
//! - Automatic migration objects carry `vm.novasphere.dev/automatic: "true"`; the host
//!   counts them for its cluster-wide limit and may defer a start (the record is then
//!   `Pending` without a migration name, and the next call tries again).
//! - The MigrationPolicy is cluster-scoped, so it cannot carry an owner reference: the
//!   host marks it with the Wukong's uid (the plugin must not: the host refuses an object
//!   carrying its marks), the plugin reads the mark to recognise its policy, and finalize
//!   deletes it.

mod admission;
mod auto;
mod manual;
mod nodes;
mod objects;
mod record;
mod track;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wukong_plugin_sdk::objects::made_for;
use wukong_plugin_sdk::{
    Call, Effects, Manifest, MigrationOutcome, MigrationPlugin, Plugin, StepResult,
};

pub use auto::AUTO_MIGRATION;
pub use objects::{POLICY_API_VERSION, POLICY_KIND, WUKONG_LABEL};
pub use record::MIGRATED;

pub const KUBEVIRT: &str = "kubevirt.io/v1";
pub const VMI: &str = "VirtualMachineInstance";
pub const VMIM: &str = "VirtualMachineInstanceMigration";
/// On migration objects: `"true"` when the policy started it (the host's limit counts these).
pub use wukong_plugin_sdk::marks::AUTOMATIC_LABEL;
/// On migration objects: the request they answer.
pub const REQUEST_ANNOTATION: &str = "vm.novasphere.dev/request-id";
/// On cluster-scoped objects (the MigrationPolicy): the owning Wukong's uid, written by the
/// host, read by the plugin.
pub use wukong_plugin_sdk::marks::OWNER_UID_ANNOTATION;
/// How soon to look again while a migration runs.
const REQUEUE_MS: u64 = 2_000;

/// The plugin's config.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Seconds after a move before the policy moves the VM again (no flapping).
    pub cooldown_seconds: u64,
    /// Node taint keys that mean maintenance (besides a cordon).
    pub maintenance_taints: Vec<String>,
    /// Node annotation with the CPU requested on the node (a quantity), for
    /// `resourcePressure`.
    pub requested_cpu_annotation: String,
    /// Node annotation with the memory requested on the node (a quantity).
    pub requested_memory_annotation: String,
    /// How often a Wukong with an enabled policy looks at its node again. NB: the host
    /// watches the Wukong's own objects, not Nodes, so a cordon is seen at the next look.
    pub watch_interval_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cooldown_seconds: 300,
            maintenance_taints: vec![
                "node.kubernetes.io/unschedulable".into(),
                "wukong.novasphere.dev/maintenance".into(),
            ],
            requested_cpu_annotation: "wukong.novasphere.dev/requested-cpu".into(),
            requested_memory_annotation: "wukong.novasphere.dev/requested-memory".into(),
            watch_interval_seconds: 30,
        }
    }
}

/// The plugin.
pub struct KubevirtMigration;

impl Plugin for KubevirtMigration {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("kubevirt-migration", env!("CARGO_PKG_VERSION"))
            .description("KubeVirt live migration on request and automatic evacuation by policy")
            .reads(KUBEVIRT, VMI)
            .reads("v1", "Node")
            .writes(KUBEVIRT, VMIM)
            .writes(POLICY_API_VERSION, POLICY_KIND)
            // nodeFailure deletes the VMI so KubeVirt restarts the VM elsewhere.
            .writes(KUBEVIRT, VMI)
    }
}

impl MigrationPlugin for KubevirtMigration {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<MigrationOutcome> {
        let previous = record::previous(call);
        let vmi: Option<Value> = call.get_as(&call.object_ref(KUBEVIRT, VMI, &call.wukong.name))?;
        let mut effects = Effects::default();
        let policy = auto::policy(call);
        let pending = call
            .wukong
            .migration
            .as_ref()
            .filter(|r| !record::done(previous.as_ref(), r));
        let status = if let Some(active) = previous.as_ref().filter(|r| record::is_active(r)) {
            Some(track::follow(call, active, vmi.as_ref(), &mut effects)?)
        } else if let Some(adopted) = track::adopt(
            call,
            previous.as_ref(),
            pending
                .map(|r| manual::expected_name(call, r, previous.as_ref()))
                .as_deref(),
            vmi.as_ref(),
            &mut effects,
        )? {
            Some(adopted)
        } else if let Some(request) = pending {
            Some(manual::handle(
                call,
                request,
                previous.as_ref(),
                vmi.as_ref(),
                &mut effects,
            )?)
        } else if let Some(policy) = &policy {
            auto::evaluate(call, policy, previous, vmi.as_ref(), &mut effects)?
        } else {
            previous
        };
        if policy.is_some() {
            effects.requeue_after(call.config.watch_interval_seconds.max(1) * 1000);
        }
        if policy.is_some()
            && !effects
                .conditions
                .iter()
                .any(|c| c.condition_type == AUTO_MIGRATION)
        {
            effects.condition(
                AUTO_MIGRATION,
                true,
                "MigrationInProgress",
                "a migration is in progress",
            );
        }
        record::condition(status.as_ref(), &mut effects);
        if status.as_ref().is_some_and(record::is_active) {
            effects.requeue_after(REQUEUE_MS);
        }
        Ok(MigrationOutcome { effects, status })
    }

    /// Deletes the MigrationPolicy: being cluster-scoped, the garbage collector would
    /// not. Migration objects are owned by the Wukong and go with it.
    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        let target = objects::policy_ref(call)?;
        let mut effects = Effects::default();
        let existing: Option<Value> = call.get_as(&target)?;
        if existing.is_some_and(|p| made_for(&p, &call.wukong.uid)) {
            effects.delete.push(target);
        }
        Ok(effects)
    }
}

wukong_plugin_sdk::export_migration_plugin!(KubevirtMigration);

#[cfg(test)]
mod tests;
