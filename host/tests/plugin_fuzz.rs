//! Property tests of what the cluster hands the bundled plugins: VirtualMachines,
//! VirtualMachineInstances, DataVolumes, claims and migrations with any status (the phases
//! and conditions KubeVirt and CDI write, unknown ones, wrong types, missing parts), read by
//! the real compiled plugins in real wasmtime through the host. Whatever the status, a call
//! ends in a checked outcome or in the plugin's own reported failure (`step failed`, which
//! the operator turns into a `StepFailed` condition); never a panic, a trap, a malformed or
//! refused outcome, or a read outside the plugin's capabilities.
//!
//! `cargo test -p wukong --test plugin_fuzz` runs 64 cases per plugin; `PROPTEST_CASES=5000`
//! runs more.

mod support;

use std::sync::{Arc, OnceLock};

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wukong::plugin::{CallFailure, Phase, Plugin, Runtime, RuntimeLimits};
use wukong::runner::{DEFAULT_UID, FixtureCluster, Input};

const NS: &str = "tenant-a";

fn plugin(name: &'static str) -> &'static Plugin {
    static PLUGINS: OnceLock<std::sync::Mutex<Vec<(&'static str, &'static Plugin)>>> =
        OnceLock::new();
    let plugins = PLUGINS.get_or_init(Default::default);
    let mut plugins = plugins.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = plugins.iter().find(|(n, _)| *n == name) {
        return p;
    }
    let runtime = Runtime::new(RuntimeLimits::default(), None).expect("runtime");
    let loaded: &'static Plugin = Box::leak(Box::new(
        runtime
            .load(&support::plugin_wasm(name))
            .expect("bundled plugin loads"),
    ));
    plugins.push((name, loaded));
    loaded
}

/// Short strings, some of them what KubeVirt and CDI write.
fn word(known: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        3 => proptest::sample::select(known).prop_map(|s| json!(s)),
        1 => "[A-Za-z0-9 .%:-]{0,12}".prop_map(Value::String),
        1 => scalar(),
    ]
    .boxed()
}

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e3f64..1e3).prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
    ]
    .boxed()
}

/// An object whose fields are each present or not, valued by their strategies.
fn fields(parts: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let parts: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = parts
        .into_iter()
        .map(|(key, strategy)| proptest::option::of(strategy.prop_map(move |v| (key, v))).boxed())
        .collect();
    parts
        .prop_map(|present| {
            Value::Object(
                present
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<String, Value>>(),
            )
        })
        .boxed()
}

fn conditions(types: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => vec(
            fields(vec![
                ("type", word(types)),
                ("status", word(&["True", "False", "Unknown"])),
                ("reason", word(&["Running", "DisksNotLiveMigratable", "Completed", "ImportFailed"])),
                ("message", word(&["", "done"])),
            ]),
            0..4
        )
        .prop_map(Value::Array),
        1 => scalar(),
    ]
    .boxed()
}

fn vm_status() -> BoxedStrategy<Value> {
    fields(vec![
        (
            "printableStatus",
            word(&[
                "Running",
                "Stopped",
                "Starting",
                "Stopping",
                "Paused",
                "Terminating",
                "Migrating",
                "WaitingForVolumeBinding",
                "ErrorUnschedulable",
                "CrashLoopBackOff",
                "ErrImagePull",
                "DataVolumeError",
                "Provisioning",
            ]),
        ),
        ("ready", word(&["true"])),
        ("created", scalar()),
        (
            "conditions",
            conditions(&["Ready", "Paused", "Failure", "LiveMigratable"]),
        ),
        (
            "stateChangeRequests",
            prop_oneof![
                vec(fields(vec![("action", word(&["Start", "Stop"]))]), 0..3)
                    .prop_map(Value::Array),
                scalar()
            ]
            .boxed(),
        ),
    ])
}

