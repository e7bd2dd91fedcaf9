//! Faults at scale, on the real apiserver with the real `wukong run` binary and the bundled
//! plugins: kube-apiserver frozen (SIGSTOP) for 20 s, kube-apiserver restarted and etcd
//! restarted, each in the middle of many Wukongs converging; the operator SIGKILLed at 10
//! points of a run of mixed lifecycle actions and migrations; the leader killed, and later
//! stopped, while it works.
//!
//! Nothing may be lost and nothing done twice: every Wukong converges, each has one VM that
//! was never deleted and made again (a watch records every VM uid), and each request is done
//! exactly once as the simulator records it (its log of subresource calls, and the migration
//! objects per request).
//!
//! `WUKONG_FAULT_WUKONGS` sets how many Wukongs each run has: the default keeps CI short;
//! `WUKONG_FAULT_WUKONGS=200 cargo test -p wukong --test faults` is the size.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::operator::{
    Cluster, OperatorProcess, SHORT_LEASE, create, host_config, is_running, list, namespace,
};
use wukong::api::Wukong;
use wukong_testenv::{SimConfig, SubresourceCall};

const CONVERGE: Duration = Duration::from_secs(300);
const PAUSE: Duration = Duration::from_secs(20);
const KILLS: usize = 10;

fn wukong_count() -> usize {
    std::env::var("WUKONG_FAULT_WUKONGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// Room for every Wukong on any one node, so a migration always has a target.
fn roomy() -> SimConfig {
    SimConfig {
        nodes: 3,
        node_cpu: "512".into(),
        node_memory: "1Ti".into(),
        ..SimConfig::fast()
    }
}

/// The scale bench's Wukong: one blank Longhorn disk (RWX, so it can migrate), one Multus
/// network.
fn manifest(name: &str) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  cpu: 1\n  memory: 256Mi\n  disks: [{{name: data, size: 1Gi, backend: longhorn}}]\n  networks: [{{name: lan, config: {{bridge: br0}}}}]\n"
    )
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

async fn create_all(client: &Client, ns: &str, names: &[String]) {
    stream::iter(names)
        .for_each_concurrent(16, |name| async move {
            create(client, ns, &manifest(name)).await;
        })
        .await;
}

/// The Wukongs of a namespace; `None` while the apiserver does not answer.
async fn wukongs(client: &Client, ns: &str) -> Option<Vec<Wukong>> {
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    tokio::time::timeout(Duration::from_secs(5), api.list(&Default::default()))
        .await
        .ok()?
        .ok()
        .map(|l| l.items)
}

/// Waits until at least `at_least` of the namespace's Wukongs satisfy `done`; panics after
/// `timeout` naming the first ones that do not, with their status.
async fn wait_until(
    client: &Client,
    ns: &str,
    at_least: usize,
    timeout: Duration,
    done: impl Fn(&Wukong) -> bool,
) -> Vec<Wukong> {
    let started = Instant::now();
    loop {
        if let Some(items) = wukongs(client, ns).await {
            if items.iter().filter(|w| done(w)).count() >= at_least {
                return items;
            }
            if started.elapsed() > timeout {
                let stuck: Vec<String> = items
                    .iter()
                    .filter(|w| !done(w))
                    .take(3)
                    .map(|w| {
                        format!(
                            "{}: {}",
                            w.name_any(),
                            serde_yaml::to_string(&w.status).unwrap_or_default()
                        )
                    })
                    .collect();
                panic!(
                    "{ns}: {} of {at_least} there after {timeout:?}; first stuck:\n{}",
                    items.iter().filter(|w| done(w)).count(),
                    stuck.join("\n")
                );
            }
        } else {
            assert!(
                started.elapsed() < timeout,
                "{ns}: the apiserver did not answer for {timeout:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every uid each VM name had, seen by a watch (relisting after any break): a VM deleted
/// and made again shows two.
#[derive(Clone, Default)]
struct VmUids(Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>);

impl VmUids {
    fn watch(client: &Client, ns: &str) -> (Self, tokio::task::JoinHandle<()>) {
        let seen = Self::default();
        let gvk = kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine");
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "virtualmachines");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(events);
            loop {
                match events.try_next().await {
                    Ok(Some(vm)) => {
                        if let Some(uid) = vm.uid() {
                            let mut seen = record.0.lock().unwrap_or_else(|p| p.into_inner());
                            seen.entry(vm.name_any()).or_default().insert(uid);
                        }
                    }
                    Ok(None) => return,
                    // The watcher backs off and relists by itself.
                    Err(_) => {}
                }
            }
        });
        (seen, task)
    }

    fn made_again(&self) -> Vec<String> {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(_, uids)| uids.len() > 1)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn names(&self) -> BTreeSet<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// Nothing lost, nothing made twice: every Wukong Running with one VM, one claim per disk,
/// one NAD, and no VM ever made again.
async fn assert_whole(client: &Client, ns: &str, expected: &[String], uids: &VmUids) {
    let vms = list(client, ns, "kubevirt.io/v1", "VirtualMachine").await;
    let vm_names: BTreeSet<String> = vms.iter().map(ResourceExt::name_any).collect();
    let expected_set: BTreeSet<String> = expected.iter().cloned().collect();
    assert_eq!(vm_names, expected_set, "{ns}: one VM per Wukong");
    let claims = list(client, ns, "v1", "PersistentVolumeClaim").await;
    assert_eq!(claims.len(), expected.len(), "{ns}: one claim per Wukong");
    let nads = list(
        client,
        ns,
        "k8s.cni.cncf.io/v1",
        "NetworkAttachmentDefinition",
    )
    .await;
    assert_eq!(nads.len(), expected.len(), "{ns}: one NAD per Wukong");
    assert_eq!(uids.names(), expected_set, "{ns}: the watch saw every VM");
    assert_eq!(
        uids.made_again(),
        Vec::<String>::new(),
        "{ns}: VMs deleted and made again"
    );
}

/// The operators' working folder; on a failing test its logs' last lines are printed, and
/// with `WUKONG_TESTENV_KEEP` set it is kept.
struct Workdir(Option<tempfile::TempDir>);

impl Workdir {
    fn new() -> Self {
        Self(Some(tempfile::tempdir().expect("tempdir")))
    }

    fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map_or(Path::new("."), tempfile::TempDir::path)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let entries = std::fs::read_dir(self.path())
                .into_iter()
                .flatten()
                .flatten();
            for log in entries.filter(|e| e.path().extension().is_some_and(|x| x == "log")) {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- last lines of {} ---\n{}",
                    log.path().display(),
                    lines[lines.len().saturating_sub(60)..].join("\n")
                );
            }
        }
        if std::env::var_os("WUKONG_TESTENV_KEEP").is_some()
            && let Some(dir) = self.0.take()
        {
            eprintln!("keeping {}", dir.keep().display());
        }
    }
}

