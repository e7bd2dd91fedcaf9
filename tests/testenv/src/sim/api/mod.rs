//! KubeVirt's aggregated API `subresources.kubevirt.io/v1`, served over HTTPS from a
//! listener in the environment's network namespace and registered with the real
//! aggregator (an APIService, a Service and hand-written Endpoints).

mod handlers;
mod replies;
mod vm_actions;
mod vmi_actions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::task::JoinHandle;

use super::Ctx;
use crate::TestEnv;
use crate::error::{Error, Result};

/// The namespace, Service and APIService names KubeVirt uses.
pub const NAMESPACE: &str = "kubevirt";
pub const SERVICE: &str = "virt-api";
pub const API_SERVICE: &str = "v1.subresources.kubevirt.io";

/// One request the aggregated API received (refused ones too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubresourceCall {
    pub method: String,
    /// `virtualmachineinstances` or `virtualmachines`.
    pub resource: String,
    pub namespace: String,
    pub name: String,
    /// `pause`, `unpause`, `softreboot`, `start`, `stop`, `restart`, `migrate`, ...
    pub action: String,
    /// The user the API server authenticated (`X-Remote-User`).
    pub user: Option<String>,
    /// The request body.
    pub body: String,
    /// The HTTP status answered.
    pub code: u16,
}

/// Binds the listener in the network namespace, starts serving and registers the
/// APIService; returns once the aggregator reports it Available.
pub(crate) async fn serve(env: &TestEnv, ctx: Arc<Ctx>) -> Result<(SocketAddr, JoinHandle<()>)> {
    let netns = env.netns()?;
    let listener = netns.bind(0)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::NetNs(e.to_string()))?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| Error::NetNs(e.to_string()))?;
    let dns = format!("{SERVICE}.{NAMESPACE}.svc");
    let ip = addr.ip().to_string();
    let pair = env.issue_serving_cert(&[dns.as_str(), ip.as_str()])?;
    let tls = tls_config(&pair.cert_pem, &pair.key_pem, env.front_proxy_ca_pem())?;
    let task = super::https::serve(
        listener,
        tls,
        "aggregated API",
        move |authenticated, req| handlers::handle(ctx.clone(), authenticated, req),
    );
    register(env, addr, &env.ca_pem()).await?;
    Ok((addr, task))
}

fn tls_config(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Result<rustls::ServerConfig> {
    let tls_err = |e: String| Error::Tls(rustls::Error::General(e));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_err(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls_err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls_err(e.to_string()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Proxied requests carry the aggregator's client certificate; actions require it.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls_err(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn register(env: &TestEnv, addr: SocketAddr, ca_pem: &str) -> Result<()> {
    let client = env.client();
    let pp = PatchParams::apply("kubevirt-sim").force();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    Api::<Namespace>::all(client.clone())
        .patch(NAMESPACE, &pp, &Patch::Apply(&ns))
        .await?;
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": {"kubevirt.io": "virt-api"}},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": addr.port(), "protocol": "TCP"}]}});
    Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .patch(SERVICE, &pp, &Patch::Apply(&svc))
        .await?;
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "subsets": [{"addresses": [{"ip": addr.ip().to_string()}],
                     "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}]});
    Api::<Endpoints>::namespaced(client.clone(), NAMESPACE)
        .patch(SERVICE, &pp, &Patch::Apply(&eps))
        .await?;
    let ca = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
    let apisvc = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": API_SERVICE},
        "spec": {"group": "subresources.kubevirt.io", "version": "v1", "groupPriorityMinimum": 1000,
                 "versionPriority": 15, "caBundle": ca,
                 "service": {"namespace": NAMESPACE, "name": SERVICE, "port": 443}}});
    // The 1.20 aggregator cannot server-side apply APIServices: create or replace.
    let api: Api<APIService> = Api::all(client.clone());
    let mut apisvc: APIService = serde_json::from_value(apisvc)?;
    match api.get_opt(API_SERVICE).await? {
        Some(old) => {
            apisvc.metadata.resource_version = old.metadata.resource_version;
            api.replace(API_SERVICE, &PostParams::default(), &apisvc)
                .await?;
        }
        None => {
            api.create(&PostParams::default(), &apisvc).await?;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let svc = api.get(API_SERVICE).await?;
        let conds = svc.status.and_then(|s| s.conditions).unwrap_or_default();
        // Available, and the proxy route registered (a separate controller does that).
        if conds
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
        {
            let req = http::Request::get("/apis/subresources.kubevirt.io/v1").body(Vec::new());
            if let Ok(req) = req
                && client
                    .request_text(req)
                    .await
                    .is_ok_and(|t| t.contains("APIResourceList"))
            {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            let why: Vec<String> = conds
                .iter()
                .map(|c| format!("{}: {:?}", c.type_, c.message))
                .collect();
            return Err(Error::Timeout(format!(
                "APIService {API_SERVICE} to be Available ({})",
                why.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
