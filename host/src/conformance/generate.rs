//! A deterministic set of Wukongs the CRD schema accepts but that stretch a plugin:
//! empty lists, sizes and names at the schema's limits, unknown image schemes, missing
//! optional fields, odd status records. Built from the CRD types, so every one of them
//! is a Wukong users could apply.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::{Value, json};

use super::harness::{NAME, NAMESPACE};
use crate::api::{
    DiskBus, DiskSpec, InterfaceBinding, LifecycleActionKind, LifecycleActionSpec, LifecycleState,
    MigrationPolicySpec, MigrationSpec, MigrationStatus, NetworkConfigSpec, NetworkSpec,
    NetworkType, RunStrategy, TriggerCondition, TriggerType, VolumeStatus, Wukong, WukongSpec,
    WukongStatus,
};
use crate::plugin::types::{LifecyclePhase, LifecycleStatus, NetworkAttachment, Upstream, Volume};

/// One generated Wukong and what is odd about it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub label: String,
    pub wukong: Value,
}

fn disk(name: &str, size: &str) -> DiskSpec {
    DiskSpec {
        name: name.into(),
        size: size.into(),
        ..DiskSpec::default()
    }
}

fn image(name: &str, size: &str, image: &str) -> DiskSpec {
    DiskSpec {
        image: Some(image.into()),
        ..disk(name, size)
    }
}

fn multus(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        config: Some(NetworkConfigSpec::default()),
        ..NetworkSpec::default()
    }
}

fn pod(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        network_type: Some(NetworkType::Pod),
        ..NetworkSpec::default()
    }
}

fn nad(name: &str, nad: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        nad_name: Some(nad.into()),
        ..NetworkSpec::default()
    }
}

fn base() -> Wukong {
    let mut wukong = Wukong::new(
        NAME,
        WukongSpec {
            cpu: 2,
            memory: "4Gi".into(),
            disks: vec![
                image("root", "20Gi", "docker://quay.io/containerdisks/fedora:40"),
                disk("data", "10Gi"),
            ],
            networks: vec![pod("default"), multus("lan")],
            ..WukongSpec::default()
        },
    );
    wukong.metadata.namespace = Some(NAMESPACE.into());
    wukong
}

