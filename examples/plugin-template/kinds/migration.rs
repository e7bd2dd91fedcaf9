//! `example-migration`: a Wukong migration step. This skeleton starts one KubeVirt
//! VirtualMachineInstanceMigration per request and reports its phase; aborts, policies
//! and automatic evacuation are left to you.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wukong_plugin_sdk::{
    Call, Effects, Manifest, MigrationOutcome, MigrationPlugin, MigrationStatus, Plugin, StepResult,
    names,
};

const KUBEVIRT: &str = "kubevirt.io/v1";
const MIGRATION: &str = "VirtualMachineInstanceMigration";
const VMI: &str = "VirtualMachineInstance";

/// The plugin's config (none yet: add fields here); its JSON Schema is in the manifest.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {}

/// The plugin.
pub struct ExampleMigration;

impl Plugin for ExampleMigration {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("example-migration", env!("CARGO_PKG_VERSION"))
            .description("Live migration on request")
            .writes(KUBEVIRT, MIGRATION)
            .reads(KUBEVIRT, VMI)
    }
}

impl MigrationPlugin for ExampleMigration {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<MigrationOutcome> {
        let mut effects = Effects::default();
        let Some(request) = &call.wukong.migration else {
            return Ok(MigrationOutcome {
                effects,
                status: None,
            });
        };
        // One object per request: a name derived from the request id is stable across calls
        // (and never another Wukong's: see the SDK's `names`).
        let name = names::derived(&call.wukong.name, &request.request_id);
        let existing: Option<Value> = call.get_as(&call.object_ref(KUBEVIRT, MIGRATION, &name))?;
        // KubeVirt refuses a migration of an instance that does not exist (and the host
        // lets a migration name only the Wukong's own instance): wait for it.
        let vmi: Option<Value> = call.get_as(&call.object_ref(KUBEVIRT, VMI, &call.wukong.name))?;
        let mut spec = json!({"vmiName": call.wukong.name});
        if let Some(node) = &request.target_node {
            spec["addedNodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
        if existing.is_none() && vmi.is_some() {
            effects.apply(&json!({"apiVersion": KUBEVIRT, "kind": MIGRATION,
                "metadata": call.metadata(&name), "spec": spec}))?;
        }
        let phase = existing
            .as_ref()
            .and_then(|m| m["status"]["phase"].as_str())
            .unwrap_or("Pending");
        let status = MigrationStatus {
            phase: phase.to_owned(),
            request_id: request.request_id.clone(),
            automatic: false,
            trigger: None,
            migration_name: Some(name),
            source_node: None,
            target_node: request.target_node.clone(),
            mode: None,
            started_at: None,
            finished_at: None,
            failure_reason: None,
            message: String::new(),
        };
        Ok(MigrationOutcome {
            effects,
            status: Some(status),
        })
    }
}

wukong_plugin_sdk::export_migration_plugin!(ExampleMigration);