fn vmi_status() -> BoxedStrategy<Value> {
    fields(vec![
        (
            "phase",
            word(&[
                "Pending",
                "Scheduling",
                "Scheduled",
                "Running",
                "Succeeded",
                "Failed",
                "Unknown",
            ]),
        ),
        ("nodeName", word(&["node-1", "node-2", ""])),
        (
            "interfaces",
            prop_oneof![
                vec(
                    fields(vec![
                        ("name", word(&["default", "lan"])),
                        ("ipAddress", word(&["10.244.1.7", "fd00::1", "not-an-ip"])),
                        (
                            "ipAddresses",
                            prop_oneof![
                                vec(word(&["10.0.0.1"]), 0..3).prop_map(Value::Array),
                                scalar()
                            ]
                            .boxed()
                        ),
                    ]),
                    0..3
                )
                .prop_map(Value::Array),
                scalar(),
            ]
            .boxed(),
        ),
        (
            "conditions",
            conditions(&[
                "Ready",
                "Paused",
                "LiveMigratable",
                "AgentConnected",
                "Synchronized",
            ]),
        ),
        (
            "migrationState",
            fields(vec![
                ("completed", word(&["true"])),
                ("failed", word(&["true"])),
                ("abortStatus", word(&["Succeeded", "Failed", "Aborting"])),
                ("targetNode", word(&["node-1", "node-3"])),
                ("sourceNode", word(&["node-2"])),
                ("mode", word(&["PreCopy", "PostCopy"])),
                ("migrationUid", word(&["m-uid"])),
                (
                    "startTimestamp",
                    word(&["2026-12-01T00:00:00Z", "yesterday"]),
                ),
                ("endTimestamp", word(&["2026-12-01T00:01:00Z"])),
            ]),
        ),
    ])
}

fn dv_status() -> BoxedStrategy<Value> {
    fields(vec![
        (
            "phase",
            word(&[
                "Pending",
                "PVCBound",
                "ImportScheduled",
                "ImportInProgress",
                "Succeeded",
                "Failed",
                "Unknown",
                "WaitForFirstConsumer",
                "PendingPopulation",
                "Paused",
            ]),
        ),
        (
            "progress",
            word(&["0.00%", "45.50%", "100.0%", "N/A", "-1%", "%"]),
        ),
        ("restartCount", word(&["0", "3"])),
        ("claimName", word(&["vm1-root"])),
        ("conditions", conditions(&["Bound", "Ready", "Running"])),
    ])
}

fn pvc_status() -> BoxedStrategy<Value> {
    fields(vec![
        ("phase", word(&["Pending", "Bound", "Lost"])),
        (
            "capacity",
            fields(vec![(
                "storage",
                word(&["20Gi", "1e3", "500m", "2Ei", "x"]),
            )]),
        ),
        (
            "accessModes",
            prop_oneof![
                vec(word(&["ReadWriteOnce", "ReadWriteMany"]), 0..3).prop_map(Value::Array),
                scalar()
            ]
            .boxed(),
        ),
    ])
}

fn vmim_status() -> BoxedStrategy<Value> {
    fields(vec![
        (
            "phase",
            word(&[
                "Pending",
                "Scheduling",
                "Scheduled",
                "PreparingTarget",
                "TargetReady",
                "Running",
                "Succeeded",
                "Failed",
            ]),
        ),
        ("conditions", conditions(&["Ready", "Failed"])),
    ])
}

/// The Wukong's own object, owned by it.
fn owned(api_version: &str, kind: &str, name: &str, status: Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": format!("{name}-{kind}-uid"),
                     "labels": {"vm.novasphere.dev/wukong": "vm1"},
                     "annotations": {"vm.novasphere.dev/request-id": "m1"},
                     "ownerReferences": [{"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
                                          "name": "vm1", "uid": DEFAULT_UID, "controller": true}]},
        "status": status,
    })
}

/// What the cluster holds for `vm1` with disk `root`: each object there or not.
fn cluster() -> impl Strategy<Value = Vec<Value>> {
    (
        proptest::option::weighted(0.8, vm_status()),
        proptest::option::weighted(0.7, vmi_status()),
        proptest::option::of(dv_status()),
        proptest::option::of(pvc_status()),
        proptest::option::of(vmim_status()),
    )
        .prop_map(|(vm, vmi, dv, pvc, vmim)| {
            let mut objects = Vec::new();
            if let Some(s) = vm {
                objects.push(owned("kubevirt.io/v1", "VirtualMachine", "vm1", s));
            }
            if let Some(s) = vmi {
                let mut vmi = owned("kubevirt.io/v1", "VirtualMachineInstance", "vm1", s);
                vmi["metadata"]["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachine", "name": "vm1", "uid": "vm1-VirtualMachine-uid", "controller": true}]);
                objects.push(vmi);
            }
            if let Some(s) = dv {
                objects.push(owned("cdi.kubevirt.io/v1beta1", "DataVolume", "vm1-root", s));
            }
            if let Some(s) = pvc {
                objects.push(owned("v1", "PersistentVolumeClaim", "vm1-root", s));
            }
            if let Some(s) = vmim {
                let mut m = owned("kubevirt.io/v1", "VirtualMachineInstanceMigration", "vm1-m1", s);
                m["spec"] = json!({"vmiName": "vm1"});
                objects.push(m);
            }
            objects
        })
}

