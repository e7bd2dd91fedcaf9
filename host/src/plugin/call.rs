//! One call: a fresh store with this call's limits, instantiate from the pre-linked
//! component, call, classify what went wrong, check the outcome.

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::sandbox::{self, CallState, Violation};
use super::types::{Effects, StepError};
use super::world::Raw;
use super::{
    CallError, CallFailure, ClusterReader, Outcome, Phase, Plugin, StepRequest, StepStatus, guard,
};

impl Plugin {
    /// Runs one step call in a fresh instance and checks its outcome.
    pub fn call(
        &self,
        request: StepRequest<'_>,
        reader: Arc<dyn ClusterReader>,
    ) -> Result<Outcome, CallError> {
        let fail = |failure| CallError {
            plugin: self.id.to_string(),
            failure,
        };
        let wukong = &request.context.wukong;
        // Cluster-scoped objects belong to the backend: `storage/longhorn`.
        let backend = format!("{}/{}", self.step(), request.context.backend);
        let mut store = sandbox::new_store(
            &self.engine,
            &self.limits,
            Arc::clone(&self.id),
            Arc::clone(&self.reads),
            wukong.namespace.clone(),
            Arc::clone(&reader),
        )
        .map_err(|e| fail(CallFailure::Instantiate(e.to_string())))?;

        let raw = self.invoke(&mut store, request);
        store.data().flush_output();
        let (effects, status) = match raw {
            Ok(Ok(parts)) => parts,
            Ok(Err(step_error)) => {
                return Err(fail(CallFailure::Step(describe_step_error(&step_error))));
            }
            Err(error) => return Err(fail(self.classify(&store, &error))),
        };
        // What the plugin logged counts too: its messages went out of the sandbox as well.
        let size = outcome_size(&effects, &status) + store.data().log_bytes_used;
        if size > self.limits.output_bytes {
            return Err(fail(CallFailure::OutputTooLarge {
                size,
                limit: self.limits.output_bytes,
            }));
        }
        guard::check(
            self.step(),
            &self.manifest.capabilities,
            wukong,
            &backend,
            reader.as_ref(),
            effects,
            status,
        )
        .map_err(fail)
    }

    /// Instantiates a fresh instance and drops it: a cheap liveness check of the plugin
    /// and the instance pool, and the instantiate-only figure of the benchmark.
    pub fn instantiate_only(&self) -> Result<(), CallError> {
        let fail = |e: wasmtime::Error| CallError {
            plugin: self.id.to_string(),
            failure: CallFailure::Instantiate(format!("{e:#}")),
        };
        let reader: Arc<dyn ClusterReader> = Arc::new(super::loader::NoCluster);
        let mut store = sandbox::new_store(
            &self.engine,
            &self.limits,
            Arc::clone(&self.id),
            Arc::clone(&self.reads),
            String::new(),
            reader,
        )
        .map_err(fail)?;
        self.pre.instantiate_only(&mut store).map_err(fail)
    }

    fn invoke(
        &self,
        store: &mut Store<CallState>,
        request: StepRequest<'_>,
    ) -> Raw<(Effects, StepStatus)> {
        let (ctx, up) = (request.context, request.upstream);
        match request.phase {
            Phase::Reconcile => self.pre.reconcile(store, ctx, up),
            Phase::Finalize => Ok(self
                .pre
                .finalize(store, ctx, up)?
                .map(|effects| (effects, StepStatus::Finalized))),
        }
    }

    /// Turns a trap or host error into the failure a user can act on.
    fn classify(&self, store: &Store<CallState>, error: &wasmtime::Error) -> CallFailure {
        match &store.data().violation {
            Some(Violation::Memory) => return CallFailure::Memory(self.limits.memory_bytes),
            Some(Violation::HostCalls) => {
                return CallFailure::HostCallLimit(self.limits.host_calls);
            }
            Some(Violation::UndeclaredRead(what)) => return CallFailure::Capability(what.clone()),
            Some(Violation::LogFlood) => {
                return CallFailure::LogLimit {
                    messages: self.limits.log_messages,
                    bytes: self.limits.log_bytes,
                };
            }
            None => {}
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallFailure::Deadline(self.limits.deadline_ms),
            Some(Trap::OutOfFuel) => CallFailure::Fuel(self.limits.fuel),
            Some(Trap::StackOverflow) => CallFailure::StackOverflow,
            Some(trap) => {
                let stderr = String::from_utf8_lossy(&store.data().stderr.contents()).into_owned();
                match panic_message(&stderr) {
                    Some(message) => CallFailure::Panic(message),
                    None => CallFailure::Trap(trap.to_string()),
                }
            }
            None if error.to_string().contains("instance")
                && error.to_string().contains("limit") =>
            {
                CallFailure::Instantiate(format!("{error:#}"))
            }
            None => CallFailure::Trap(format!("{error:#}")),
        }
    }
}

/// The message of a Rust panic, as the guest's std printed it to stderr.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")?;
    let rest = &stderr[start..];
    let message = rest
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with("note:"))
        .collect::<Vec<_>>()
        .join(" ");
    Some(if message.trim().is_empty() {
        rest.lines().next().unwrap_or_default().to_owned()
    } else {
        message.trim().to_owned()
    })
}

fn describe_step_error(error: &StepError) -> String {
    match error {
        StepError::InvalidSpec(m) => format!("invalid spec: {m}"),
        StepError::InvalidConfig(m) => format!("invalid config: {m}"),
        StepError::Cluster(m) => format!("cluster read failed: {m}"),
        StepError::Internal(m) => format!("internal error: {m}"),
    }
}

/// Bytes the outcome takes as JSON, counted without building the JSON. The objects to
/// apply are JSON already: their length is counted as is, not re-escaped.
fn outcome_size(effects: &Effects, status: &StepStatus) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(effects.apply.iter().map(String::len).sum());
    let rest = (
        &effects.delete,
        &effects.actions,
        &effects.conditions,
        &effects.events,
        status,
    );
    // Serializing these plain types cannot fail; a failure would only undercount.
    let _ = serde_json::to_writer(&mut counter, &rest);
    counter.0
}
