//! Shared by the host's integration tests: where the compiled plugins are, and inputs.
#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod operator;
pub mod telemetry;

use std::path::PathBuf;

use wukong::plugin::types::{Context, Upstream, Wukong};

/// A plugin built by `tests/build-plugins.sh` (the README's test command runs it first).
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target
        .join("wasm32-wasip2/plugin")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: build the plugins first with tests/build-plugins.sh",
        path.display()
    );
    path
}

/// A Wukong with `disks` image disks, as the contract's typed record.
pub fn wukong(namespace: &str, disks: usize) -> Wukong {
    use wukong::plugin::types::{Disk, DiskSource};
    Wukong {
        name: "vm1".into(),
        namespace: namespace.into(),
        uid: "0b5a6c1e-0000-4000-8000-000000000001".into(),
        generation: 1,
        deleting: false,
        cpu: 2,
        memory: "4Gi".into(),
        run_strategy: "Always".into(),
        disks: (0..disks)
            .map(|i| Disk {
                name: format!("disk{i}"),
                source: if i == 0 {
                    DiskSource::Image("docker://quay.io/containerdisks/fedora:40".into())
                } else {
                    DiskSource::Blank
                },
                size: "20Gi".into(),
                storage_class: None,
                backend: None,
                retain: false,
                boot_order: (i == 0).then_some(1),
                bus: "virtio".into(),
            })
            .collect(),
        networks: Vec::new(),
        lifecycle_action: None,
        migration: None,
        labels: vec![
            ("app.kubernetes.io/managed-by".into(), "wukong".into()),
            ("vm.novasphere.dev/wukong".into(), "vm1".into()),
        ],
        json: "{}".into(),
    }
}

pub fn context(wukong: Wukong, config: serde_json::Value) -> Context {
    Context {
        wukong,
        config: config.to_string(),
        backend: "default".into(),
        now: "2026-01-01T00:00:00Z".into(),
    }
}

pub fn no_upstream() -> Upstream {
    Upstream {
        networks: Vec::new(),
        volumes: Vec::new(),
        lifecycle: None,
    }
}

/// A deterministic pseudo-random sequence of `count` delays below `max_ms` (an LCG from
/// `seed`): kill points differ from one another, and a run repeats.
pub fn delays(seed: u64, count: usize, max_ms: u64) -> Vec<std::time::Duration> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            std::time::Duration::from_millis((state >> 33) % max_ms.max(1))
        })
        .collect()
}
