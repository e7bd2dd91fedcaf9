//! The conformance kit: every bundled plugin passes its kind's suite, and the hostile
//! test plugin's storage modes prove each check catches the flaw it is about, naming why.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::json;
use wukong::conformance::{self, Options, Report};
use wukong::plugin::types::StepKind;
use wukong::plugin::{CodeCache, Plugin, Runtime, RuntimeLimits};

/// Each bundled plugin crate and the step kind its component must be detected as.
const BUNDLED: &[(&str, StepKind)] = &[
    ("multus-network", StepKind::Network),
    ("cdi-storage", StepKind::Storage),
    ("longhorn-storage", StepKind::Storage),
    ("ceph-rbd-storage", StepKind::Storage),
    ("kubevirt-lifecycle", StepKind::Lifecycle),
    ("kubevirt-migration", StepKind::Migration),
];

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("wukong-cache")
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(
            RuntimeLimits::default(),
            Some(CodeCache::new(cache_dir().join("compiled"))),
        )
        .expect("runtime")
    })
}

fn load(path: &Path) -> Plugin {
    runtime()
        .load(path)
        .unwrap_or_else(|e| panic!("{} loads: {e}", path.display()))
}

fn hostile() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| load(&support::plugin_wasm("hostile-plugin")))
}

fn hostile_in(mode: &str) -> Report {
    conformance::run(hostile(), &Options::default().config(json!({"mode": mode})))
}

/// Runs the kit on a plugin, printing the report and the time it took.
fn check(path: &Path) -> Report {
    let plugin = load(path);
    let started = Instant::now();
    let report = conformance::run(&plugin, &Options::default());
    println!(
        "{report}\n({} checks in {:.0} ms)\n",
        report.checks.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    report
}

#[test]
fn every_bundled_plugin_passes_the_suite_of_its_kind() {
    for (name, step) in BUNDLED {
        let report = check(&support::plugin_wasm(name));
        assert_eq!(report.step, *step, "{name} is detected as {}", report.step);
        assert!(report.is_success(), "{name}:\n{report}");
        assert!(
            report.checks.len() >= 9,
            "{name} ran {} checks",
            report.checks.len()
        );
    }
}

#[test]
fn the_python_storage_plugin_passes_when_it_is_built() {
    let wasm = support::plugin_wasm("cdi-storage").with_file_name("python_storage.wasm");
    if !wasm.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is missing under CI: tests/build-plugins.sh must build it",
            wasm.display()
        );
        eprintln!("{} not built: skipped", wasm.display());
        return;
    }
    let report = check(&wasm);
    assert_eq!(report.step, StepKind::Storage);
    assert!(report.is_success(), "{report}");
}

#[test]
fn a_well_behaved_storage_backend_passes() {
    let report = hostile_in("well-behaved-storage");
    assert!(report.is_success(), "{report}");
}

/// A backend that rightly refuses image disks passes once it says which sources it serves;
/// one that silently passes over a source it says it does not serve fails.
#[test]
fn a_backend_is_checked_on_the_disk_sources_it_serves() {
    let sources = conformance::DiskSources::parse("blank,existing-claim").expect("sources");
    let refusing = |sources: Option<conformance::DiskSources>| {
        let mut options = Options::default().config(json!({"mode": "refuses-images"}));
        if let Some(sources) = sources {
            options = options.disk_sources(sources);
        }
        conformance::run(hostile(), &options)
    };
    let all = refusing(None);
    assert!(!all.is_success(), "checked on images it refuses: {all}");
    let served = refusing(Some(sources));
    assert!(served.is_success(), "{served}");
    assert!(
        served
            .to_string()
            .contains("refuses the disk sources it does not serve"),
        "{served}"
    );
    let lax = conformance::run(
        hostile(),
        &Options::default()
            .config(json!({"mode": "well-behaved-storage"}))
            .disk_sources(sources),
    );
    let failed: Vec<&str> = lax
        .checks
        .iter()
        .filter(|c| c.failure.is_some())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        failed,
        ["refuses the disk sources it does not serve"],
        "{lax}"
    );
    assert!(conformance::DiskSources::parse("blank,nfs").is_err());
}

