//! `TestEnv`: a real etcd + kube-apiserver on free ports with a fresh data dir, its CRDs,
//! certificates, kubeconfig and a network namespace, all torn down on drop (also on panic).

pub mod certs;
pub mod crds;
pub mod netns;
pub mod paths;
pub mod process;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;

use crate::error::{Error, IoContext, Result};
use certs::{Ca, CertPair};
use netns::NetNs;
use paths::data_root;
pub use paths::{find_binary, random_hex};
use process::{Proc, free_port};

/// The name of the kubeconfig cluster/context the environment writes.
pub const CONTEXT: &str = "wukong-testenv";

/// A running control plane. Dropping it stops everything and removes its files.
pub struct TestEnv {
    client: kube::Client,
    server: String,
    admin_token: String,
    dir: PathBuf,
    ca: Ca,
    front_proxy_ca_pem: String,
    netns: std::result::Result<NetNs, String>,
    apiserver: Proc,
    etcd: Proc,
    etcd_address: std::net::SocketAddr,
    startup: Duration,
    // Last: removed after the processes are gone (kept when WUKONG_TESTENV_KEEP is set).
    _tmp: Option<TempDir>,
}

impl TestEnv {
    /// Starts etcd and kube-apiserver, installs the CRDs and returns once `/readyz` answers.
    /// Fails with a message naming what is missing (and the provision command) when the
    /// binaries are not there; it never silently skips.
    pub async fn start() -> Result<Self> {
        let mut last = None;
        for attempt in 1..=3 {
            match Self::start_once().await {
                Ok(env) => return Ok(env),
                Err(e @ Error::NotReady { .. })
                    if e.to_string().contains("address already in use") =>
                {
                    tracing::warn!(attempt, "port taken while starting, retrying: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Timeout("control plane".into())))
    }

    async fn start_once() -> Result<Self> {
        let started = Instant::now();
        let etcd_bin = find_binary("etcd")?;
        let apiserver_bin = find_binary("kube-apiserver")?;
        let tmp = tempfile::Builder::new()
            .prefix("wukong-testenv-")
            .tempdir_in(data_root())
            .ctx("creating the data dir")?;
        let dir = tmp.path().to_path_buf();

        let ca = Ca::new("wukong-testenv-ca")?;
        let serving = ca.serving(
            "kube-apiserver",
            &["localhost", "127.0.0.1", "kubernetes.default.svc"],
        )?;
        let front_proxy_ca = Ca::new("wukong-testenv-front-proxy-ca")?;
        let proxy_client = front_proxy_ca.client("front-proxy-client", &[])?;
        let admin_token = random_hex(16)?;
        write(&dir.join("ca.crt"), &ca.cert_pem())?;
        write_pair(&dir, "apiserver", &serving)?;
        write(&dir.join("front-proxy-ca.crt"), &front_proxy_ca.cert_pem())?;
        write_pair(&dir, "front-proxy-client", &proxy_client)?;
        let (sa_key, sa_pub) = certs::key_pair_pem()?;
        write(&dir.join("sa.key"), &sa_key)?;
        write(&dir.join("sa.pub"), &sa_pub)?;
        write(
            &dir.join("tokens.csv"),
            &format!("{admin_token},admin,admin-uid,\"system:masters\"\n"),
        )?;

        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--name=default".into(),
        ];
        let mut etcd = Proc::spawn("etcd", &etcd_bin, &etcd_args, dir.join("etcd.log"))?;
        let p = |name: &str| dir.join(name).display().to_string();
        let api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--authorization-mode=RBAC".into(),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
            format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
            format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            "--enable-aggregator-routing=true".into(),
            "--allow-privileged=true".into(),
        ];
        let mut apiserver = Proc::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &api_args,
            dir.join("kube-apiserver.log"),
        )?;

        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = kubeconfig_yaml(&server, &p("ca.crt"), &admin_token);
        write(&dir.join("kubeconfig"), &kubeconfig)?;
        let client = client_from_yaml(&kubeconfig).await?;
        wait_ready(&client, &mut etcd, &mut apiserver).await?;
        let startup = started.elapsed();
        // Written to the process's stderr directly, so the figure shows in test output
        // even when the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "control plane ready in {} ms",
            startup.as_millis()
        );

        let crds_started = Instant::now();
        crds::install(&client, &crds::all()?).await?;
        eprintln!(
            "CRDs installed in {} ms",
            crds_started.elapsed().as_millis()
        );

        let netns = tokio::task::spawn_blocking(NetNs::create)
            .await
            .map_err(|e| Error::NetNs(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| {
                tracing::warn!("{e}");
                e.to_string()
            });
        Ok(Self {
            client,
            server,
            admin_token,
            dir,
            ca,
            front_proxy_ca_pem: front_proxy_ca.cert_pem(),
            netns,
            apiserver,
            etcd,
            etcd_address: std::net::SocketAddr::from(([127, 0, 0, 1], etcd_port)),
            startup,
            _tmp: if std::env::var_os("WUKONG_TESTENV_KEEP").is_some() {
                eprintln!("keeping {}", tmp.keep().display());
                None
            } else {
                Some(tmp)
            },
        })
    }

    /// A client with the `system:masters` admin token.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A client authenticating with another bearer token (e.g. a service account's).
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        let ca = self.dir.join("ca.crt").display().to_string();
        client_from_yaml(&kubeconfig_yaml(&self.server, &ca, token)).await
    }

