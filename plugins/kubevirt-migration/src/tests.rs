//! Native unit tests: every branch of the manual and automatic paths against a fixture
//! cluster.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]

use serde_json::{Value, json};
use wukong_plugin_sdk::native::{describe, migration_finalize, migration_reconcile};
use wukong_plugin_sdk::{
    Action, Context, FixtureCluster, MigrationOutcome, MigrationRequest, StepKind, Upstream, Wukong,
};

use super::*;

const NOW: &str = "2026-01-01T12:00:00Z";

fn request(target: &str) -> MigrationRequest {
    MigrationRequest {
        target_node: Some(target.into()),
        allow_auto_converge: true,
        allow_post_copy: true,
        completion_timeout_per_gi_b: Some(800),
        abort: false,
        request_id: format!("migrate/{target}"),
    }
}

fn context(migration: Option<MigrationRequest>, spec: Value, status: Value) -> Context {
    let json =
        json!({"metadata": {"name": "vm1", "namespace": "ns"}, "spec": spec, "status": status});
    Context {
        wukong: Wukong {
            name: "vm1".into(),
            namespace: "ns".into(),
            uid: "uid-1".into(),
            generation: 1,
            deleting: false,
            cpu: 2,
            memory: "4Gi".into(),
            run_strategy: "Always".into(),
            disks: vec![],
            networks: vec![],
            lifecycle_action: None,
            migration,
            labels: vec![("vm.novasphere.dev/wukong".into(), "vm1".into())],
            json: json.to_string(),
        },
        config: "{}".into(),
        backend: "default".into(),
        now: NOW.into(),
    }
}

fn vmi(node: &str, migratable: bool) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "vm1", "namespace": "ns", "uid": "vmi-uid"},
        "status": {"phase": "Running", "nodeName": node, "conditions": [
            {"type": "LiveMigratable", "status": if migratable { "True" } else { "False" },
             "message": "PVC root is not shared"}]}})
}

fn node(name: &str, extra: Value) -> Value {
    let mut n = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "node-type": "compute"}},
        "spec": {},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi"},
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    merge(&mut n, extra);
    n
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn cluster(objects: Vec<Value>) -> FixtureCluster {
    objects
        .into_iter()
        .fold(FixtureCluster::new(), FixtureCluster::with)
}

fn run(ctx: &Context, objects: Vec<Value>) -> MigrationOutcome {
    migration_reconcile::<KubevirtMigration>(
        ctx,
        &Upstream {
            networks: vec![],
            volumes: vec![],
            lifecycle: None,
        },
        &cluster(objects),
    )
    .unwrap()
}

fn applied(outcome: &MigrationOutcome, kind: &str) -> Option<Value> {
    outcome
        .effects
        .apply
        .iter()
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .find(|o| o["kind"] == kind)
}

fn condition<'o>(outcome: &'o MigrationOutcome, kind: &str) -> (&'o str, &'o str, &'o str) {
    let c = outcome
        .effects
        .conditions
        .iter()
        .find(|c| c.condition_type == kind)
        .unwrap();
    (&c.status, &c.reason, &c.message)
}

fn two_nodes() -> Vec<Value> {
    vec![
        vmi("node-0", true),
        node("node-0", json!({})),
        node("node-1", json!({})),
    ]
}

