//! `Wukong.spec`: the seeds' fields, accepted as written, plus `runStrategy` and a
//! backend choice per disk and per network.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kubernetes quantity such as `4Gi`, `512Mi` or `20G`.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";
/// A DNS-1123 label: names of disks and networks become Kubernetes names.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A virtual machine on KubeVirt, with swappable backends for its networks and disks.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[kube(
    group = "vm.novasphere.dev",
    version = "v1alpha1",
    kind = "Wukong",
    plural = "wukongs",
    shortname = "wk",
    namespaced,
    status = "crate::api::WukongStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WukongSpec {
    /// Virtual CPUs.
    #[schemars(range(min = 1, max = 1024))]
    pub cpu: u32,
    /// Guest memory, a quantity (`4Gi`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    #[schemars(length(max = 64))]
    pub memory: String,
    /// KubeVirt run strategy; `Always` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub disks: Vec<DiskSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub networks: Vec<NetworkSpec>,
    /// A one-shot lifecycle action; done once per request and recorded in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_action: Option<LifecycleActionSpec>,
    /// A one-shot live migration; done once per request and recorded in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationSpec>,
    /// Wukong's own automatic-migration policy (not KubeVirt's `MigrationPolicy` CRD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_policy: Option<MigrationPolicySpec>,
}

/// KubeVirt's `spec.runStrategy`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema, Default)]
pub enum RunStrategy {
    #[default]
    Always,
    Halted,
    Manual,
    RerunOnFailure,
    Once,
}

/// One disk: from an image, blank, or an existing claim.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DiskSpec {
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Size, a quantity (`20Gi`). Growing it expands the disk; shrinking is refused.
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 64))]
    pub size: String,
    /// Image to import: `docker://registry/image:tag` or an `http(s)://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub image: Option<String>,
    /// Use this existing PersistentVolumeClaim as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub existing_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class: Option<String>,
    /// Storage backend from the operator's config (`longhorn`, `ceph-rbd`); the default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub backend: Option<String>,
    /// Keep the claim when the Wukong is deleted.
    #[serde(default)]
    pub retain: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub boot_order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<DiskBus>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    #[default]
    Virtio,
    Sata,
    Scsi,
}

/// One network: the pod network, an existing NetworkAttachmentDefinition, or one to create.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// `multus` (a secondary network, the default) or `pod`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub network_type: Option<NetworkType>,
    /// An existing NetworkAttachmentDefinition: `name` or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 317))]
    pub nad_name: Option<String>,
    /// Config for a NetworkAttachmentDefinition Wukong creates (and removes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<NetworkConfigSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub backend: Option<String>,
    /// Interface binding; `bridge` for multus, `masquerade` for the pod network, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<InterfaceBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"))]
    pub mac_address: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    #[default]
    Multus,
    Pod,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceBinding {
    Bridge,
    Masquerade,
    Sriov,
}

/// CNI config for a network Wukong creates.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfigSpec {
    /// CNI plugin type; `bridge` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub cni_type: Option<String>,
    /// Host bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 65535))]
    pub mtu: Option<u32>,
    /// IPAM config, passed to CNI as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::spec::free_form")]
    pub ipam: Option<serde_json::Value>,
}

/// `spec.lifecycleAction`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleActionSpec {
    pub action: LifecycleActionKind,
    /// Stop or restart at once, without waiting for the guest.
    #[serde(default)]
    pub force: bool,
    /// Time the guest gets to shut down gracefully; 30 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_period_seconds: Option<u32>,
    /// Identifies the request. When absent, the action's content does (`restart/force=false/
    /// grace=30`): re-applying the same spec does not repeat it, a different action does.
    /// Set a new value to repeat the same action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub request_id: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleActionKind {
    Start,
    Stop,
    Restart,
    Suspend,
    Resume,
    SoftReboot,
}

/// `spec.migration`: tuning goes into a KubeVirt MigrationPolicy matched to this VM.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub target_node: Option<String>,
    #[serde(default)]
    pub allow_auto_converge: bool,
    #[serde(default)]
    pub allow_post_copy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub completion_timeout_per_gi_b: Option<u64>,
    /// Abort the running migration.
    #[serde(default)]
    pub abort: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub request_id: Option<String>,
}

/// `spec.migrationPolicy`: when Wukong moves the VM by itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPolicySpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub trigger_conditions: Vec<TriggerCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node_selector: Option<LabelSelector>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerCondition {
    #[serde(rename = "type")]
    pub trigger_type: TriggerType,
    /// For `resourcePressure`: requested over allocatable, as a percentage (`80%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,2}|100)%$"))]
    pub threshold: Option<String>,
    /// For `nodeFailure`: how long the node must be NotReady; 60 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_period_seconds: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TriggerType {
    NodeMaintenance,
    NodeFailure,
    ResourcePressure,
}

pub(crate) fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // NB: OpenAPI cannot bound nesting; the top level at least is bounded.
    schemars::json_schema!({ "type": "object", "maxProperties": 32, "x-kubernetes-preserve-unknown-fields": true })
}