fn record(phase: &str) -> MigrationStatus {
    MigrationStatus {
        phase: phase.into(),
        request_id: String::new(),
        automatic: false,
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

type Mutation = Box<dyn Fn(&mut Wukong)>;

fn spec(f: impl Fn(&mut WukongSpec) + 'static) -> Mutation {
    Box::new(move |w: &mut Wukong| f(&mut w.spec))
}

fn disks(list: Vec<DiskSpec>) -> Mutation {
    spec(move |s| s.disks = list.clone())
}

fn networks(list: Vec<NetworkSpec>) -> Mutation {
    spec(move |s| s.networks = list.clone())
}

fn status(f: impl Fn(&mut WukongStatus) + 'static) -> Mutation {
    Box::new(move |w: &mut Wukong| f(w.status.get_or_insert_with(WukongStatus::default)))
}

fn action(
    kind: LifecycleActionKind,
    force: bool,
    grace: Option<u32>,
    id: Option<&str>,
) -> Mutation {
    let id = id.map(str::to_owned);
    spec(move |s| {
        s.lifecycle_action = Some(LifecycleActionSpec {
            action: kind,
            force,
            grace_period_seconds: grace,
            request_id: id.clone(),
        });
    })
}

fn migration(m: MigrationSpec) -> Mutation {
    spec(move |s| s.migration = Some(m.clone()))
}

fn policy(p: MigrationPolicySpec) -> Mutation {
    spec(move |s| s.migration_policy = Some(p.clone()))
}

fn trigger(kind: TriggerType, threshold: Option<&str>, grace: Option<u32>) -> TriggerCondition {
    TriggerCondition {
        trigger_type: kind,
        threshold: threshold.map(str::to_owned),
        grace_period_seconds: grace,
    }
}

/// `len` characters matching the name pattern (a DNS-1123 label when `len` ≤ 63).
fn long_name(len: usize) -> String {
    let middle = "-x".repeat(len.saturating_sub(2) / 2);
    let name = format!("a{middle}");
    format!("{name}{}", "z".repeat(len.saturating_sub(name.len())))
}

#[allow(
    clippy::too_many_lines,
    reason = "one line per generated case reads best as a list"
)]
fn mutations() -> Vec<(&'static str, Mutation)> {
    use LifecycleActionKind as A;
    let many_disks = (0..64).map(|i| disk(&format!("d{i}"), "1Gi")).collect();
    let many_networks = (0..32).map(|i| multus(&format!("n{i}"))).collect();
    vec![
        ("the base Wukong", spec(|_| {})),
        (
            "no disks and no networks",
            spec(|s| {
                s.disks.clear();
                s.networks.clear();
            }),
        ),
        (
            "1 CPU and 1 byte of memory",
            spec(|s| {
                s.cpu = 1;
                s.memory = "1".into();
            }),
        ),
        (
            "1024 CPUs and 1Ei of memory",
            spec(|s| {
                s.cpu = 1024;
                s.memory = "1Ei".into();
            }),
        ),
        ("memory 0", spec(|s| s.memory = "0".into())),
        (
            "memory beyond 64 bits",
            spec(|s| s.memory = "99999999999999999999999999Gi".into()),
        ),
        ("a one-letter disk", disks(vec![disk("a", "1Gi")])),
        (
            "a disk name of 63 characters",
            disks(vec![disk(&long_name(63), "1Gi")]),
        ),
        ("a disk of size 0", disks(vec![disk("data", "0")])),
        ("a disk of size 1", disks(vec![disk("data", "1")])),
        (
            "a disk beyond 64 bits",
            disks(vec![disk("data", "99999999999999999999999Ei")]),
        ),
        ("a fractional disk size", disks(vec![disk("data", "0.5")])),
        (
            "a disk size with 30 decimals",
            disks(vec![disk("data", "1.000000000000000000000000000001Gi")]),
        ),
        ("an empty image", disks(vec![image("root", "1Gi", "")])),
        (
            "an ftp image",
            disks(vec![image("root", "1Gi", "ftp://example.com/disk.img")]),
        ),
        (
            "an s3 image",
            disks(vec![image("root", "1Gi", "s3://bucket/disk.img")]),
        ),
        (
            "docker:// without an image",
            disks(vec![image("root", "1Gi", "docker://")]),
        ),
        (
            "http:// without a host",
            disks(vec![image("root", "1Gi", "http://")]),
        ),
        (
            "an image URL of 4096 characters",
            disks(vec![image(
                "root",
                "1Gi",
                &format!("https://example.com/{}", "x".repeat(4077)),
            )]),
        ),
        (
            "an image and an existing claim",
            disks(vec![DiskSpec {
                existing_claim: Some("claim".into()),
                ..image("root", "1Gi", "docker://x/y:1")
            }]),
        ),
        (
            "an existing claim with an empty name",
            disks(vec![DiskSpec {
                existing_claim: Some(String::new()),
                ..disk("old", "1Gi")
            }]),
        ),
        (
            "an existing claim name of 253 characters",
            disks(vec![DiskSpec {
                existing_claim: Some(long_name(253)),
                ..disk("old", "1Gi")
            }]),
        ),
        (
            "an empty storage class and an unknown backend",
            disks(vec![DiskSpec {
                storage_class: Some(String::new()),
                backend: Some("nowhere".into()),
                ..disk("data", "1Gi")
            }]),
        ),
        (
            "the largest boot order and every bus",
            disks(vec![
                DiskSpec {
                    boot_order: Some(65_535),
                    bus: Some(DiskBus::Sata),
                    ..disk("a", "1Gi")
                },
                DiskSpec {
                    boot_order: Some(1),
                    bus: Some(DiskBus::Scsi),
                    ..disk("b", "1Gi")
                },
            ]),
        ),
        (
            "two disks of the same name",
            disks(vec![disk("data", "1Gi"), disk("data", "2Gi")]),
        ),
        ("64 disks", disks(many_disks)),
        (
            "every disk retained",
            spec(|s| s.disks.iter_mut().for_each(|d| d.retain = true)),
        ),
        ("two pod networks", networks(vec![pod("a"), pod("b")])),
        (
            "a multus network with neither NAD nor config",
            networks(vec![NetworkSpec {
                name: "lan".into(),
                ..NetworkSpec::default()
            }]),
        ),
        (
            "a NAD name with two slashes",
            networks(vec![nad("lan", "a/b/c")]),
        ),
        (
            "a NAD name that is a slash",
            networks(vec![nad("lan", "/")]),
        ),
        ("an empty NAD name", networks(vec![nad("lan", "")])),
        (
            "a NAD in another namespace",
            networks(vec![nad("lan", "elsewhere/net")]),
        ),
        (
            "a NAD name and a config",
            networks(vec![NetworkSpec {
                nad_name: Some("net".into()),
                ..multus("lan")
            }]),
        ),
        (
            "a macvlan config without a bridge",
            networks(vec![NetworkSpec {
                config: Some(NetworkConfigSpec {
                    cni_type: Some("macvlan".into()),
                    ..NetworkConfigSpec::default()
                }),
                ..multus("lan")
            }]),
        ),
        (
            "the smallest VLAN and MTU",
            networks(vec![NetworkSpec {
                config: Some(NetworkConfigSpec {
                    vlan: Some(1),
                    mtu: Some(576),
                    bridge: Some(String::new()),
                    ..NetworkConfigSpec::default()
                }),
                ..multus("lan")
            }]),
        ),
        (
            "the largest VLAN and MTU",
            networks(vec![NetworkSpec {
                config: Some(NetworkConfigSpec {
                    vlan: Some(4094),
                    mtu: Some(65535),
                    ..NetworkConfigSpec::default()
                }),
                ..multus("lan")
            }]),
        ),
        (
            "a nested IPAM",
            networks(vec![NetworkSpec {
                config: Some(NetworkConfigSpec {
                    ipam: Some(
                        json!({"type": "static", "addresses": [{"address": "10.0.0.2/24"}], "deep": {"a": {"b": {"c": [1, null, "x"]}}}}),
                    ),
                    ..NetworkConfigSpec::default()
                }),
                ..multus("lan")
            }]),
        ),
        (
            "a pod network bound with SR-IOV and a MAC",
            networks(vec![NetworkSpec {
                binding: Some(InterfaceBinding::Sriov),
                mac_address: Some("FF:FF:FF:FF:FF:FF".into()),
                ..pod("default")
            }]),
        ),
        (
            "a network name of 63 characters",
            networks(vec![multus(&long_name(63))]),
        ),
        ("32 networks", networks(many_networks)),
        (
            "runStrategy Halted",
            spec(|s| s.run_strategy = Some(RunStrategy::Halted)),
        ),
        (
            "runStrategy Manual",
            spec(|s| s.run_strategy = Some(RunStrategy::Manual)),
        ),
        (
            "runStrategy RerunOnFailure",
            spec(|s| s.run_strategy = Some(RunStrategy::RerunOnFailure)),
        ),
        (
            "runStrategy Once",
            spec(|s| s.run_strategy = Some(RunStrategy::Once)),
        ),
        ("a start", action(A::Start, false, None, None)),
        (
            "a forced stop with no grace",
            action(A::Stop, true, Some(0), None),
        ),
        (
            "a restart with a day's grace",
            action(A::Restart, false, Some(86_400), Some(&"r".repeat(1024))),
        ),
        (
            "a suspend with an empty request id",
            action(A::Suspend, false, None, Some("")),
        ),
        ("a resume", action(A::Resume, true, None, None)),
        ("a soft reboot", action(A::SoftReboot, false, None, None)),
        (
            "an empty migration request",
            migration(MigrationSpec::default()),
        ),
        (
            "a migration to an empty node name",
            migration(MigrationSpec {
                target_node: Some(String::new()),
                ..MigrationSpec::default()
            }),
        ),
        (
            "a migration to a node name of 253 characters",
            migration(MigrationSpec {
                target_node: Some(long_name(253)),
                ..MigrationSpec::default()
            }),
        ),
        (
            "an abort with nothing running",
            migration(MigrationSpec {
                abort: true,
                request_id: Some(String::new()),
                ..MigrationSpec::default()
            }),
        ),
        (
            "the largest completion timeout",
            migration(MigrationSpec {
                completion_timeout_per_gi_b: Some(86_400),
                allow_post_copy: true,
                allow_auto_converge: true,
                ..MigrationSpec::default()
            }),
        ),
        (
            "a policy with every trigger at its limits",
            policy(MigrationPolicySpec {
                enabled: true,
                trigger_conditions: vec![
                    trigger(TriggerType::NodeMaintenance, None, None),
                    trigger(TriggerType::NodeFailure, None, Some(0)),
                    trigger(TriggerType::NodeFailure, None, Some(86_400)),
                    trigger(TriggerType::ResourcePressure, Some("0%"), None),
                    trigger(TriggerType::ResourcePressure, Some("100%"), None),
                    trigger(TriggerType::ResourcePressure, None, None),
                ],
                target_node_selector: Some(LabelSelector {
                    match_expressions: Some(vec![
                        LabelSelectorRequirement {
                            key: "zone".into(),
                            operator: "In".into(),
                            values: Some(vec![]),
                        },
                        LabelSelectorRequirement {
                            key: "x".into(),
                            operator: "Bogus".into(),
                            values: None,
                        },
                    ]),
                    match_labels: None,
                }),
            }),
        ),
        (
            "an enabled policy without triggers",
            policy(MigrationPolicySpec {
                enabled: true,
                ..MigrationPolicySpec::default()
            }),
        ),
        (
            "a disabled policy with triggers",
            policy(MigrationPolicySpec {
                enabled: false,
                trigger_conditions: vec![trigger(TriggerType::NodeFailure, None, None)],
                target_node_selector: None,
            }),
        ),
        (
            "a name of 253 characters with dots",
            Box::new(|w: &mut Wukong| {
                w.metadata.name = Some(format!("{}.{}", long_name(126), long_name(126)))
            }),
        ),
        (
            "a namespace of 63 characters",
            Box::new(|w: &mut Wukong| w.metadata.namespace = Some(long_name(63))),
        ),
        (
            "the largest generation",
            Box::new(|w: &mut Wukong| w.metadata.generation = Some(i64::MAX)),
        ),
        (
            "a migration record without a migration",
            status(|s| s.migration_status = Some(record("Running"))),
        ),
        (
            "a migration record naming an absent migration",
            status(|s| {
                s.migration_status = Some(MigrationStatus {
                    migration_name: Some("vm1-gone".into()),
                    request_id: "migrate/any".into(),
                    ..record("Scheduling")
                })
            }),
        ),
        (
            "a migration record of an unknown phase and bad times",
            status(|s| {
                s.migration_status = Some(MigrationStatus {
                    started_at: Some("yesterday".into()),
                    finished_at: Some("soon".into()),
                    ..record("Weird")
                })
            }),
        ),
        (
            "volumes of other disks in status",
            status(|s| {
                s.volumes = vec![VolumeStatus {
                    name: "ghost".into(),
                    claim_name: String::new(),
                    data_volume: true,
                    phase: "Lost".into(),
                    bound: false,
                    progress: Some("N/A".into()),
                    requested: "huge".into(),
                    capacity: None,
                    access_modes: vec![],
                    volume_mode: None,
                    storage_class: None,
                    retain: true,
                    message: String::new(),
                }]
            }),
        ),
        (
            "a lifecycle state of an unknown phase",
            status(|s| {
                s.lifecycle_state = Some(LifecycleState {
                    state: "Nonsense".into(),
                    printable_status: Some(String::new()),
                    vmi_phase: Some("Weird".into()),
                    ready: true,
                    live_migratable: true,
                    last_action: Some("explode".into()),
                    last_action_time: Some("never".into()),
                    current_action: None,
                    history: vec![],
                    message: String::new(),
                })
            }),
        ),
    ]
}

