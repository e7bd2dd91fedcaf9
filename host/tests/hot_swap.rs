//! Hot swap under the real operator binary: a storage plugin changed in the config file,
//! replaced in place on disk, or changed in the config's ConfigMap is swapped in without a
//! restart, under a running Wukong, with no failed reconcile; a broken config or plugin is
//! refused, naming the key, the file and the cause, and the old plugin stays in use.
//!
//! Each test prints how long from the write to the swap, to the first call on the new
//! plugin (the event for the object its first outcome applied) and to the status naming it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};
use support::operator::{
    Cluster, OperatorProcess, create, host_config, is_running, list, namespace, plugin_dir,
    wait_for,
};
use wukong::api::Wukong;

const TIMEOUT: Duration = Duration::from_secs(60);
/// What `host_config` says for the `ceph-rbd` backend's plugin.
const CEPH_PLUGIN: &str = "[storage.ceph-rbd]\nplugin = \"ceph_rbd_storage.wasm\"";
/// The ceph-rbd backend served by the Longhorn plugin instead.
const LONGHORN_PLUGIN: &str = "[storage.ceph-rbd]\nplugin = \"longhorn_storage.wasm\"";
/// The ceph-rbd backend's config, and one its plugin's schema refuses (a string where it
/// takes a boolean).
const CEPH_CONFIG: &str = "config = { createStorageClass = true }\n\n[lifecycle]";
const CEPH_BAD_CONFIG: &str = "config = { createStorageClass = \"yes\" }\n\n[lifecycle]";

fn wukong_yaml(name: &str) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  cpu: 1\n  memory: 1Gi\n  disks:\n  - {{name: root, size: 2Gi, image: \"docker://quay.io/containerdisks/fedora:40\"}}\n  - {{name: scratch, size: 1Gi}}\n  networks:\n  - {{name: lan, config: {{bridge: br0}}}}\n"
    )
}

/// The plugin that ran the storage step, and which backend it served and its digest.
fn storage_plugin(wukong: &Wukong) -> Option<(String, String, String)> {
    let record = wukong
        .status
        .as_ref()?
        .plugins
        .iter()
        .find(|p| p.step == "storage")?;
    Some((
        record.name.clone(),
        record.backend.clone(),
        record.digest.clone(),
    ))
}

fn step_failed(wukong: &Wukong) -> bool {
    support::operator::condition(wukong, "StepFailed").is_some_and(|c| c.0 == "True")
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read plugin")))
}

/// Polls a Wukong until its storage step ran `plugin`, failing at once if a reconcile
/// fails meanwhile. Returns it and when it was first seen so.
async fn until_storage_plugin(
    client: &Client,
    ns: &str,
    name: &str,
    plugin: &str,
) -> (Wukong, Timestamp) {
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    let started = std::time::Instant::now();
    loop {
        let wukong = api.get(name).await.expect("get wukong");
        assert!(
            !step_failed(&wukong),
            "{name}: a reconcile failed during the swap: {:?}",
            wukong.status
        );
        if storage_plugin(&wukong).is_some_and(|p| p.0 == plugin) {
            return (wukong, Timestamp::now());
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "{name}: storage never ran {plugin}; status: {:?}",
            wukong.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events in a namespace (the recorder writes `events.k8s.io/v1`).
async fn events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list events")
        .items
}

/// Warnings about Wukongs (a refused reload is a warning on the ConfigMap or the Pod).
fn warnings(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Wukong"))
        })
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect()
}

/// When the first event whose note contains `text` happened.
fn first_event(events: &[Event], text: &str) -> Option<Timestamp> {
    events
        .iter()
        .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(text)))
        .filter_map(|e| e.event_time.as_ref().map(|t| t.0))
        .min()
}

/// The operator's log lines, without colour codes.
fn log_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.lines().map(str::to_owned).collect()
}

