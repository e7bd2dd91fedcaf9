//! Lifecycle actions against an operator that dies: killed (SIGKILL) at random points of
//! graceful restarts, restarted each time, every restart still finishes and KubeVirt sees
//! exactly one `stop` and one `start` per request. And a guest that ignores ACPI: a
//! graceful stop ends by force at the grace period.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::operator::{
    Cluster, InProcess, OperatorProcess, create, host_config, is_running, namespace, wait_for,
};
use wukong::api::Wukong;

const NS: &str = "crash";
const TIMEOUT: Duration = Duration::from_secs(60);
const KILLS: usize = 20;

fn finished(w: &Wukong, request_id: &str) -> Option<String> {
    let state = w.status.as_ref()?.lifecycle_state.as_ref()?;
    state
        .history
        .iter()
        .find(|r| r.request_id == request_id)
        .map(|r| r.outcome.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_of_restarts_no_action_is_done_twice() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wukong.toml");
    std::fs::write(&config, host_config("cdi", "")).expect("config");
    let log = dir.path().join("operator.log");
    namespace(&client, NS).await;
    create(&client, NS, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: phoenix}\nspec: {cpu: 1, memory: 1Gi}\n").await;
    let mut operator = OperatorProcess::start(&cluster, &config, &log);
    wait_for(&client, NS, "phoenix", TIMEOUT, is_running).await;

    let api = Api::<Wukong>::namespaced(client.clone(), NS);
    for (round, delay) in support::delays(0x9e37_79b9_7f4a_7c15, KILLS, 700)
        .into_iter()
        .enumerate()
    {
        let request_id = format!("restart-{round}");
        let patch = json!({"spec": {"lifecycleAction": {"action": "restart", "gracePeriodSeconds": 1, "requestId": request_id}}});
        api.patch("phoenix", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("request restart");
        tokio::time::sleep(delay).await;
        drop(operator); // SIGKILL, wherever it was
        operator = OperatorProcess::start(&cluster, &config, &log);
        let done = wait_for(&client, NS, "phoenix", TIMEOUT, |w| {
            finished(w, &request_id).is_some() && is_running(w)
        })
        .await;
        assert_eq!(
            finished(&done, &request_id).as_deref(),
            Some("Succeeded"),
            "round {round}"
        );
        let (stops, starts) = (
            cluster.sim.count_calls("stop", NS, "phoenix"),
            cluster.sim.count_calls("start", NS, "phoenix"),
        );
        if (stops, starts) != (round + 1, round + 1) {
            let calls: Vec<String> = cluster
                .sim
                .calls()
                .iter()
                .rev()
                .take(6)
                .map(|c| format!("{} {} {}", c.action, c.code, c.body))
                .collect();
            let history = serde_json::to_string_pretty(
                &done.status.as_ref().and_then(|s| s.lifecycle_state.clone()),
            )
            .unwrap_or_default();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "round {round} (killed after {delay:?}): {stops} stops, {starts} starts; last calls {calls:?}\nstate {history}\nlog (newest first):\n{}",
                tail.join("\n")
            );
        }
    }
    eprintln!(
        "{KILLS} restarts, operator killed during each: {} stop and {} start calls",
        KILLS, KILLS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_ignoring_acpi_is_stopped_by_force_after_the_grace_period() {
    let cluster = Cluster::start().await;
    cluster.sim.update_config(|c| c.guest_ignores_acpi = true);
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    namespace(&client, NS).await;
    create(&client, NS, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: stubborn}\nspec: {cpu: 1, memory: 1Gi}\n").await;
    wait_for(&client, NS, "stubborn", TIMEOUT, is_running).await;

    let api = Api::<Wukong>::namespaced(client.clone(), NS);
    let started = Instant::now();
    let patch = json!({"spec": {"lifecycleAction": {"action": "stop", "gracePeriodSeconds": 2, "requestId": "stop-1"}}});
    api.patch("stubborn", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("request stop");
    let stopped = wait_for(&client, NS, "stubborn", TIMEOUT, |w| {
        finished(w, "stop-1").is_some()
    })
    .await;
    let elapsed = started.elapsed();
    assert!(matches!(
        finished(&stopped, "stop-1").as_deref(),
        Some("Succeeded" | "ForcedAfterTimeout")
    ));
    assert!(
        elapsed >= Duration::from_secs(2),
        "the guest ignored ACPI: only the grace period's end stops it ({elapsed:?})"
    );
    assert_eq!(
        stopped
            .status
            .as_ref()
            .and_then(|s| s.lifecycle_state.as_ref())
            .map(|l| l.state.as_str()),
        Some("Stopped")
    );
    eprintln!("graceful stop of a guest ignoring ACPI ended after {elapsed:?} (grace period 2 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_falls_back_to_force_when_the_guest_does_not_stop() {
    let cluster = Cluster::start().await;
    // The guest ignores ACPI and nothing kills it at the grace period: only a forced stop ends it.
    cluster
        .sim
        .update_config(|c| c.guest_hangs_on_shutdown = true);
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    namespace(&client, NS).await;
    create(&client, NS, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: hung}\nspec: {cpu: 1, memory: 1Gi}\n").await;
    wait_for(&client, NS, "hung", TIMEOUT, is_running).await;

    let api = Api::<Wukong>::namespaced(client.clone(), NS);
    let patch = json!({"spec": {"lifecycleAction": {"action": "restart", "gracePeriodSeconds": 1, "requestId": "restart-hung"}}});
    api.patch("hung", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("request restart");
    let done = wait_for(&client, NS, "hung", TIMEOUT, |w| {
        finished(w, "restart-hung").is_some() && is_running(w)
    })
    .await;
    assert_eq!(
        finished(&done, "restart-hung").as_deref(),
        Some("ForcedAfterTimeout"),
        "status says the stop was forced"
    );
    let stops: Vec<String> = cluster
        .sim
        .calls()
        .iter()
        .filter(|c| c.action == "stop" && c.name == "hung")
        .map(|c| c.body.clone())
        .collect();
    assert_eq!(
        stops.len(),
        2,
        "a graceful stop, then a forced one: {stops:?}"
    );
    assert!(stops[1].contains("\"gracePeriod\":0"), "{stops:?}");
    assert_eq!(cluster.sim.count_calls("start", NS, "hung"), 1);
}