fn operator(cluster: &Cluster, dir: &Path) -> OperatorProcess {
    let config = dir.join("wukong.toml");
    if !config.exists() {
        std::fs::write(&config, host_config("cdi", "")).expect("config");
    }
    OperatorProcess::start(cluster, &config, &dir.join("operator.log"))
}

/// Creates `n` Wukongs in `ns`, runs `fault` once a third of them are Running, then waits
/// for all; returns how long the rest took after the fault.
async fn converge_through(
    cluster: &mut Cluster,
    ns: &str,
    n: usize,
    what: &str,
    fault: impl AsyncFnOnce(&mut Cluster),
) {
    let client = cluster.client();
    namespace(&client, ns).await;
    let (uids, watch) = VmUids::watch(&client, ns);
    let expected = names(ns, n);
    let started = Instant::now();
    create_all(&client, ns, &expected).await;
    wait_until(&client, ns, n.div_ceil(3), CONVERGE, is_running).await;
    let fault_at = started.elapsed();
    fault(cluster).await;
    let after_fault = Instant::now();
    wait_until(&client, ns, n, CONVERGE, is_running).await;
    eprintln!(
        "[figure] {what}: {n} Wukongs, fault at {:.1} s, all Running {:.1} s after it ({:.1} s in all)",
        fault_at.as_secs_f64(),
        after_fault.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // A settled cluster: give the watch a moment to see the last VMs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_whole(&client, ns, &expected, &uids).await;
    watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_paused_and_restarted_mid_convergence_loses_nothing() {
    let mut cluster = Cluster::start_with(roomy()).await;
    let dir = Workdir::new();
    let _operator = operator(&cluster, dir.path());
    let n = wukong_count();

    converge_through(
        &mut cluster,
        "paused",
        n,
        "apiserver SIGSTOP 20 s",
        async |c| {
            c.env.pause_apiserver().expect("SIGSTOP");
            tokio::time::sleep(PAUSE).await;
            c.env.resume_apiserver().expect("SIGCONT");
        },
    )
    .await;
    converge_through(
        &mut cluster,
        "apirestart",
        n,
        "apiserver restart",
        async |c| {
            let started = Instant::now();
            c.env
                .restart_apiserver()
                .await
                .expect("apiserver restarted");
            eprintln!("[figure] apiserver back in {:?}", started.elapsed());
        },
    )
    .await;
    converge_through(&mut cluster, "etcdrestart", n, "etcd restart", async |c| {
        let started = Instant::now();
        c.env.restart_etcd().await.expect("etcd restarted");
        eprintln!(
            "[figure] etcd and apiserver back in {:?}",
            started.elapsed()
        );
    })
    .await;
    // No lifecycle request was made: the simulator got no subresource call at all.
    let calls = cluster.sim.calls();
    assert!(
        calls.is_empty(),
        "unrequested subresource calls: {:?}",
        calls
            .iter()
            .take(5)
            .map(|c| (&c.action, &c.name))
            .collect::<Vec<_>>()
    );
}

/// What each Wukong is asked in the mixed run, by its index.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ask {
    Restart,
    Stop,
    Suspend,
    Migrate,
}

impl Ask {
    fn of(index: usize) -> Self {
        [Self::Restart, Self::Stop, Self::Suspend, Self::Migrate][index % 4]
    }

    fn patch(self, request_id: &str, target_node: &str) -> Value {
        match self {
            Self::Restart => action("restart", request_id),
            Self::Stop => action("stop", request_id),
            Self::Suspend => action("suspend", request_id),
            Self::Migrate => {
                json!({"spec": {"migration": {"targetNode": target_node, "requestId": request_id}}})
            }
        }
    }

    /// How many successful calls of each action this request makes: `(action, least, most)`.
    /// A graceful stop may be followed by its forced half when the guest is slow to go (at
    /// scale it is), so a stop is one or two calls, never the same call twice.
    fn calls(self) -> &'static [(&'static str, usize, usize)] {
        match self {
            Self::Restart => &[("stop", 1, 2), ("start", 1, 1), ("pause", 0, 0)],
            Self::Stop => &[("stop", 1, 2), ("start", 0, 0), ("pause", 0, 0)],
            Self::Suspend => &[("stop", 0, 0), ("start", 0, 0), ("pause", 1, 1)],
            Self::Migrate => &[("stop", 0, 0), ("start", 0, 0), ("pause", 0, 0)],
        }
    }
}

