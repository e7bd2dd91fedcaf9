//! deploy/ on the real apiserver (RBAC authorization on): the operator binary runs as the
//! `wukong-system/wukong` service account with only the roles deploy/ grants, as the
//! Deployment runs it (leader election, POD_NAME/POD_NAMESPACE), through a Wukong's whole
//! life — create, every lifecycle action, a manual, an aborted and two automatic
//! migrations (cordon, node failure), a config reload, deletion. A verb missing from the
//! roles fails a phase, and the log must show no 403. With a verb taken away, the operator
//! names the refused verb and resource in a condition and a Warning event. The roles are
//! read from deploy/, never restated here. Also: the CRD copy in deploy/crds is current,
//! and deploy/wukong.toml loads with exactly the plugins the Dockerfile puts in the image.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::operator::{
    Cluster, OperatorProcess, condition, create, is_running, list, names, namespace, plugin_dir,
    wait_for,
};
use wukong::api::{ActionRecord, MigrationStatus, Wukong};

const TIMEOUT: Duration = Duration::from_secs(90);
const SYSTEM_NS: &str = "wukong-system";
const SERVICE_ACCOUNT: &str = "wukong";
/// The operator's identity in the Lease and the Pod its reload events are about.
const POD_NAME: &str = "wukong-rbac-test";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn deploy_crd_copy_is_current() {
    let path = deploy_dir().join("crds/wukongs.vm.novasphere.dev.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = wukong::cli::crdgen::crd_yaml().expect("generate CRD");
    assert!(
        checked_in == generated,
        "{} is stale: run `cargo run -p wukong -- crdgen --out deploy/crds`",
        path.display()
    );
}

#[test]
fn deploy_config_loads_the_plugins_the_image_ships() {
    let config = test_config(&[]);
    let mut parsed =
        wukong::config::HostConfig::parse(&config, "deploy/wukong.toml").expect("parse");
    // With the memory the Deployment gives the container (there, the cgroup's limit).
    parsed.controller.memory_limit_bytes = Some(deployment_memory_limit());
    wukong::config::Backends::load(&parsed, "deploy/wukong.toml")
        .expect("every backend loads with its grants, within the Deployment's memory");
    // Twice the reconciles no longer fit: the budget is what keeps it from being OOM-killed.
    parsed.controller.concurrency *= 2;
    parsed.runtime.max_instances *= 2;
    let refused = wukong::config::Backends::load(&parsed, "deploy/wukong.toml")
        .err()
        .expect("twice the concurrency exceeds the Deployment's memory")
        .to_string();
    assert!(
        refused.starts_with("deploy/wukong.toml: memory: the operator could need")
            && refused.contains("more than the 512 MiB it may use"),
        "{refused}"
    );
    // The image holds the plugins the Dockerfile's PLUGINS builds: every file the config
    // names must be one of them.
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("../Dockerfile")).expect("Dockerfile");
    let shipped: Vec<String> = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG PLUGINS="))
        .expect("ARG PLUGINS= in the Dockerfile")
        .trim_matches('"')
        .split_whitespace()
        .map(|crate_name| format!("{}.wasm", crate_name.replace('-', "_")))
        .collect();
    let named: Vec<String> = [
        &parsed.network,
        &parsed.storage,
        &parsed.lifecycle,
        &parsed.migration,
    ]
    .iter()
    .flat_map(|step| step.backends.values())
    .map(|backend| backend.plugin.display().to_string())
    .collect();
    assert!(!named.is_empty());
    for plugin in &named {
        assert!(
            shipped.contains(plugin),
            "{plugin} is not in the image ({shipped:?})"
        );
    }
}

/// The arguments of the operator's container in deploy/deployment.yaml.
fn deployment_args() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("deployment.yaml")).expect("deployment");
    let deployment: Value = serde_yaml::from_str(&text).expect("deployment yaml");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args on the operator's container");
    let args: Vec<String> = args
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    assert!(
        args.iter().any(|a| a == "--config-map"),
        "the Deployment follows its ConfigMap through the API: {args:?}"
    );
    args
}