    /// Creates the service account if needed and returns a fresh token for it
    /// (TokenRequest API), for RBAC tests with [`TestEnv::client_with_token`].
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        use kube::api::{Api, PostParams};
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tr: TokenRequest = api
            .create_subresource("token", name, &PostParams::default(), &req)
            .await?;
        tr.status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Timeout("a token in the TokenRequest status".into()))
    }

    /// The kubeconfig file (admin token, context `wukong-testenv`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The data dir (removed on drop).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// How long the control plane took to answer `/readyz`.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Where etcd serves its clients (plain HTTP; `/metrics` counts its writes).
    pub fn etcd_address(&self) -> std::net::SocketAddr {
        self.etcd_address
    }

    /// Process ids of etcd and kube-apiserver.
    pub fn pids(&self) -> Vec<u32> {
        [self.etcd.pid(), self.apiserver.pid()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Freezes kube-apiserver (SIGSTOP): connections stay open and nothing answers, as
    /// an overloaded or partitioned control plane looks to its clients.
    pub fn pause_apiserver(&self) -> Result<()> {
        self.apiserver.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a paused kube-apiserver go on (SIGCONT).
    pub fn resume_apiserver(&self) -> Result<()> {
        self.apiserver.signal(nix::sys::signal::Signal::SIGCONT)
    }

    /// Kills kube-apiserver and starts it again on the same port and etcd; returns once
    /// `/readyz` answers. Every watch and connection of its clients breaks.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.restart()?;
        wait_ready(&self.client, &mut self.etcd, &mut self.apiserver).await
    }

    /// Kills etcd and starts it again on its data; returns once kube-apiserver is ready
    /// again.
    pub async fn restart_etcd(&mut self) -> Result<()> {
        self.etcd.restart()?;
        wait_ready(&self.client, &mut self.etcd, &mut self.apiserver).await
    }

    /// The cluster CA in PEM (it signs the API server's and the simulator's certificates).
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// A serving certificate signed by the cluster CA.
    pub fn issue_serving_cert(&self, names: &[&str]) -> Result<CertPair> {
        self.ca
            .serving(names.first().copied().unwrap_or("server"), names)
    }

    /// The CA of the aggregator's client certificate (to authenticate proxied requests).
    pub fn front_proxy_ca_pem(&self) -> &str {
        &self.front_proxy_ca_pem
    }

    /// The network namespace for aggregated API servers, or why it could not be made.
    pub fn netns(&self) -> Result<&NetNs> {
        self.netns.as_ref().map_err(|e| Error::NetNs(e.clone()))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.apiserver.stop();
        self.etcd.stop();
        // The network namespace and the temp dir go with the remaining fields.
    }
}

async fn wait_ready(client: &kube::Client, etcd: &mut Proc, apiserver: &mut Proc) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_err;
    loop {
        for proc in [&mut *etcd, &mut *apiserver] {
            if let Some(status) = proc.exited() {
                let what = proc
                    .log()
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned());
                return Err(Error::NotReady {
                    what: what.unwrap_or_default(),
                    reason: format!("exited ({status})"),
                    log: proc.log().to_path_buf(),
                    tail: proc.log_tail(15),
                });
            }
        }
        let req = http::Request::get("/readyz").body(Vec::new());
        match req {
            Ok(req) => match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_err = body,
                Err(e) => last_err = e.to_string(),
            },
            Err(e) => last_err = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(Error::NotReady {
                what: "kube-apiserver".into(),
                reason: format!("/readyz: {last_err}"),
                log: apiserver.log().to_path_buf(),
                tail: apiserver.log_tail(15),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A kubeconfig for `server`, trusting the CA file, authenticating with `token`.
pub fn kubeconfig_yaml(server: &str, ca_file: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {CONTEXT}\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca_file}\nusers:\n- name: {CONTEXT}-user\n  user:\n    token: {token}\n\
         contexts:\n- name: {CONTEXT}\n  context:\n    cluster: {CONTEXT}\n    user: {CONTEXT}-user\n    \
         namespace: default\ncurrent-context: {CONTEXT}\n"
    )
}

async fn client_from_yaml(yaml: &str) -> Result<kube::Client> {
    let kc = Kubeconfig::from_yaml(yaml)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).ctx(format!("writing {}", path.display()))
}

fn write_pair(dir: &Path, name: &str, pair: &CertPair) -> Result<()> {
    write(&dir.join(format!("{name}.crt")), &pair.cert_pem)?;
    write(&dir.join(format!("{name}.key")), &pair.key_pem)
}
