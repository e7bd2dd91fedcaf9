//! Contract versions: a plugin built against `wukong:plugin@0.1.0` and frozen in
//! `tests/fixtures/contract-0.1.0` keeps loading and passing its cases on the current
//! host; a component for a version this host does not know is refused before it is
//! compiled, with a message naming the file and the versions the host supports.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wukong::plugin::types::StepKind;
use wukong::plugin::{CodeCache, LoadError, Runtime, RuntimeLimits, SUPPORTED_CONTRACTS};

/// The fixture's digest: it is never rebuilt, or it would prove nothing about 0.1.0.
const FIXTURE_SHA256: &str = "4de96aef217e1eaaf5574b50b71a7315d968dafb58d17577775bae9f601c24e8";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/contract-0.1.0")
}

fn fixture() -> (PathBuf, Vec<u8>) {
    let path = fixture_dir().join("example_storage.wasm");
    let bytes = std::fs::read(&path).expect("read the 0.1.0 fixture");
    (path, bytes)
}

#[test]
fn a_plugin_built_against_0_1_0_still_loads_and_passes_its_cases() {
    let (path, bytes) = fixture();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        FIXTURE_SHA256,
        "{} changed: it must stay the component built for 0.1.0",
        path.display()
    );
    let runtime = Runtime::new(RuntimeLimits::default(), None).expect("runtime");
    let plugin = runtime
        .load(&path)
        .expect("the current host loads a 0.1.0 plugin");
    assert_eq!(plugin.contract.version, "0.1.0");
    assert_eq!(plugin.step(), StepKind::Storage);
    assert_eq!(plugin.manifest.name, "example-storage");

    let report = wukong::runner::run_dir(&plugin, &fixture_dir().join("cases")).expect("cases");
    assert_eq!(report.cases.len(), 8, "{report}");
    assert!(report.is_success(), "{report}");
}

/// `bytes` with every `@0.1.0` that closely follows `wukong:plugin/` replaced by `@{to}`
/// (same length): the component now claims another contract version.
fn claiming(bytes: &[u8], to: &str) -> Vec<u8> {
    let (prefix, from) = (b"wukong:plugin/".as_slice(), b"@0.1.0".as_slice());
    let to = format!("@{to}");
    assert_eq!(to.len(), from.len());
    let mut out = bytes.to_vec();
    let mut replaced = 0;
    for start in 0..out.len().saturating_sub(prefix.len()) {
        if !out[start..].starts_with(prefix) {
            continue;
        }
        let window = start..(start + prefix.len() + 32).min(out.len());
        if let Some(at) = out[window.clone()]
            .windows(from.len())
            .position(|w| w == from)
        {
            let at = window.start + at;
            out[at..at + from.len()].copy_from_slice(to.as_bytes());
            replaced += 1;
        }
    }
    assert!(replaced >= 4, "only {replaced} names rewritten");
    out
}

#[test]
fn an_unknown_contract_version_is_refused_before_compiling_naming_the_file_and_the_supported_ones()
{
    let (_, bytes) = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("compiled");
    let runtime =
        Runtime::new(RuntimeLimits::default(), Some(CodeCache::new(&cache))).expect("runtime");
    for version in ["1.0.0", "0.9.0", "0.2.0"] {
        let path = dir.path().join(format!("future-{version}.wasm"));
        std::fs::write(&path, claiming(&bytes, version)).expect("write");
        let error = runtime.load(&path).expect_err("an unknown contract");
        assert!(
            matches!(&error, LoadError::UnsupportedContract { found, .. } if found == version),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with(&path.display().to_string())
                && message.contains(&format!("wukong:plugin@{version}"))
                && message.contains(&format!("supports {}", SUPPORTED_CONTRACTS.join(", "))),
            "{message}"
        );
    }
    // Refused before compiling: nothing reached the compiled-code cache. The same bytes
    // at 0.1.0 do compile and fill it, so an empty cache is not an accident.
    assert!(!cache.exists() || std::fs::read_dir(&cache).expect("cache").next().is_none());
    let current = dir.path().join("current.wasm");
    std::fs::write(&current, &bytes).expect("write");
    runtime.load(&current).expect("0.1.0 loads");
    assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 1);
}