/// The memory limit of the operator's container in deploy/deployment.yaml, bytes.
fn deployment_memory_limit() -> u64 {
    let text = std::fs::read_to_string(deploy_dir().join("deployment.yaml")).expect("deployment");
    let deployment: Value = serde_yaml::from_str(&text).expect("deployment yaml");
    let limit =
        deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
            .as_str()
            .expect("a memory limit on the operator's container");
    let bytes = wukong_model::quantity::to_bytes(limit)
        .unwrap_or_else(|| panic!("the memory limit {limit:?} is no quantity"));
    u64::try_from(bytes).expect("a memory limit below 2^64 bytes")
}

/// Asks the apiserver whether the operator's service account may do everything the grants
/// in deploy/wukong.toml let its plugins ask for: a grant the role does not cover would
/// load and then fail every call with a 403.
async fn assert_roles_cover_the_grants(admin: &Client) {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let text = std::fs::read_to_string(deploy_dir().join("wukong.toml")).expect("wukong.toml");
    let config = wukong::config::HostConfig::parse(&text, "deploy/wukong.toml").expect("parse");
    let reviews = Api::<SubjectAccessReview>::all(admin.clone());
    let mut checked = 0;
    for (step, section) in config.sections() {
        for (name, backend) in &section.backends {
            for rule in backend.grants.cluster_role_rules() {
                let group = rule.api_groups.clone().unwrap_or_default().concat();
                for resource in rule.resources.clone().unwrap_or_default() {
                    let (resource, subresource) = match resource.split_once('/') {
                        Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
                        None => (resource, None),
                    };
                    for verb in &rule.verbs {
                        let review = SubjectAccessReview {
                            spec: SubjectAccessReviewSpec {
                                user: Some(format!(
                                    "system:serviceaccount:{SYSTEM_NS}:{SERVICE_ACCOUNT}"
                                )),
                                resource_attributes: Some(ResourceAttributes {
                                    group: Some(group.clone()),
                                    resource: Some(resource.clone()),
                                    subresource: subresource.clone(),
                                    verb: Some(verb.clone()),
                                    namespace: Some("any-namespace".into()),
                                    ..ResourceAttributes::default()
                                }),
                                ..SubjectAccessReviewSpec::default()
                            },
                            ..SubjectAccessReview::default()
                        };
                        let answer = reviews
                            .create(&Default::default(), &review)
                            .await
                            .expect("SubjectAccessReview");
                        let allowed = answer.status.is_some_and(|s| s.allowed);
                        assert!(
                            allowed,
                            "{step}.{name} is granted {verb} {group}/{resource}{} but the operator's role does not allow it",
                            subresource
                                .as_deref()
                                .map(|s| format!("/{s}"))
                                .unwrap_or_default()
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} verbs checked");
}

/// Every object of the release manifest (built from `deploy/kustomization.yaml`, and
/// checked current by `crd.rs`) but the CRD (the control plane installs it from crds/,
/// which `deploy_crd_copy_is_current` ties to the copy).
fn deploy_objects() -> Vec<Value> {
    let path = deploy_dir().join("../release/wukong.yaml");
    let text = std::fs::read_to_string(&path).expect("release manifest");
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object: Value = serde::Deserialize::deserialize(document).expect("a YAML document");
        if !object.is_null() && object["kind"] != "CustomResourceDefinition" {
            objects.push(object);
        }
    }
    objects
}

/// Server-side applies objects as the admin. The Deployment and Service are applied too:
/// the apiserver validates them (nothing runs them: there is no controller manager).
async fn apply(client: &Client, objects: &[Value]) {
    for object in objects {
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let kind = object["kind"].as_str().expect("kind");
        let name = object["metadata"]["name"].as_str().expect("name");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let (resource, capabilities) =
            kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
                .await
                .expect("discovery");
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) if capabilities.scope == kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            name,
            &PatchParams::apply("rbac-test").force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }
}

/// deploy/wukong.toml as the operator in the image reads it, with the plugins from this
/// build and the given `(table, key, value)` changes.
fn test_config(changes: &[(&str, &str, toml::Value)]) -> String {
    let text = std::fs::read_to_string(deploy_dir().join("wukong.toml")).expect("wukong.toml");
    let mut config: toml::Table = toml::from_str(&text).expect("toml");
    let dir = toml::Value::String(plugin_dir().display().to_string());
    let mut set = |path: &str, key: &str, value: toml::Value| {
        let mut table = &mut config;
        for part in path.split('.') {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("a table");
        }
        table.insert(key.into(), value);
    };
    set("plugins", "dir", dir);
    for (path, key, value) in changes {
        set(path, key, value.clone());
    }
    toml::to_string(&config).expect("toml")
}

/// The operator binary as the service account, with a kubeconfig holding its token.
struct Identity {
    dir: tempfile::TempDir,
    client: Client,
}

impl Identity {
    async fn service_account(cluster: &Cluster) -> Self {
        let token = cluster
            .env
            .service_account_token(SYSTEM_NS, SERVICE_ACCOUNT)
            .await
            .expect("token for wukong-system/wukong");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = cluster.env.data_dir().join("ca.crt");
        let kubeconfig = wukong_testenv::env::kubeconfig_yaml(
            cluster.env.server(),
            &ca.display().to_string(),
            &token,
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("kubeconfig");
        let client = cluster.env.client_with_token(&token).await.expect("client");
        Self { dir, client }
    }

    /// As deploy/deployment.yaml runs it, with its arguments (the config from the ConfigMap
    /// `config` is written to, leader election), the Pod's name and namespace.
    async fn start(&self, admin: &Client, config: &str) -> OperatorProcess {
        self.write_config(admin, config).await;
        let args = deployment_args();
        let args: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .skip_while(|a| *a == "run")
            .collect();
        OperatorProcess::run_as(
            &self.dir.path().join("kubeconfig"),
            &self.log(),
            &args,
            &[
                // Debug for the controller: a watch the role forbids is logged at debug only.
                ("RUST_LOG", "info,kube=warn,wukong::controller=debug"),
                ("POD_NAME", POD_NAME),
                ("POD_NAMESPACE", SYSTEM_NS),
            ],
        )
    }

    /// Writes the ConfigMap the Deployment's `--config-map` names, as kustomize makes it.
    async fn write_config(&self, admin: &Client, config: &str) {
        let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "wukong-config", "namespace": SYSTEM_NS},
            "data": {"wukong.toml": config}});
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), SYSTEM_NS)
            .patch(
                "wukong-config",
                &PatchParams::apply("rbac-test").force(),
                &Patch::Apply(&map),
            )
            .await
            .expect("write the config ConfigMap");
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("operator.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// The service account may do what the roles say and nothing else: it is not the admin.
async fn assert_restricted(identity: &Identity) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::all(identity.client.clone());
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the service account can list secrets: {other:?}"),
    }
}

