//! Every limit a plugin call runs under, in one place, each with its reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits for one plugin call. All configurable in `wukong.toml` under `[runtime]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimeLimits {
    /// Wall-clock deadline per call, milliseconds: a looping plugin costs one step, not a worker.
    pub deadline_ms: u64,
    /// Instruction budget per call (wasmtime fuel, about one unit per instruction): a
    /// deterministic bound that does not depend on machine load.
    pub fuel: u64,
    /// Linear memory per instance, bytes: a plugin that allocates without end fails alone.
    pub memory_bytes: usize,
    /// Table elements per table: bounds indirect-call tables (CPython's are large).
    pub table_elements: usize,
    /// Wasm stack, bytes: unbounded recursion traps instead of taking the host's stack.
    pub stack_bytes: usize,
    /// Bytes of outcome a call may return: what reaches the apiserver stays small.
    pub output_bytes: usize,
    /// `cluster` calls per invocation: a plugin cannot hammer the host's cache.
    pub host_calls: u32,
    /// Bytes of guest stdout/stderr kept per call for the log, and bytes of `log` messages
    /// a call may send (these count in `outputBytes` too): a plugin cannot flood the log.
    pub log_bytes: usize,
    /// `log` messages per call, for the same reason.
    pub log_messages: u32,
    /// Instances alive at once (the pooling allocator's slots): concurrent calls.
    pub max_instances: u32,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        Self {
            deadline_ms: 1_000,
            fuel: 20_000_000_000,
            memory_bytes: 256 << 20,
            table_elements: 100_000,
            stack_bytes: 512 << 10,
            output_bytes: 4 << 20,
            host_calls: 10_000,
            log_bytes: 64 << 10,
            log_messages: 200,
            max_instances: 64,
        }
    }
}

impl RuntimeLimits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Refuses limits the runtime cannot honour, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(&str, bool); 7] = [
            ("runtime.deadlineMs", self.deadline_ms > 0),
            ("runtime.fuel", self.fuel > 0),
            ("runtime.memoryBytes", self.memory_bytes >= 1 << 16),
            ("runtime.stackBytes", self.stack_bytes >= 16 << 10),
            ("runtime.outputBytes", self.output_bytes > 0),
            ("runtime.maxInstances", self.max_instances > 0),
            ("runtime.tableElements", self.table_elements > 0),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((key, _)) => Err(format!("{key} is out of range")),
            None => Ok(()),
        }
    }
}
