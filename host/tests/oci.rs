//! Plugins from an OCI registry, against a real one (Debian's `docker-registry`,
//! distribution 2.8) on loopback: `wukong plugin push` publishes a bundled plugin, a config
//! loads it by tag and by digest, a digest that does not match (pinned, or content tampered
//! with in the registry's storage) is refused, and an unreachable registry falls back to the
//! cached copy — or fails naming the reference when there is none. One test runs the
//! operator (real apiserver) with its storage plugin pinned to the registry.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wukong::config::{Backends, HostConfig};
use wukong::oci::{self, FetchOrigin, OciSettings, PluginReference};
use wukong::plugin::types::StepKind;

/// `docker-registry serve` on a free loopback port with its own storage, killed on drop.
struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry that serves only `user` with `password` (htpasswd, bcrypt).
    fn start_with_login(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wukong-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian's docker-registry; run tests/testenv/provision.sh)");
        let registry = Self {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}: {}",
                std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `oci://127.0.0.1:PORT/wukong/NAME`.
    fn repository(&self, name: &str) -> String {
        format!("oci://127.0.0.1:{}/wukong/{name}", self.port)
    }

    /// The file holding a blob in the registry's own storage (to tamper with).
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `wukong plugin push FILE REF`; returns the printed digest.
fn push(file: &Path, reference: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(["plugin", "push"])
        .arg(file)
        .arg(reference)
        .output()
        .expect("run wukong plugin push");
    assert!(
        output.status.success(),
        "push {reference}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let digest = String::from_utf8(output.stdout).expect("utf-8");
    digest.trim().to_owned()
}

/// Loads a config whose only backend is `storage.cdi = reference`, caching in `cache`.
fn load(reference: &str, cache: &Path) -> Result<Backends, String> {
    let toml = format!(
        "[oci]\ncacheDir = \"{}\"\n[storage.cdi]\nplugin = \"{reference}\"\n{}\n",
        cache.display(),
        support::operator::bundled_grants("cdi_storage.wasm")
    );
    let config = HostConfig::parse(&toml, "test.toml").map_err(|e| e.to_string())?;
    Backends::load(&config, "test.toml").map_err(|e| e.to_string())
}

/// The loaded storage plugin's (path, name, digest).
fn loaded(backends: &Backends) -> (String, String, String) {
    let plugin = &backends
        .get(StepKind::Storage, None)
        .expect("storage backend")
        .plugin;
    (
        plugin.path.display().to_string(),
        plugin.manifest.name.clone(),
        format!("sha256:{}", plugin.digest),
    )
}

fn fetch(reference: &str, cache: &Path) -> Result<FetchOrigin, oci::OciError> {
    let reference: PluginReference = reference.parse().expect("reference");
    let settings = OciSettings {
        cache_dir: Some(cache.to_path_buf()),
        plain_http_registries: Vec::new(),
    };
    oci::fetch_blocking(&reference, &settings).map(|(_, origin)| origin)
}

fn file_digest(path: &Path) -> String {
    oci::sha256_digest(&std::fs::read(path).expect("read plugin"))
}

#[test]
fn a_pushed_plugin_loads_by_tag_and_by_digest() {
    let registry = Registry::start();
    let wasm = support::plugin_wasm("cdi-storage");
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));

    let started = Instant::now();
    let digest = push(&wasm, &tag);
    let push_time = started.elapsed();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // The same file gives the same manifest: a digest pinned once stays valid.
    assert_eq!(push(&wasm, &tag), digest, "pushing again is reproducible");

    let cache = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let backends = load(&tag, cache.path()).expect("load by tag");
    let pull_time = started.elapsed();
    assert_eq!(
        loaded(&backends),
        (tag.clone(), "cdi-storage".into(), file_digest(&wasm)),
        "the registry's copy is the file, named by its reference"
    );

    for pinned in [
        format!("{}@{digest}", registry.repository("cdi-storage")),
        format!("{tag}@{digest}"),
    ] {
        let fresh = tempfile::tempdir().expect("tempdir");
        let backends = load(&pinned, fresh.path()).expect("load by digest");
        assert_eq!(loaded(&backends).2, file_digest(&wasm), "{pinned}");
        assert_eq!(
            fetch(&pinned, fresh.path()).expect("fetch"),
            FetchOrigin::Cache,
            "a pinned reference in the cache is not asked of the registry"
        );
    }
    assert_eq!(
        fetch(&tag, cache.path()).expect("fetch"),
        FetchOrigin::Registry,
        "a tag is always asked of the registry"
    );
    eprintln!(
        "figures: push {push_time:?}, pull + load by tag {pull_time:?} ({} bytes)",
        std::fs::metadata(&wasm)
            .map(|m| m.len())
            .unwrap_or_default()
    );
}