#[test]
fn starts_a_manual_migration_with_policy_and_target() {
    let out = run(
        &context(Some(request("node-1")), json!({}), json!({})),
        two_nodes(),
    );
    let policy = applied(&out, POLICY_KIND).unwrap();
    // Derived (wukong_plugin_sdk::names), and without the host's marks: the host writes them.
    assert_eq!(policy["metadata"]["name"], "ns-vm1-gjinjyshnu");
    assert!(policy["metadata"].get("annotations").is_none(), "{policy}");
    assert_eq!(policy["spec"]["allowPostCopy"], true);
    assert_eq!(policy["spec"]["allowAutoConverge"], true);
    assert_eq!(policy["spec"]["completionTimeoutPerGiB"], 800);
    assert_eq!(
        policy["spec"]["selectors"]["virtualMachineInstanceSelector"][WUKONG_LABEL],
        "vm1"
    );
    let m = applied(&out, VMIM).unwrap();
    assert_eq!(m["spec"]["vmiName"], "vm1");
    assert_eq!(
        m["spec"]["addedNodeSelector"]["kubernetes.io/hostname"],
        "node-1"
    );
    assert_eq!(m["metadata"]["labels"][AUTOMATIC_LABEL], "false");
    let status = out.status.clone().unwrap();
    assert_eq!(status.phase, "Pending");
    assert_eq!(status.request_id, "migrate/node-1");
    assert_eq!(status.source_node.as_deref(), Some("node-0"));
    assert_eq!(status.started_at.as_deref(), Some(NOW));
    assert_eq!(
        status.migration_name.as_deref(),
        m["metadata"]["name"].as_str()
    );
}

#[test]
fn refuses_with_a_reason_and_converges() {
    let cases = [
        ("node-9", two_nodes(), "target node node-9 does not exist"),
        ("node-0", two_nodes(), "already runs on node node-0"),
        (
            "node-1",
            vec![
                vmi("node-0", true),
                node("node-1", json!({"spec": {"unschedulable": true}})),
            ],
            "node node-1 is cordoned",
        ),
        (
            "node-1",
            vec![
                vmi("node-0", true),
                node(
                    "node-1",
                    json!({"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}),
                ),
            ],
            "taint x:NoSchedule",
        ),
        (
            "node-1",
            vec![vmi("node-0", false), node("node-1", json!({}))],
            "PVC root is not shared",
        ),
        (
            "node-1",
            vec![node("node-1", json!({}))],
            "the VMI \"ns/vm1\" does not exist",
        ),
    ];
    for (target, objects, why) in cases {
        let out = run(
            &context(Some(request(target)), json!({}), json!({})),
            objects,
        );
        assert!(out.effects.apply.is_empty(), "{why}");
        let status = out.status.clone().unwrap();
        assert_eq!(status.phase, "Refused", "{why}");
        assert!(status.message.contains(why), "{}", status.message);
        assert_eq!(condition(&out, MIGRATED).1, "Refused");
        assert!(out.effects.events.iter().any(|e| e.warning));
    }
}

#[test]
fn a_done_request_is_not_redone() {
    let status = json!({"migrationStatus": {"phase": "Refused", "requestId": "migrate/node-1", "automatic": false}});
    let out = run(
        &context(Some(request("node-1")), json!({}), status),
        two_nodes(),
    );
    assert!(out.effects.apply.is_empty());
    assert_eq!(out.status.unwrap().phase, "Refused");
}

fn migration(name: &str, phase: &str, state: Value) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": name, "namespace": "ns", "uid": "m-uid",
            "labels": {"vm.novasphere.dev/wukong": "vm1", AUTOMATIC_LABEL: "false"},
            "annotations": {REQUEST_ANNOTATION: "migrate/node-1"}},
        "status": {"phase": phase, "migrationState": state}})
}

fn running_record() -> Value {
    json!({"migrationStatus": {"phase": "Running", "requestId": "migrate/node-1", "automatic": false,
        "migrationName": "vm1-abc", "sourceNode": "node-0", "targetNode": "node-1", "startedAt": NOW}})
}

