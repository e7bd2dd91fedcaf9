//! Property tests of what reaches the host from outside: plugin outcomes (whatever a plugin
//! returns), objects read from the cluster (any JSON where a VM, a claim or an owner is
//! expected), Wukong specs and previous statuses. The host never panics on them; a bad
//! outcome is a `CallFailure` (a reported step failure), never a crash of the reconcile.
//!
//! `cargo test -p wukong --lib fuzz` runs 256 cases per property; `PROPTEST_CASES=100000`
//! runs more.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::controller::{PipelineResult, StepFailure, status_for_fuzzing};
use crate::plugin::ownership::{self, Claimant};
use crate::plugin::types::{
    Action, Capabilities, Condition, Effects, Event, KindRef, ObjectRef, StepKind, SubresourceCall,
};
use crate::plugin::{ClusterReader, StepStatus, guard_for_fuzzing};

/// Short strings, with the characters that break names and paths.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        "[a-zA-Z0-9./?%#: -]{0,16}",
        Just("vm1".to_owned()),
        Just(String::new()),
        ".{0,40}",
    ]
}

/// Any JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(
                prop_oneof![
                    "[a-zA-Z]{1,10}".boxed(),
                    Just("metadata".to_owned()).boxed(),
                    Just("ownerReferences".to_owned()).boxed(),
                    Just("annotations".to_owned()).boxed(),
                    Just("spec".to_owned()).boxed(),
                    Just("status".to_owned()).boxed(),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Something shaped like a Kubernetes object, with odd parts.
fn object_json() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("v1"),
            Just("kubevirt.io/v1"),
            Just("storage.k8s.io/v1"),
            Just("x/y/z")
        ],
        prop_oneof![
            Just("PersistentVolumeClaim"),
            Just("VirtualMachine"),
            Just("VirtualMachineInstanceMigration"),
            Just("StorageClass"),
            Just("Secret")
        ],
        text(),
        prop_oneof![
            Just(None),
            Just(Some("ns".to_owned())),
            text().prop_map(Some)
        ],
        any_json(),
        any_json(),
    )
        .prop_map(|(api_version, kind, name, namespace, metadata, rest)| {
            let mut metadata = match metadata {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            metadata.insert("name".into(), json!(name));
            if let Some(namespace) = namespace {
                metadata.insert("namespace".into(), json!(namespace));
            }
            json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": rest})
        })
}

fn object_ref() -> impl Strategy<Value = ObjectRef> {
    (text(), text(), prop::option::of(text()), text()).prop_map(
        |(api_version, kind, namespace, name)| ObjectRef {
            api_version,
            kind,
            namespace,
            name,
        },
    )
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (
            prop_oneof![
                Just("virtualmachines".to_owned()),
                Just("virtualmachineinstances".to_owned()),
                text()
            ],
            text(),
            prop_oneof![Just("stop".to_owned()), text()],
            prop::option::of(prop_oneof![text(), any_json().prop_map(|v| v.to_string())]),
        )
            .prop_map(|(plural, name, subresource, body)| Action::Subresource(
                SubresourceCall {
                    plural,
                    name,
                    subresource,
                    body,
                }
            )),
        (object_ref(), prop::option::of(any::<u32>()))
            .prop_map(|(target, grace)| Action::DeleteObject((target, grace))),
    ]
}

fn effects() -> impl Strategy<Value = Effects> {
    (
        vec(
            prop_oneof![
                object_json().prop_map(|v| v.to_string()),
                any_json().prop_map(|v| v.to_string()),
                text()
            ],
            0..4,
        ),
        vec(object_ref(), 0..3),
        vec(action(), 0..3),
        vec(
            (text(), text(), text(), text()).prop_map(
                |(condition_type, status, reason, message)| Condition {
                    condition_type,
                    status,
                    reason,
                    message,
                },
            ),
            0..20,
        ),
        vec(
            (any::<bool>(), text(), text()).prop_map(|(warning, reason, message)| Event {
                warning,
                reason,
                message,
            }),
            0..40,
        ),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(apply, delete, actions, conditions, events, requeue_after_ms)| Effects {
                apply,
                delete,
                actions,
                conditions,
                events,
                requeue_after_ms,
            },
        )
}

