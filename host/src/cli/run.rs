//! `wukong run`: the operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::{Backends, CONFIG_MAP_KEY, HostConfig};
use crate::controller::{self, Context};
use crate::leader::{self, Elector, LeaseSettings};
use crate::reload::{ConfigSource, Reloader};
use crate::telemetry::{self, Health, Metrics};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The host config file.
    #[arg(
        long,
        short,
        env = "WUKONG_CONFIG",
        default_value = "/etc/wukong/wukong.toml",
        conflicts_with = "config_map"
    )]
    pub config: PathBuf,
    /// Read the host config from key `wukong.toml` of this ConfigMap (`namespace/name`).
    #[arg(long, env = "WUKONG_CONFIG_MAP")]
    pub config_map: Option<String>,
    /// Where relative plugin paths resolve when the config comes from a ConfigMap.
    #[arg(long, env = "WUKONG_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// A kubeconfig; in-cluster config or `$KUBECONFIG` when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "WUKONG_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub election: ElectionArgs,
}

/// Leader election: of several replicas only the one holding the Lease reconciles.
#[derive(Debug, clap::Args)]
pub struct ElectionArgs {
    /// Elect a leader through a `coordination.k8s.io/v1` Lease (off: this process leads).
    #[arg(long, env = "WUKONG_LEADER_ELECT")]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "wukong-operator")]
    pub lease_name: String,
    /// The Lease's namespace [default: the service account's namespace, else `default`].
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease [default: `hostname-pid`].
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// How long a standby waits after the Lease last changed before taking it over.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps leading while renewals fail (under the lease duration).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
}

impl ElectionArgs {
    fn settings(&self) -> LeaseSettings {
        LeaseSettings {
            name: self.lease_name.clone(),
            namespace: self
                .lease_namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(leader::default_namespace),
            identity: self
                .lease_identity
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(leader::default_identity),
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

/// The operator's client; its requests are counted (`wukong_kube_requests_total`).
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&crate::telemetry::requests::layer())
        .build())
}

/// Reads the host config from a file or a ConfigMap; `origin` names it in messages.
pub async fn load_config(args: &RunArgs, client: &Client) -> anyhow::Result<(HostConfig, String)> {
    match &args.config_map {
        Some(reference) => {
            let (namespace, name) = reference
                .split_once('/')
                .context("--config-map must be namespace/name")?;
            let map = kube::Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .with_context(|| format!("reading configmap {reference}"))?;
            let origin = format!("configmap {reference}");
            let text = map
                .data
                .and_then(|d| d.get(CONFIG_MAP_KEY).cloned())
                .with_context(|| format!("{origin}: no key {CONFIG_MAP_KEY}"))?;
            let config = HostConfig::parse_config_map(&text, &origin, args.plugin_dir.as_deref())?;
            Ok((config, origin))
        }
        None => Ok((
            HostConfig::load(&args.config)?,
            args.config.display().to_string(),
        )),
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Probes are answered from the start: loading the backends may take a while.
        let health = Arc::new(Health::default());
        telemetry::server::serve(args.metrics_addr, Arc::clone(&health), Metrics::global())
            .await
            .with_context(|| format!("serving metrics on {}", args.metrics_addr))?;
        let client = client(args.kubeconfig.as_ref()).await?;
        let (config, origin) = load_config(args, &client).await?;
        let followed = config.plugins.watch.then(|| config.clone());
        let backends =
            tokio::task::spawn_blocking(move || Backends::load(&config, &origin)).await??;
        health.set_backends_loaded(true);
        tracing::info!("backends loaded; starting the controller");
        let ctx = Context::new(client, Arc::new(RwLock::new(Arc::new(backends))));
        if let Some(active) = followed {
            tokio::spawn(reloader(args, active, &ctx)?.run());
        }
        lead(&args.election, &health, ctx).await
    })
}

/// Runs the controller: at once, or with `--leader-elect` once this replica holds the
/// Lease. Losing the Lease is an error (the process exits non-zero and is restarted as a
/// standby): nothing may reconcile after another replica could have taken over.
async fn lead(args: &ElectionArgs, health: &Health, ctx: Arc<Context>) -> anyhow::Result<ExitCode> {
    let metrics = Metrics::global();
    if !args.leader_elect {
        health.set_leading(true);
        metrics.set_leader(true);
        run_controller(health, ctx).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut elector = Elector::new(ctx.client.clone(), args.settings())?;
    let settings = elector.settings().clone();
    tracing::info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "waiting for the lease");
    tokio::select! {
        acquired = elector.acquire() => acquired?,
        () = shutdown_signal() => {
            tracing::info!("shut down while standing by");
            return Ok(ExitCode::SUCCESS);
        }
    }
    health.set_leading(true);
    metrics.set_leader(true);
    let stopped = tokio::select! {
        stopped = run_controller(health, ctx) => Ok(stopped),
        lost = elector.hold() => Err(lost),
    };
    metrics.set_leader(false);
    match stopped {
        Ok(stopped) => {
            // A clean shutdown (SIGTERM): hand over at once instead of after the lease expires.
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "could not release the lease; a standby takes over when it expires");
            }
            stopped?;
            Ok(ExitCode::SUCCESS)
        }
        Err(lost) => {
            tracing::error!(error = %lost, "leadership lost; exiting so that only the new leader reconciles");
            Err(lost.into())
        }
    }
}

async fn run_controller(health: &Health, ctx: Arc<Context>) -> anyhow::Result<()> {
    health.set_controller_running(true);
    let result = controller::run(ctx).await;
    health.set_controller_running(false);
    result
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Hot swap (`[plugins] watch`): follows the config's source and the plugin files.
fn reloader(args: &RunArgs, active: HostConfig, ctx: &Arc<Context>) -> anyhow::Result<Reloader> {
    let source = match &args.config_map {
        Some(reference) => {
            let (namespace, name) = reference
                .split_once('/')
                .context("--config-map must be namespace/name")?;
            ConfigSource::ConfigMap {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                plugin_dir: args.plugin_dir.clone(),
            }
        }
        None => ConfigSource::File(args.config.clone()),
    };
    let swapped = Arc::downgrade(ctx);
    Ok(Reloader::new(
        source,
        active,
        Arc::clone(&ctx.backends),
        ctx.client.clone(),
        ctx.recorder.clone(),
        move || {
            if let Some(ctx) = swapped.upgrade() {
                ctx.reconcile_all();
            }
        },
    ))
}