/// A Wukong with one disk (an image, a blank or a claim), maybe a lifecycle action and a
/// migration request.
fn wukong() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(vec![
            json!({"name": "root", "size": "20Gi", "image": "docker://quay.io/containerdisks/fedora:40"}),
            json!({"name": "root", "size": "20Gi"}),
            json!({"name": "root", "size": "20Gi", "existingClaim": "vm1-root"}),
        ]),
        proptest::option::of(proptest::sample::select(vec![
            "start", "stop", "restart", "suspend", "resume", "softReboot",
        ])),
        any::<bool>(),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(disk, action, force, migration)| {
            let mut spec = json!({"cpu": 2, "memory": "4Gi", "disks": [disk]});
            if let Some(action) = action {
                spec["lifecycleAction"] = json!({"action": action, "force": force, "requestId": "a1", "gracePeriodSeconds": 1});
            }
            if let Some(abort) = migration {
                spec["migration"] = json!({"targetNode": "node-3", "requestId": "m1", "abort": abort});
            }
            json!({"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
                   "metadata": {"name": "vm1", "namespace": NS}, "spec": spec})
        })
}

/// What the storage step reported for the disk, as the lifecycle and migration steps get it.
fn upstream() -> impl Strategy<Value = Value> {
    (
        proptest::bool::weighted(0.8),
        proptest::sample::select(vec!["Bound", "Bound", "Bound", "Pending", "ImportInProgress", "Failed", ""]),
        proptest::sample::select(vec!["ReadWriteOnce", "ReadWriteMany"]),
    )
        .prop_map(|(bound, phase, mode)| {
            json!({"volumes": [{"name": "root", "claim_name": "vm1-root", "data_volume": true, "phase": phase,
                                "bound": bound, "requested": "20Gi", "access_modes": [mode], "retain": false,
                                "bus": "virtio", "message": ""}]})
        })
}

/// Calls `name` with the Wukong, the upstream and the cluster; fails the property unless
/// the call ended in a checked outcome or the plugin's own reported failure.
fn call_survives(
    name: &'static str,
    wukong: Value,
    upstream: Value,
    objects: Vec<Value>,
    finalize: bool,
) -> Result<(), TestCaseError> {
    let plugin = plugin(name);
    let phase = if finalize {
        Phase::Finalize
    } else {
        Phase::Reconcile
    };
    let prepared = Input::new(wukong)
        .phase(phase)
        .upstream(upstream)
        .prepare(plugin)
        .map_err(|e| TestCaseError::fail(format!("input: {e}")))?;
    let reader = Arc::new(FixtureCluster::new(objects.clone()).expect("fixture"));
    match plugin.call(prepared.request(), reader) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.failure, CallFailure::Step(_)) => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!(
            "{name} ({phase:?}): {e}\ncluster: {}",
            serde_json::to_string(&objects).unwrap_or_default()
        ))),
    }
}

/// 64 unless `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_lifecycle_plugin_survives_any_vm_and_vmi_status(
        wukong in wukong(), upstream in upstream(), objects in cluster(), finalize in any::<bool>()
    ) {
        call_survives("kubevirt-lifecycle", wukong, upstream, objects, finalize)?;
    }

    #[test]
    fn the_migration_plugin_survives_any_vmi_and_migration_status(
        wukong in wukong(), upstream in upstream(), objects in cluster(), finalize in any::<bool>()
    ) {
        call_survives("kubevirt-migration", wukong, upstream, objects, finalize)?;
    }

    #[test]
    fn the_storage_plugins_survive_any_data_volume_and_claim_status(
        wukong in wukong(), objects in cluster(), finalize in any::<bool>(),
        backend in proptest::sample::select(vec!["cdi-storage", "longhorn-storage", "ceph-rbd-storage"]),
    ) {
        call_survives(backend, wukong, json!({}), objects, finalize)?;
    }
}
