//! The one wasmtime `Engine`: component model, pooling allocator, epoch interruption and
//! fuel. The epoch ticker holds only a weak reference, so dropping the runtime stops it.

use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeLimits;

/// How often the epoch advances: the resolution of the wall-clock deadline.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Builds the engine for these limits.
pub(crate) fn build(limits: &RuntimeLimits) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // Each component has a handful of core instances (the plugin, WASI adapter shims).
    pool.total_component_instances(limits.max_instances)
        .total_core_instances(limits.max_instances * 16)
        .total_memories(limits.max_instances * 2)
        .total_tables(limits.max_instances * 8)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_core_instances_per_component(64)
        .max_memory_size(limits.memory_bytes)
        .table_elements(limits.table_elements)
        // CPython components carry large instance state.
        .max_core_instance_size(8 << 20)
        .max_component_instance_size(8 << 20);
    keep_memory_resident(&mut pool, limits);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(true)
        .max_wasm_stack(limits.stack_bytes)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        // Plugins must not rely on NaN bit patterns: identical outcomes everywhere.
        .cranelift_nan_canonicalization(true);
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// A fresh instance's first touches of its linear memory were page faults: by default a
/// slot is reset with `madvise`, which drops its pages. Where the kernel can report which
/// pages a call dirtied (`PAGEMAP_SCAN`, Linux 6.7), keep slots resident and reset only
/// those pages: a 4-disk storage step went from about 105 to 65 µs. Without it, keeping
/// pages resident means `memset`ting all of them on every call, which costs more than it
/// saves, so the default stays.
fn keep_memory_resident(pool: &mut PoolingAllocationConfig, limits: &RuntimeLimits) {
    if !kernel_has_pagemap_scan() {
        return;
    }
    pool.pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(RESIDENT_MEMORY_BYTES.min(limits.memory_bytes))
        .table_keep_resident(RESIDENT_TABLE_BYTES);
}

/// Bytes an idle sandbox slot keeps resident between calls (none without `PAGEMAP_SCAN`).
pub fn kept_resident_bytes(limits: &RuntimeLimits) -> usize {
    if !kernel_has_pagemap_scan() {
        return 0;
    }
    RESIDENT_MEMORY_BYTES.min(limits.memory_bytes) + RESIDENT_TABLE_BYTES
}

/// Linear memory kept resident per slot where `PAGEMAP_SCAN` resets it: a Rust plugin's
/// stack, data and the heap of a typical call.
const RESIDENT_MEMORY_BYTES: usize = 16 << 20;
/// Table bytes kept resident per slot.
const RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// `PAGEMAP_SCAN` arrived in Linux 6.7.
fn kernel_has_pagemap_scan() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = thread::Builder::new()
        .name("wukong-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the epoch ticker: plugin deadlines will not fire");
    }
}

/// Epoch ticks for a deadline, rounded up, plus one for the tick in progress.
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_micros().max(1);
    u64::try_from(deadline.as_micros().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}
