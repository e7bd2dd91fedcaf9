//! Lifecycle actions end to end on the real apiserver + KubeVirt simulator with the real
//! plugins: each action's KubeVirt calls (counted, so "exactly once" is checked), its
//! record in `status.lifecycleState`, refusals, and a re-applied spec that does nothing.
//! Timing figures are printed (`eprintln`), never asserted.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::operator::{Cluster, InProcess, create, host_config, is_running, namespace, wait_for};
use wukong::api::{ActionRecord, Wukong};

const TIMEOUT: Duration = Duration::from_secs(60);
const NS: &str = "lifecycle";

fn last(w: &Wukong) -> Option<ActionRecord> {
    let state = w.status.as_ref()?.lifecycle_state.as_ref()?;
    if state.current_action.is_some() {
        return None;
    }
    state.history.first().cloned()
}

/// Sets `spec.lifecycleAction` and waits until the request is finished; returns its record
/// and the time from the patch to the first call of `first_call` on the VM.
async fn act(
    cluster: &Cluster,
    name: &str,
    action: serde_json::Value,
    first_call: Option<&str>,
) -> ActionRecord {
    let client = cluster.client();
    let api = Api::<Wukong>::namespaced(client.clone(), NS);
    let rid = action["requestId"].as_str().unwrap_or_default().to_owned();
    let before = first_call.map(|c| cluster.sim.count_calls(c, NS, name));
    let started = Instant::now();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"lifecycleAction": action}})),
    )
    .await
    .expect("patch lifecycleAction");
    if let (Some(call), Some(before)) = (first_call, before) {
        while cluster.sim.count_calls(call, NS, name) == before && started.elapsed() < TIMEOUT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "[figure] {call} ({rid}): first KubeVirt call {:?} after the spec change",
            started.elapsed()
        );
    }
    let w = wait_for(&client, NS, name, TIMEOUT, |w| {
        last(w).is_some_and(|r| r.request_id == rid)
    })
    .await;
    eprintln!("[figure] {rid}: finished in {:?}", started.elapsed());
    last(&w).expect("finished record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_actions_run_exactly_once_and_refuse_as_kubevirt() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    namespace(&client, NS).await;
    create(&client, NS, "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: vm1}\nspec: {cpu: 1, memory: 1Gi}\n").await;
    wait_for(&client, NS, "vm1", TIMEOUT, is_running).await;
    let calls = |action: &str| cluster.sim.count_calls(action, NS, "vm1");

    // Graceful stop.
    let stop = act(
        &cluster,
        "vm1",
        json!({"action": "stop", "gracePeriodSeconds": 5, "requestId": "s1"}),
        Some("stop"),
    )
    .await;
    assert_eq!(stop.outcome, "Succeeded", "{stop:?}");
    assert!(stop.finished_at.is_some());
    assert_eq!(calls("stop"), 1);
    // Stop of a stopped VM is refused with KubeVirt's reason, and calls nothing.
    let refused = act(
        &cluster,
        "vm1",
        json!({"action": "stop", "requestId": "s2"}),
        None,
    )
    .await;
    assert_eq!(
        (refused.outcome.as_str(), refused.message.as_str()),
        ("Refused", "refused: VM is not running")
    );
    assert_eq!(calls("stop"), 1);
    // Suspend of a stopped VM is refused.
    let refused = act(
        &cluster,
        "vm1",
        json!({"action": "suspend", "requestId": "p0"}),
        None,
    )
    .await;
    assert_eq!(refused.outcome, "Refused");
    assert_eq!(calls("pause"), 0);

    // Start: the VM runs again although the spec's runStrategy (Always) never changed.
    let start = act(
        &cluster,
        "vm1",
        json!({"action": "start", "requestId": "st1"}),
        Some("start"),
    )
    .await;
    assert_eq!(start.outcome, "Succeeded", "{start:?}");
    wait_for(&client, NS, "vm1", TIMEOUT, is_running).await;
    assert_eq!(calls("start"), 1);

    // Suspend, resume, and resume of a VM not paused refused.
    let suspend = act(
        &cluster,
        "vm1",
        json!({"action": "suspend", "requestId": "p1"}),
        Some("pause"),
    )
    .await;
    assert_eq!(suspend.outcome, "Succeeded", "{suspend:?}");
    let resume = act(
        &cluster,
        "vm1",
        json!({"action": "resume", "requestId": "u1"}),
        Some("unpause"),
    )
    .await;
    assert_eq!(resume.outcome, "Succeeded", "{resume:?}");
    let refused = act(
        &cluster,
        "vm1",
        json!({"action": "resume", "requestId": "u2"}),
        None,
    )
    .await;
    assert_eq!(refused.message, "refused: VMI is not paused");
    assert_eq!((calls("pause"), calls("unpause")), (1, 1));

    // Soft reboot.
    let reboot = act(
        &cluster,
        "vm1",
        json!({"action": "softReboot", "requestId": "r0"}),
        Some("softreboot"),
    )
    .await;
    assert_eq!(reboot.outcome, "Succeeded");
    assert_eq!(calls("softreboot"), 1);

    // Graceful restart: stop, wait, start — each once.
    let (stops, starts) = (calls("stop"), calls("start"));
    let restart = act(
        &cluster,
        "vm1",
        json!({"action": "restart", "requestId": "re1"}),
        Some("stop"),
    )
    .await;
    assert_eq!(restart.outcome, "Succeeded", "{restart:?}");
    assert_eq!((calls("stop") - stops, calls("start") - starts), (1, 1));
    // Forced restart (stop with gracePeriod 0, then start).
    let restart = act(
        &cluster,
        "vm1",
        json!({"action": "restart", "force": true, "requestId": "re2"}),
        Some("stop"),
    )
    .await;
    assert_eq!(restart.outcome, "Succeeded", "{restart:?}");
    assert!(
        cluster
            .sim
            .calls()
            .iter()
            .any(|c| c.action == "stop" && c.body.contains("\"gracePeriod\":0"))
    );
    wait_for(&client, NS, "vm1", TIMEOUT, is_running).await;

    // The same spec re-applied (and time passing) repeats nothing.
    let before = cluster.sim.calls().len();
    let api = Api::<Wukong>::namespaced(client.clone(), NS);
    api.patch("vm1", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"lifecycleAction": {"action": "restart", "force": true, "requestId": "re2"}}})))
        .await
        .expect("re-apply");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.sim.calls().len(),
        before,
        "a re-applied request called KubeVirt again"
    );
    let w = api.get("vm1").await.expect("get");
    let history = &w
        .status
        .as_ref()
        .and_then(|s| s.lifecycle_state.as_ref())
        .expect("state")
        .history;
    assert_eq!(history.iter().filter(|r| r.request_id == "re2").count(), 1);
    assert!(history.len() <= 10);
}