#[test]
fn a_digest_that_does_not_match_is_refused() {
    let registry = Registry::start();
    let wasm = support::plugin_wasm("cdi-storage");
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));
    let digest = push(&wasm, &tag);
    let other = push(
        &support::plugin_wasm("longhorn-storage"),
        &format!("{}:0.1.0", registry.repository("longhorn-storage")),
    );
    let cache = tempfile::tempdir().expect("tempdir");

    // Pinned to something else: the registry has no such manifest under this name.
    for wrong in [other.clone(), oci::sha256_digest(b"something else")] {
        let pinned = format!("{tag}@{wrong}");
        let error = load(&pinned, cache.path()).err().expect("refused");
        eprintln!("refused as expected: {error}");
        assert!(
            error.starts_with(&format!("test.toml: storage.cdi.plugin: {pinned}: ")),
            "{error}"
        );
        assert!(error.contains("manifest unknown"), "{error}");
    }

    // The registry serves other bytes under the pinned digest: refused, not loaded.
    let manifest_file = registry.blob_file(&digest);
    let original = std::fs::read(&manifest_file).expect("manifest blob");
    let mut tampered: serde_json::Value = serde_json::from_slice(&original).expect("json");
    tampered["annotations"]["org.opencontainers.image.version"] = "6.6.6".into();
    std::fs::write(&manifest_file, serde_json::to_vec(&tampered).expect("json")).expect("tamper");
    let pinned = format!("{tag}@{digest}");
    let error = load(&pinned, cache.path()).err().expect("refused");
    eprintln!("refused as expected: {error}");
    assert!(
        error.contains(&format!(
            "{pinned}: manifest digest mismatch: expected {digest}"
        )),
        "{error}"
    );
    let error = load(&tag, cache.path()).err().expect("refused by tag too");
    eprintln!("refused as expected: {error}");
    assert!(error.contains("digest"), "{error}");
    std::fs::write(&manifest_file, &original).expect("restore");
    load(&pinned, cache.path()).expect("the untampered manifest loads");
}

#[test]
fn a_tampered_layer_is_refused_and_never_cached() {
    let mut registry = Registry::start();
    let wasm = support::plugin_wasm("cdi-storage");
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));
    push(&wasm, &tag);
    let layer_file = registry.blob_file(&file_digest(&wasm));
    let mut bytes = std::fs::read(&layer_file).expect("layer blob");
    // Same length, one byte flipped in the middle: only the digest can tell.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&layer_file, &bytes).expect("tamper");

    let cache = tempfile::tempdir().expect("tempdir");
    let error = load(&tag, cache.path()).err().expect("refused");
    eprintln!("refused as expected: {error}");
    assert!(
        error.contains(&format!("{tag}: layer digest mismatch")),
        "{error}"
    );
    registry.stop();
    let error = load(&tag, cache.path()).err().expect("nothing was cached");
    eprintln!("refused as expected: {error}");
    assert!(error.contains("no cached copy"), "{error}");
}

#[test]
fn an_unreachable_registry_falls_back_to_the_cached_copy() {
    let mut registry = Registry::start();
    let wasm = support::plugin_wasm("cdi-storage");
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));
    push(&wasm, &tag);
    let cache = tempfile::tempdir().expect("tempdir");
    load(&tag, cache.path()).expect("first load fills the cache");

    registry.stop();
    let started = Instant::now();
    let backends = load(&tag, cache.path()).expect("the cached copy stands in");
    let cached_time = started.elapsed();
    assert_eq!(loaded(&backends).2, file_digest(&wasm));
    assert_eq!(
        fetch(&tag, cache.path()).expect("fetch"),
        FetchOrigin::CacheWhileUnreachable
    );
    // Another reference is not stood in for by this one's copy.
    let other = format!("{}:0.2.0", registry.repository("cdi-storage"));
    let error = load(&other, cache.path()).err().expect("no copy of 0.2.0");
    eprintln!("refused as expected: {error}");
    assert!(error.contains(&other), "{error}");
    eprintln!("figures: load from the cache with the registry down {cached_time:?}");
}

