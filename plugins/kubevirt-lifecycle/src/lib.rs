//! `kubevirt-lifecycle`: builds the KubeVirt VirtualMachine of a Wukong once its volumes
//! are bound and its networks attached, and reports the VM's state from the
//! VirtualMachine and its instance, and runs the lifecycle actions of
//! `spec.lifecycleAction` (start, stop, restart, suspend, resume, soft reboot; see
//! [`actions`]) through KubeVirt's subresources.
//!
//! On finalize it deletes the VirtualMachine itself rather than waiting for the garbage
//! collector, so the VM is gone before the storage step deletes its disks.

pub mod actions;
mod drive;
mod observed;
mod record;
pub mod run_strategy;
mod state;
mod vm;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wukong_plugin_sdk::disks::carries_labels;
use wukong_plugin_sdk::{
    Call, Effects, LifecycleOutcome, LifecyclePhase, LifecyclePlugin, LifecycleStatus, Manifest,
    Plugin, StepResult,
};

pub use state::status;
pub use vm::{VM_API_VERSION, VM_KIND};

/// KubeVirt's VirtualMachineInstance.
pub const VMI_KIND: &str = "VirtualMachineInstance";
/// The condition this step sets.
pub const READY: &str = "Ready";

/// The plugin's config.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Seconds the guest gets to shut down when its VMI is deleted.
    pub termination_grace_period_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            termination_grace_period_seconds: 30,
        }
    }
}

/// The plugin.
pub struct KubevirtLifecycle;

impl Plugin for KubevirtLifecycle {
    type Config = Config;

    fn manifest() -> Manifest {
        Manifest::new("kubevirt-lifecycle", env!("CARGO_PKG_VERSION"))
            .description(
                "Builds the KubeVirt VirtualMachine, runs lifecycle actions, reports VM/VMI state",
            )
            .writes(VM_API_VERSION, VM_KIND)
            // A forced stop deletes the VMI with a zero grace period.
            .writes(VM_API_VERSION, VMI_KIND)
            .reads("v1", "Node")
            .action("virtualmachines/start")
            .action("virtualmachines/stop")
            .action("virtualmachineinstances/pause")
            .action("virtualmachineinstances/unpause")
            .action("virtualmachineinstances/softreboot")
    }
}

impl LifecyclePlugin for KubevirtLifecycle {
    fn reconcile(call: &Call<'_, Config>) -> StepResult<LifecycleOutcome> {
        let name = &call.wukong.name;
        let vm: Option<Value> = call.get_as(&call.object_ref(VM_API_VERSION, VM_KIND, name))?;
        let vmi: Option<Value> = call.get_as(&call.object_ref(VM_API_VERSION, VMI_KIND, name))?;
        let mut effects = Effects::default();
        let waiting = waiting_for(call);
        let strategy = run_strategy::effective(&call.wukong.run_strategy, vm.as_ref());
        let mut status = match (&waiting, &vm) {
            // Nothing to run yet: the VM would start on missing disks or networks.
            (Some(waiting), None) => LifecycleStatus {
                phase: LifecyclePhase::Pending,
                message: waiting.clone(),
                ..status(name, &strategy, None, None)
            },
            // The VM exists (a disk was added, or it is re-importing): KubeVirt holds the
            // instance back too; say what it waits for.
            (Some(waiting), Some(_)) => {
                let mut status = status(name, &strategy, vm.as_ref(), vmi.as_ref());
                if vmi.is_none()
                    && matches!(
                        status.phase,
                        LifecyclePhase::Pending | LifecyclePhase::Starting
                    )
                {
                    status.phase = LifecyclePhase::Pending;
                    status.message = waiting.clone();
                }
                status
            }
            (None, _) => {
                effects.apply(&vm::build(call, &strategy)?)?;
                status(name, &strategy, vm.as_ref(), vmi.as_ref())
            }
        };
        drive::run(call, vm.as_ref(), vmi.as_ref(), &mut effects, &mut status);
        let phase = state::phase_name(status.phase);
        if status.ready {
            effects.condition(READY, true, phase, "the VM is running and ready");
        } else {
            let message = match &status.message {
                m if m.is_empty() => format!("the VM is {}", phase.to_lowercase()),
                m => m.clone(),
            };
            effects.condition(READY, false, phase, message);
        }
        // NB: no requeue while the VM waits, starts or stops: every change it waits for
        // (the claims, the VM, the instance) is a watch event of the host's that calls this
        // step again. Polling as well cost a reconcile every 5 s per waiting Wukong, which
        // at 10,000 Wukongs was most of the operator's work. Actions in progress still
        // requeue (`drive`): their grace periods and timeouts are time, not events.
        Ok(LifecycleOutcome { effects, status })
    }

