//! An operator under test: the real apiserver + the KubeVirt simulator, and the operator
//! with the bundled plugins running in-process (or as the real binary).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::{Client, ResourceExt};
use wukong::api::Wukong;
use wukong::config::{Backends, HostConfig};
use wukong::controller::{self, Context};
use wukong_testenv::{SimConfig, Simulator, TestEnv};

/// The bundled plugins' folder.
pub fn plugin_dir() -> PathBuf {
    super::plugin_wasm("cdi-storage")
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// What the hostile plugin's manifest asks for (tests/plugins/hostile), granted whole: its
/// modes test the rules that hold whatever a plugin is granted.
pub const HOSTILE_GRANTS: &str = r#"grants = { reads = ["v1/PersistentVolumeClaim", "storage.k8s.io/v1/StorageClass", "kubevirt.io/v1/VirtualMachineInstanceMigration"], writes = ["v1/PersistentVolumeClaim", "storage.k8s.io/v1/StorageClass", "kubevirt.io/v1/VirtualMachineInstanceMigration"], actions = ["virtualmachines/stop"] }"#;

/// A storage backend `name` served by the hostile plugin with `config` (a TOML inline
/// table), granted what it asks.
pub fn hostile_backend(name: &str, config: &str) -> String {
    format!(
        "[storage.{name}]\nplugin = \"{}\"\nconfig = {config}\n{HOSTILE_GRANTS}\n",
        super::plugin_wasm("hostile-plugin").display()
    )
}

/// The operator binary on `host_config(storage_default, extra)`, serving metrics on a free
/// port (JSON logs); its config and log go to `dir`. Returns it and the metrics address.
pub async fn start_with_metrics(
    cluster: &Cluster,
    dir: &Path,
    storage_default: &str,
    extra: &str,
) -> (OperatorProcess, std::net::SocketAddr) {
    let config = dir.join("wukong.toml");
    std::fs::write(&config, host_config(storage_default, extra)).expect("config");
    let log = dir.join("operator.log");
    let operator = OperatorProcess::start_as(
        &cluster.env.kubeconfig_path(),
        &config,
        &log,
        &["--metrics-addr", "127.0.0.1:0", "--log-format", "json"],
        &[],
    );
    let address = super::telemetry::metrics_address(&log, Duration::from_secs(60)).await;
    (operator, address)
}

/// The grants examples/wukong.toml gives the bundled plugin `file`, as a `grants = {...}`
/// line: tests grant what the shipped config grants, never restating it.
pub fn bundled_grants(file: &str) -> String {
    let example = include_str!("../../../examples/wukong.toml");
    let config = wukong::config::HostConfig::parse(example, "examples/wukong.toml")
        .expect("examples/wukong.toml parses");
    config
        .sections()
        .iter()
        .flat_map(|(_, section)| section.backends.values())
        .find(|backend| backend.plugin == Path::new(file))
        .map(|backend| backend.grants.to_toml())
        .unwrap_or_else(|| panic!("examples/wukong.toml has no backend with plugin {file}"))
}

/// A host config with every bundled backend; `storage_default` picks the storage default.
pub fn host_config(storage_default: &str, extra: &str) -> String {
    let plugin = |file: &str| format!("plugin = \"{file}\"\n{}", bundled_grants(file));
    format!(
        r#"
[runtime]
deadlineMs = 2000

[plugins]
dir = "{dir}"

[network]
default = "multus"
[network.multus]
{multus}

[storage]
default = "{storage_default}"
[storage.cdi]
{cdi}
[storage.longhorn]
{longhorn}
config = {{ createStorageClass = true }}
[storage.ceph-rbd]
{ceph}
config = {{ createStorageClass = true }}

[lifecycle]
[lifecycle.kubevirt]
{lifecycle}

[migration]
[migration.kubevirt]
{migration}
config = {{ watchIntervalSeconds = 1 }}
{extra}
"#,
        dir = plugin_dir().display(),
        multus = plugin("multus_network.wasm"),
        cdi = plugin("cdi_storage.wasm"),
        longhorn = plugin("longhorn_storage.wasm"),
        ceph = plugin("ceph_rbd_storage.wasm"),
        lifecycle = plugin("kubevirt_lifecycle.wasm"),
        migration = plugin("kubevirt_migration.wasm"),
    )
}

pub struct Cluster {
    pub env: TestEnv,
    pub sim: Simulator,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(SimConfig::fast()).await
    }

    /// With a simulator configured otherwise (e.g. more or bigger nodes).
    pub async fn start_with(config: SimConfig) -> Self {
        let env = TestEnv::start()
            .await
            .expect("control plane (run tests/testenv/provision.sh)");
        let sim = Simulator::start(&env, config).await.expect("simulator");
        Self { env, sim }
    }

    pub fn client(&self) -> Client {
        self.env.client()
    }
}

