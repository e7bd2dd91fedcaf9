//! `wukong run`: the operator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::{Backends, HostConfig};
use crate::controller::{self, Context};
use crate::reload::{ConfigSource, Reloader};

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
}

pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await?;
            Ok(Client::try_from(config)?)
        }
        None => Ok(Client::try_default().await?),
    }
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
                .and_then(|d| d.get("wukong.toml").cloned())
                .with_context(|| format!("{origin}: no key wukong.toml"))?;
            let mut config = HostConfig::parse(&text, &origin)?;
            if config.plugins.dir.is_none() {
                config.plugins.dir.clone_from(&args.plugin_dir);
            }
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
        let client = client(args.kubeconfig.as_ref()).await?;
        let (config, origin) = load_config(args, &client).await?;
        let followed = config.plugins.watch.then(|| config.clone());
        let backends =
            tokio::task::spawn_blocking(move || Backends::load(&config, &origin)).await??;
        tracing::info!("backends loaded; starting the controller");
        let ctx = Context::new(client, Arc::new(RwLock::new(Arc::new(backends))));
        if let Some(active) = followed {
            tokio::spawn(reloader(args, active, &ctx)?.run());
        }
        controller::run(ctx).await?;
        Ok(ExitCode::SUCCESS)
    })
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