#[test]
fn follows_to_success_with_mode_and_times() {
    let mut vmi = vmi("node-1", true);
    vmi["status"]["migrationState"] = json!({"migrationUid": "m-uid", "sourceNode": "node-0",
        "targetNode": "node-1", "mode": "PostCopy", "startTimestamp": "2026-01-01T11:59:00Z",
        "endTimestamp": "2026-01-01T11:59:30Z", "completed": true});
    let out = run(
        &context(Some(request("node-1")), json!({}), running_record()),
        vec![vmi, migration("vm1-abc", "Succeeded", json!({}))],
    );
    let s = out.status.clone().unwrap();
    assert_eq!(s.phase, "Succeeded");
    assert_eq!(s.mode.as_deref(), Some("PostCopy"));
    assert_eq!(s.started_at.as_deref(), Some("2026-01-01T11:59:00Z"));
    assert_eq!(s.finished_at.as_deref(), Some("2026-01-01T11:59:30Z"));
    assert_eq!(condition(&out, MIGRATED).0, "True");
    assert_eq!(out.effects.requeue_after_ms, None);
}

#[test]
fn reports_a_failure_with_its_reason() {
    let state = json!({"failed": true, "failureReason": "simulated failure"});
    let out = run(
        &context(Some(request("node-1")), json!({}), running_record()),
        vec![vmi("node-0", true), migration("vm1-abc", "Failed", state)],
    );
    let s = out.status.clone().unwrap();
    assert_eq!(s.phase, "Failed");
    assert_eq!(s.failure_reason.as_deref(), Some("simulated failure"));
    assert!(
        out.effects
            .events
            .iter()
            .any(|e| e.warning && e.reason == "MigrationFailed")
    );
}

#[test]
fn abort_flag_or_removed_request_deletes_the_migration_object() {
    let mut abort = request("node-1");
    abort.abort = true;
    for migration_spec in [Some(abort), None] {
        let out = run(
            &context(migration_spec, json!({}), running_record()),
            vec![
                vmi("node-0", true),
                migration("vm1-abc", "Running", json!({})),
            ],
        );
        assert_eq!(out.effects.delete.len(), 1);
        assert_eq!(out.effects.delete[0].name, "vm1-abc");
        assert_eq!(out.status.unwrap().phase, "Aborted");
    }
}

#[test]
fn a_stale_abort_leaves_a_later_automatic_migration_running() {
    let automatic = |request_id: &str| {
        json!({"migrationStatus": {"phase": "Running", "requestId": request_id, "automatic": true,
            "trigger": "nodeMaintenance", "migrationName": "vm1-abc", "sourceNode": "node-0",
            "startedAt": NOW}})
    };
    let mut abort = request("node-1");
    abort.abort = true;
    let cluster = || {
        vec![
            vmi("node-0", true),
            migration("vm1-abc", "Running", json!({})),
        ]
    };
    // The abort was in the spec when the automatic migration started: it took its id.
    let out = run(
        &context(Some(abort.clone()), json!({}), automatic("migrate/node-1")),
        cluster(),
    );
    assert!(out.effects.delete.is_empty(), "{:?}", out.effects.delete);
    assert_eq!(out.status.unwrap().phase, "Running");
    // An abort made after it started stops it.
    let out = run(
        &context(Some(abort), json!({}), automatic("auto/nodeMaintenance")),
        cluster(),
    );
    assert_eq!(out.effects.delete.len(), 1);
    assert_eq!(out.status.unwrap().phase, "Aborted");
}

#[test]
fn a_new_request_waits_for_the_running_one() {
    let out = run(
        &context(Some(request("node-2")), json!({}), running_record()),
        vec![
            vmi("node-0", true),
            migration("vm1-abc", "Running", json!({})),
        ],
    );
    assert!(out.effects.apply.is_empty() && out.effects.delete.is_empty());
    let s = out.status.clone().unwrap();
    assert_eq!(s.phase, "Running");
    assert!(s.message.contains("waits"), "{}", s.message);
    assert_eq!(out.effects.requeue_after_ms, Some(REQUEUE_MS));
}

#[test]
fn picks_up_a_migration_created_before_a_crash() {
    // The host created the migration object, then died before writing the record.
    let ctx = context(Some(request("node-1")), json!({}), json!({}));
    let started = run(&ctx, two_nodes());
    let name = started.status.unwrap().migration_name.unwrap();
    let mut objects = two_nodes();
    objects.push(migration(&name, "Scheduling", json!({})));
    let out = run(&ctx, objects);
    assert!(out.effects.apply.is_empty(), "not created twice");
    let s = out.status.clone().unwrap();
    assert_eq!(
        (s.phase.as_str(), s.migration_name),
        ("Scheduling", Some(name))
    );
}

