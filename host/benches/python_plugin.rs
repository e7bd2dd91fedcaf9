//! The Python storage plugin (componentize-py, CPython inside) next to the Rust
//! cdi-storage plugin of the same behaviour: prints figures, asserts only that both give
//! the same answer.
//!
//! `cargo bench -p wukong --bench python_plugin` (after `tests/build-plugins.sh`):
//! - component size;
//! - load from `.wasm` (compile) and from the code cache (as after a restart);
//! - instantiate-only, a converged 4-disk storage step and a first 4-disk step (objects
//!   to create), p50/p99;
//! - the smallest memory and fuel limits the Python plugin loads (`describe`) and runs its
//!   4-disk step under, to compare with the defaults in `RuntimeLimits`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wukong::plugin::types::{Context, Upstream};
use wukong::plugin::{
    ClusterReader, CodeCache, CodeSource, Phase, Plugin, Runtime, RuntimeLimits, StepRequest,
    StepStatus,
};
use wukong::runner::FixtureCluster;

mod common;

use common::{DISKS, converged_disks, percentiles, plugin_dir, wukong_record};

const CALLS: usize = 1_000;
const WARM_UP: usize = 50;
const LOADS: usize = 5;

fn plugin_path(name: &str) -> PathBuf {
    plugin_dir().join(format!("{name}.wasm"))
}

fn context() -> Context {
    Context {
        wukong: wukong_record(),
        config: "{}".into(),
        backend: "default".into(),
        now: "2026-01-01T00:00:00Z".into(),
    }
}

fn time_calls(call: impl FnMut()) -> (Duration, Duration) {
    common::time_calls(WARM_UP, CALLS, call)
}

/// One plugin's figures.
struct Figures {
    size: u64,
    compile: Duration,
    cache_load: Duration,
    instantiate: (Duration, Duration),
    converged_step: (Duration, Duration),
    first_step: (Duration, Duration),
}

struct Calls {
    context: Context,
    upstream: Upstream,
    converged: Arc<dyn ClusterReader>,
    empty: Arc<dyn ClusterReader>,
}

impl Calls {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            context: context(),
            upstream: Upstream {
                networks: Vec::new(),
                volumes: Vec::new(),
                lifecycle: None,
            },
            converged: Arc::new(FixtureCluster::new(converged_disks())?),
            empty: Arc::new(FixtureCluster::new(Vec::new())?),
        })
    }

    fn step(&self, plugin: &Plugin, cluster: &Arc<dyn ClusterReader>) -> anyhow::Result<Value> {
        let request = StepRequest {
            phase: Phase::Reconcile,
            context: &self.context,
            upstream: &self.upstream,
        };
        let outcome = plugin.call(request, Arc::clone(cluster))?;
        anyhow::ensure!(
            matches!(&outcome.status, StepStatus::Volumes(v) if v.len() == DISKS),
            "{}: not a {DISKS}-volume storage outcome",
            plugin.id
        );
        Ok(serde_json::to_value(&outcome)?)
    }
}

fn measure(name: &str, calls: &Calls, limits: &RuntimeLimits) -> anyhow::Result<(Figures, Value)> {
    let path = plugin_path(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run tests/build-plugins.sh",
        path.display()
    );
    let size = std::fs::metadata(&path)?.len();
    let cache_dir = tempfile::tempdir()?;
    let runtime = Runtime::new(limits.clone(), Some(CodeCache::new(cache_dir.path())))?;
    let started = Instant::now();
    let compiled = runtime.load(&path)?;
    let compile = started.elapsed();
    anyhow::ensure!(
        compiled.code_source == CodeSource::Compiled,
        "{name}: compiled"
    );
    drop(compiled);

    // As after a restart: a new runtime, the code taken from the cache. Median of LOADS.
    let mut loads = Vec::with_capacity(LOADS);
    let mut plugin = None;
    for _ in 0..LOADS {
        let warm = Runtime::new(limits.clone(), Some(CodeCache::new(cache_dir.path())))?;
        let started = Instant::now();
        let loaded = warm.load(&path)?;
        loads.push(started.elapsed());
        anyhow::ensure!(
            loaded.code_source == CodeSource::Cache,
            "{name}: from cache"
        );
        plugin = Some(loaded);
    }
    let plugin = plugin.ok_or_else(|| anyhow::anyhow!("no load"))?;
    let cache_load = percentiles(loads).0;

    let answer = json!([
        calls.step(&plugin, &calls.converged)?,
        calls.step(&plugin, &calls.empty)?
    ]);
    let instantiate = time_calls(|| drop(plugin.instantiate_only()));
    let converged_step = time_calls(|| drop(calls.step(&plugin, &calls.converged)));
    let first_step = time_calls(|| drop(calls.step(&plugin, &calls.empty)));
    let figures = Figures {
        size,
        compile,
        cache_load,
        instantiate,
        converged_step,
        first_step,
    };
    Ok((figures, answer))
}