/// Every generated Wukong, in a fixed order.
pub fn wukongs() -> Vec<Generated> {
    mutations()
        .into_iter()
        .map(|(label, mutate)| {
            let mut wukong = base();
            mutate(&mut wukong);
            Generated {
                label: label.to_owned(),
                // Plain CRD types always serialize.
                wukong: serde_json::to_value(&wukong).unwrap_or(Value::Null),
            }
        })
        .collect()
}

/// What the earlier steps would report for `wukong`: each disk bound, each network
/// attached, the VM running.
pub fn upstream_for(wukong: &Value) -> Value {
    let name = wukong["metadata"]["name"].as_str().unwrap_or(NAME);
    let namespace = wukong["metadata"]["namespace"]
        .as_str()
        .unwrap_or(NAMESPACE);
    let text = |v: &Value, key: &str| v[key].as_str().map(str::to_owned);
    let volumes = wukong["spec"]["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let disk = text(d, "name").unwrap_or_default();
            Volume {
                claim_name: text(d, "existingClaim").unwrap_or_else(|| format!("{name}-{disk}")),
                data_volume: d["image"].is_string(),
                phase: "Bound".into(),
                bound: true,
                progress: None,
                requested: text(d, "size").unwrap_or_default(),
                capacity: text(d, "size"),
                access_modes: vec!["ReadWriteMany".into()],
                volume_mode: Some("Block".into()),
                storage_class: text(d, "storageClass"),
                retain: d["retain"].as_bool().unwrap_or(false),
                boot_order: d["bootOrder"].as_u64().and_then(|o| u32::try_from(o).ok()),
                bus: text(d, "bus").unwrap_or_else(|| "virtio".into()),
                message: String::new(),
                name: disk,
            }
        })
        .collect();
    let networks = wukong["spec"]["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let network = text(n, "name").unwrap_or_default();
            let is_pod = n["type"] == "pod";
            NetworkAttachment {
                network_name: match (is_pod, text(n, "nadName")) {
                    (true, _) => "pod".into(),
                    (false, Some(nad)) => nad,
                    (false, None) => format!("{namespace}/{name}-{network}"),
                },
                binding: text(n, "binding")
                    .unwrap_or_else(|| if is_pod { "masquerade" } else { "bridge" }.into()),
                mac_address: text(n, "macAddress"),
                created: n["config"].is_object(),
                ready: true,
                message: String::new(),
                name: network,
            }
        })
        .collect();
    let lifecycle = LifecycleStatus {
        phase: LifecyclePhase::Running,
        vm_name: name.into(),
        printable_status: Some("Running".into()),
        vmi_phase: Some("Running".into()),
        node_name: Some("node-0".into()),
        ready: true,
        live_migratable: true,
        ip_addresses: vec!["10.0.0.2".into()],
        current_action: None,
        history: Vec::new(),
        message: String::new(),
    };
    serde_json::to_value(Upstream {
        networks,
        volumes,
        lifecycle: Some(lifecycle),
    })
    .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_wukong_passes_the_crd_schema_and_labels_are_unique() {
        let crd = crate::api::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("the CRD has a schema");
        let schema = serde_json::to_value(schema).expect("schema as JSON");
        let validator = jsonschema::validator_for(&schema).expect("the CRD schema compiles");
        let mut refused = wukongs().swap_remove(0).wukong;
        refused["spec"]["cpu"] = json!(0);
        refused["spec"]["disks"][0]["name"] = json!("Not_A_Label");
        assert_eq!(
            validator.iter_errors(&refused).count(),
            2,
            "the validator applies the CRD schema"
        );
        let cases = wukongs();
        assert!(cases.len() > 50, "{} cases", cases.len());
        for case in &cases {
            let errors: Vec<String> = validator
                .iter_errors(&case.wukong)
                .map(|e| format!("{}: {e}", e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", case.label);
            serde_json::from_value::<Wukong>(case.wukong.clone()).expect("a Wukong");
        }
        let mut labels: Vec<&str> = cases.iter().map(|c| c.label.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), cases.len(), "labels are unique");
    }

    #[test]
    fn long_names_have_the_asked_length_and_match_the_name_pattern() {
        let pattern = regex_lite(crate::api::NAME_PATTERN);
        for len in [1, 2, 62, 63] {
            let name = long_name(len);
            assert_eq!(name.len(), len, "{name}");
            assert!(pattern(&name), "{name}");
        }
    }

    /// The name pattern through the JSON Schema validator, which knows regexes.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let validator = jsonschema::validator_for(&json!({"type": "string", "pattern": pattern}))
            .expect("pattern compiles");
        move |s| validator.is_valid(&json!(s))
    }
}
