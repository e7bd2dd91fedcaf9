//! The operator's `/metrics`, `/healthz` and `/readyz`, scraped from the real binary (with
//! JSON logs) while it works on the real apiserver: reconciles are counted, every step's
//! plugin calls are timed, a plugin that traps is counted as a trap, a lifecycle action
//! is counted with its duration, and the phase gauge follows the Wukongs.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::operator::{
    Cluster, condition, create, hostile_backend, is_running, namespace, start_with_metrics,
    wait_for,
};
use support::telemetry::{get, sample};
use wukong::api::Wukong;

const NS: &str = "metrics";
const TIMEOUT: Duration = Duration::from_secs(60);

const WITH_DISK_AND_NETWORK: &str = r#"
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata: {name: web}
spec:
  cpu: 1
  memory: 1Gi
  disks:
  - {name: root, size: 10Gi, image: "docker://quay.io/containerdisks/fedora:40", bootOrder: 1}
  networks:
  - name: lan
    config: {bridge: br-lan, vlan: 100}
"#;

/// Scrapes until `done` holds for the metrics text; panics with the text after `TIMEOUT`.
async fn scrape_until(
    address: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        let (code, text) = get(address, "/metrics").await;
        assert_eq!(code, 200, "{text}");
        if done(&text) {
            return text;
        }
        assert!(started.elapsed() < TIMEOUT, "{what} never showed:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_the_work() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = hostile_backend("broken", r#"{ mode = "trap" }"#);
    let (_operator, address) = start_with_metrics(&cluster, dir.path(), "cdi", &broken).await;
    assert_eq!(get(address, "/healthz").await.0, 200, "alive at once");
    let started = Instant::now();
    while get(address, "/readyz").await.0 != 200 {
        assert!(started.elapsed() < TIMEOUT, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "[figure] ready {:?} after the metrics server came up",
        started.elapsed()
    );
    let (_, before) = get(address, "/metrics").await;
    let reconciles_before = sample(&before, "wukong_reconciles_total", &[]);

    // A Wukong with a disk and a network reaches Running: every step runs.
    namespace(&client, NS).await;
    create(&client, NS, WITH_DISK_AND_NETWORK).await;
    wait_for(&client, NS, "web", TIMEOUT, is_running).await;
    let running = scrape_until(address, "Running=1", |text| {
        sample(text, "wukong_wukongs", &[("phase", "Running")]) == 1.0
    })
    .await;
    assert!(
        sample(&running, "wukong_reconciles_total", &[("result", "ok")]) > reconciles_before,
        "reconciles are counted:\n{running}"
    );
    for step in ["network", "storage", "lifecycle", "migration"] {
        let calls = sample(
            &running,
            "wukong_plugin_call_duration_seconds_count",
            &[("step", step), ("phase", "reconcile")],
        );
        assert!(calls > 0.0, "{step} calls are timed:\n{running}");
    }
    assert!(
        sample(
            &running,
            "wukong_plugin_call_duration_seconds_count",
            &[("plugin", "kubevirt-lifecycle")]
        ) > 0.0,
        "labelled with the plugin's name:\n{running}"
    );
    assert_eq!(
        sample(&running, "wukong_leader", &[]),
        1.0,
        "no election: it leads"
    );

    // A lifecycle action is counted once it finishes, with its duration.
    let api = Api::<Wukong>::namespaced(client.clone(), NS);
    let patch = json!({"spec": {"lifecycleAction": {"action": "restart", "gracePeriodSeconds": 1, "requestId": "m1"}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("request restart");
    let restarted = scrape_until(address, "a finished restart", |text| {
        sample(
            text,
            "wukong_lifecycle_actions_total",
            &[("action", "restart"), ("outcome", "Succeeded")],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        sample(
            &restarted,
            "wukong_lifecycle_actions_total",
            &[("action", "restart")]
        ),
        1.0,
        "counted once:\n{restarted}"
    );
    assert_eq!(
        sample(
            &restarted,
            "wukong_lifecycle_action_duration_seconds_count",
            &[("action", "restart")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &restarted,
            "wukong_lifecycle_actions_started_total",
            &[("action", "restart")]
        ),
        1.0
    );

    // A plugin that traps: the failure is counted with its kind, the reconcile as an error.
    create(&client, NS, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: doomed}\nspec: {cpu: 1, memory: 1Gi, disks: [{name: root, size: 1Gi, backend: broken}]}\n").await;
    wait_for(&client, NS, "doomed", TIMEOUT, |w| {
        condition(w, "StepFailed").is_some_and(|c| c.0 == "True")
    })
    .await;
    let failed = scrape_until(address, "the trap", |text| {
        sample(
            text,
            "wukong_plugin_failures_total",
            &[("kind", "trap"), ("plugin", "hostile"), ("step", "storage")],
        ) >= 1.0
            && sample(text, "wukong_wukongs", &[("phase", "Failed")]) == 1.0
            // The reconcile is counted when it returns, just after the call failed.
            && sample(text, "wukong_reconciles_total", &[("result", "step-error")]) >= 1.0
    })
    .await;
    assert!(
        sample(&failed, "wukong_reconciles_total", &[])
            > sample(&running, "wukong_reconciles_total", &[]),
        "the count moves"
    );
    assert_eq!(
        sample(&failed, "wukong_wukongs", &[("phase", "Running")]),
        1.0
    );
    let (ready, _) = get(address, "/readyz").await;
    assert_eq!(
        ready, 200,
        "a failing plugin does not make the operator unready"
    );

    // `--log-format json`: every line the operator wrote is a JSON object.
    let text = std::fs::read_to_string(dir.path().join("operator.log")).expect("log");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
    eprintln!("[figure] {} JSON log lines, all parsed", lines.len());
}
