//! A KubeVirt simulator: nodes, storage, CDI, virt-controller/virt-handler, migrations and
//! the `subresources.kubevirt.io` aggregated API, talking to a real API server.

mod admission;
pub mod api;
mod cdi;
mod gc;
mod https;
mod informers;
mod migration;
pub mod nodes;
mod scheduler;
mod storage;
pub mod util;
mod vm;
mod vm_status;
mod vmi;
mod vmi_status;
mod vmi_volumes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use crate::TestEnv;
use crate::error::Result;
pub use api::SubresourceCall;
pub use nodes::StorageClassSpec;

/// Annotation on a VM/VMI: the guest ignores ACPI, so a graceful stop ends only by force.
pub const ANN_IGNORE_ACPI: &str = "sim.wukong.io/ignore-acpi";
/// Annotation on a VMI (or a migration): the migration fails.
pub const ANN_FAIL_MIGRATION: &str = "sim.wukong.io/fail-migration";
/// Annotation on a DataVolume: the import fails.
pub const ANN_FAIL_IMPORT: &str = "sim.wukong.io/fail-import";
/// Annotation on a VMI: the guest exits by itself, `"succeeded"` or `"failed"`.
pub const ANN_GUEST_EXIT: &str = "sim.wukong.io/guest-exit";

/// Every delay and failure of the simulator. [`SimConfig::fast`] has no delays at all.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many nodes to create (`sim-node-0`...).
    pub nodes: usize,
    /// Node name prefix.
    pub node_prefix: String,
    /// Allocatable CPU of each node (a quantity).
    pub node_cpu: String,
    /// Allocatable memory of each node (a quantity).
    pub node_memory: String,
    /// StorageClasses to create at start.
    pub storage_classes: Vec<StorageClassSpec>,
    /// PVC Pending → Bound.
    pub pvc_bind_delay: Duration,
    /// DataVolume: each phase step and each progress step of an import.
    pub import_step_delay: Duration,
    /// How many progress steps an import takes to reach 100%.
    pub import_steps: u32,
    /// Every import fails (per DataVolume: annotation [`ANN_FAIL_IMPORT`]).
    pub import_fail: bool,
    /// VMI Pending → Scheduling → Scheduled, each.
    pub scheduling_delay: Duration,
    /// VMI Scheduled → Running.
    pub boot_delay: Duration,
    /// The guest agent connects (condition AgentConnected).
    pub guest_agent: bool,
    /// How long a guest that honours ACPI takes to shut down.
    pub guest_shutdown_delay: Duration,
    /// Every guest ignores ACPI (per VM/VMI: annotation [`ANN_IGNORE_ACPI`]).
    pub guest_ignores_acpi: bool,
    /// Every guest ignores ACPI and is not killed at the end of its grace period either
    /// (a stuck launcher): only a stop with grace period 0 ends it. Per VM/VMI:
    /// [`ANN_IGNORE_ACPI`] set to `"hang"`.
    pub guest_hangs_on_shutdown: bool,
    /// Each migration phase before Running.
    pub migration_step_delay: Duration,
    /// A migration's Running phase.
    pub migration_duration: Duration,
    /// How long a migration whose target fits no node waits before it fails (KubeVirt's
    /// `defaultUnschedulablePendingTimeoutSeconds`, 5 minutes).
    pub migration_unschedulable_timeout: Duration,
    /// Every migration fails (per VMI: annotation [`ANN_FAIL_MIGRATION`]).
    pub migration_fail: bool,
    /// How long a VMI on a NotReady node keeps `Running` before it is marked Failed (real
    /// KubeVirt waits for virt-handler's heartbeat to time out, minutes).
    pub node_failure_delay: Duration,
    /// How often a waiting controller looks again (unschedulable VMI, unbound volume).
    pub retry_interval: Duration,
    /// Serve `subresources.kubevirt.io` through the aggregator (needs a network namespace).
    pub serve_api: bool,
}

impl Default for SimConfig {
    /// Delays a person can watch in `kubectl get -w`.
    fn default() -> Self {
        let ms = Duration::from_millis;
        Self {
            nodes: 3,
            node_prefix: "sim-node-".into(),
            node_cpu: "8".into(),
            node_memory: "32Gi".into(),
            storage_classes: StorageClassSpec::defaults(),
            pvc_bind_delay: ms(300),
            import_step_delay: ms(500),
            import_steps: 4,
            import_fail: false,
            scheduling_delay: ms(300),
            boot_delay: ms(1000),
            guest_agent: true,
            guest_shutdown_delay: ms(1000),
            guest_ignores_acpi: false,
            guest_hangs_on_shutdown: false,
            migration_step_delay: ms(300),
            migration_duration: ms(2000),
            migration_unschedulable_timeout: Duration::from_secs(300),
            migration_fail: false,
            node_failure_delay: ms(0),
            retry_interval: ms(500),
            serve_api: true,
        }
    }
}