fn action(kind: &str, request_id: &str) -> Value {
    json!({"spec": {"lifecycleAction": {"action": kind, "gracePeriodSeconds": 1, "requestId": request_id}}})
}

/// The outcome of `request_id`, once finished: the lifecycle history or the migration record.
fn outcome(w: &Wukong, request_id: &str) -> Option<String> {
    let status = w.status.as_ref()?;
    if let Some(m) = &status.migration_status
        && m.request_id == request_id
        && matches!(
            m.phase.as_str(),
            "Succeeded" | "Failed" | "Aborted" | "Refused"
        )
    {
        return Some(m.phase.clone());
    }
    let history = &status.lifecycle_state.as_ref()?.history;
    history
        .iter()
        .find(|r| r.request_id == request_id)
        .map(|r| r.outcome.clone())
}

/// Asks each Wukong its [`Ask`] (request id `<name>-<round>`).
async fn ask_all(client: &Client, ns: &str, wukongs: &[Wukong], round: &str) {
    let api = Api::<Wukong>::namespaced(client.clone(), ns);
    let mut names: Vec<(usize, String, String)> = wukongs
        .iter()
        .map(|w| {
            let name = w.name_any();
            let node = w
                .status
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            (index_of(&name), name, node)
        })
        .collect();
    names.sort();
    stream::iter(names)
        .for_each_concurrent(16, |(index, name, node)| {
            let api = api.clone();
            async move {
                let target = other_node(&node);
                let patch = Ask::of(index).patch(&format!("{name}-{round}"), &target);
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("ask");
            }
        })
        .await;
}