/// Each storage flaw fails exactly the check about it, with a reason that says what
/// went wrong.
#[test]
fn each_storage_flaw_fails_its_own_check_and_says_why() {
    let cases = [
        (
            "unstable-names",
            "stable names across calls",
            "disk root is claim \"vm1-root-egsh6yjvhj-20260101000000\", but at another time and generation it is Some(\"vm1-root-egsh6yjvhj-20260601120000\")",
        ),
        (
            "shrinks",
            "grows but never shrinks",
            "shrinking disk data from 10Gi to 5Gi applies the smaller request to [\"PersistentVolumeClaim vm1-data-enz3xwxxaj\"]",
        ),
        (
            "leaks-on-finalize",
            "finalize deletes what it created, never a retained disk",
            "leaves PersistentVolumeClaim tenant-a/vm1-root-egsh6yjvhj behind; leaves PersistentVolumeClaim tenant-a/vm1-data-enz3xwxxaj behind",
        ),
        (
            "deletes-retained",
            "finalize deletes what it created, never a retained disk",
            "deletes [\"PersistentVolumeClaim vm1-keep-mnakzi5mil\"], of a retained disk or an existing claim",
        ),
        (
            "always-bound",
            "reports bound only when the fixture says bound",
            "volume root is reported bound, but the cluster has its claim vm1-root-egsh6yjvhj not Bound",
        ),
        (
            "panics-on-odd-sizes",
            "no panic or trap on generated Wukongs",
            "a disk beyond 64 bits (reconcile call 1): panicked: disk data: 99999999999999999999999Ei is not a size I know",
        ),
    ];
    for (mode, check, reason) in cases {
        let report = hostile_in(mode);
        assert_eq!(report.failures(), [check], "mode {mode}:\n{report}");
        let failure = report
            .check(check)
            .and_then(|c| c.failure.clone())
            .unwrap_or_default();
        assert!(failure.contains(reason), "mode {mode}: {failure}");
    }
}

#[test]
fn no_volumes_and_undeclared_kinds_are_named() {
    let report = hostile_in("noop");
    let failure = report
        .check("one volume per disk")
        .and_then(|c| c.failure.clone());
    assert_eq!(
        failure.as_deref(),
        Some("disks [\"root\", \"data\", \"keep\", \"old\"] gave volumes []")
    );

    let report = hostile_in("undeclared-kind");
    let guard = report
        .check("only declared kinds (the guard passes)")
        .and_then(|c| c.failure.clone())
        .unwrap_or_default();
    assert!(
        guard.contains("apply of v1/Secret stolen: kind not declared in `writes`"),
        "{guard}"
    );
    assert!(
        report
            .check("no panic or trap on generated Wukongs")
            .is_some_and(|c| c.passed()),
        "a refused outcome is the guard's business, not a crash:\n{report}"
    );
}

#[test]
fn a_config_the_schema_refuses_fails_the_schema_check() {
    let report = conformance::run(
        hostile(),
        &Options::default().config(json!({"mode": "steal-everything"})),
    );
    let failure = report
        .check("config schema present and enforced")
        .and_then(|c| c.failure.clone())
        .unwrap_or_default();
    assert!(
        failure.starts_with("the config under test is refused: "),
        "{failure}"
    );
}

fn wukong(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(args)
        .env("WUKONG_CACHE", cache_dir())
        .env("RUST_LOG", "error")
        .output()
        .expect("run wukong")
}

#[test]
fn the_command_prints_one_line_per_check_and_fails_on_a_failure() {
    let cdi = support::plugin_wasm("cdi-storage").display().to_string();
    let out = wukong(&["plugin", "conformance", &cdi]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"conformance of cdi-storage@0.1.0 (storage plugin)")
    );
    assert!(
        lines.contains(&"ok storage: grows but never shrinks"),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"10 passed, 0 failed"));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "mode: shrinks\n").expect("write");
    let hostile = support::plugin_wasm("hostile-plugin").display().to_string();
    let out = wukong(&[
        "plugin",
        "conformance",
        &hostile,
        "--config",
        &config.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "FAILED storage: grows but never shrinks\n    shrinking disk data from 10Gi to 5Gi applies the smaller request"
        ),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("9 passed, 1 failed"),
        "{stdout}"
    );
}