fn last_action(w: &Wukong) -> Option<ActionRecord> {
    let state = w.status.as_ref()?.lifecycle_state.as_ref()?;
    if state.current_action.is_some() {
        return None;
    }
    state.history.first().cloned()
}

/// Requests a lifecycle action and waits until it finished; returns its record.
async fn act(client: &Client, ns: &str, name: &str, action: Value) -> ActionRecord {
    let rid = action["requestId"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    Api::<Wukong>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"lifecycleAction": action}})),
        )
        .await
        .expect("patch lifecycleAction");
    let w = wait_for(client, ns, name, TIMEOUT, |w| {
        last_action(w).is_some_and(|r| r.request_id == rid)
    })
    .await;
    eprintln!("[figure] {rid}: finished in {:?}", started.elapsed());
    last_action(&w).expect("finished record")
}

fn migration(w: &Wukong) -> Option<MigrationStatus> {
    w.status.as_ref()?.migration_status.clone()
}

fn finished(w: &Wukong, request_id: &str) -> bool {
    migration(w).is_some_and(|r| {
        r.request_id == request_id
            && matches!(
                r.phase.as_str(),
                "Succeeded" | "Failed" | "Aborted" | "Refused"
            )
    })
}

async fn request_migration(api: &Api<Wukong>, request: Value) {
    api.patch(
        "vm1",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"migration": request}})),
    )
    .await
    .expect("request migration");
}