/// Whether the Python plugin loads (its `describe` call) and runs its converged 4-disk
/// step under `limits`.
fn runs_under(limits: RuntimeLimits, cache: &Path, calls: &Calls) -> bool {
    let Ok(runtime) = Runtime::new(limits, Some(CodeCache::new(cache))) else {
        return false;
    };
    runtime
        .load(&plugin_path("python_storage"))
        .is_ok_and(|plugin| calls.step(&plugin, &calls.converged).is_ok())
}

/// The smallest value in `low..=high` for which `ok` holds (`ok` is monotonic), to within
/// `precision`; `None` when even `high` fails.
fn smallest(mut low: u64, mut high: u64, precision: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
    if !ok(high) {
        return None;
    }
    while high - low > precision {
        let middle = low + (high - low) / 2;
        if ok(middle) {
            high = middle
        } else {
            low = middle
        }
    }
    Some(high)
}

fn main() -> anyhow::Result<()> {
    let limits = RuntimeLimits::default();
    let calls = Calls::new()?;
    let (rust, rust_answer) = measure("cdi_storage", &calls, &limits)?;
    let (python, python_answer) = measure("python_storage", &calls, &limits)?;
    anyhow::ensure!(
        rust_answer == python_answer,
        "the two plugins disagree:\n{rust_answer:#}\n{python_answer:#}"
    );

    // The Python plugin's floor under each limit, the others at their defaults.
    let cache = tempfile::tempdir()?;
    let mib = 1 << 20;
    let memory = smallest(mib, limits.memory_bytes as u64, mib, |bytes| {
        runs_under(
            RuntimeLimits {
                memory_bytes: bytes as usize,
                ..limits.clone()
            },
            cache.path(),
            &calls,
        )
    });
    let fuel = smallest(1_000, limits.fuel, 1_000_000, |fuel| {
        runs_under(
            RuntimeLimits {
                fuel,
                ..limits.clone()
            },
            cache.path(),
            &calls,
        )
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pair = |(p50, p99): (Duration, Duration)| format!("{:>8.1} / {:>8.1}", us(p50), us(p99));
    println!("python-storage (componentize-py) vs cdi-storage (Rust), same behaviour, same answer");
    println!(
        "  {CALLS} calls each after {WARM_UP} warm-up calls; loads: compile once, then median of {LOADS} from the cache"
    );
    println!(
        "                                        {:>19}   {:>19}",
        "Rust", "Python"
    );
    println!(
        "  component size                        {:>16.2} MB   {:>16.2} MB",
        rust.size as f64 / 1e6,
        python.size as f64 / 1e6
    );
    println!(
        "  load from .wasm (compile)             {:>16.1} ms   {:>16.1} ms",
        ms(rust.compile),
        ms(python.compile)
    );
    println!(
        "  load from the code cache              {:>16.1} ms   {:>16.1} ms",
        ms(rust.cache_load),
        ms(python.cache_load)
    );
    println!(
        "  instantiate only         p50/p99 µs {}   {}",
        pair(rust.instantiate),
        pair(python.instantiate)
    );
    println!(
        "  {DISKS}-disk step, converged  p50/p99 µs {}   {}",
        pair(rust.converged_step),
        pair(python.converged_step)
    );
    println!(
        "  {DISKS}-disk step, first      p50/p99 µs {}   {}",
        pair(rust.first_step),
        pair(python.first_step)
    );
    println!(
        "  Python/Rust converged step (p50)      {:>16.1}x",
        python.converged_step.0.as_secs_f64() / rust.converged_step.0.as_secs_f64().max(1e-9)
    );
    let show = |value: Option<u64>, unit: f64, suffix: &str| {
        value.map_or_else(
            || "fails even at the default".to_owned(),
            |v| format!("{:.1} {suffix}", v as f64 / unit),
        )
    };
    println!(
        "  Python load + step, smallest memory limit: {} (default {} MiB)",
        show(memory, mib as f64, "MiB"),
        limits.memory_bytes >> 20
    );
    println!(
        "  Python load + step, smallest fuel budget:  {} (default {:.0} M)",
        show(fuel, 1e6, "M"),
        limits.fuel as f64 / 1e6
    );
    Ok(())
}
