//! Leader election with two real operator processes (`wukong run --leader-elect`) on the
//! real apiserver: one leads and reconciles, the other stands by (and is ready); the
//! leader SIGKILLed in the middle of a restart, the standby takes over once the lease
//! expires and the restart is still done exactly once; a SIGTERMed leader hands over at
//! once; a leader whose lease is taken exits non-zero. Failover times are printed.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::operator::{
    Cluster, OperatorProcess, SHORT_LEASE, create, host_config, is_running, namespace, wait_for,
};
use support::telemetry;
use wukong::api::Wukong;

const NS: &str = "election";
const LEASE: &str = "wukong-operator";
const LEASE_NS: &str = "default";
const LEASE_DURATION: Duration = Duration::from_secs(4);
const RETRY: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(60);

struct Replicas {
    cluster: Cluster,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Replicas {
    async fn start() -> Self {
        let cluster = Cluster::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("wukong.toml");
        std::fs::write(&config, host_config("cdi", "")).expect("config");
        namespace(&cluster.client(), NS).await;
        Self {
            cluster,
            dir,
            config,
        }
    }

    fn log(&self, identity: &str) -> PathBuf {
        self.dir.path().join(format!("{identity}.log"))
    }

    fn operator(&self, identity: &str) -> OperatorProcess {
        let mut args = vec![
            "--leader-elect",
            "--lease-name",
            LEASE,
            "--lease-namespace",
            LEASE_NS,
            "--lease-identity",
            identity,
        ];
        // SHORT_LEASE: a 4 s lease (LEASE_DURATION) and a 500 ms retry (RETRY).
        args.extend(SHORT_LEASE);
        args.extend([
            "--metrics-addr",
            "127.0.0.1:0",
            "--log",
            "info,kube=warn,wukong::controller=debug",
        ]);
        OperatorProcess::start_as(
            &self.cluster.env.kubeconfig_path(),
            &self.config,
            &self.log(identity),
            &args,
            &[],
        )
    }
}

async fn holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), LEASE_NS)
        .get_opt(LEASE)
        .await
        .expect("get lease")
        .and_then(|lease| lease.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Waits until `identity` holds the lease; returns how long that took.
async fn wait_for_holder(client: &Client, identity: &str) -> Duration {
    let started = Instant::now();
    while holder(client).await.as_deref() != Some(identity) {
        assert!(
            started.elapsed() < TIMEOUT,
            "{identity} did not get the lease in {TIMEOUT:?} (holder {:?})",
            holder(client).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Reconciles an operator logged (`wukong::controller` at debug).
fn reconciles(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("reconciled"))
        .count()
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn finished(w: &Wukong, request_id: &str) -> Option<String> {
    let state = w.status.as_ref()?.lifecycle_state.as_ref()?;
    state
        .history
        .iter()
        .find(|r| r.request_id == request_id)
        .map(|r| r.outcome.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_a_killed_leader_and_no_action_is_done_twice() {
    let replicas = Replicas::start().await;
    let cluster = &replicas.cluster;
    let client = cluster.client();
    let leader = replicas.operator("operator-a");
    wait_for_holder(&client, "operator-a").await;
    let standby = replicas.operator("operator-b");

    create(&client, NS, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: phoenix}\nspec: {cpu: 1, memory: 1Gi}\n").await;
    wait_for(&client, NS, "phoenix", TIMEOUT, is_running).await;
    // The standby has looked at the lease several times by now.
    tokio::time::sleep(LEASE_DURATION / 2).await;
    assert_eq!(holder(&client).await.as_deref(), Some("operator-a"));
    let (log_a, log_b) = (replicas.log("operator-a"), replicas.log("operator-b"));
    assert!(
        reconciles(&log_a) > 0,
        "the leader reconciles:\n{}",
        log_text(&log_a)
    );
    assert_eq!(
        reconciles(&log_b),
        0,
        "the standby does not reconcile:\n{}",
        log_text(&log_b)
    );
    assert!(
        log_text(&log_b).contains("standing by"),
        "{}",
        log_text(&log_b)
    );
    // A standby with its backends loaded is ready; only the leader says it leads.
    let standby_address = telemetry::metrics_address(&log_b, TIMEOUT).await;
    assert_eq!(telemetry::get(standby_address, "/readyz").await.0, 200);
    let (_, standby_metrics) = telemetry::get(standby_address, "/metrics").await;
    assert_eq!(
        telemetry::sample(&standby_metrics, "wukong_leader", &[]),
        0.0
    );
    let leader_address = telemetry::metrics_address(&log_a, TIMEOUT).await;
    let (_, leader_metrics) = telemetry::get(leader_address, "/metrics").await;
    assert_eq!(
        telemetry::sample(&leader_metrics, "wukong_leader", &[]),
        1.0
    );

    // A restart is requested; the leader dies once KubeVirt has seen its stop.
    let api = Api::<Wukong>::namespaced(client.clone(), NS);
    let patch = json!({"spec": {"lifecycleAction": {"action": "restart", "gracePeriodSeconds": 1, "requestId": "r1"}}});
    api.patch("phoenix", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("request restart");
    let asked = Instant::now();
    while cluster.sim.count_calls("stop", NS, "phoenix") == 0 {
        assert!(asked.elapsed() < TIMEOUT, "the leader never stopped the VM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = Instant::now();
    leader.kill();
    let failover = wait_for_holder(&client, "operator-b").await;
    let done = wait_for(&client, NS, "phoenix", TIMEOUT, |w| {
        finished(w, "r1").is_some() && is_running(w)
    })
    .await;
    let finished_after = killed.elapsed();
    assert_eq!(finished(&done, "r1").as_deref(), Some("Succeeded"));
    assert_eq!(
        (
            cluster.sim.count_calls("stop", NS, "phoenix"),
            cluster.sim.count_calls("start", NS, "phoenix")
        ),
        (1, 1),
        "one stop and one start across the handover; calls {:?}",
        cluster
            .sim
            .calls()
            .iter()
            .map(|c| format!("{} {}", c.action, c.code))
            .collect::<Vec<_>>()
    );
    assert!(
        reconciles(&log_b) > 0,
        "the new leader reconciles:\n{}",
        log_text(&log_b)
    );
    // Safety, not speed: the standby waited for the lease to expire (the dead leader's
    // last renewal was at most one retry period before the kill).
    assert!(
        failover >= LEASE_DURATION - RETRY * 2,
        "took over after {failover:?}, before the {LEASE_DURATION:?} lease could expire"
    );
    eprintln!(
        "[figure] failover after SIGKILL: lease taken over {failover:?} after the kill (lease duration {LEASE_DURATION:?}, target under {:?}); the interrupted restart finished {finished_after:?} after the kill",
        LEASE_DURATION + Duration::from_secs(2)
    );
    drop(standby);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_hands_over_at_once_and_a_leader_that_loses_the_lease_exits() {
    let replicas = Replicas::start().await;
    let client = replicas.cluster.client();
    let mut first = replicas.operator("operator-a");
    wait_for_holder(&client, "operator-a").await;
    let mut second = replicas.operator("operator-b");
    tokio::time::sleep(LEASE_DURATION / 2).await;
    assert_eq!(holder(&client).await.as_deref(), Some("operator-a"));

    // SIGTERM: the leader releases the lease on its way out.
    let terminated = Instant::now();
    let status =
        tokio::task::block_in_place(|| first.terminate(TIMEOUT)).expect("exits on SIGTERM");
    assert!(status.success(), "a clean shutdown exits 0: {status:?}");
    wait_for_holder(&client, "operator-b").await;
    let handover = terminated.elapsed();
    assert!(
        handover < LEASE_DURATION,
        "released, so the standby need not wait for expiry ({handover:?})"
    );
    eprintln!("[figure] handover after SIGTERM: {handover:?} (lease duration {LEASE_DURATION:?})");

    // Someone else takes the lease: the leader must stop at once, exiting non-zero.
    let leases = Api::<Lease>::namespaced(client.clone(), LEASE_NS);
    let mut lease = leases.get(LEASE).await.expect("lease");
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(60);
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .expect("steal the lease");
    let stolen = Instant::now();
    let status = tokio::task::block_in_place(|| second.wait_exit(TIMEOUT))
        .expect("the leader exits when it loses the lease");
    assert!(
        !status.success(),
        "losing the lease is an error exit: {status:?}"
    );
    let log_b = replicas.log("operator-b");
    assert!(
        log_text(&log_b).contains("leadership lost"),
        "{}",
        log_text(&log_b)
    );
    assert_eq!(
        holder(&client).await.as_deref(),
        Some("intruder"),
        "it does not fight back"
    );
    eprintln!(
        "[figure] a leader whose lease was taken exited {:?} later",
        stolen.elapsed()
    );
}