/// The operator running in this process.
pub struct InProcess {
    pub ctx: Arc<Context>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    pub async fn start(client: Client, config_toml: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()))
            .with_test_writer()
            .try_init();
        let config = HostConfig::parse(config_toml, "test.toml").expect("host config");
        let backends = tokio::task::spawn_blocking(move || Backends::load(&config, "test.toml"))
            .await
            .expect("join")
            .expect("backends");
        let ctx = Context::new(client, Arc::new(RwLock::new(Arc::new(backends))));
        let task = tokio::spawn({
            let ctx = Arc::clone(&ctx);
            async move {
                if let Err(e) = controller::run(ctx).await {
                    eprintln!("controller stopped: {e:#}");
                }
            }
        });
        Self { ctx, task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates a Wukong from YAML in `namespace`.
pub async fn create(client: &Client, namespace: &str, yaml: &str) -> Wukong {
    let wukong: Wukong = serde_yaml::from_str(yaml).expect("wukong yaml");
    Api::<Wukong>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &wukong)
        .await
        .expect("create wukong")
}

/// Polls a Wukong until `done` holds, or panics after `timeout` with its last status.
pub async fn wait_for(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Wukong) -> bool,
) -> Wukong {
    let api = Api::<Wukong>::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        if let Ok(wukong) = api.get(name).await {
            if done(&wukong) {
                return wukong;
            }
            if started.elapsed() > timeout {
                panic!(
                    "{namespace}/{name} did not get there in {timeout:?}; status: {}",
                    serde_yaml::to_string(&wukong.status).unwrap_or_default()
                );
            }
        } else if started.elapsed() > timeout {
            panic!("{namespace}/{name} not found after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The notes of the Warning events with `reason` in a namespace.
pub async fn warnings(client: &Client, ns: &str, reason: &str) -> Vec<String> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

pub fn condition(wukong: &Wukong, condition_type: &str) -> Option<(String, String, String)> {
    wukong
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.condition_type == condition_type)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn is_running(wukong: &Wukong) -> bool {
    wukong.status.as_ref().and_then(|s| s.phase) == Some(wukong::api::WukongPhase::Running)
        && condition(wukong, "Ready").is_some_and(|c| c.0 == "True")
}

/// Objects of a kind in a namespace, by `group/version` + kind.
pub async fn list(
    client: &Client,
    namespace: &str,
    api_version: &str,
    kind: &str,
) -> Vec<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .expect("discovery");
    let api: Api<DynamicObject> = if namespace.is_empty() {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    };
    api.list(&Default::default()).await.expect("list").items
}

pub fn names(objects: &[DynamicObject]) -> Vec<String> {
    let mut names: Vec<String> = objects.iter().map(ResourceExt::name_any).collect();
    names.sort();
    names
}

/// Makes a namespace.
pub async fn namespace(client: &Client, name: &str) {
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
}

/// The lease timings of tests with `--leader-elect`: a 4 s lease, renewed within 3 s,
/// looked at every 500 ms, so a killed leader is replaced in seconds.
pub const SHORT_LEASE: [&str; 6] = [
    "--lease-duration",
    "4s",
    "--renew-deadline",
    "3s",
    "--retry-period",
    "500ms",
];

/// `wukong run` as a child process (the real binary), SIGKILLed on drop or by [`OperatorProcess::kill`].
pub struct OperatorProcess(std::process::Child);

impl OperatorProcess {
    /// Starts it with the config file `config`, appending its log to `log`.
    pub fn start(cluster: &Cluster, config: &std::path::Path, log: &std::path::Path) -> Self {
        let config = config.display().to_string();
        Self::run_as(
            &cluster.env.kubeconfig_path(),
            log,
            &["--config", &config],
            &[],
        )
    }

    /// Starts it with `args` after `run` (e.g. `--config-map ns/name`) and the admin's
    /// kubeconfig, appending its log to `log`.
    pub fn start_with_args(cluster: &Cluster, args: &[&str], log: &std::path::Path) -> Self {
        Self::run_as(&cluster.env.kubeconfig_path(), log, args, &[])
    }

    /// Starts it as another identity: `kubeconfig` instead of the admin's (e.g. a service
    /// account's token), with `args` after `run --config CONFIG` and `env` set; `RUST_LOG`
    /// in `env` overrides the default.
    pub fn start_as(
        kubeconfig: &std::path::Path,
        config: &std::path::Path,
        log: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let config = config.display().to_string();
        let args: Vec<&str> = ["--config", config.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Self::run_as(kubeconfig, log, &args, env)
    }

    /// Starts `wukong run ARGS` as `kubeconfig`'s identity (the config's source is in
    /// `args`), with `env` set, appending its log to `log`.
    pub fn run_as(
        kubeconfig: &std::path::Path,
        log: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_wukong"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env("RUST_LOG", "info,kube=warn")
            // Any free port: tests run operators side by side.
            .env("WUKONG_METRICS_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start wukong run");
        Self(child)
    }

    /// The process id (for figures read from `/proc`).
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(self) {
        drop(self);
    }

    /// SIGTERM, as Kubernetes stops a pod; waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.wait_exit(timeout)
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