fn policy(triggers: Value) -> Value {
    json!({"migrationPolicy": {"enabled": true, "triggerConditions": triggers,
        "targetNodeSelector": {"matchLabels": {"node-type": "compute"}}}})
}

#[test]
fn node_maintenance_migrates_to_a_matching_node() {
    let objects = vec![
        vmi("node-0", true),
        node("node-0", json!({"spec": {"unschedulable": true}})),
        node(
            "node-1",
            json!({"metadata": {"labels": {"node-type": "storage"}}}),
        ),
        node("node-2", json!({})),
    ];
    let out = run(
        &context(
            None,
            policy(json!([{"type": "nodeMaintenance"}])),
            json!({}),
        ),
        objects,
    );
    let m = applied(&out, VMIM).unwrap();
    assert_eq!(
        m["spec"]["addedNodeSelector"]["kubernetes.io/hostname"],
        "node-2"
    );
    assert_eq!(m["metadata"]["labels"][AUTOMATIC_LABEL], "true");
    assert!(applied(&out, POLICY_KIND).is_none());
    let s = out.status.clone().unwrap();
    assert!(s.automatic);
    assert_eq!(s.trigger.as_deref(), Some("nodeMaintenance"));
    assert_eq!(condition(&out, AUTO_MIGRATION).1, "Migrating");
}

#[test]
fn maintenance_taint_counts_and_cooldown_holds_the_vm() {
    let objects = vec![
        vmi("node-0", true),
        node(
            "node-0",
            json!({"spec": {"taints": [{"key": "wukong.novasphere.dev/maintenance", "effect": "PreferNoSchedule"}]}}),
        ),
        node("node-1", json!({})),
    ];
    let recent = json!({"migrationStatus": {"phase": "Succeeded", "requestId": "auto/nodeMaintenance",
        "automatic": true, "finishedAt": "2026-01-01T11:58:00Z"}});
    let spec = policy(json!([{"type": "nodeMaintenance"}]));
    let out = run(&context(None, spec.clone(), recent), objects.clone());
    assert!(out.effects.apply.is_empty());
    assert_eq!(condition(&out, AUTO_MIGRATION).1, "CoolingDown");
    let old = json!({"migrationStatus": {"phase": "Succeeded", "requestId": "auto/nodeMaintenance",
        "automatic": true, "finishedAt": "2026-01-01T11:50:00Z"}});
    let out = run(&context(None, spec, old), objects);
    assert!(applied(&out, VMIM).is_some());
}

#[test]
fn node_failure_past_grace_deletes_the_vmi() {
    let failed = |since: &str| {
        node(
            "node-0",
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "lastTransitionTime": since}]}}),
        )
    };
    let spec = policy(json!([{"type": "nodeFailure", "gracePeriodSeconds": 30}]));
    let young = run(
        &context(None, spec.clone(), json!({})),
        vec![vmi("node-0", true), failed("2026-01-01T11:59:50Z")],
    );
    assert!(young.effects.actions.is_empty());
    assert_eq!(condition(&young, AUTO_MIGRATION).1, "NodeNotReady");
    let old = run(
        &context(None, spec, json!({})),
        vec![vmi("node-0", false), failed("2026-01-01T11:59:00Z")],
    );
    assert!(
        matches!(&old.effects.actions[..], [Action::DeleteObject((r, Some(0)))] if r.kind == VMI)
    );
    let s = old.status.unwrap();
    assert_eq!(s.phase, "Restarted");
    assert!(s.message.contains("live migration is impossible"));
}