    fn finalize(call: &Call<'_, Config>) -> StepResult<Effects> {
        let target = call.object_ref(VM_API_VERSION, VM_KIND, &call.wukong.name);
        let mut effects = Effects::default();
        let existing: Option<Value> = call.get_as(&target)?;
        if existing.is_some_and(|vm| carries_labels(&vm, &call.labels())) {
            effects.delete.push(target);
        }
        Ok(effects)
    }
}

/// Why the VM cannot be created yet: volumes not bound, networks not attached — a wait,
/// not an error (KubeVirt itself creates the instance only once its DataVolumes are
/// ready). A volume waiting for its first consumer (`WaitForFirstConsumer`, or CDI's
/// `PendingPopulation` on such a class) binds only once the VM's pod is scheduled, so it
/// does not hold the VM back: KubeVirt creates the instance for it.
fn waiting_for(call: &Call<'_, Config>) -> Option<String> {
    let upstream = call.upstream;
    let volumes = upstream
        .volumes
        .iter()
        .filter(|v| !v.bound && !waits_for_consumer(&v.phase))
        .map(|v| match v.message.as_str() {
            "" => format!("volume {} ({})", v.name, v.phase),
            message => format!("volume {} ({}: {message})", v.name, v.phase),
        });
    let networks = upstream
        .networks
        .iter()
        .filter(|n| !n.ready)
        .map(|n| format!("network {}", n.name));
    let waiting: Vec<String> = volumes.chain(networks).collect();
    (!waiting.is_empty()).then(|| format!("waiting for {}", waiting.join(", ")))
}

/// A volume phase that binds once a pod uses it.
fn waits_for_consumer(phase: &str) -> bool {
    matches!(phase, "WaitForFirstConsumer" | "PendingPopulation")
}

wukong_plugin_sdk::export_lifecycle_plugin!(KubevirtLifecycle);

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]
mod tests {
    use super::*;
    use serde_json::json;
    use wukong_plugin_sdk::native::{describe, lifecycle_finalize, lifecycle_reconcile};
    use wukong_plugin_sdk::{
        Context, FixtureCluster, NetworkAttachment, StepError, StepKind, Upstream, Volume, Wukong,
    };

