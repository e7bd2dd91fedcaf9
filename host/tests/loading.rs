//! Loading plugins: the code cache is used without recompiling, and each kind of bad file
//! is refused before compilation with a message naming the file and the cause.

mod support;

use std::path::PathBuf;

use serde_json::json;
use wukong::plugin::{CodeCache, CodeSource, LoadError, Runtime, RuntimeLimits};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

#[test]
fn a_warm_cache_loads_without_compiling() {
    let cache = tempfile::tempdir().expect("tempdir");
    let plugin = support::plugin_wasm("hostile-plugin");
    let first = Runtime::new(RuntimeLimits::default(), Some(CodeCache::new(cache.path())))
        .expect("runtime");
    assert_eq!(
        first.load(&plugin).expect("load").code_source,
        CodeSource::Compiled
    );
    // A new runtime, as after a restart.
    let second = Runtime::new(RuntimeLimits::default(), Some(CodeCache::new(cache.path())))
        .expect("runtime");
    let loaded = second.load(&plugin).expect("load from cache");
    assert_eq!(loaded.code_source, CodeSource::Cache);
    assert_eq!(loaded.manifest.name, "hostile");
}

#[test]
fn bad_files_are_refused_naming_the_file_and_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(RuntimeLimits::default(), None).expect("runtime");

    let garbage = write(&dir, "garbage.wasm", b"this is not wasm");
    let error = runtime.load(&garbage).expect_err("garbage");
    assert!(matches!(error, LoadError::NotAComponent { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&garbage.display().to_string()),
        "{error}"
    );

    let core_module = write(&dir, "core.wasm", b"\0asm\x01\0\0\0");
    let error = runtime.load(&core_module).expect_err("core module");
    assert!(error.to_string().contains("core module"), "{error}");

    let empty_component = write(&dir, "empty.wasm", b"\0asm\x0d\0\x01\0");
    let error = runtime.load(&empty_component).expect_err("no exports");
    assert!(matches!(error, LoadError::WrongWorld { .. }), "{error}");
    assert!(error.to_string().contains("not a Wukong plugin"), "{error}");

    // The same plugin, claiming a contract version this host does not know.
    let bytes = std::fs::read(support::plugin_wasm("hostile-plugin")).expect("read");
    let future = replace_all(&bytes, b"wukong:plugin/", b"@0.1.0", b"@9.1.0");
    let future_path = write(&dir, "future.wasm", &future);
    let error = runtime
        .load(&future_path)
        .expect_err("unsupported contract");
    assert!(
        matches!(error, LoadError::UnsupportedContract { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("9.1.0") && error.to_string().contains("supports 0.1.0"),
        "{error}"
    );

    let missing = dir.path().join("missing.wasm");
    assert!(matches!(
        runtime.load(&missing),
        Err(LoadError::Read { .. })
    ));
}

#[test]
fn a_config_failing_the_schema_names_the_plugin_and_the_problem() {
    let runtime = Runtime::new(RuntimeLimits::default(), None).expect("runtime");
    let plugin = runtime
        .load(&support::plugin_wasm("hostile-plugin"))
        .expect("load");
    plugin
        .validate_config(&json!({"mode": "noop"}))
        .expect("valid config");
    let error = plugin
        .validate_config(&json!({"mode": "nonsense", "extra": 1}))
        .expect_err("invalid config")
        .to_string();
    assert!(
        error.contains("hostile@0.1.0") && error.contains("/mode"),
        "{error}"
    );
}

/// Replaces `from` with `to` (same length) wherever it follows `prefix` closely.
fn replace_all(bytes: &[u8], prefix: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + prefix.len() <= out.len() {
        if out[i..].starts_with(prefix) {
            let window_end = (i + prefix.len() + 32).min(out.len());
            if let Some(at) = out[i..window_end]
                .windows(from.len())
                .position(|w| w == from)
            {
                out[i + at..i + at + from.len()].copy_from_slice(to);
            }
        }
        i += 1;
    }
    out
}

/// A config with the hostile plugin (which asks to read and write claims, StorageClasses
/// and migrations, and to stop VMs) as backend `storage.hostile`, with these grants.
fn hostile_config(grants: &str, extra: &str) -> wukong::config::HostConfig {
    let text = format!(
        "[storage.hostile]\nplugin = \"{}\"\n{grants}\n{extra}",
        support::plugin_wasm("hostile-plugin").display()
    );
    wukong::config::HostConfig::parse(&text, "w.toml").expect("parse")
}

#[test]
fn a_plugin_asking_for_more_than_granted_is_refused_naming_the_backend_the_file_and_the_difference()
{
    use wukong::config::Backends;
    let file = support::plugin_wasm("hostile-plugin").display().to_string();
    // Granted everything but the StorageClass writes and the stop action.
    let narrow = r#"grants = { reads = ["v1/PersistentVolumeClaim", "storage.k8s.io/v1/StorageClass", "kubevirt.io/v1/VirtualMachineInstanceMigration"], writes = ["v1/PersistentVolumeClaim", "kubevirt.io/v1/VirtualMachineInstanceMigration"] }"#;
    let error = Backends::load(&hostile_config(narrow, ""), "w.toml")
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "w.toml: storage.hostile.grants: {file} (hostile@0.1.0) asks for more than this backend is granted: writes storage.k8s.io/v1/StorageClass; actions virtualmachines/stop. To grant what it asks, set under [storage.hostile]: grants = {{"
        )),
        "{error}"
    );
    // No grants at all grants nothing.
    let error = Backends::load(&hostile_config("", ""), "w.toml")
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("asks for more than this backend is granted: reads "),
        "{error}"
    );
    // The stanza the message offers loads.
    let offered = error
        .split("set under [storage.hostile]: ")
        .nth(1)
        .expect("a stanza");
    Backends::load(&hostile_config(offered, ""), "w.toml").expect("the offered grant loads");
    // A malformed grant is refused at parse, naming the key.
    let text = format!(
        "[storage.hostile]\nplugin = \"{file}\"\ngrants = {{ writes = [\"PersistentVolumeClaim\"] }}\n"
    );
    let error = wukong::config::HostConfig::parse(&text, "w.toml")
        .expect_err("refused")
        .to_string();
    assert!(
        error.starts_with("w.toml: storage.hostile.grants: writes: \"PersistentVolumeClaim\" is not `apiVersion/Kind`"),
        "{error}"
    );
}

#[test]
fn a_config_whose_worst_case_exceeds_the_memory_limit_is_refused_saying_what_adds_up() {
    use wukong::config::Backends;
    let grants = support::operator::HOSTILE_GRANTS;
    // The defaults: 16 reconciles × 256 MiB per call cannot fit 1 GiB.
    let error = Backends::load(
        &hostile_config(grants, "[controller]\nmemoryLimitBytes = 1073741824\n"),
        "w.toml",
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        error.starts_with("w.toml: memory: the operator could need")
            && error.contains("16 plugin calls at once")
            && error.contains("more than the 1024 MiB it may use ([controller] memoryLimitBytes)")
            && error.contains("lower [controller] concurrency, [runtime] memoryBytes"),
        "{error}"
    );
    // Sized to fit, it loads.
    Backends::load(
        &hostile_config(
            grants,
            "[runtime]\nmemoryBytes = 33554432\nmaxInstances = 4\n[controller]\nconcurrency = 4\nmemoryLimitBytes = 1073741824\n",
        ),
        "w.toml",
    )
    .expect("4 × 32 MiB fits 1 GiB");
}