#[test]
fn resource_pressure_moves_to_the_least_loaded_node() {
    let loaded = |cpu: &str| json!({"metadata": {"annotations": {"wukong.novasphere.dev/requested-cpu": cpu}}});
    let objects = vec![
        vmi("node-0", true),
        node("node-0", loaded("7")),
        node("node-1", loaded("5")),
        node("node-2", loaded("2")),
        node("node-3", loaded("7500m")),
    ];
    let spec = policy(json!([{"type": "resourcePressure", "threshold": "80%"}]));
    let out = run(&context(None, spec.clone(), json!({})), objects);
    let m = applied(&out, VMIM).unwrap();
    assert_eq!(
        m["spec"]["addedNodeSelector"]["kubernetes.io/hostname"],
        "node-2"
    );
    let calm = run(
        &context(None, spec, json!({})),
        vec![vmi("node-0", true), node("node-0", loaded("4"))],
    );
    assert!(calm.effects.apply.is_empty());
    assert_eq!(condition(&calm, AUTO_MIGRATION).1, "NoTrigger");
}

#[test]
fn no_target_or_not_migratable_is_a_condition_not_a_move() {
    let spec = policy(json!([{"type": "nodeMaintenance"}]));
    let cordoned = node("node-0", json!({"spec": {"unschedulable": true}}));
    let out = run(
        &context(None, spec.clone(), json!({})),
        vec![vmi("node-0", true), cordoned.clone()],
    );
    assert_eq!(condition(&out, AUTO_MIGRATION).1, "NoTargetNode");
    let out = run(
        &context(None, spec, json!({})),
        vec![vmi("node-0", false), cordoned, node("node-1", json!({}))],
    );
    assert_eq!(condition(&out, AUTO_MIGRATION).1, "NotLiveMigratable");
    assert!(out.effects.apply.is_empty());
}

fn policy_named(name: &str, uid: &str) -> Value {
    json!({"apiVersion": POLICY_API_VERSION, "kind": POLICY_KIND,
        "metadata": {"name": name, "annotations": {OWNER_UID_ANNOTATION: uid}}})
}

