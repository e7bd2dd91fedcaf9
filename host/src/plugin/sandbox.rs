//! One call's store, made in one place, and its state: WASI that grants nothing, the
//! resource limiter, the scoped `cluster` import with its call cap, and the `log` import.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::v0_1_0::imports::wukong::plugin::{cluster, log};
use super::engine::deadline_ticks;
use super::types::{KindRef, Level, ObjectRef};
use super::{ClusterReader, RuntimeLimits};

/// Why the sandbox stopped a call, noted by the host side before the trap reaches us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    Memory,
    HostCalls,
    UndeclaredRead(String),
    /// More `log` messages, or bytes of them, than the call may send.
    LogFlood,
}

/// Everything one call's store holds. Built fresh for every call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    memory_limit: usize,
    table_limit: usize,
    host_calls_left: u32,
    log_messages_left: u32,
    log_bytes_left: usize,
    /// Bytes of `log` messages sent: counted in the call's output.
    pub(crate) log_bytes_used: usize,
    reader: Arc<dyn ClusterReader>,
    reads: Arc<[KindRef]>,
    namespace: String,
    plugin: Arc<str>,
    pub(crate) violation: Option<Violation>,
}

/// A fresh store for one call (or one `describe`), under every limit: the resource
/// limiter, the fuel budget and the wall-clock deadline. Every store is made here, so no
/// caller can forget one of them.
pub(crate) fn new_store(
    engine: &Engine,
    limits: &RuntimeLimits,
    plugin: Arc<str>,
    reads: Arc<[KindRef]>,
    namespace: String,
    reader: Arc<dyn ClusterReader>,
) -> wasmtime::Result<Store<CallState>> {
    let state = CallState::new(limits, plugin, reads, namespace, reader);
    let mut store = Store::new(engine, state);
    store.limiter(|s| s);
    store.set_fuel(limits.fuel)?;
    store.set_epoch_deadline(deadline_ticks(limits.deadline()));
    Ok(store)
}

impl CallState {
    fn new(
        limits: &RuntimeLimits,
        plugin: Arc<str>,
        reads: Arc<[KindRef]>,
        namespace: String,
        reader: Arc<dyn ClusterReader>,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(limits.log_bytes);
        let stderr = MemoryOutputPipe::new(limits.log_bytes);
        // No preopened dirs, no env, no args, no network, no inherited stdio.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            stdout,
            stderr,
            memory_limit: limits.memory_bytes,
            table_limit: limits.table_elements,
            host_calls_left: limits.host_calls,
            log_messages_left: limits.log_messages,
            log_bytes_left: limits.log_bytes,
            log_bytes_used: 0,
            reader,
            reads,
            namespace,
            plugin,
            violation: None,
        }
    }

    /// Counts a host call; traps once the cap is reached.
    fn spend_host_call(&mut self) -> wasmtime::Result<()> {
        if self.host_calls_left == 0 {
            self.violation = Some(Violation::HostCalls);
            return Err(wasmtime::Error::msg("host call limit reached"));
        }
        self.host_calls_left -= 1;
        Ok(())
    }

    /// Traps on a read of an undeclared kind or of another namespace.
    fn check_read(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> wasmtime::Result<()> {
        let declared = self
            .reads
            .iter()
            .any(|k| k.api_version == api_version && k.kind == kind);
        let problem = if !declared {
            Some(format!(
                "read of {api_version}/{kind}, which the manifest does not declare in `reads`"
            ))
        } else if namespace.is_some_and(|ns| ns != self.namespace) {
            Some(format!(
                "read of {kind} in namespace {:?}; only {:?} is allowed",
                namespace.unwrap_or_default(),
                self.namespace
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.violation = Some(Violation::UndeclaredRead(problem.clone()));
                Err(wasmtime::Error::msg(problem))
            }
            None => Ok(()),
        }
    }

    /// Sends what the guest printed to the log, tagged with the plugin.
    pub(crate) fn flush_output(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if !bytes.is_empty() {
                tracing::info!(plugin = %self.plugin, stream, "{}", String::from_utf8_lossy(&bytes).trim_end());
            }
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.violation = Some(Violation::Memory);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_limit)
    }
}

impl super::bindings::v0_1_0::imports::wukong::plugin::types::Host for CallState {}

impl cluster::Host for CallState {
    fn get(&mut self, target: ObjectRef) -> wasmtime::Result<Result<Option<String>, String>> {
        self.spend_host_call()?;
        self.check_read(
            &target.api_version,
            &target.kind,
            target.namespace.as_deref(),
        )?;
        Ok(self.reader.get(&target, &self.namespace))
    }

    fn list(
        &mut self,
        kind: KindRef,
        namespace: Option<String>,
        label_selector: Option<String>,
    ) -> wasmtime::Result<Result<Vec<String>, String>> {
        self.spend_host_call()?;
        self.check_read(&kind.api_version, &kind.kind, namespace.as_deref())?;
        Ok(self
            .reader
            .list(&kind, &self.namespace, label_selector.as_deref()))
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.spend_host_call()?;
        if self.log_messages_left == 0 || message.len() > self.log_bytes_left {
            self.violation = Some(Violation::LogFlood);
            return Err(wasmtime::Error::msg("log limit reached"));
        }
        self.log_messages_left -= 1;
        self.log_bytes_left -= message.len();
        self.log_bytes_used += message.len();
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}