impl SimConfig {
    /// No delays: for fast tests.
    pub fn fast() -> Self {
        let zero = Duration::ZERO;
        Self {
            pvc_bind_delay: zero,
            import_step_delay: zero,
            import_steps: 2,
            scheduling_delay: zero,
            boot_delay: zero,
            guest_shutdown_delay: zero,
            migration_step_delay: zero,
            migration_duration: zero,
            retry_interval: Duration::from_millis(100),
            ..Self::default()
        }
    }
}

/// State shared by the controllers and the API server.
pub(crate) struct Ctx {
    pub client: kube::Client,
    cfg: RwLock<SimConfig>,
    timers: Mutex<HashMap<String, Instant>>,
    pub calls: Mutex<Vec<SubresourceCall>>,
    next_ip: AtomicU32,
    /// The watch caches every controller reads.
    pub informers: informers::Informers,
    /// The scheduler's view of Nodes and VMIs (from the informers) and its assumptions.
    placement: scheduler::Placement,
}

impl Ctx {
    pub fn cfg(&self) -> SimConfig {
        self.cfg
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// `None` once `delay` has passed since `key` was first asked about, else the rest.
    pub fn wait(&self, key: String, delay: Duration) -> Option<Duration> {
        if delay.is_zero() {
            return None;
        }
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        let since = *timers.entry(key).or_insert_with(Instant::now);
        delay.checked_sub(since.elapsed()).filter(|d| !d.is_zero())
    }

    /// A fresh pod-network address.
    pub fn next_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed) + 2;
        format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2)
    }

    pub fn record(&self, call: SubresourceCall) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }
}

/// The running simulator. Dropping it stops its controllers and its API listener
/// (the API registration goes with the control plane).
pub struct Simulator {
    ctx: Arc<Ctx>,
    tasks: Vec<JoinHandle<()>>,
    api_addr: Option<std::net::SocketAddr>,
}

impl Simulator {
    /// Creates the nodes and storage classes, starts every controller and, when
    /// `config.serve_api`, the aggregated API (waits until its APIService is Available).
    pub async fn start(env: &TestEnv, config: SimConfig) -> Result<Self> {
        let serve_api = config.serve_api;
        let mut sim = Self::start_controllers(env.client(), config).await?;
        // Validating webhooks as virt-api and Multus register them (admission.rs).
        sim.tasks
            .push(admission::serve(env, sim.ctx.clone()).await?);
        if serve_api {
            let (addr, task) = api::serve(env, sim.ctx.clone()).await?;
            sim.api_addr = Some(addr);
            sim.tasks.push(task);
        }
        Ok(sim)
    }

    /// Nodes, storage classes and controllers only (no aggregated API), on any cluster.
    pub async fn start_controllers(client: kube::Client, config: SimConfig) -> Result<Self> {
        let informers = informers::Informers::new();
        let placement =
            scheduler::Placement::new(informers.nodes.store.clone(), informers.vmis.store.clone());
        let ctx = Arc::new(Ctx {
            client,
            cfg: RwLock::new(config),
            timers: Mutex::default(),
            calls: Mutex::default(),
            next_ip: AtomicU32::new(0),
            informers,
            placement,
        });
        // The controllers subscribe to the informers before these start.
        let loops: Vec<BoxFuture<'static, ()>> = vec![
            Box::pin(storage::run(ctx.clone())),
            cdi::run(ctx.clone()),
            vm::run(ctx.clone()),
            vmi::run(ctx.clone()),
            Box::pin(migration::run(ctx.clone())),
            Box::pin(gc::run(ctx.clone())),
        ];
        let mut tasks = ctx.informers.start(&ctx.client).await;
        nodes::create(&ctx).await?;
        ctx.placement.wait_for_nodes(ctx.cfg().nodes).await;
        tasks.extend(loops.into_iter().map(tokio::spawn));
        Ok(Self {
            ctx,
            tasks,
            api_addr: None,
        })
    }

    /// Every subresource call the aggregated API received, in order.
    pub fn calls(&self) -> Vec<SubresourceCall> {
        self.ctx.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// How many calls of `action` (e.g. `"pause"`) were made on `namespace/name`.
    pub fn count_calls(&self, action: &str, namespace: &str, name: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.action == action && c.namespace == namespace && c.name == name)
            .count()
    }

    /// The current configuration.
    pub fn config(&self) -> SimConfig {
        self.ctx.cfg()
    }

    /// Changes the configuration while running (e.g. make migrations fail).
    pub fn update_config(&self, f: impl FnOnce(&mut SimConfig)) {
        let mut cfg = self.ctx.cfg.write().unwrap_or_else(|p| p.into_inner());
        f(&mut cfg);
    }

    /// The simulated node names.
    pub fn node_names(&self) -> Vec<String> {
        let cfg = self.ctx.cfg();
        (0..cfg.nodes)
            .map(|i| format!("{}{i}", cfg.node_prefix))
            .collect()
    }

    /// Marks a node Ready or NotReady (VMIs on a NotReady node fail, nothing new lands there).
    pub async fn set_node_ready(&self, node: &str, ready: bool) -> Result<()> {
        nodes::set_ready(&self.ctx.client, node, ready).await
    }

    /// Where the aggregated API listens (inside the network namespace).
    pub fn api_address(&self) -> Option<std::net::SocketAddr> {
        self.api_addr
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
