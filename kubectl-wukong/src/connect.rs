//! The client and namespace, found as kubectl finds them: `--kubeconfig`, else
//! `$KUBECONFIG` (a list of files, merged), else `~/.kube/config`, else the in-cluster
//! service account; `--context` picks the context; the namespace is `-n`, else the
//! context's, else `default`.

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Connection;

pub async fn client(connection: &Connection) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: connection.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kubeconfig = match &connection.kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?,
        ),
        None => match Kubeconfig::read() {
            Ok(kubeconfig) => Some(kubeconfig),
            // Neither $KUBECONFIG nor ~/.kube/config: in a pod, the service account.
            Err(_) if std::env::var_os("KUBECONFIG").is_none() => None,
            Err(e) => return Err(e).context("reading the kubeconfig files of $KUBECONFIG"),
        },
    };
    let config = match kubeconfig {
        Some(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| match &connection.context {
                Some(context) => format!("using kubeconfig context {context:?}"),
                None => "using the kubeconfig's current context".to_owned(),
            })?,
        None if connection.context.is_some() => {
            anyhow::bail!("--context needs a kubeconfig: none found ($KUBECONFIG, ~/.kube/config)")
        }
        None => Config::incluster()
            .context("no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod")?,
    };
    let namespace = connection
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}