    fn context(config: Value, run_strategy: &str) -> Context {
        Context {
            wukong: Wukong {
                name: "vm1".into(),
                namespace: "tenant-a".into(),
                uid: "uid-1".into(),
                generation: 1,
                deleting: false,
                cpu: 4,
                memory: "8Gi".into(),
                run_strategy: run_strategy.into(),
                disks: vec![],
                networks: vec![],
                lifecycle_action: None,
                migration: None,
                labels: vec![
                    ("app.kubernetes.io/managed-by".into(), "wukong".into()),
                    ("vm.novasphere.dev/wukong".into(), "vm1".into()),
                ],
                json: "{}".into(),
            },
            config: config.to_string(),
            backend: "default".into(),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn volume(name: &str, data_volume: bool, bound: bool, access: &str) -> Volume {
        Volume {
            name: name.into(),
            claim_name: format!("vm1-{name}"),
            data_volume,
            phase: if bound { "Bound" } else { "ImportInProgress" }.into(),
            bound,
            progress: None,
            requested: "20Gi".into(),
            capacity: None,
            access_modes: vec![access.into()],
            volume_mode: None,
            storage_class: None,
            retain: false,
            boot_order: data_volume.then_some(1),
            bus: if data_volume { "virtio" } else { "sata" }.into(),
            message: String::new(),
        }
    }

    fn attachment(
        name: &str,
        network_name: &str,
        binding: &str,
        mac: Option<&str>,
    ) -> NetworkAttachment {
        NetworkAttachment {
            name: name.into(),
            network_name: network_name.into(),
            binding: binding.into(),
            mac_address: mac.map(Into::into),
            created: false,
            ready: true,
            message: String::new(),
        }
    }

    fn upstream(volumes: Vec<Volume>) -> Upstream {
        let networks = vec![
            attachment("default", "pod", "masquerade", None),
            attachment(
                "lan",
                "tenant-a/vm1-lan",
                "bridge",
                Some("02:00:00:00:00:01"),
            ),
        ];
        Upstream {
            networks,
            volumes,
            lifecycle: None,
        }
    }

    fn run(
        config: Value,
        strategy: &str,
        upstream: &Upstream,
        cluster: &FixtureCluster,
    ) -> StepResult<LifecycleOutcome> {
        lifecycle_reconcile::<KubevirtLifecycle>(&context(config, strategy), upstream, cluster)
    }

    fn ready(outcome: &LifecycleOutcome) -> (&str, &str, &str) {
        let c = outcome
            .effects
            .conditions
            .iter()
            .find(|c| c.condition_type == READY)
            .unwrap();
        (&c.status, &c.reason, &c.message)
    }

    #[test]
    fn waits_for_bound_volumes_before_creating_the_vm() {
        let up = upstream(vec![volume("root", true, false, "ReadWriteOnce")]);
        let outcome = run(json!({}), "Always", &up, &FixtureCluster::new()).unwrap();
        assert!(outcome.effects.apply.is_empty());
        assert_eq!(outcome.status.phase, LifecyclePhase::Pending);
        assert!(
            outcome
                .status
                .message
                .contains("volume root (ImportInProgress)"),
            "{}",
            outcome.status.message
        );
        assert_eq!(ready(&outcome).0, "False");
        assert_eq!(
            outcome.effects.requeue_after_ms, None,
            "the claims' watch events bring the next call"
        );
    }

    #[test]
    fn a_wait_for_first_consumer_volume_does_not_hold_the_vm_back() {
        let mut root = volume("root", false, false, "ReadWriteOnce");
        root.phase = "WaitForFirstConsumer".into();
        let outcome = run(
            json!({}),
            "Always",
            &upstream(vec![root]),
            &FixtureCluster::new(),
        )
        .unwrap();
        assert_eq!(outcome.effects.apply.len(), 1);
    }

    #[test]
    fn a_pending_population_volume_does_not_hold_the_vm_back_and_an_import_is_a_wait() {
        let mut root = volume("root", true, false, "ReadWriteOnce");
        root.phase = "PendingPopulation".into();
        let up = upstream(vec![root]);
        let outcome = run(json!({}), "Always", &up, &FixtureCluster::new()).unwrap();
        assert_eq!(
            outcome.effects.apply.len(),
            1,
            "KubeVirt creates the VMI for it"
        );
        // A failing import the storage step reports: the VM waits, reason Pending, and says why.
        let mut root = volume("root", true, false, "ReadWriteOnce");
        root.message = "import failing, retry 2: unable to connect".into();
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "tenant-a"}, "spec": {"runStrategy": "Always"},
            "status": {"printableStatus": "Provisioning"}});
        let outcome = run(
            json!({}),
            "Always",
            &upstream(vec![root]),
            &FixtureCluster::new().with(vm),
        )
        .unwrap();
        assert_eq!(outcome.status.phase, LifecyclePhase::Pending);
        assert_eq!(
            outcome.status.message,
            "waiting for volume root (ImportInProgress: import failing, retry 2: unable to connect)"
        );
        assert_eq!(ready(&outcome).1, "Pending");
    }

    #[test]
    fn a_paused_vm_is_not_ready_even_if_its_instance_says_so() {
        let cluster = FixtureCluster::new()
            .with(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": "vm1", "namespace": "tenant-a"}, "status": {"printableStatus": "Paused"}}))
            .with(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": "vm1", "namespace": "tenant-a"},
                "status": {"phase": "Running", "nodeName": "node-2",
                    "conditions": [{"type": "Ready", "status": "True"}, {"type": "Paused", "status": "True"}]}}));
        let up = upstream(vec![volume("root", true, true, "ReadWriteOnce")]);
        let outcome = run(json!({}), "Always", &up, &cluster).unwrap();
        assert_eq!(
            (outcome.status.phase, outcome.status.ready),
            (LifecyclePhase::Suspended, false)
        );
        assert_eq!(
            ready(&outcome),
            ("False", "Suspended", "VirtualMachine is Paused")
        );
    }

    #[test]
    fn builds_the_vm_from_the_spec_volumes_and_attachments() {
        let up = upstream(vec![
            volume("root", true, true, "ReadWriteOnce"),
            volume("data", false, true, "ReadWriteOnce"),
        ]);
        let outcome = run(json!({}), "Always", &up, &FixtureCluster::new()).unwrap();
        let vm: Value = serde_json::from_str(&outcome.effects.apply[0]).unwrap();
        assert_eq!(
            (vm["apiVersion"].as_str(), vm["kind"].as_str()),
            (Some("kubevirt.io/v1"), Some("VirtualMachine"))
        );
        assert_eq!(
            (
                vm["metadata"]["name"].as_str(),
                vm["metadata"]["namespace"].as_str()
            ),
            (Some("vm1"), Some("tenant-a"))
        );
        assert_eq!(vm["metadata"]["labels"]["vm.novasphere.dev/wukong"], "vm1");
        assert_eq!(vm["spec"]["runStrategy"], "Always");
        assert!(
            vm["spec"].get("running").is_none(),
            "spec.running is deprecated"
        );
        let template = &vm["spec"]["template"];
        assert_eq!(
            template["metadata"]["labels"]["vm.novasphere.dev/wukong"],
            "vm1"
        );
        let spec = &template["spec"];
        assert_eq!(spec["domain"]["cpu"], json!({"cores": 4}));
        assert_eq!(spec["domain"]["memory"], json!({"guest": "8Gi"}));
        assert_eq!(
            spec["domain"]["resources"],
            json!({"requests": {"memory": "8Gi"}})
        );
        assert_eq!(
            spec["domain"]["devices"]["disks"],
            json!([
            {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
            {"name": "data", "disk": {"bus": "sata"}}])
        );
        assert_eq!(
            spec["volumes"],
            json!([
            {"name": "root", "dataVolume": {"name": "vm1-root"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "vm1-data"}}])
        );
        assert_eq!(
            spec["domain"]["devices"]["interfaces"],
            json!([
            {"name": "default", "masquerade": {}},
            {"name": "lan", "bridge": {}, "macAddress": "02:00:00:00:00:01"}])
        );
        assert_eq!(
            spec["networks"],
            json!([
            {"name": "default", "pod": {}},
            {"name": "lan", "multus": {"networkName": "tenant-a/vm1-lan"}}])
        );
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert!(
            spec.get("evictionStrategy").is_none(),
            "RWO disks cannot live-migrate"
        );
        assert_eq!(outcome.status.phase, LifecyclePhase::Starting);
    }

    #[test]
    fn rwx_disks_make_the_vm_evict_by_live_migration() {
        let up = upstream(vec![volume("root", true, true, "ReadWriteMany")]);
        let outcome = run(
            json!({"terminationGracePeriodSeconds": 120}),
            "Halted",
            &up,
            &FixtureCluster::new(),
        )
        .unwrap();
        let vm: Value = serde_json::from_str(&outcome.effects.apply[0]).unwrap();
        assert_eq!(
            vm["spec"]["template"]["spec"]["evictionStrategy"],
            "LiveMigrate"
        );
        assert_eq!(
            vm["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            120
        );
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
    }

    #[test]
    fn reports_a_running_ready_vm_from_vm_and_vmi() {
        let cluster = FixtureCluster::new()
            .with(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": "vm1", "namespace": "tenant-a"}, "status": {"printableStatus": "Running"}}))
            .with(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": "vm1", "namespace": "tenant-a"},
                "status": {"phase": "Running", "nodeName": "node-2", "interfaces": [{"ipAddress": "10.0.0.5"}],
                    "conditions": [{"type": "Ready", "status": "True"}]}}));
        let up = upstream(vec![volume("root", true, true, "ReadWriteOnce")]);
        let outcome = run(json!({}), "Always", &up, &cluster).unwrap();
        let status = &outcome.status;
        assert_eq!(
            (status.phase, status.ready, status.node_name.as_deref()),
            (LifecyclePhase::Running, true, Some("node-2"))
        );
        assert_eq!(status.ip_addresses, ["10.0.0.5"]);
        assert_eq!(
            ready(&outcome),
            ("True", "Running", "the VM is running and ready")
        );
        assert_eq!(outcome.effects.requeue_after_ms, None);
    }

    #[test]
    fn a_halted_vm_without_instance_is_stopped() {
        let cluster = FixtureCluster::new().with(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "tenant-a"}, "status": {"printableStatus": "Stopped"}}));
        let outcome = run(json!({}), "Halted", &upstream(vec![]), &cluster).unwrap();
        assert_eq!(outcome.status.phase, LifecyclePhase::Stopped);
        assert_eq!(ready(&outcome).1, "Stopped");
    }

    #[test]
    fn a_bad_memory_quantity_is_an_invalid_spec() {
        let mut ctx = context(json!({}), "Always");
        ctx.wukong.memory = "lots".into();
        let err = lifecycle_reconcile::<KubevirtLifecycle>(
            &ctx,
            &upstream(vec![]),
            &FixtureCluster::new(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidSpec(m) if m.contains("memory")),
            "{err:?}"
        );
    }

    #[test]
    fn finalize_deletes_its_vm() {
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "tenant-a", "labels": {"app.kubernetes.io/managed-by": "wukong", "vm.novasphere.dev/wukong": "vm1"}}});
        let ctx = context(json!({}), "Always");
        let effects = lifecycle_finalize::<KubevirtLifecycle>(
            &ctx,
            &upstream(vec![]),
            &FixtureCluster::new().with(vm),
        )
        .unwrap();
        assert_eq!(effects.delete.len(), 1);
        assert_eq!(effects.delete[0].kind, "VirtualMachine");
        let none = lifecycle_finalize::<KubevirtLifecycle>(
            &ctx,
            &upstream(vec![]),
            &FixtureCluster::new(),
        )
        .unwrap();
        assert!(none.delete.is_empty());
    }

    #[test]
    fn manifest_declares_what_the_actions_need() {
        let manifest = describe::<KubevirtLifecycle>(StepKind::Lifecycle);
        let kinds = |list: &[wukong_plugin_sdk::KindRef]| {
            list.iter().map(|k| k.kind.clone()).collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&manifest.capabilities.writes),
            ["VirtualMachine", "VirtualMachineInstance"]
        );
        assert!(kinds(&manifest.capabilities.reads).contains(&"Node".to_owned()));
        assert!(
            manifest
                .capabilities
                .actions
                .contains(&"virtualmachineinstances/pause".to_owned())
        );
        // A restart is a stop then a start (grace period, forced fallback): no
        // `virtualmachines/restart`, which the plugin would never call.
        assert_eq!(manifest.capabilities.actions.len(), 5);
    }
}
