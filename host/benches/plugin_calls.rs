//! Plugin-call benchmark: prints figures, asserts nothing.
//!
//! `cargo bench -p wukong --bench plugin_calls` (after `tests/build-plugins.sh`):
//! - per-call latency p50/p99 of a no-op step and of a realistic storage step (4 disks);
//! - instantiate-only cost;
//! - load of a plugin from `.wasm` (compile) and from the code cache, and of every
//!   bundled plugin from a warm cache;
//! - the wasm/native ratio of the same SDK impl on the same step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wukong::plugin::types::{Context, Upstream};
use wukong::plugin::{
    ClusterReader, CodeCache, Phase, Plugin, Runtime, RuntimeLimits, StepRequest,
};
use wukong::runner::FixtureCluster;

mod common;

use common::{DISKS, converged_disks, plugin_dir, time_calls, wukong_record};

const CALLS: usize = 3_000;
const WARM_UP: usize = 200;

fn main() -> anyhow::Result<()> {
    let dir = plugin_dir();
    let cache_dir = tempfile::tempdir()?;
    let limits = RuntimeLimits::default();
    let runtime = Runtime::new(limits.clone(), Some(CodeCache::new(cache_dir.path())))?;

    // Loads: compile, then a new runtime (as after a restart) loads from the cache.
    let cdi_path = dir.join("cdi_storage.wasm");
    let started = Instant::now();
    let cdi = runtime.load(&cdi_path)?;
    let compile = started.elapsed();
    let bundled = [
        "multus_network",
        "cdi_storage",
        "longhorn_storage",
        "ceph_rbd_storage",
        "kubevirt_lifecycle",
        "kubevirt_migration",
        "hostile_plugin",
    ];
    for name in bundled {
        runtime.load(&dir.join(format!("{name}.wasm")))?;
    }
    let warm = Runtime::new(limits, Some(CodeCache::new(cache_dir.path())))?;
    let started = Instant::now();
    let from_cache = warm.load(&cdi_path)?;
    let cached = started.elapsed();
    assert_eq!(from_cache.code_source, wukong::plugin::CodeSource::Cache);
    let started = Instant::now();
    let loaded: Vec<Plugin> = bundled
        .iter()
        .map(|name| warm.load(&dir.join(format!("{name}.wasm"))))
        .collect::<Result<_, _>>()?;
    let all_cached = started.elapsed();

    // Calls.
    let upstream = Upstream {
        networks: Vec::new(),
        volumes: Vec::new(),
        lifecycle: None,
    };
    let reader: Arc<dyn ClusterReader> = Arc::new(FixtureCluster::new(converged_disks())?);
    let storage_context = Context {
        wukong: wukong_record(),
        config: "{}".into(),
        backend: "default".into(),
        now: "2026-01-01T00:00:00Z".into(),
    };
    let noop_context = Context {
        wukong: wukong_record(),
        config: r#"{"mode":"noop"}"#.into(),
        backend: "default".into(),
        now: "2026-01-01T00:00:00Z".into(),
    };
    let hostile = loaded
        .iter()
        .find(|p| p.manifest.name == "hostile")
        .ok_or_else(|| anyhow::anyhow!("hostile plugin missing"))?;
    let request = |context| StepRequest {
        phase: Phase::Reconcile,
        context,
        upstream: &upstream,
    };
    let outcome = cdi.call(request(&storage_context), Arc::clone(&reader))?;
    anyhow::ensure!(
        matches!(&outcome.status, wukong::plugin::StepStatus::Volumes(v) if v.len() == DISKS && v.iter().all(|v| v.bound)),
        "the storage step sees 4 bound disks"
    );

    let (noop_p50, noop_p99) = time_calls(WARM_UP, CALLS, || {
        drop(hostile.call(request(&noop_context), Arc::clone(&reader)))
    });
    let (step_p50, step_p99) = time_calls(WARM_UP, CALLS, || {
        drop(cdi.call(request(&storage_context), Arc::clone(&reader)))
    });
    let (inst_p50, inst_p99) = time_calls(WARM_UP, CALLS, || drop(cdi.instantiate_only()));

    let native_cluster = {
        let mut cluster = wukong_plugin_sdk::FixtureCluster::new();
        for object in converged_disks() {
            cluster = cluster.with(object);
        }
        cluster
    };
    let sdk_context: wukong_plugin_sdk::Context =
        serde_json::from_value(serde_json::to_value(&storage_context)?)?;
    let sdk_upstream: wukong_plugin_sdk::Upstream =
        serde_json::from_value(serde_json::to_value(&upstream)?)?;
    let (native_p50, native_p99) = time_calls(WARM_UP, CALLS, || {
        drop(wukong_plugin_sdk::native::storage_reconcile::<
            cdi_storage::CdiStorage,
        >(&sdk_context, &sdk_upstream, &native_cluster));
    });

    // A plugin that loops forever, stopped by the deadline: how far past it.
    let deadline = Duration::from_millis(200);
    let loop_runtime = Runtime::new(
        RuntimeLimits {
            deadline_ms: 200,
            fuel: u64::MAX / 2,
            ..RuntimeLimits::default()
        },
        None,
    )?;
    let looping = loop_runtime.load(&dir.join("hostile_plugin.wasm"))?;
    let loop_context = Context {
        wukong: wukong_record(),
        config: r#"{"mode":"loop"}"#.into(),
        backend: "default".into(),
        now: "2026-01-01T00:00:00Z".into(),
    };
    let overshoots: Vec<Duration> = (0..10)
        .map(|_| {
            let started = Instant::now();
            let _ = looping.call(request(&loop_context), Arc::clone(&reader));
            started.elapsed().saturating_sub(deadline)
        })
        .collect();
    let worst_overshoot = overshoots.iter().max().copied().unwrap_or_default();

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("plugin-call benchmark ({CALLS} calls each, after {WARM_UP} warm-up calls)");
    println!(
        "  no-op step (instantiate + call + checks) p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(noop_p50),
        us(noop_p99)
    );
    println!(
        "  storage step, {DISKS} disks, wasm           p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(step_p50),
        us(step_p99)
    );
    println!(
        "  storage step, {DISKS} disks, native         p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(native_p50),
        us(native_p99)
    );
    println!(
        "  wasm/native ratio (p50)                  {:>8.2}x",
        step_p50.as_secs_f64() / native_p50.as_secs_f64().max(1e-9)
    );
    println!(
        "  instantiate only                         p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(inst_p50),
        us(inst_p99)
    );
    println!(
        "  load cdi-storage from .wasm (compile)    {:>8.1} ms",
        ms(compile)
    );
    println!(
        "  load cdi-storage from the code cache     {:>8.1} ms",
        ms(cached)
    );
    println!(
        "  load {} plugins from the code cache       {:>8.1} ms",
        loaded.len(),
        ms(all_cached)
    );
    println!(
        "  forever-loop stopped past its 200 ms deadline (worst of 10) {:>6.1} ms",
        ms(worst_overshoot)
    );
    Ok(())
}
