//! The isolation runner, through its Rust API and through the `wukong plugin` commands,
//! with the hostile test plugin: its `mode` config picks a behaviour, and `delete-unowned`
//! makes the host read the cluster (the guard checks who owns what the plugin deletes).
//! `--record` from a live cluster runs against a real apiserver.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wukong::cluster::{Kinds, LiveReader};
use wukong::plugin::types::{KindRef, ObjectRef};
use wukong::plugin::{ClusterReader, Plugin, Runtime, RuntimeLimits};
use wukong::runner::{
    self, DEFAULT_UID, FixtureCluster, Input, Recording, Replay, RunnerError, outcome_to_value,
};
use wukong_testenv::TestEnv;

const OWNED_PVC: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: someone-elses-disk
  namespace: tenant-a
  ownerReferences:
  - {apiVersion: vm.novasphere.dev/v1alpha1, kind: Wukong, name: vm1, uid: "00000000-0000-4000-8000-000000000001"}
"#;

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        Runtime::new(RuntimeLimits::default(), None)
            .expect("runtime")
            .load(&support::plugin_wasm("hostile-plugin"))
            .expect("hostile plugin loads")
    })
}

fn manifest() -> Value {
    json!({"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
           "metadata": {"name": "vm1", "namespace": "tenant-a"},
           "spec": {"cpu": 2, "memory": "4Gi",
                    "disks": [{"name": "root", "size": "20Gi", "image": "docker://quay.io/containerdisks/fedora:40"}]}})
}

fn cases(which: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runner-cases")
        .join(which)
}

/// The real binary, with its compiled-code cache in the test's scratch folder.
fn wukong(args: &[&str]) -> Output {
    command(args).output().expect("run wukong")
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wukong"));
    command
        .args(args)
        .env(
            "WUKONG_CACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wukong-cache"),
        )
        .env("RUST_LOG", "warn");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `files` (name, YAML) into a fresh folder.
fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write");
    }
    dir
}