#[test]
fn an_unreachable_registry_without_a_cache_fails_naming_the_reference() {
    let mut registry = Registry::start();
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));
    registry.stop();
    let cache = tempfile::tempdir().expect("tempdir");
    let error = load(&tag, cache.path()).err().expect("nothing to load");
    eprintln!("refused as expected: {error}");
    assert!(
        error.starts_with(&format!(
            "test.toml: storage.cdi.plugin: {tag}: registry unreachable: "
        )),
        "{error}"
    );
    assert!(error.contains("Connection refused"), "the cause: {error}");
    assert!(
        error.ends_with(&format!("no cached copy in {}", cache.path().display())),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_runs_a_wukong_on_a_plugin_from_the_registry() {
    use support::operator::{Cluster, InProcess, create, host_config, is_running, namespace};

    let registry = Registry::start();
    let wasm = support::plugin_wasm("cdi-storage");
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));
    let digest = tokio::task::spawn_blocking({
        let (wasm, tag) = (wasm.clone(), tag.clone());
        move || push(&wasm, &tag)
    })
    .await
    .expect("push");
    let cache = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[storage.oci-cdi]\nplugin = \"{tag}@{digest}\"\n{}\n[oci]\ncacheDir = \"{}\"\n",
        support::operator::bundled_grants("cdi_storage.wasm"),
        cache.path().display()
    );

    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("oci-cdi", &extra)).await;
    namespace(&client, "oci").await;
    create(
        &client,
        "oci",
        r#"
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata: {name: pulled}
spec:
  cpu: 1
  memory: 1Gi
  disks:
  - {name: root, size: 10Gi, image: "docker://quay.io/containerdisks/fedora:40", bootOrder: 1}
"#,
    )
    .await;
    let pulled = support::operator::wait_for(
        &client,
        "oci",
        "pulled",
        Duration::from_secs(30),
        is_running,
    )
    .await;
    let storage = pulled
        .status
        .expect("status")
        .plugins
        .into_iter()
        .find(|record| record.step == "storage")
        .expect("a storage plugin record");
    assert_eq!(storage.backend, "oci-cdi");
    assert_eq!(
        format!("sha256:{}", storage.digest),
        file_digest(&wasm),
        "the VM's disks came from the registry's copy of the plugin"
    );
}

#[test]
fn push_refuses_what_the_host_would_not_load() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").expect("write");
    let tag = format!("{}:0.1.0", registry.repository("garbage"));
    let output = Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(["plugin", "push"])
        .arg(&garbage)
        .arg(&tag)
        .output()
        .expect("run wukong plugin push");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&garbage.display().to_string()), "{stderr}");
    assert!(output.stdout.is_empty(), "no digest printed");
    let error = load(&tag, dir.path()).err().expect("nothing was pushed");
    assert!(error.contains("manifest unknown"), "{error}");
}

/// `wukong ARGS` with `env` (HOME, DOCKER_CONFIG, PATH as given; nothing else of the
/// caller's registry setup leaks in); (success, stdout, stderr).
fn wukong(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .envs(env.iter().copied())
        .output()
        .expect("run wukong");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_registry_that_needs_a_login_takes_dockers_credentials_and_helpers() {
    use base64::Engine as _;
    let registry = Registry::start_with_login("alice", "s3cret");
    let wasm = support::plugin_wasm("cdi-storage");
    let wasm = wasm.to_str().expect("utf-8 path");
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));
    let host = format!("127.0.0.1:{}", registry.port);
    let home = tempfile::tempdir().expect("home");
    let home_path = home.path().to_str().expect("utf-8 path").to_owned();

    // No credentials: the registry refuses, and the message says so.
    let (ok, _, err) = wukong(&["plugin", "push", wasm, &tag], &[("HOME", &home_path)]);
    assert!(!ok, "an anonymous push to a registry that needs a login");
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );

    // ~/.docker/config.json, as `docker login` writes it.
    let docker = home.path().join(".docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .expect("config.json");
    let (ok, out, err) = wukong(&["plugin", "push", wasm, &tag], &[("HOME", &home_path)]);
    assert!(ok, "push with the login in config.json: {err}");
    let digest = out.trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{out}");

    // A credential helper (credHelpers), on PATH, with DOCKER_CONFIG naming the folder.
    let helper_dir = tempfile::tempdir().expect("helper dir");
    let helper = helper_dir.path().join("docker-credential-wukongtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread host\n[ \"$host\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"Username\": \"alice\", \"Secret\": \"s3cret\"}}'\n"
        ),
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        helper_dir.path().join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "wukongtest"}}}}"#),
    )
    .expect("config.json");
    let path = format!(
        "{}:{}",
        helper_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let helper_env = [
        ("HOME", home_path.as_str()),
        ("DOCKER_CONFIG", helper_dir.path().to_str().expect("utf-8")),
        ("PATH", path.as_str()),
        ("WUKONG_CACHE", home_path.as_str()),
    ];
    let pulled = home.path().join("pulled.wasm");
    let pinned = format!("{}@{digest}", registry.repository("cdi-storage"));
    let (ok, out, err) = wukong(
        &[
            "plugin",
            "pull",
            &pinned,
            "--out",
            pulled.to_str().expect("utf-8"),
        ],
        &helper_env,
    );
    assert!(ok, "pull through the credential helper: {err}");
    assert_eq!(out.trim(), digest);
    assert_eq!(
        file_digest(&pulled),
        file_digest(Path::new(wasm)),
        "the same component"
    );

    // inspect oci://: what the registry holds, verified and loaded.
    let (ok, out, err) = wukong(&["plugin", "inspect", &tag, "-o", "json"], &helper_env);
    assert!(ok, "inspect {tag}: {err}");
    let inspection: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(inspection["name"], "cdi-storage");
    assert_eq!(inspection["file"], tag.as_str());

    // The artifact config carries what the CNCF Wasm OCI layout asks for.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.blob_file(&digest)).expect("manifest"))
            .expect("manifest json");
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.blob_file(config_digest)).expect("config"))
            .expect("config json");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z", "{config}");
    assert_eq!(
        (config["architecture"].as_str(), config["os"].as_str()),
        (Some("wasm"), Some("wasip2"))
    );
    let exports = config["component"]["exports"]
        .as_array()
        .expect("component.exports");
    assert!(
        exports.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with("wukong:plugin/storage"))),
        "{config}"
    );
}