fn index_of(name: &str) -> usize {
    name.rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

/// A node other than `node` among the three `roomy` nodes.
fn other_node(node: &str) -> String {
    let index = node
        .strip_prefix("sim-node-")
        .and_then(|i| i.parse::<usize>().ok())
        .unwrap_or(0);
    format!("sim-node-{}", (index + 1) % 3)
}

/// Every request finished `Succeeded`, with exactly the simulator calls and migration
/// objects it needs.
async fn assert_each_done_once(cluster: &Cluster, ns: &str, wukongs: &[Wukong], round: &str) {
    let migrations = list(
        &cluster.client(),
        ns,
        "kubevirt.io/v1",
        "VirtualMachineInstanceMigration",
    )
    .await;
    let calls = cluster.sim.calls();
    let mut refused_calls = 0;
    for w in wukongs {
        let name = w.name_any();
        let ask = Ask::of(index_of(&name));
        let request_id = format!("{name}-{round}");
        if !matches!(
            outcome(w, &request_id).as_deref(),
            Some("Succeeded" | "ForcedAfterTimeout")
        ) {
            let mine: Vec<String> = calls
                .iter()
                .filter(|c| c.namespace == ns && c.name == name)
                .map(|c| format!("{} {} {} ({:?})", c.action, c.code, c.body, c.user))
                .collect();
            panic!(
                "{name} ({ask:?}): not Succeeded; the simulator's calls: {mine:#?}\nstatus: {}",
                serde_yaml::to_string(&w.status).unwrap_or_default()
            );
        }
        let (done, refused): (Vec<&SubresourceCall>, Vec<&SubresourceCall>) = calls
            .iter()
            .filter(|c| c.namespace == ns && c.name == name)
            .partition(|c| c.code < 300);
        refused_calls += refused.len();
        let mut same = BTreeMap::new();
        for c in &done {
            *same.entry((&c.action, &c.body)).or_insert(0) += 1;
        }
        assert!(
            same.values().all(|n| *n == 1),
            "{name} ({ask:?}): a call done twice: {same:?}"
        );
        for (verb, least, most) in ask.calls() {
            let n = done.iter().filter(|c| c.action == *verb).count();
            assert!(
                (*least..=*most).contains(&n),
                "{name} ({ask:?}): {n} `{verb}` calls"
            );
        }
        let objects = migrations
            .iter()
            .filter(|m| {
                m.annotations()
                    .get("vm.novasphere.dev/request-id")
                    .is_some_and(|r| r == &request_id)
            })
            .count();
        let expected = usize::from(ask == Ask::Migrate);
        assert_eq!(objects, expected, "{name} ({ask:?}): migration objects");
    }
    eprintln!(
        "[figure] {round}: {} requests each done exactly once; {refused_calls} calls refused by the simulator (and retried)",
        wukongs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_at_ten_points_of_mixed_actions_does_each_exactly_once() {
    let cluster = Cluster::start_with(roomy()).await;
    let client = cluster.client();
    let dir = Workdir::new();
    let n = wukong_count();
    let ns = "killed";
    namespace(&client, ns).await;
    let (uids, watch) = VmUids::watch(&client, ns);
    let expected = names(ns, n);
    let mut running = Some(operator(&cluster, dir.path()));
    create_all(&client, ns, &expected).await;
    let settled = wait_until(&client, ns, n, CONVERGE, is_running).await;

    let started = Instant::now();
    ask_all(&client, ns, &settled, "r1").await;
    for delay in support::delays(0x2545_f491_4f6c_dd1d, KILLS, 3000) {
        tokio::time::sleep(delay).await;
        drop(running.take()); // SIGKILL, wherever it was
        running = Some(operator(&cluster, dir.path()));
    }
    let done = wait_until(&client, ns, n, CONVERGE, |w| {
        outcome(w, &format!("{}-r1", w.name_any())).is_some()
    })
    .await;
    eprintln!(
        "[figure] {n} mixed requests, {KILLS} SIGKILLs: all finished {:.1} s after the asks",
        started.elapsed().as_secs_f64()
    );
    assert_each_done_once(&cluster, ns, &done, "r1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(uids.made_again(), Vec::<String>::new(), "VMs made again");
    assert_eq!(uids.names().len(), n);
    watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_and_then_stopped_under_load_hands_over_and_does_each_once() {
    let cluster = Cluster::start_with(roomy()).await;
    let client = cluster.client();
    let dir = Workdir::new();
    std::fs::write(dir.path().join("wukong.toml"), host_config("cdi", "")).expect("config");
    let replica = |identity: &str| {
        let mut args = vec!["--leader-elect", "--lease-identity", identity];
        args.extend(SHORT_LEASE);
        args.extend(["--metrics-addr", "127.0.0.1:0"]);
        OperatorProcess::start_as(
            &cluster.env.kubeconfig_path(),
            &dir.path().join("wukong.toml"),
            &dir.path().join(format!("{identity}.log")),
            &args,
            &[],
        )
    };
    let n = wukong_count();
    let ns = "handover";
    namespace(&client, ns).await;
    let (uids, watch) = VmUids::watch(&client, ns);
    let expected = names(ns, n);

    let a = replica("operator-a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut b = replica("operator-b");
    let started = Instant::now();
    create_all(&client, ns, &expected).await;
    wait_until(&client, ns, n.div_ceil(3), CONVERGE, is_running).await;
    drop(a); // SIGKILL the leader: b takes over once the lease expires
    let killed_at = Instant::now();
    // Its replacement, as a new pod: a new identity.
    let _c = replica("operator-c");
    let settled = wait_until(&client, ns, n, CONVERGE, is_running).await;
    eprintln!(
        "[figure] leader SIGKILLed at {:.1} s with a third Running: all {n} Running {:.1} s later",
        started.elapsed().as_secs_f64() - killed_at.elapsed().as_secs_f64(),
        killed_at.elapsed().as_secs_f64()
    );

    ask_all(&client, ns, &settled, "r1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped_at = Instant::now();
    b.terminate(Duration::from_secs(30))
        .expect("the leader exits on SIGTERM");
    let done = wait_until(&client, ns, n, CONVERGE, |w| {
        outcome(w, &format!("{}-r1", w.name_any())).is_some()
    })
    .await;
    eprintln!(
        "[figure] leader SIGTERMed mid-requests: all {n} finished {:.1} s later",
        stopped_at.elapsed().as_secs_f64()
    );
    assert_each_done_once(&cluster, ns, &done, "r1").await;
    assert_whole_after_requests(&client, ns, &expected, &uids).await;
    watch.abort();
}

/// After the requests: the VMs are all there and none was made again (some are stopped, so
/// not every Wukong is Running).
async fn assert_whole_after_requests(
    client: &Client,
    ns: &str,
    expected: &[String],
    uids: &VmUids,
) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let vms = list(client, ns, "kubevirt.io/v1", "VirtualMachine").await;
    assert_eq!(vms.len(), expected.len(), "{ns}: one VM per Wukong");
    assert_eq!(
        uids.made_again(),
        Vec::<String>::new(),
        "{ns}: VMs made again"
    );
}
