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