fn other_node(cluster: &Cluster, not: &str) -> String {
    cluster
        .sim
        .node_names()
        .into_iter()
        .find(|n| n != not)
        .expect("another node")
}

fn node_of(w: &Wukong) -> Option<String> {
    w.status.as_ref()?.node_name.clone()
}

async fn cordon(client: &Client, node: &str, on: bool) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": on}})),
        )
        .await
        .expect("cordon");
}

/// Makes a namespace with the `kubernetes.io/metadata.name` label newer apiservers set on
/// their own (the MigrationPolicy's namespaceSelector matches it).
async fn labelled_namespace(client: &Client, ns: &str) {
    namespace(client, ns).await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"kubernetes.io/metadata.name": ns}}})),
        )
        .await
        .expect("label namespace");
}

/// Lines of the operator's log that show the apiserver refusing it.
fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            lower.contains("forbidden") || lower.contains(" 403")
        })
        .collect()
}

/// Peak resident memory of a process, from `/proc` (Linux).
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

const VM: &str = r#"
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata: {name: vm1}
spec:
  cpu: 1
  memory: 1Gi
  disks:
  - {name: root, size: 1Gi, image: "docker://quay.io/containerdisks/fedora:40", backend: longhorn, bootOrder: 1}
  - {name: data, size: 1Gi, backend: longhorn, retain: true}
  - {name: scratch, size: 1Gi, backend: longhorn}
  networks:
  - name: lan
    config: {bridge: br-lan, vlan: 100}
  migrationPolicy:
    enabled: true
    triggerConditions: [{type: nodeMaintenance}, {type: nodeFailure, gracePeriodSeconds: 2}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_lives_a_wukongs_whole_life_with_only_deploys_roles() {
    let cluster = Cluster::start().await;
    let admin = cluster.client();
    apply(&admin, &deploy_objects()).await;
    let identity = Identity::service_account(&cluster).await;
    assert_restricted(&identity).await;
    assert_roles_cover_the_grants(&admin).await;
    let quick_migrations = (
        "migration.kubevirt",
        "config",
        toml::Value::Table(
            toml::from_str("watchIntervalSeconds = 1\ncooldownSeconds = 0").expect("toml"),
        ),
    );
    // The memory the Deployment gives the container, which the cgroup would say there.
    let memory = (
        "controller",
        "memoryLimitBytes",
        toml::Value::Integer(deployment_memory_limit() as i64),
    );
    let config = test_config(&[quick_migrations.clone(), memory]);
    let operator = identity.start(&admin, &config).await;
    let ns = "rbac";
    labelled_namespace(&admin, ns).await;
    let api = Api::<Wukong>::namespaced(admin.clone(), ns);

    // Created: network, storage (a DataVolume, a claim, the StorageClass), the VM.
    let started = Instant::now();
    create(&admin, ns, VM).await;
    wait_for(&admin, ns, "vm1", TIMEOUT, is_running).await;
    eprintln!("[figure] Running {:?} after create", started.elapsed());
    let lease = Api::<Lease>::namespaced(admin.clone(), SYSTEM_NS)
        .get("wukong-operator")
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(POD_NAME),
        "the operator leads through the Lease"
    );

    // Every lifecycle action; each must finish Succeeded.
    let actions = [
        json!({"action": "stop", "gracePeriodSeconds": 5, "requestId": "stop"}),
        json!({"action": "start", "requestId": "start"}),
        json!({"action": "restart", "requestId": "restart"}),
        json!({"action": "restart", "force": true, "requestId": "restart-forced"}),
        json!({"action": "suspend", "requestId": "suspend"}),
        json!({"action": "resume", "requestId": "resume"}),
        json!({"action": "softReboot", "requestId": "soft-reboot"}),
    ];
    for action in actions {
        let record = act(&admin, ns, "vm1", action.clone()).await;
        assert_eq!(record.outcome, "Succeeded", "{action}: {record:?}");
        if !matches!(action["action"].as_str(), Some("stop" | "suspend")) {
            wait_for(&admin, ns, "vm1", TIMEOUT, is_running).await;
        }
    }

    // A manual migration to another node.
    let source = node_of(&wait_for(&admin, ns, "vm1", TIMEOUT, is_running).await).expect("node");
    let target = other_node(&cluster, &source);
    let started = Instant::now();
    request_migration(
        &api,
        json!({"targetNode": target, "allowPostCopy": true, "requestId": "move"}),
    )
    .await;
    let w = wait_for(&admin, ns, "vm1", TIMEOUT, |w| {
        finished(w, "move") && node_of(w).as_deref() == Some(target.as_str())
    })
    .await;
    assert_eq!(
        migration(&w).expect("record").phase,
        "Succeeded",
        "{:?}",
        migration(&w)
    );
    eprintln!("[figure] manual migration: {:?}", started.elapsed());

    // Automatic ones: the node is cordoned, the VM moves (nodes listed, automatic migrations
    // counted cluster-wide); the node fails, the VM's instance is deleted and it restarts on
    // another node.
    let cordoned = node_of(&w).expect("node");
    cordon(&admin, &cordoned, true).await;
    let w = wait_for(&admin, ns, "vm1", TIMEOUT, |w| {
        migration(w)
            .is_some_and(|r| r.automatic && matches!(r.phase.as_str(), "Succeeded" | "Failed"))
    })
    .await;
    cordon(&admin, &cordoned, false).await;
    assert_eq!(
        migration(&w).expect("record").phase,
        "Succeeded",
        "{:?}",
        migration(&w)
    );
    cluster
        .sim
        .update_config(|c| c.node_failure_delay = Duration::from_secs(600));
    let failing = node_of(&wait_for(&admin, ns, "vm1", TIMEOUT, is_running).await).expect("node");
    cluster
        .sim
        .set_node_ready(&failing, false)
        .await
        .expect("node NotReady");
    wait_for(&admin, ns, "vm1", TIMEOUT, |w| {
        migration(w).is_some_and(|r| r.phase == "Restarted")
            && is_running(w)
            && node_of(w).is_some_and(|n| n != failing)
    })
    .await;
    cluster
        .sim
        .set_node_ready(&failing, true)
        .await
        .expect("node Ready");

    // An aborted one (its migration object deleted). Last: the request stays in the spec
    // with `abort: true`, and would abort an automatic migration started after it.
    let current = node_of(&wait_for(&admin, ns, "vm1", TIMEOUT, is_running).await).expect("node");
    let away = other_node(&cluster, &current);
    cluster
        .sim
        .update_config(|c| c.migration_duration = Duration::from_secs(30));
    request_migration(&api, json!({"targetNode": away, "requestId": "abort"})).await;
    wait_for(&admin, ns, "vm1", TIMEOUT, |w| {
        migration(w).is_some_and(|r| r.request_id == "abort" && r.phase == "Running")
    })
    .await;
    request_migration(
        &api,
        json!({"targetNode": away, "requestId": "abort", "abort": true}),
    )
    .await;
    let w = wait_for(&admin, ns, "vm1", TIMEOUT, |w| finished(w, "abort")).await;
    assert_eq!(
        migration(&w).expect("record").phase,
        "Aborted",
        "{:?}",
        migration(&w)
    );
    cluster
        .sim
        .update_config(|c| c.migration_duration = Duration::ZERO);

    // Deleted: every step finalized, the finalizer removed, the objects gone but the retained
    // claim, which lost its owner reference.
    api.delete("vm1", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = async {
        while api.get_opt("vm1").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, gone)
        .await
        .expect("the finalizer is removed");
    // As upstream, the VM stays Terminating (KubeVirt's finalizer) until its VMI shut down.
    let vm_gone = async {
        while !list(&admin, ns, "kubevirt.io/v1", "VirtualMachine")
            .await
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, vm_gone)
        .await
        .expect("the VM goes once its VMI has shut down");
    assert!(
        list(
            &admin,
            ns,
            "k8s.cni.cncf.io/v1",
            "NetworkAttachmentDefinition"
        )
        .await
        .is_empty()
    );
    assert!(
        list(&admin, ns, "cdi.kubevirt.io/v1beta1", "DataVolume")
            .await
            .is_empty()
    );
    let policies = list(
        &admin,
        "",
        "migrations.kubevirt.io/v1alpha1",
        "MigrationPolicy",
    )
    .await;
    assert!(
        !names(&policies).iter().any(|n| n.starts_with(ns)),
        "{:?}",
        names(&policies)
    );
    let claims = list(&admin, ns, "v1", "PersistentVolumeClaim").await;
    // NB: a deleted claim keeps its pvc-protection finalizer here (no controller manager).
    assert!(
        claims
            .iter()
            .filter(|c| c.name_any() == "vm1-scratch-odsatzickz")
            .all(|c| c.metadata.deletion_timestamp.is_some()),
        "the scratch claim is deleted"
    );
    let retained = claims
        .iter()
        .find(|c| c.name_any() == "vm1-data-enz3xwxxaj")
        .unwrap_or_else(|| panic!("the retained claim stays: {:?}", names(&claims)));
    assert!(
        retained
            .owner_references()
            .iter()
            .all(|o| o.kind != "Wukong"),
        "the retained claim is orphaned"
    );

    // A config change is swapped in at once (a watch of the ConfigMap, no kubelet sync)
    // and reported on the ConfigMap.
    identity
        .write_config(
            &admin,
            &test_config(&[
                quick_migrations,
                (
                    "controller",
                    "maxConcurrentAutomaticMigrations",
                    toml::Value::Integer(3),
                ),
            ]),
        )
        .await;
    let started = Instant::now();
    while !config_map_has_events(&admin).await {
        assert!(
            started.elapsed() < TIMEOUT,
            "no event on the ConfigMap after a config change"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if let Some(mib) = peak_rss_mib(operator.id()) {
        eprintln!("[figure] operator peak RSS {mib} MiB");
    }
    drop(operator);
    let log = identity.log_text();
    let refused = forbidden_lines(&log);
    assert!(
        refused.is_empty(),
        "the operator was refused:\n{}",
        refused.join("\n")
    );
}

/// Whether the swap of a config edit was reported where its editor looks: on the
/// ConfigMap the Deployment's `--config-map` names.
async fn config_map_has_events(client: &Client) -> bool {
    Api::<Event>::namespaced(client.clone(), SYSTEM_NS)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .any(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("ConfigMap") && r.name.as_deref() == Some("wukong-config")
            })
        })
}

