//! The operator's worst-case memory, computed from the config at load: a config that
//! could take more than the process may use is refused, instead of the kernel killing the
//! operator (and then its standby) in the middle of two large plugin calls.
//!
//! The worst case is every concurrent reconcile inside a plugin call that fills its
//! sandbox, the other sandbox slots holding the pages they keep resident between calls,
//! the compiled code of every loaded plugin, and the host itself.

use crate::plugin::RuntimeLimits;

/// The host's own memory besides the sandboxes: the tokio runtime, the watch caches, the
/// engine. An operator serving 300 Wukongs with the bundled plugins peaked at 96 MiB RSS
/// (issue 14's measure), sandboxes included; 128 MiB leaves room for the caches to grow.
pub const HOST_RESERVE_BYTES: u64 = 128 << 20;

/// The parts of the worst case, for the refusal message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Plugin calls that can run at once: one per concurrent reconcile, at most one per
    /// sandbox slot.
    pub calls_at_once: u64,
    /// One call's most: its linear memory, tables, stack, outcome and log.
    pub per_call: u64,
    /// Sandbox slots not in a call, each keeping `kept_per_slot` bytes resident.
    pub idle_slots: u64,
    pub kept_per_slot: u64,
    /// Compiled code of the loaded plugins.
    pub code: u64,
    pub host: u64,
}

impl MemoryBudget {
    /// `concurrency` reconciles at once; `kept_per_slot` is what an idle slot keeps
    /// resident (see `plugin::engine`); `code` the loaded plugins' compiled code.
    pub fn worst_case(
        limits: &RuntimeLimits,
        concurrency: u64,
        kept_per_slot: u64,
        code: u64,
    ) -> Self {
        let slots = u64::from(limits.max_instances);
        let calls_at_once = concurrency.min(slots);
        // A table element is a pointer; the outcome is held as bytes and parsed once.
        let per_call = (limits.memory_bytes as u64)
            .saturating_add((limits.table_elements as u64).saturating_mul(8))
            .saturating_add(limits.stack_bytes as u64)
            .saturating_add((limits.output_bytes as u64).saturating_mul(2))
            .saturating_add(limits.log_bytes as u64);
        Self {
            calls_at_once,
            per_call,
            idle_slots: slots - calls_at_once,
            kept_per_slot,
            code,
            host: HOST_RESERVE_BYTES,
        }
    }

    pub fn total(&self) -> u64 {
        self.calls_at_once
            .saturating_mul(self.per_call)
            .saturating_add(self.idle_slots.saturating_mul(self.kept_per_slot))
            .saturating_add(self.code)
            .saturating_add(self.host)
    }

    /// Refuses a worst case above `limit`, saying what adds up and what to change.
    pub fn fits(&self, limit: u64, limit_source: &str) -> Result<(), String> {
        if self.total() <= limit {
            return Ok(());
        }
        Err(format!(
            "the operator could need {total} ({calls} plugin calls at once × {per_call} each, \
             {idle} idle sandbox slots × {kept} kept resident, {code} of compiled plugins, \
             {host} for the host), more than the {limit} it may use ({limit_source}); \
             lower [controller] concurrency, [runtime] memoryBytes or [runtime] maxInstances, \
             or give the operator more memory",
            total = mib(self.total()),
            calls = self.calls_at_once,
            per_call = mib(self.per_call),
            idle = self.idle_slots,
            kept = mib(self.kept_per_slot),
            code = mib(self.code),
            host = mib(self.host),
            limit = mib(limit),
        ))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", (bytes as f64 / f64::from(1 << 20)).ceil())
}

/// The memory limit of the cgroup this process runs in (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), `None` when there is none.
pub fn cgroup_memory_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
            candidates.push("/sys/fs/cgroup/memory.max".to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
            candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned());
        }
    }
    candidates
        .iter()
        .find_map(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| parse_limit(&text))
}

/// `max`, or a value no machine has (v1 reports "unlimited" as about 2^63), is no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limits_with_sixteen_reconciles_need_gibibytes() {
        let limits = RuntimeLimits::default();
        let budget = MemoryBudget::worst_case(&limits, 16, 16 << 20, 20 << 20);
        assert_eq!(budget.calls_at_once, 16);
        assert_eq!(budget.idle_slots, 48);
        assert!(budget.total() > 4 << 30, "{budget:?}");
        let refused = budget.fits(512 << 20, "the cgroup limit").unwrap_err();
        assert!(
            refused.contains("more than the 512 MiB it may use (the cgroup limit)")
                && refused.contains("16 plugin calls at once"),
            "{refused}"
        );
    }

    #[test]
    fn calls_at_once_are_bounded_by_the_slots() {
        let limits = RuntimeLimits {
            max_instances: 4,
            ..RuntimeLimits::default()
        };
        let budget = MemoryBudget::worst_case(&limits, 16, 0, 0);
        assert_eq!((budget.calls_at_once, budget.idle_slots), (4, 0));
    }

    #[test]
    fn the_deployed_shape_fits_its_limit() {
        // deploy/wukong.toml: 8 reconciles, 8 slots, 32 MiB per call.
        let limits = RuntimeLimits {
            memory_bytes: 32 << 20,
            max_instances: 8,
            ..RuntimeLimits::default()
        };
        let budget = MemoryBudget::worst_case(&limits, 8, 16 << 20, 30 << 20);
        budget.fits(512 << 20, "the cgroup limit").unwrap();
    }

    #[test]
    fn unlimited_is_no_limit() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
    }
}