fn arg(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

#[test]
fn inspect_shows_manifest_world_contract_capabilities_schema_and_digest() {
    let wasm = support::plugin_wasm("hostile-plugin");
    let digest = hex::encode(Sha256::digest(std::fs::read(&wasm).expect("read")));
    let file = wasm.display().to_string();

    let human = wukong(&["plugin", "inspect", &file]);
    assert!(human.status.success(), "{}", text(&human.stderr));
    let human = text(&human.stdout);
    for line in [
        "hostile@0.1.0 — misbehaves on purpose; for the sandbox tests",
        "step:         storage",
        "world:        wukong:plugin/storage-plugin@0.1.0",
        "contract:     wukong:plugin@0.1.0",
        // Sorted, as grants are.
        "reads:      kubevirt.io/v1/VirtualMachineInstanceMigration, storage.k8s.io/v1/StorageClass, v1/PersistentVolumeClaim",
        "writes:     kubevirt.io/v1/VirtualMachineInstanceMigration, storage.k8s.io/v1/StorageClass, v1/PersistentVolumeClaim",
        "actions:    virtualmachines/stop",
        &format!("digest:       sha256:{digest}"),
        "\"delete-unowned\"",
    ] {
        assert!(human.contains(line), "missing {line:?} in:\n{human}");
    }

    let json = wukong(&["plugin", "inspect", &file, "--output", "json"]);
    let json: Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    let yaml = wukong(&["plugin", "inspect", &file, "--output", "yaml"]);
    let yaml: Value = serde_yaml::from_slice(&yaml.stdout).expect("YAML output");
    assert_eq!(json, yaml, "both formats carry the same data");
    assert_eq!(json["name"], "hostile");
    assert_eq!(json["step"], "storage");
    assert_eq!(json["contract"], "wukong:plugin@0.1.0");
    assert_eq!(json["digest"], format!("sha256:{digest}"));
    assert_eq!(
        json["capabilities"]["writes"],
        json!([
            "kubevirt.io/v1/VirtualMachineInstanceMigration",
            "storage.k8s.io/v1/StorageClass",
            "v1/PersistentVolumeClaim"
        ])
    );
    assert_eq!(json["configSchema"]["additionalProperties"], false);
    // The first inspect compiled the plugin into the cache; the later ones took it from there.
    assert_eq!(json["codeSource"], "cache");
}

#[test]
fn run_prints_the_checked_outcome_and_fails_with_the_plugins_error() {
    let dir = scratch(&[
        ("w.yaml", &serde_yaml::to_string(&manifest()).expect("yaml")),
        ("noop.yaml", "mode: noop\n"),
        ("secret.yaml", "mode: undeclared-kind\n"),
    ]);
    let wasm = support::plugin_wasm("hostile-plugin").display().to_string();
    let run = |config: &str, extra: &[&str]| {
        let mut args = vec!["plugin", "run", &wasm, "--wukong"];
        let (w, c) = (arg(&dir, "w.yaml"), arg(&dir, config));
        let mut owned = vec![w, "--config".to_owned(), c];
        owned.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(owned.iter().map(String::as_str));
        wukong(&args)
    };

    let ok = run("noop.yaml", &[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let outcome: Value = serde_yaml::from_slice(&ok.stdout).expect("YAML outcome");
    assert_eq!(outcome, json!({"status": {"volumes": []}}));

    let finalized = run("noop.yaml", &["--finalize", "--backend", "fast"]);
    assert_eq!(text(&finalized.stdout), "status: finalized\n");

    let refused = run("secret.yaml", &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty(), "no outcome is printed");
    assert_eq!(
        text(&refused.stderr).trim(),
        "error: plugin hostile@0.1.0: capability violation: apply of v1/Secret stolen: kind not declared in `writes`"
    );
}

#[test]
fn a_config_failing_the_schema_is_refused_naming_the_file() {
    let dir = scratch(&[
        ("w.yaml", &serde_yaml::to_string(&manifest()).expect("yaml")),
        ("bad-config.yaml", "mode: steal-everything\n"),
    ]);
    let wasm = support::plugin_wasm("hostile-plugin").display().to_string();
    let config = arg(&dir, "bad-config.yaml");
    let out = wukong(&[
        "plugin",
        "run",
        &wasm,
        "--wukong",
        &arg(&dir, "w.yaml"),
        "--config",
        &config,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {config}: config invalid for plugin hostile@0.1.0: /mode: "
        )),
        "{stderr}"
    );

    // The same check through the library.
    let input = Input::new(manifest()).config(json!({"mode": "noop", "stealEverything": true}));
    let error = runner::run(plugin(), &input, Arc::new(FixtureCluster::default()))
        .expect_err("unknown config key");
    assert!(
        matches!(error, RunnerError::InvalidConfig { .. }),
        "{error}"
    );
}

#[test]
fn fixture_cluster_reads_decide_the_outcome() {
    let input = Input::new(manifest()).config(json!({"mode": "delete-unowned"}));
    let owned = FixtureCluster::from_yaml(OWNED_PVC).expect("fixtures");
    let outcome = runner::run(plugin(), &input, Arc::new(owned)).expect("owned claim");
    assert_eq!(
        outcome_to_value(&outcome)["delete"],
        json!([{"api_version": "v1", "kind": "PersistentVolumeClaim", "name": "someone-elses-disk", "namespace": "tenant-a"}])
    );

    let foreign = FixtureCluster::from_yaml(&OWNED_PVC.replace(DEFAULT_UID, "someone-else"))
        .expect("fixtures");
    let error = runner::run(plugin(), &input, Arc::new(foreign)).expect_err("foreign claim");
    assert!(
        error.to_string().contains("not the Wukong vm1's to delete"),
        "{error}"
    );

    // The CLI reads the same fixtures from `--cluster`.
    let dir = scratch(&[
        ("w.yaml", &serde_yaml::to_string(&manifest()).expect("yaml")),
        ("c.yaml", "mode: delete-unowned\n"),
        (
            "cluster.yaml",
            &format!("{OWNED_PVC}---\napiVersion: v1\nkind: List\nitems: []\n"),
        ),
    ]);
    let wasm = support::plugin_wasm("hostile-plugin").display().to_string();
    let out = wukong(&[
        "plugin",
        "run",
        &wasm,
        "--wukong",
        &arg(&dir, "w.yaml"),
        "--config",
        &arg(&dir, "c.yaml"),
        "--cluster",
        &arg(&dir, "cluster.yaml"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: Value = serde_yaml::from_slice(&out.stdout).expect("YAML");
    assert_eq!(printed, outcome_to_value(&outcome));
}

#[test]
fn a_recording_replays_offline_to_the_same_outcome() {
    let input = Input::new(manifest()).config(json!({"mode": "delete-unowned"}));
    let fixtures = FixtureCluster::from_yaml(OWNED_PVC).expect("fixtures");
    let recording = Arc::new(Recording::new(Arc::new(fixtures)));
    let recorded = runner::run(plugin(), &input, recording.clone()).expect("recorded call");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("reads.yaml");
    recording.save(&file).expect("save");
    assert_records_the_owned_claim(&file);

    let replayed = runner::run(
        plugin(),
        &input,
        Arc::new(Replay::load(&file).expect("load")),
    )
    .expect("replayed call");
    assert_eq!(replayed, recorded);

    // And through the CLI: `--record` from fixtures (no live cluster in this test).
    record_and_replay(|record, dir| {
        let fixtures = dir.join("cluster.yaml");
        std::fs::write(&fixtures, OWNED_PVC).expect("write");
        record.arg("--cluster").arg(fixtures);
    });
}

/// The recording of a `delete-unowned` call: the guard's read of the claim, owned by the
/// Wukong.
fn assert_records_the_owned_claim(file: &Path) {
    let saved: Value =
        serde_yaml::from_str(&std::fs::read_to_string(file).expect("read")).expect("YAML");
    assert_eq!(
        saved["reads"][0]["get"],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "tenant-a", "name": "someone-elses-disk"})
    );
    assert_eq!(
        saved["reads"][0]["object"]["metadata"]["ownerReferences"][0]["uid"],
        DEFAULT_UID
    );
}

/// `wukong plugin run` in `delete-unowned` mode with `--record`, its reads answered as
/// `source` arranges (given the scratch folder), then `--replay` of the recording with no
/// cluster at all: both print the same outcome.
fn record_and_replay(source: impl FnOnce(&mut Command, &Path)) {
    let dir = scratch(&[
        ("w.yaml", &serde_yaml::to_string(&manifest()).expect("yaml")),
        ("c.yaml", "mode: delete-unowned\n"),
    ]);
    let wasm = support::plugin_wasm("hostile-plugin").display().to_string();
    let (w, c, rec) = (
        arg(&dir, "w.yaml"),
        arg(&dir, "c.yaml"),
        arg(&dir, "rec.yaml"),
    );
    let base = ["plugin", "run", &wasm, "--wukong", &w, "--config", &c];
    let mut record = command(&[&base[..], &["--record", &rec]].concat());
    source(&mut record, dir.path());
    let record = record.output().expect("run wukong");
    assert!(record.status.success(), "{}", text(&record.stderr));
    assert_records_the_owned_claim(Path::new(&rec));
    let replay = wukong(&[&base[..], &["--replay", &rec]].concat());
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert_eq!(text(&replay.stdout), text(&record.stdout));
    assert!(text(&replay.stdout).contains("name: someone-elses-disk"));
}

/// `--record` reads through the operator's reader with no watch caches: every read a GET
/// or LIST of the real apiserver, worded as the operator words it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_reads_a_live_cluster_and_replays_it_offline() {
    let env = TestEnv::start()
        .await
        .expect("control plane (run tests/testenv/provision.sh)");
    let client = env.client();
    support::operator::namespace(&client, "tenant-a").await;
    let mut claim: Value = serde_yaml::from_str(OWNED_PVC).expect("YAML");
    claim["spec"] = json!({"accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "1Gi"}}});
    let claim: PersistentVolumeClaim = serde_json::from_value(claim).expect("claim");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "tenant-a")
        .create(&PostParams::default(), &claim)
        .await
        .expect("create the claim");

    // The reader itself, on a blocking thread as plugin calls are.
    let reader = LiveReader::new(Kinds::new(client), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        let object = |kind: &str, name: &str| ObjectRef {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: None,
            name: name.into(),
        };
        let found = reader
            .get(
                &object("PersistentVolumeClaim", "someone-elses-disk"),
                "tenant-a",
            )
            .expect("get")
            .expect("the claim");
        let found: Value = serde_json::from_str(&found).expect("JSON");
        assert_eq!(found["metadata"]["ownerReferences"][0]["uid"], DEFAULT_UID);
        let missing = reader.get(&object("PersistentVolumeClaim", "gone"), "tenant-a");
        assert_eq!(missing, Ok(None));
        // A cluster-scoped kind is read at the cluster scope, whatever the default namespace.
        let namespace = reader.get(&object("Namespace", "tenant-a"), "elsewhere");
        assert!(matches!(namespace, Ok(Some(_))), "{namespace:?}");

        let claims = KindRef {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
        };
        let listed = reader.list(&claims, "tenant-a", None).expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        // List items come without apiVersion and kind; the reader fills them in.
        let item: Value = serde_json::from_str(&listed[0]).expect("JSON");
        assert_eq!(
            (&item["apiVersion"], &item["kind"]),
            (&json!("v1"), &json!("PersistentVolumeClaim"))
        );
        let selected = reader.list(&claims, "tenant-a", Some("app=none"));
        assert_eq!(selected, Ok(Vec::new()));
        let unserved = KindRef {
            api_version: "example.com/v1".into(),
            kind: "Nothing".into(),
        };
        let error = reader
            .list(&unserved, "tenant-a", None)
            .expect_err("not served");
        assert!(error.starts_with("example.com/v1/Nothing: "), "{error}");
    })
    .await
    .expect("reads");

    // Through the CLI; the binary's own runtime does the reads, so only this worker waits.
    tokio::task::block_in_place(|| {
        record_and_replay(|record, _| {
            record.env("KUBECONFIG", env.kubeconfig_path());
        });
    });
}

#[test]
fn an_unrecorded_read_on_replay_fails_naming_the_read() {
    // A noop call reads nothing: its recording is empty.
    let recording = Arc::new(Recording::new(Arc::new(FixtureCluster::default())));
    let noop = Input::new(manifest()).config(json!({"mode": "noop"}));
    runner::run(plugin(), &noop, recording.clone()).expect("noop");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("empty.yaml");
    recording.save(&file).expect("save");

    let deleting = Input::new(manifest()).config(json!({"mode": "delete-unowned"}));
    let error = runner::run(
        plugin(),
        &deleting,
        Arc::new(Replay::load(&file).expect("load")),
    )
    .expect_err("the read is not recorded");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "unrecorded read: get v1/PersistentVolumeClaim tenant-a/someone-elses-disk is not in {}",
            file.display()
        )),
        "{message}"
    );
}