/// `verb` taken off the ClusterRole's rule that lists `resource` (the rule must have it).
fn without(objects: &[Value], resource: &str, verb: &str) -> Vec<Value> {
    let mut objects = objects.to_vec();
    let role = objects
        .iter_mut()
        .find(|o| o["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/");
    let rules = role["rules"].as_array_mut().expect("rules");
    let index = rules
        .iter()
        .position(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.contains(&json!(resource)))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|vs| vs.contains(&json!(verb)))
        })
        .unwrap_or_else(|| panic!("no rule grants {verb} on {resource}"));
    // The rule minus this resource, and this resource with its other verbs.
    let mut rest = rules[index].clone();
    let mut this = rules[index].clone();
    rest["resources"]
        .as_array_mut()
        .expect("resources")
        .retain(|r| r != resource);
    this["resources"] = json!([resource]);
    this["verbs"]
        .as_array_mut()
        .expect("verbs")
        .retain(|v| v != verb);
    rules.remove(index);
    for rule in [rest, this] {
        if rule["resources"].as_array().is_some_and(|r| !r.is_empty())
            && rule["verbs"].as_array().is_some_and(|v| !v.is_empty())
        {
            rules.push(rule);
        }
    }
    objects
}

/// Warning events about a Wukong (events.k8s.io/v1, as the operator writes them).
async fn warnings(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Waits for a Warning event about `name` whose note names everything in `words`.
async fn warning_naming(client: &Client, ns: &str, name: &str, words: &[&str]) -> (String, String) {
    let started = Instant::now();
    loop {
        let events = warnings(client, ns, name).await;
        if let Some(found) = events
            .iter()
            .find(|(_, note)| words.iter().all(|w| note.contains(w)))
        {
            return found.clone();
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "no Warning event on {name} naming {words:?}; events: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn forbidden_condition(w: &Wukong) -> Option<String> {
    condition(w, "StepFailed")
        .filter(|(status, reason, _)| status == "True" && reason == "Forbidden")
        .map(|(_, _, message)| message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verb_missing_from_the_role_is_reported_naming_it() {
    let cluster = Cluster::start().await;
    let admin = cluster.client();
    let objects = without(&deploy_objects(), "datavolumes", "create");
    let objects = without(&objects, "virtualmachines/start", "update");
    apply(&admin, &objects).await;
    let identity = Identity::service_account(&cluster).await;
    let _operator = identity.start(&admin, &test_config(&[])).await;
    let ns = "rbac-missing";
    namespace(&admin, ns).await;

    // An image disk needs a DataVolume the role may no longer create.
    create(
        &admin,
        ns,
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: disk}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks: [{name: root, size: 1Gi, image: \"docker://quay.io/containerdisks/fedora:40\"}]\n",
    )
    .await;
    let w = wait_for(&admin, ns, "disk", TIMEOUT, |w| {
        forbidden_condition(w).is_some()
    })
    .await;
    let message = forbidden_condition(&w).expect("condition");
    eprintln!("StepFailed: {message}");
    for word in [
        "cannot create",
        "datavolumes.cdi.kubevirt.io",
        ns,
        "ClusterRole",
    ] {
        assert!(message.contains(word), "{word:?} not in {message:?}");
    }
    let (reason, note) = warning_naming(
        &admin,
        ns,
        "disk",
        &["cannot create", "datavolumes.cdi.kubevirt.io"],
    )
    .await;
    eprintln!("event {reason}: {note}");

    // A VM without disks runs and stops; starting it again needs the start subresource.
    create(
        &admin,
        ns,
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: plain}\nspec: {cpu: 1, memory: 1Gi}\n",
    )
    .await;
    wait_for(&admin, ns, "plain", TIMEOUT, is_running).await;
    let stop = act(
        &admin,
        ns,
        "plain",
        json!({"action": "stop", "gracePeriodSeconds": 1, "requestId": "s1"}),
    )
    .await;
    assert_eq!(stop.outcome, "Succeeded", "{stop:?}");
    Api::<Wukong>::namespaced(admin.clone(), ns)
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"lifecycleAction": {"action": "start", "requestId": "st1"}}}),
            ),
        )
        .await
        .expect("request start");
    let w = wait_for(&admin, ns, "plain", TIMEOUT, |w| {
        forbidden_condition(w).is_some()
    })
    .await;
    let message = forbidden_condition(&w).expect("condition");
    eprintln!("StepFailed: {message}");
    for word in [
        "cannot update",
        "virtualmachines/start.subresources.kubevirt.io",
        ns,
        "ClusterRole",
    ] {
        assert!(message.contains(word), "{word:?} not in {message:?}");
    }
    let (reason, note) = warning_naming(
        &admin,
        ns,
        "plain",
        &[
            "cannot update",
            "virtualmachines/start.subresources.kubevirt.io",
        ],
    )
    .await;
    assert_eq!(reason, "Forbidden", "{note}");
    // The report is stable: the condition stays while the role lacks the verb.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = Api::<Wukong>::namespaced(admin.clone(), ns)
        .get("plain")
        .await
        .expect("get");
    assert!(forbidden_condition(&w).is_some(), "{:?}", w.status);
}