/// Waits for the `nth` (from 1) log line containing `marker`; returns it and its time.
async fn log_line(log: &Path, marker: &str, nth: usize) -> (String, Timestamp) {
    let started = std::time::Instant::now();
    loop {
        let lines = log_lines(log);
        if let Some(line) = lines.iter().filter(|l| l.contains(marker)).nth(nth - 1) {
            let time = line
                .split_whitespace()
                .next()
                .and_then(|t| t.parse().ok())
                .expect("log line starts with a timestamp");
            return (line.clone(), time);
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "no {marker:?} line #{nth} in the operator log:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn millis(from: Timestamp, to: Timestamp) -> i64 {
    to.as_millisecond() - from.as_millisecond()
}

/// Checks the Longhorn plugin's StorageClass exists and prints the swap's timing figures.
async fn longhorn_took_over(
    client: &Client,
    ns: &str,
    how: &str,
    written: Timestamp,
    (swap_line, swapped): (String, Timestamp),
    status_seen: Timestamp,
) {
    let load_ms = swap_line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("load_ms="))
        .unwrap_or("?");
    let classes = list(client, "", "storage.k8s.io/v1", "StorageClass").await;
    let longhorn = classes
        .iter()
        .find(|c| c.name_any() == "wukong-longhorn")
        .expect("the Longhorn plugin applied its StorageClass");
    assert_eq!(longhorn.data["provisioner"], "driver.longhorn.io");
    let events = events(client, ns).await;
    assert_eq!(
        warnings(&events),
        Vec::<String>::new(),
        "no warning during the swap"
    );
    let first_call = first_event(
        &events,
        "StorageClass wukong-longhorn applied by plugin longhorn-storage",
    )
    .expect("event for the first outcome of the new plugin");
    println!(
        "hot swap ({how}): written -> swapped {} ms (of which loading {load_ms} ms), -> first call on longhorn-storage {} ms, -> status {} ms (target: first call <= 2000 ms)",
        millis(written, swapped),
        millis(written, first_call),
        millis(written, status_seen),
    );
}

/// A plugin folder of copies of the bundled plugins, so one can be replaced in place.
fn copy_plugins(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    for entry in std::fs::read_dir(plugin_dir()).expect("plugin dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::copy(&path, plugins.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    plugins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_changed_in_the_config_file_is_swapped_in_under_a_running_wukong() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = "hot-config";
    namespace(&client, ns).await;
    let config = dir.path().join("wukong.toml");
    let log = dir.path().join("operator.log");
    std::fs::write(&config, host_config("ceph-rbd", "")).expect("write config");
    let _operator = OperatorProcess::start(&cluster, &config, &log);

    create(&client, ns, &wukong_yaml("vm")).await;
    let before = wait_for(&client, ns, "vm", TIMEOUT, is_running).await;
    assert_eq!(
        storage_plugin(&before).map(|p| p.0).as_deref(),
        Some("ceph-rbd-storage")
    );

    let written = Timestamp::now();
    std::fs::write(
        &config,
        host_config("ceph-rbd", "").replace(CEPH_PLUGIN, LONGHORN_PLUGIN),
    )
    .expect("write config");
    let (after, status_seen) = until_storage_plugin(&client, ns, "vm", "longhorn-storage").await;
    let swap = log_line(&log, "backends swapped", 1).await;
    let line = &swap.0;
    assert!(
        line.contains("storage.ceph-rbd: ceph-rbd-storage@") && line.contains("longhorn-storage@"),
        "the log names the key and both plugins: {line}"
    );
    // Unchanged plugins are not compiled again: every plugin the reload loaded came from
    // the code cache (the start-up load logs before the reloader starts).
    let lines = log_lines(&log);
    let reloads = lines
        .iter()
        .skip_while(|l| !l.contains("following the config and plugin files"))
        .filter(|l| l.contains("backend loaded"))
        .collect::<Vec<_>>();
    assert!(!reloads.is_empty(), "the reload loaded the backends again");
    assert!(
        reloads.iter().all(|l| l.contains("code=Cache")),
        "{reloads:#?}"
    );
    let (_, backend, digest) = storage_plugin(&after).expect("storage record");
    assert_eq!(
        backend, "ceph-rbd",
        "the same backend, now served by Longhorn"
    );
    assert_eq!(digest, sha256(&plugin_dir().join("longhorn_storage.wasm")));
    longhorn_took_over(&client, ns, "config file", written, swap, status_seen).await;
    wait_for(&client, ns, "vm", TIMEOUT, is_running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_or_plugin_is_refused_and_a_plugin_replaced_in_place_is_swapped_in() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = "hot-file";
    namespace(&client, ns).await;
    let plugins = copy_plugins(dir.path());
    let good = host_config("ceph-rbd", "").replace(
        &plugin_dir().display().to_string(),
        &plugins.display().to_string(),
    );
    assert!(good.contains(CEPH_PLUGIN) && good.contains(CEPH_CONFIG));
    let config = dir.path().join("wukong.toml");
    let log = dir.path().join("operator.log");
    std::fs::write(&config, &good).expect("write config");
    // As in a cluster: the operator knows its Pod, so refusals are events on it.
    let _operator = OperatorProcess::start_as(
        &cluster.env.kubeconfig_path(),
        &config,
        &log,
        &[],
        &[("POD_NAME", "wukong-0"), ("POD_NAMESPACE", ns)],
    );
    create(&client, ns, &wukong_yaml("vm1")).await;
    let first = wait_for(&client, ns, "vm1", TIMEOUT, is_running).await;
    let ceph = sha256(&plugins.join("ceph_rbd_storage.wasm"));
    assert_eq!(storage_plugin(&first).map(|p| p.2), Some(ceph.clone()));

    // A config its plugin's schema refuses: the log and an event name the key and why.
    std::fs::write(&config, good.replace(CEPH_CONFIG, CEPH_BAD_CONFIG)).expect("write");
    let (line, _) = log_line(&log, "reload refused", 1).await;
    assert!(
        line.contains("storage.ceph-rbd.config") && line.contains("createStorageClass"),
        "{line}"
    );
    std::fs::write(&config, &good).expect("write");

    // A config whose worst case exceeds the memory the operator may use: refused, saying
    // what adds up (the defaults: 16 reconciles × 256 MiB per call).
    std::fs::write(
        &config,
        format!("{good}\n[controller]\nmemoryLimitBytes = 268435456\n"),
    )
    .expect("write");
    let (line, _) = log_line(&log, "reload refused", 2).await;
    assert!(
        line.contains("memory: the operator could need")
            && line.contains("more than the 256 MiB it may use"),
        "{line}"
    );
    std::fs::write(&config, &good).expect("write");

    // A plugin file that is not a component, written in place: refused, naming the file.
    let ceph_file = plugins.join("ceph_rbd_storage.wasm");
    std::fs::write(&ceph_file, b"not a component").expect("write");
    let (line, _) = log_line(&log, "reload refused", 3).await;
    assert!(
        line.contains(&ceph_file.display().to_string())
            && line.contains("not a WebAssembly component"),
        "{line}"
    );

    // A plugin replaced in place by one that asks for more than the backend is granted (a
    // moved tag would do the same): refused, naming the backend, the file and what it asks.
    std::fs::copy(support::plugin_wasm("hostile-plugin"), &ceph_file).expect("copy");
    let (line, _) = log_line(&log, "reload refused", 4).await;
    assert!(
        line.contains("storage.ceph-rbd.grants")
            && line.contains(&ceph_file.display().to_string())
            && line.contains("asks for more than this backend is granted")
            && line.contains("actions virtualmachines/stop"),
        "{line}"
    );
    let pod_events: Vec<String> = events(&client, ns)
        .await
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Pod"))
                && e.reason.as_deref() == Some("ConfigRejected")
        })
        .filter_map(|e| e.note)
        .collect();
    assert!(
        pod_events
            .iter()
            .any(|n| n.contains("storage.ceph-rbd.config") && n.contains("createStorageClass")),
        "{pod_events:?}"
    );
    assert!(
        pod_events
            .iter()
            .any(|n| n.contains(&ceph_file.display().to_string())),
        "{pod_events:?}"
    );
    for refusal in ["memory: the operator could need", "storage.ceph-rbd.grants"] {
        assert!(
            pod_events.iter().any(|n| n.contains(refusal)),
            "{refusal}: {pod_events:?}"
        );
    }

    // The old plugin stays in use and the operator keeps reconciling.
    create(&client, ns, &wukong_yaml("vm2")).await;
    let second = wait_for(&client, ns, "vm2", TIMEOUT, is_running).await;
    assert_eq!(storage_plugin(&second).map(|p| p.2), Some(ceph));
    let wukongs = Api::<Wukong>::namespaced(client.clone(), ns);
    for name in ["vm1", "vm2"] {
        let wukong = wukongs.get(name).await.expect("get");
        assert!(!step_failed(&wukong), "{name}: {:?}", wukong.status);
    }

    // Fixed in place with another plugin: swapped in, both Wukongs move to it.
    let written = Timestamp::now();
    std::fs::copy(plugin_dir().join("longhorn_storage.wasm"), &ceph_file).expect("copy");
    let (_, status_seen) = until_storage_plugin(&client, ns, "vm1", "longhorn-storage").await;
    until_storage_plugin(&client, ns, "vm2", "longhorn-storage").await;
    let swap = log_line(&log, "backends swapped", 1).await;
    let line = &swap.0;
    assert!(line.contains(&ceph_file.display().to_string()), "{line}");
    longhorn_took_over(
        &client,
        ns,
        "plugin file in place",
        written,
        swap,
        status_seen,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_changed_in_the_configmap_is_swapped_in_and_a_refusal_is_an_event_on_it() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = "hot-configmap";
    namespace(&client, ns).await;
    let maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let set_config = |text: String| {
        let maps = maps.clone();
        async move {
            let map = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "wukong-config", "namespace": ns},
                "data": {"wukong.toml": text},
            });
            maps.patch(
                "wukong-config",
                &PatchParams::apply("hot-swap-test").force(),
                &Patch::Apply(&map),
            )
            .await
            .expect("apply configmap");
        }
    };
    set_config(host_config("ceph-rbd", "")).await;
    let log = dir.path().join("operator.log");
    let _operator = OperatorProcess::start_with_args(
        &cluster,
        &["--config-map", &format!("{ns}/wukong-config")],
        &log,
    );
    create(&client, ns, &wukong_yaml("vm")).await;
    wait_for(&client, ns, "vm", TIMEOUT, is_running).await;

    set_config(host_config("ceph-rbd", "").replace(CEPH_CONFIG, CEPH_BAD_CONFIG)).await;
    let (line, _) = log_line(&log, "reload refused", 1).await;
    assert!(
        line.contains("configmap hot-configmap/wukong-config"),
        "{line}"
    );
    let map_events = |events: Vec<Event>, reason: &str| -> Vec<String> {
        events
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("ConfigMap")
                        && r.name.as_deref() == Some("wukong-config")
                }) && e.reason.as_deref() == Some(reason)
            })
            .filter_map(|e| e.note)
            .collect()
    };
    let rejected = map_events(events(&client, ns).await, "ConfigRejected");
    assert!(
        rejected
            .iter()
            .any(|n| n.contains("storage.ceph-rbd.config") && n.contains("createStorageClass")),
        "{rejected:?}"
    );

    let written = Timestamp::now();
    set_config(host_config("ceph-rbd", "").replace(CEPH_PLUGIN, LONGHORN_PLUGIN)).await;
    let (_, status_seen) = until_storage_plugin(&client, ns, "vm", "longhorn-storage").await;
    let swap = log_line(&log, "backends swapped", 1).await;
    // The first swap is this one: the watcher's first look at the map changed nothing.
    assert!(
        swap.0.contains("storage.ceph-rbd: ceph-rbd-storage@")
            && swap.0.contains("longhorn-storage@"),
        "{}",
        swap.0
    );
    let reloaded = map_events(events(&client, ns).await, "ConfigReloaded");
    assert!(
        reloaded
            .iter()
            .any(|n| n.contains("storage.ceph-rbd") && n.contains("longhorn-storage@")),
        "{reloaded:?}"
    );
    longhorn_took_over(&client, ns, "configmap", written, swap, status_seen).await;
}
