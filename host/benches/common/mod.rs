//! What the plugin benchmarks share: where the built plugins are, the 4-disk Wukong and
//! the cluster of its converged disks, and timing with percentiles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wukong::plugin::types::{Disk, DiskSource, Wukong};

pub const DISKS: usize = 4;

/// The plugin components `tests/build-plugins.sh` builds.
pub fn plugin_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("wasm32-wasip2/plugin")
}

/// A Wukong with [`DISKS`] image disks.
pub fn wukong_record() -> Wukong {
    Wukong {
        name: "vm1".into(),
        namespace: "bench".into(),
        uid: "00000000-0000-4000-8000-000000000001".into(),
        generation: 1,
        deleting: false,
        cpu: 2,
        memory: "4Gi".into(),
        run_strategy: "Always".into(),
        disks: (0..DISKS)
            .map(|i| Disk {
                name: format!("disk{i}"),
                source: DiskSource::Image(format!(
                    "docker://quay.io/containerdisks/fedora:{}",
                    38 + i
                )),
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
        labels: vec![("vm.novasphere.dev/wukong".into(), "vm1".into())],
        json: "{}".into(),
    }
}

/// The disks imported and bound: what a converged Wukong's storage step reads (under the
/// names the storage plugins derive).
pub fn converged_disks() -> Vec<Value> {
    (0..DISKS)
        .flat_map(|i| {
            let name = wukong_plugin_sdk::names::derived("vm1", &format!("disk{i}"));
            [
                json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": name, "namespace": "bench"},
                    "status": {"phase": "Succeeded", "progress": "100.0%"}}),
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "bench"},
                    "spec": {"resources": {"requests": {"storage": "20Gi"}}, "accessModes": ["ReadWriteOnce"]},
                    "status": {"phase": "Bound", "capacity": {"storage": "20Gi"}}}),
            ]
        })
        .collect()
}

/// p50 and p99.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// p50 and p99 of `calls` calls after `warm_up` untimed ones.
pub fn time_calls(warm_up: usize, calls: usize, mut call: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..warm_up {
        call();
    }
    let samples = (0..calls)
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect();
    percentiles(samples)
}