#[test]
fn plugin_test_prints_ok_failed_diffs_and_the_summary() {
    let wasm = support::plugin_wasm("hostile-plugin").display().to_string();
    let passing = wukong(&[
        "plugin",
        "test",
        &wasm,
        &cases("passing").display().to_string(),
    ]);
    assert!(
        passing.status.success(),
        "{}{}",
        text(&passing.stdout),
        text(&passing.stderr)
    );
    assert_eq!(
        text(&passing.stdout),
        "ok bad-config\nok delete-owned\nok delete-unowned\nok finalize\nok noop\n5 passed, 0 failed\n"
    );

    let failing = wukong(&[
        "plugin",
        "test",
        &wasm,
        &cases("failing").display().to_string(),
    ]);
    assert_eq!(failing.status.code(), Some(1));
    let out = text(&failing.stdout);
    assert!(out.starts_with("FAILED no-error\n"), "{out}");
    for expected in [
        "    expected an error containing \"capability violation\", got an outcome:",
        "ok noop\n",
        "FAILED typo\n",
        "unknown field `expected`",
        "FAILED wrong-outcome\n",
        "    --- expected\n    +++ actual\n",
        "    -requeueAfterMs: 5000\n",
        "    -  volumes:\n    -  - name: root\n    +  volumes: []\n",
        "1 passed, 3 failed\n",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn run_dir_returns_a_report_to_assert_on() {
    let report = runner::run_dir(plugin(), &cases("failing")).expect("cases");
    assert_eq!((report.passed(), report.failed()), (1, 3));
    assert!(!report.is_success());
    assert!(report.case("noop").is_some_and(|c| c.passed()));
    let wrong = report.case("wrong-outcome").expect("case");
    assert_eq!(
        wrong.description,
        "expects a requeue and a volume the plugin does not give"
    );
    assert!(
        wrong
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("+++ actual"))
    );
    assert!(report.to_string().ends_with("1 passed, 3 failed"));

    let case = runner::Case::load(&cases("passing").join("delete-owned.yaml")).expect("case");
    assert_eq!(case.name, "delete-owned");
    assert!(runner::run_case(plugin(), &case).passed());

    let empty = tempfile::tempdir().expect("tempdir");
    let error = runner::run_dir(plugin(), empty.path()).expect_err("no cases");
    assert!(
        error.to_string().ends_with("no case files (*.yaml) found"),
        "{error}"
    );
}