/// A key pair made here: (private key PEM file, public key PEM file).
fn key_pair(dir: &Path, name: &str, seed: u8) -> (PathBuf, PathBuf) {
    use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
    let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("key");
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(
        &private,
        key.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes(),
    )
    .expect("write key");
    std::fs::write(
        &public,
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
    )
    .expect("write pub");
    (private, public)
}

#[test]
fn a_signed_plugin_loads_under_its_key_and_nothing_else_does() {
    let registry = Registry::start();
    let keys = tempfile::tempdir().expect("keys");
    let (private, public) = key_pair(keys.path(), "release", 7);
    let (_, stranger) = key_pair(keys.path(), "stranger", 9);
    let wasm = support::plugin_wasm("cdi-storage");
    let tag = format!("{}:0.1.0", registry.repository("cdi-storage"));
    let digest = push(&wasm, &tag);
    let text = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let cache = tempfile::tempdir().expect("cache");
    let env = [("WUKONG_CACHE", cache.path().to_str().expect("utf-8"))];

    // Unsigned: verify fails and says so; a config that requires the key refuses it.
    let (ok, _, err) = wukong(&["plugin", "verify", &tag, "--key", &text(&public)], &env);
    assert!(!ok && err.contains("no signature of"), "{err}");
    let with_key = |key: &Path| {
        let toml = format!(
            "[oci]\ncacheDir = \"{}\"\nverifyKey = \"{}\"\n[storage.cdi]\nplugin = \"{tag}\"\n{}\n",
            cache.path().display(),
            key.display(),
            support::operator::bundled_grants("cdi_storage.wasm")
        );
        let config = HostConfig::parse(&toml, "test.toml").map_err(|e| e.to_string())?;
        Backends::load(&config, "test.toml").map_err(|e| e.to_string())
    };
    let refused = with_key(&public).err().unwrap_or_default();
    assert!(
        refused.contains("storage.cdi.plugin") && refused.contains("not signed by the verify key"),
        "{refused}"
    );

    // Signed with the key: verify passes, the config loads it; another key does not.
    let (ok, out, err) = wukong(&["plugin", "sign", &tag, "--key", &text(&private)], &env);
    assert!(ok, "sign: {err}");
    assert_eq!(out.trim(), digest, "sign names the manifest it signed");
    assert!(
        err.contains(&format!(
            "sha256-{}.sig",
            digest.trim_start_matches("sha256:")
        )),
        "{err}"
    );
    let (ok, _, err) = wukong(&["plugin", "verify", &tag, "--key", &text(&public)], &env);
    assert!(ok, "verify: {err}");
    let backends = with_key(&public).expect("a signed plugin loads");
    assert_eq!(loaded(&backends).2, file_digest(&wasm));
    let (ok, _, err) = wukong(&["plugin", "verify", &tag, "--key", &text(&stranger)], &env);
    assert!(!ok && err.contains("none by the key"), "{err}");
    assert!(
        with_key(&stranger).is_err(),
        "another key's config refuses it"
    );

    // The tag moved to another plugin: the old signature does not cover it.
    push(&support::plugin_wasm("longhorn-storage"), &tag);
    let (ok, _, err) = wukong(&["plugin", "verify", &tag, "--key", &text(&public)], &env);
    assert!(
        !ok && err.contains("no signature of"),
        "a moved tag is unsigned: {err}"
    );
}