/// A cluster answering every read with the same (arbitrary) object.
struct AnyCluster(Option<String>);

impl ClusterReader for AnyCluster {
    fn get(&self, _: &ObjectRef, _: &str) -> Result<Option<String>, String> {
        Ok(self.0.clone())
    }

    fn list(&self, _: &KindRef, _: &str, _: Option<&str>) -> Result<Vec<String>, String> {
        Ok(self.0.iter().cloned().collect())
    }
}

fn capabilities() -> Capabilities {
    let kind = |api_version: &str, kind: &str| KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
    };
    Capabilities {
        reads: vec![kind("v1", "PersistentVolumeClaim")],
        writes: vec![
            kind("v1", "PersistentVolumeClaim"),
            kind("kubevirt.io/v1", "VirtualMachine"),
            kind("kubevirt.io/v1", "VirtualMachineInstanceMigration"),
            kind("storage.k8s.io/v1", "StorageClass"),
        ],
        actions: vec!["virtualmachines/stop".into()],
    }
}

fn contract_wukong() -> crate::plugin::types::Wukong {
    let wukong: crate::api::Wukong = serde_json::from_value(json!({
        "apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
        "metadata": {"name": "vm1", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"cpu": 1, "memory": "1Gi"}
    }))
    .unwrap_or_else(|e| panic!("fixture: {e}"));
    crate::api::to_contract(&wukong)
}

proptest! {
    #[test]
    fn any_outcome_is_checked_without_panicking(
        effects in effects(),
        live in prop::option::of(prop_oneof![
            object_json().prop_map(|v| v.to_string()),
            any_json().prop_map(|v| v.to_string()),
            text(),
        ]),
        step in prop_oneof![
            Just(StepKind::Network),
            Just(StepKind::Storage),
            Just(StepKind::Lifecycle),
            Just(StepKind::Migration),
        ],
    ) {
        let wukong = contract_wukong();
        let _ = guard_for_fuzzing(
            step,
            &capabilities(),
            &wukong,
            "storage/fuzz",
            &AnyCluster(live),
            effects,
            StepStatus::Finalized,
        );
    }

    #[test]
    fn any_live_object_is_judged_without_panicking(
        live in prop_oneof![object_json(), any_json()],
        parent in prop_oneof![object_json(), any_json()],
        deleting in any::<bool>(),
    ) {
        let claimant = Claimant { name: "vm1", uid: "u1", backend: "storage/fuzz" };
        if let ownership::Verdict::ThroughController(owner) =
            ownership::judge(&live, &claimant, deleting)
        {
            let _ = ownership::judge_through(&owner, Some(&parent), &claimant);
            let _ = ownership::judge_through(&owner, None, &claimant);
        }
        let mut stamped = live.clone();
        ownership::stamp(&mut stamped, &claimant, deleting, Some(&parent));
        let _ = ownership::has_owner_reference(&live, "u1");
        let _ = ownership::carried_mark(&live);
        let _ = ownership::is_retained(&live);
    }

    #[test]
    fn any_spec_the_types_accept_becomes_a_contract_record(
        spec in any_json(),
        status in any_json(),
    ) {
        let object = json!({
            "apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
            "metadata": {"name": "vm1", "namespace": "ns", "uid": "u1"},
            "spec": spec, "status": status,
        });
        if let Ok(wukong) = serde_json::from_value::<crate::api::Wukong>(object) {
            let _ = crate::api::to_contract(&wukong);
            let failed = PipelineResult {
                failure: Some(StepFailure {
                    step: StepKind::Storage,
                    plugin: "fuzz@0.1.0".into(),
                    reason: "trap".into(),
                    message: "x".into(),
                    transient: false,
                }),
                ..PipelineResult::default()
            };
            for result in [PipelineResult::default(), failed] {
                let _ = status_for_fuzzing(
                    wukong.status.as_ref(),
                    &result,
                    wukong.metadata.generation,
                    "2026-12-01T00:00:00Z",
                );
            }
        }
    }
}
