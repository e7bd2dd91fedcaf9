//! `Wukong.status`: phase, conditions, what each step reported, which plugin ran each
//! step. Written only by the operator, through the status subresource.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plugin::types;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WukongStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WukongPhase>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `NetworksConfigured`, `VolumesBound`, `StepFailed`, and the steps' own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<WukongCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<LifecycleState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_status: Option<MigrationStatus>,
    /// Which plugin ran each step in the last reconcile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginRecord>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum WukongPhase {
    Pending,
    Provisioning,
    Starting,
    Running,
    Stopping,
    Stopped,
    Restarting,
    Suspended,
    Migrating,
    Failed,
    Terminating,
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WukongCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    // NB: an empty string reaches a 1.20 apiserver's server-side apply as null.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginRecord {
    /// `network`, `storage`, `lifecycle`, `migration`.
    pub step: String,
    /// The backend name from the operator's config.
    pub backend: String,
    pub name: String,
    pub version: String,
    /// sha256 of the plugin file.
    pub digest: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    pub name: String,
    /// `pod`, or the NetworkAttachmentDefinition as `namespace/name`.
    pub network_name: String,
    pub binding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Whether Wukong created the NetworkAttachmentDefinition (and removes it).
    pub created: bool,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    pub name: String,
    pub claim_name: String,
    pub data_volume: bool,
    pub phase: String,
    pub bound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    pub requested: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    pub retain: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    pub action: String,
    pub request_id: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// `InProgress`, `Succeeded`, `Failed`, `Refused`, `ForcedAfterTimeout`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
}

/// `status.lifecycleState`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleState {
    /// Starting, Running, Stopping, Stopped, Restarting, Suspending, Suspended, Resuming, Failed, ...
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmi_phase: Option<String>,
    pub ready: bool,
    pub live_migratable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_action: Option<ActionRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ActionRecord>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `status.migrationStatus`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub phase: String,
    pub request_id: String,
    pub automatic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl From<&types::NetworkAttachment> for NetworkStatus {
    fn from(a: &types::NetworkAttachment) -> Self {
        Self {
            name: a.name.clone(),
            network_name: a.network_name.clone(),
            binding: a.binding.clone(),
            mac_address: a.mac_address.clone(),
            created: a.created,
            ready: a.ready,
            message: a.message.clone(),
        }
    }
}

impl From<&types::Volume> for VolumeStatus {
    fn from(v: &types::Volume) -> Self {
        Self {
            name: v.name.clone(),
            claim_name: v.claim_name.clone(),
            data_volume: v.data_volume,
            phase: v.phase.clone(),
            bound: v.bound,
            progress: v.progress.clone(),
            requested: v.requested.clone(),
            capacity: v.capacity.clone(),
            access_modes: v.access_modes.clone(),
            volume_mode: v.volume_mode.clone(),
            storage_class: v.storage_class.clone(),
            retain: v.retain,
            message: v.message.clone(),
        }
    }
}

/// Back into the contract, for a `finalize` call after a restart: what status recorded of
/// each volume (boot order and bus are not kept there; finalize does not need them).
impl From<&VolumeStatus> for types::Volume {
    fn from(v: &VolumeStatus) -> Self {
        Self {
            name: v.name.clone(),
            claim_name: v.claim_name.clone(),
            data_volume: v.data_volume,
            phase: v.phase.clone(),
            bound: v.bound,
            progress: v.progress.clone(),
            requested: v.requested.clone(),
            capacity: v.capacity.clone(),
            access_modes: v.access_modes.clone(),
            volume_mode: v.volume_mode.clone(),
            storage_class: v.storage_class.clone(),
            retain: v.retain,
            boot_order: None,
            bus: String::new(),
            message: v.message.clone(),
        }
    }
}

impl From<&types::ActionRecord> for ActionRecord {
    fn from(r: &types::ActionRecord) -> Self {
        Self {
            action: r.action.clone(),
            request_id: r.request_id.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            outcome: r.outcome.clone(),
            message: r.message.clone(),
            stage: r.stage.clone(),
        }
    }
}

impl From<&types::LifecycleStatus> for LifecycleState {
    fn from(s: &types::LifecycleStatus) -> Self {
        let last = s.current_action.as_ref().or(s.history.first());
        Self {
            state: lifecycle_phase_name(s.phase).to_owned(),
            printable_status: s.printable_status.clone(),
            vmi_phase: s.vmi_phase.clone(),
            ready: s.ready,
            live_migratable: s.live_migratable,
            last_action: last.map(|a| a.action.clone()),
            last_action_time: last.map(|a| a.started_at.clone()),
            current_action: s.current_action.as_ref().map(Into::into),
            history: s.history.iter().map(Into::into).collect(),
            message: s.message.clone(),
        }
    }
}

impl From<&types::MigrationStatus> for MigrationStatus {
    fn from(m: &types::MigrationStatus) -> Self {
        Self {
            phase: m.phase.clone(),
            request_id: m.request_id.clone(),
            automatic: m.automatic,
            trigger: m.trigger.clone(),
            migration_name: m.migration_name.clone(),
            source_node: m.source_node.clone(),
            target_node: m.target_node.clone(),
            mode: m.mode.clone(),
            started_at: m.started_at.clone(),
            finished_at: m.finished_at.clone(),
            failure_reason: m.failure_reason.clone(),
            message: m.message.clone(),
        }
    }
}

/// The user-facing name of a lifecycle phase.
pub fn lifecycle_phase_name(phase: types::LifecyclePhase) -> &'static str {
    use types::LifecyclePhase as P;
    match phase {
        P::Pending => "Pending",
        P::Starting => "Starting",
        P::Running => "Running",
        P::Stopping => "Stopping",
        P::Stopped => "Stopped",
        P::Restarting => "Restarting",
        P::Suspending => "Suspending",
        P::Suspended => "Suspended",
        P::Resuming => "Resuming",
        P::Migrating => "Migrating",
        P::Failed => "Failed",
        P::Unknown => "Unknown",
    }
}