fn finalize(ctx: &Context, objects: Vec<Value>) -> Vec<String> {
    let up = Upstream {
        networks: vec![],
        volumes: vec![],
        lifecycle: None,
    };
    migration_finalize::<KubevirtMigration>(ctx, &up, &cluster(objects))
        .unwrap()
        .delete
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[test]
fn finalize_deletes_only_its_own_policy() {
    let ctx = context(None, json!({}), json!({}));
    // Marked by the host for this Wukong, under the derived name or the legacy one.
    let derived = policy_named("ns-vm1-gjinjyshnu", "uid-1");
    assert_eq!(finalize(&ctx, vec![derived]), ["ns-vm1-gjinjyshnu"]);
    assert_eq!(
        finalize(&ctx, vec![policy_named("ns-vm1", "uid-1")]),
        ["ns-vm1"]
    );
    let theirs = policy_named("ns-vm1", "other");
    assert!(finalize(&ctx, vec![theirs]).is_empty());
    assert!(finalize(&ctx, vec![policy_named("ns-vm1-gjinjyshnu", "other")]).is_empty());
}

#[test]
fn the_policy_keeps_its_legacy_name_only_when_it_is_this_wukongs() {
    let ctx = context(Some(request("node-1")), json!({}), json!({}));
    let name = |objects: Vec<Value>| {
        let mut objects = objects;
        objects.extend(two_nodes());
        applied(&run(&ctx, objects), POLICY_KIND).unwrap()["metadata"]["name"].clone()
    };
    // Made before derived names (the plugin wrote the uid then): kept.
    assert_eq!(name(vec![policy_named("ns-vm1", "uid-1")]), "ns-vm1");
    // Another Wukong's (another uid: a namesake deleted before this one was created, or
    // a Wukong whose namespace and name read alike): left to it; this Wukong
    // gets the derived name.
    assert_eq!(
        name(vec![policy_named("ns-vm1", "other")]),
        "ns-vm1-gjinjyshnu"
    );
    // Namespace `ns` / `a-b` and namespace `ns-a` / `b` read alike, but differ.
    assert_ne!(
        wukong_plugin_sdk::names::derived("ns", "a-b"),
        wukong_plugin_sdk::names::derived("ns-a", "b")
    );
}

#[test]
fn manifest_declares_reads_and_writes() {
    let m = describe::<KubevirtMigration>(StepKind::Migration);
    let kinds =
        |l: &[wukong_plugin_sdk::KindRef]| l.iter().map(|k| k.kind.clone()).collect::<Vec<_>>();
    assert_eq!(kinds(&m.capabilities.writes), [VMIM, POLICY_KIND, VMI]);
    for kind in [VMI, VMIM, "Node", POLICY_KIND] {
        assert!(kinds(&m.capabilities.reads).contains(&kind.to_owned()));
    }
    assert!(m.capabilities.actions.is_empty());
}

/// The host's `StepFailed` condition after the apply of migration `name` was denied.
fn denied(name: &str, why: &str) -> Value {
    json!({"conditions": [{"type": "StepFailed", "status": "True", "reason": "Apply",
        "message": format!("migration step, plugin kubevirt-migration@0.1.0: apply VirtualMachineInstanceMigration {name}: \
            ApiError: admission webhook \"migration-create-validator.kubevirt.io\" denied the request: {why}: BadRequest \
            (Status {{ status: Some(\"Failure\"), code: 400 }})")}]})
}

#[test]
fn a_migration_refused_at_admission_is_recorded_with_the_reason_not_retried() {
    let ctx = context(Some(request("node-1")), json!({}), json!({}));
    let first = run(&ctx, two_nodes());
    let name = applied(&first, VMIM).unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    // The host applied it, the webhook denied it: the step failed and the record stayed.
    let why = "Cannot migrate VMI, Reason: InterfaceNotLiveMigratable, Message: cannot migrate VMI which does not use masquerade";
    let ctx = context(Some(request("node-1")), json!({}), denied(&name, why));
    let out = run(&ctx, two_nodes());
    assert!(out.effects.apply.is_empty(), "not applied again");
    let s = out.status.clone().unwrap();
    assert_eq!(
        (
            s.phase.as_str(),
            s.request_id.as_str(),
            s.failure_reason.as_deref()
        ),
        ("Refused", "migrate/node-1", Some(why))
    );
    assert_eq!(s.message, format!("migration refused by KubeVirt: {why}"));
    assert_eq!(condition(&out, MIGRATED).1, "Refused");
    assert!(
        out.effects
            .events
            .iter()
            .any(|e| e.warning && e.reason == "MigrationRefused")
    );
    // Another object's denial (an older request's) does not finish this one.
    let ctx = context(Some(request("node-1")), json!({}), denied("vm1-other", why));
    assert!(applied(&run(&ctx, two_nodes()), VMIM).is_some());
}

#[test]
fn an_automatic_migration_refused_at_admission_waits_for_the_cool_down() {
    let objects = vec![
        vmi("node-0", true),
        node("node-0", json!({"spec": {"unschedulable": true}})),
        node("node-1", json!({})),
    ];
    let spec = policy(json!([{"type": "nodeMaintenance"}]));
    let why = "in-flight migration detected. Active migration job (u1) is currently already in progress for VMI vm1.";
    let out = run(
        &context(None, spec, denied("vm1-auto-0badcafe", why)),
        objects,
    );
    assert!(out.effects.apply.is_empty());
    let s = out.status.clone().unwrap();
    assert_eq!((s.phase.as_str(), s.automatic), ("Failed", true));
    assert_eq!(s.failure_reason.as_deref(), Some(why));
    assert!(
        record::last_move(Some(&s)).is_some(),
        "the cool-down counts from it"
    );
    assert_eq!(condition(&out, AUTO_MIGRATION).1, "RefusedByKubeVirt");
}

#[test]
fn admission_refusals_are_foreseen_in_kubevirt_s_words() {
    // Another migration of the VMI in flight (not Wukong's): refused before applying.
    let other = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "kubevirt-migrate-vm-x", "namespace": "ns", "uid": "u1"},
        "spec": {"vmiName": "vm1"}, "status": {"phase": "Running"}});
    let mut objects = two_nodes();
    objects.push(other);
    let out = run(
        &context(Some(request("node-1")), json!({}), json!({})),
        objects,
    );
    assert!(out.effects.apply.is_empty());
    assert_eq!(
        out.status.unwrap().failure_reason.as_deref(),
        Some(
            "in-flight migration detected. Active migration job (u1) is currently already in progress for VMI vm1."
        )
    );
    // A finished VMI.
    let mut done = vmi("node-0", true);
    done["status"]["phase"] = json!("Succeeded");
    let out = run(
        &context(Some(request("node-1")), json!({}), json!({})),
        vec![done, node("node-1", json!({}))],
    );
    assert_eq!(
        out.status.unwrap().failure_reason.as_deref(),
        Some("Cannot migrate VMI in finalized state.")
    );
}

#[test]
fn a_vmi_not_running_yet_gets_a_pending_migration() {
    let mut scheduling = vmi("", true);
    scheduling["status"] = json!({"phase": "Scheduling"});
    let mut any_node = request("node-1");
    any_node.target_node = None;
    let ctx = context(Some(any_node.clone()), json!({}), json!({}));
    let out = run(&ctx, vec![scheduling.clone()]);
    let m = applied(&out, VMIM).expect("admitted: KubeVirt keeps it Pending");
    let name = m["metadata"]["name"].as_str().unwrap().to_owned();
    let started = out.status.clone().unwrap();
    assert_eq!(started.phase, "Pending");
    assert_eq!(started.source_node, None);
    assert_eq!(
        started.message,
        "migrating to a node the scheduler picks once the VM instance runs"
    );
    // Followed: Pending, and why.
    let record = json!({"migrationStatus": {"phase": "Pending", "requestId": any_node.request_id,
        "automatic": false, "migrationName": name, "startedAt": NOW}});
    let pending = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": name, "namespace": "ns", "uid": "m-uid"}, "spec": {"vmiName": "vm1"},
        "status": {"phase": "Pending"}});
    let out = run(
        &context(Some(any_node), json!({}), record),
        vec![scheduling, pending],
    );
    let s = out.status.clone().unwrap();
    assert_eq!(s.phase, "Pending");
    assert!(
        s.message
            .contains("the VM instance is Scheduling; KubeVirt migrates it once it runs"),
        "{}",
        s.message
    );
    assert_eq!(condition(&out, MIGRATED).1, "InProgress");
    assert!(out.effects.requeue_after_ms.is_some());
}

#[test]
fn failure_is_the_phase_and_an_abort_says_kubevirt_s_words() {
    // No `Failed` condition upstream: phase Failed, the reason in the migration state.
    let state = json!({"failed": true, "abortStatus": "Succeeded",
        "failureReason": "Live migration has been aborted"});
    let out = run(
        &context(Some(request("node-1")), json!({}), running_record()),
        vec![vmi("node-0", true), migration("vm1-abc", "Failed", state)],
    );
    let s = out.status.clone().unwrap();
    assert_eq!(s.phase, "Aborted");
    assert_eq!(s.failure_reason.as_deref(), Some(track::ABORTED));
    assert_eq!(
        s.message,
        "migration vm1-abc aborted: Live migration has been aborted"
    );
    // Failed with no reason at all: said so, never read from a condition.
    let out = run(
        &context(Some(request("node-1")), json!({}), running_record()),
        vec![
            vmi("node-0", true),
            migration("vm1-abc", "Failed", json!({})),
        ],
    );
    assert_eq!(
        out.status.unwrap().message,
        "migration from node node-0 failed: KubeVirt gave no reason"
    );
}
