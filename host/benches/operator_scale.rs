//! Scale benchmark: prints figures, asserts nothing.
//!
//! ```sh
//! tests/build-plugins.sh
//! KUBEBUILDER_ASSETS=~/.cache/wukong/assets cargo bench -p wukong --bench operator_scale
//! KUBEBUILDER_ASSETS=~/.cache/wukong/assets cargo bench -p wukong --bench operator_scale -- --wukongs 10000
//! KUBEBUILDER_ASSETS=~/.cache/wukong/assets cargo bench -p wukong --bench operator_scale -- --debounce-ms 1000
//! ```
//!
//! As a user would run it: the real apiserver, the zero-delay KubeVirt simulator with 20 big
//! nodes (in this process: the harness), and the release `wukong run` binary with the
//! bundled plugins as its own process. N Wukongs, each with one blank Longhorn disk and one
//! Multus network, are created at once (64 creators); the figures are taken when all are
//! `Running` (followed by a watch, as `kubectl wait` does). In the same run, before the
//! operator starts, a raw client measures the apiserver's own write ceiling, so the ratio of
//! Wukong throughput to that ceiling is measured side by side.
//!
//! The operator's own writes are only part of what a Wukong costs: the simulated KubeVirt
//! and CDI write objects and statuses too, into the same etcd on the same two cores. So the
//! ratio is given twice: against the ceiling for the operator's writes alone, and against
//! the ceiling for every write etcd made per Wukong (`etcd_mvcc_put_total` and
//! `etcd_mvcc_delete_total` over the run).
//!
//! Figures: time to all Running, Wukongs/s; the operator's requests per Wukong by verb and
//! resource (its own client-side count, `wukong_kube_requests_total`); reconciles and plugin
//! calls per Wukong; operator CPU seconds and the share spent inside plugin calls; the
//! operator's peak RSS; the apiserver's, etcd's and the harness's CPU seconds; every
//! client's requests by verb as the apiserver counts them, so the simulator's share shows;
//! what triggered the reconciles, by source.

#[path = "../tests/support/telemetry.rs"]
#[allow(dead_code)]
mod telemetry;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use wukong::api::{Wukong, WukongPhase};
use wukong_testenv::{SimConfig, Simulator, TestEnv};

/// Requests in flight at once from the bench's own clients.
const CREATORS: usize = 64;

fn config(plugins: &Path, debounce_ms: Option<u64>) -> String {
    let example = include_str!("../../examples/wukong.toml");
    // The shipped config as is, on this build's plugins (and the debounce asked for).
    let mut config = example.replace(
        "dir = \"../target/wasm32-wasip2/plugin\"",
        &format!("dir = \"{}\"", plugins.display()),
    );
    if let Some(ms) = debounce_ms {
        config = config.replace(
            "[controller]\n",
            &format!("[controller]\ndebounceMs = {ms}\n"),
        );
    }
    format!("{config}\n")
}

fn wukong(name: &str) -> Wukong {
    serde_yaml::from_str(&format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  cpu: 1\n  memory: 256Mi\n  disks: [{{name: data, size: 1Gi, backend: longhorn}}]\n  networks: [{{name: lan, config: {{bridge: br0}}}}]\n"
    ))
    .expect("wukong")
}

/// Waits until `count` Wukongs are `Running`, following a watch: polling with LISTs of
/// every Wukong would load the apiserver being measured.
async fn all_running(api: &Api<Wukong>, count: usize) -> anyhow::Result<()> {
    let mut running = std::collections::HashSet::new();
    let mut events =
        std::pin::pin!(watcher(api.clone(), watcher::Config::default()).applied_objects());
    while let Some(wukong) = events.try_next().await? {
        let name = wukong.metadata.name.clone().unwrap_or_default();
        if wukong.status.as_ref().and_then(|s| s.phase) == Some(WukongPhase::Running) {
            running.insert(name);
        } else {
            running.remove(&name);
        }
        if running.len() >= count {
            return Ok(());
        }
    }
    anyhow::bail!("the watch of Wukongs ended")
}

/// The apiserver's write ceiling: `writes` small objects created, then as many
/// server-side applies, from `CREATORS` concurrent requests. Writes per second.
async fn write_ceiling(client: &kube::Client, writes: usize) -> anyhow::Result<f64> {
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "ceiling"}}))?,
        )
        .await?;
    let maps = Api::<ConfigMap>::namespaced(client.clone(), "ceiling");
    let started = Instant::now();
    let creates = futures::stream::iter(0..writes / 2)
        .map(|i| {
            let maps = maps.clone();
            async move {
                let map: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("m{i}"), "labels": {"vm.novasphere.dev/wukong": format!("m{i}")}},
                    "data": {"spec": "cpu: 1\nmemory: 256Mi\ndisks: [data]\nnetworks: [lan]"}
                }))?;
                maps.create(&PostParams::default(), &map).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATORS);
    creates.try_collect::<Vec<_>>().await?;
    let applies = futures::stream::iter(0..writes / 2)
        .map(|i| {
            let maps = maps.clone();
            async move {
                let patch = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("m{i}")}, "data": {"status": "Running"}});
                maps.patch(
                    &format!("m{i}"),
                    &PatchParams::apply("ceiling"),
                    &Patch::Apply(&patch),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATORS);
    applies.try_collect::<Vec<_>>().await?;
    Ok((writes / 2 * 2) as f64 / started.elapsed().as_secs_f64())
}

/// CPU seconds (user + system) of a process, from `/proc`.
/// Keys etcd has written (puts and deletes, in transactions too), from its `/metrics`.
async fn etcd_writes(env: &TestEnv) -> f64 {
    let (_, text) = telemetry::get(env.etcd_address(), "/metrics").await;
    telemetry::sample(&text, "etcd_mvcc_put_total", &[])
        + telemetry::sample(&text, "etcd_mvcc_delete_total", &[])
}

/// Requests the apiserver served, every client's, by verb (watches left out), from its
/// `/metrics` (`apiserver_request_total`).
async fn apiserver_requests(client: &kube::Client) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new());
    let text = match request {
        Ok(request) => client.request_text(request).await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut by_verb = by_label(&text, "apiserver_request_total", &["verb"]);
    by_verb.retain(|verb, _| verb != "WATCH" && verb != "CONNECT");
    by_verb
}

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of a process, MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Every sample of `name` by the value of `label`.
fn by_label(text: &str, name: &str, labels: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, label_text)) = series.split_once('{') else {
            continue;
        };
        if metric != name {
            continue;
        }
        let key = labels
            .iter()
            .map(|label| {
                label_text
                    .split(',')
                    .find_map(|pair| pair.trim().strip_prefix(&format!("{label}=\"")))
                    .map(|v| v.trim_end_matches(['"', '}']).to_owned())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut count = 1_000usize;
    let mut debounce_ms = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wukongs" => count = args.next().and_then(|n| n.parse().ok()).unwrap_or(count),
            "--debounce-ms" => debounce_ms = args.next().and_then(|n| n.parse().ok()),
            _ => {}
        }
    }
    let env = TestEnv::start().await?;
    let mut sim_config = SimConfig::fast();
    sim_config.nodes = 20;
    sim_config.node_cpu = "2000".into();
    sim_config.node_memory = "4Ti".into();
    let _sim = Simulator::start(&env, sim_config).await?;
    let client = env.client();
    let harness_cpu_start = cpu_seconds(std::process::id());

    // The apiserver's own ceiling, before anything else loads it.
    let ceiling_writes = (count * 4).clamp(2_000, 20_000);
    let ceiling = write_ceiling(&client, ceiling_writes).await?;

    let dir = tempfile::tempdir()?;
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin");
    std::fs::write(
        dir.path().join("wukong.toml"),
        config(&plugins, debounce_ms),
    )?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.path().join("operator.log"))?;
    let mut operator = std::process::Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(["run", "--config"])
        .arg(dir.path().join("wukong.toml"))
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?;
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let ready = Instant::now();
    // The server comes up after the plugins are loaded; until then nothing listens.
    while std::net::TcpStream::connect(address).is_err() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(120),
            "operator never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while telemetry::get(address, "/readyz").await.0 != 200 {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(120),
            "operator never ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, before) = telemetry::get(address, "/metrics").await;
    let requests_before = by_label(&before, "wukong_kube_requests_total", &["verb", "resource"]);
    let operator_cpu_start = cpu_seconds(operator.id());
    let etcd_writes_start = etcd_writes(&env).await;
    let served_before = apiserver_requests(&client).await;

    let api = Api::<Wukong>::namespaced(client.clone(), "default");
    let watch = tokio::spawn({
        let api = api.clone();
        async move { all_running(&api, count).await }
    });
    let started = Instant::now();
    let api = Arc::new(api);
    futures::stream::iter(0..count)
        .map(|i| {
            let api = Arc::clone(&api);
            async move {
                api.create(&PostParams::default(), &wukong(&format!("w{i}")))
                    .await
            }
        })
        .buffer_unordered(CREATORS)
        .try_collect::<Vec<_>>()
        .await?;
    let created = started.elapsed();
    watch.await??;
    let converged = started.elapsed();
    let etcd_writes_run = etcd_writes(&env).await - etcd_writes_start;
    let mut served = apiserver_requests(&client).await;
    for (verb, value) in &served_before {
        if let Some(now) = served.get_mut(verb) {
            *now -= value;
        }
    }
    let operator_cpu = cpu_seconds(operator.id()) - operator_cpu_start;
    let operator_rss = peak_rss_mib(operator.id());
    let harness_cpu = cpu_seconds(std::process::id()) - harness_cpu_start;
    let (_, after) = telemetry::get(address, "/metrics").await;
    let _ = operator.kill();

    let n = count as f64;
    let mut requests = by_label(&after, "wukong_kube_requests_total", &["verb", "resource"]);
    for (key, value) in &requests_before {
        if let Some(now) = requests.get_mut(key) {
            *now -= value;
        }
    }
    requests.retain(|key, value| *value > 0.0 && !key.starts_with("watch "));
    let total_requests: f64 = requests.values().sum();
    let writes: f64 = requests
        .iter()
        .filter(|(key, _)| !key.starts_with("get ") && !key.starts_with("list "))
        .map(|(_, v)| v)
        .sum();
    let reconciles = telemetry::sample(&after, "wukong_reconciles_total", &[]);
    // A failed reconcile (a step error, a stale read retried) is one more wake-up.
    let failed_reconciles =
        reconciles - telemetry::sample(&after, "wukong_reconciles_total", &[("result", "ok")]);
    let calls = telemetry::sample(&after, "wukong_plugin_call_duration_seconds_count", &[]);
    let call_seconds = telemetry::sample(&after, "wukong_plugin_call_duration_seconds_sum", &[]);
    let call_cpu = telemetry::sample(&after, "wukong_plugin_call_cpu_seconds_total", &[]);
    // `pids()` is etcd's, then the apiserver's.
    let control_plane_cpu: Vec<f64> = env.pids().into_iter().map(cpu_seconds).collect();
    let throughput = n / converged.as_secs_f64();
    // What the apiserver could do with the same writes, had nothing else loaded it.
    let ceiling_throughput = ceiling / (writes / n).max(1.0);
    // The same for every write a Wukong costs the cluster: the simulated KubeVirt's, CDI's
    // and the events' too, as etcd counts them.
    let cluster_writes = etcd_writes_run / n;
    let ceiling_all = ceiling / cluster_writes.max(1.0);

    println!(
        "operator scale benchmark: {count} Wukongs (1 blank Longhorn disk + 1 Multus network each), 20 nodes, debounce {} ms",
        debounce_ms.map_or_else(|| "250 (default)".to_owned(), |ms| ms.to_string())
    );
    println!(
        "  created in                             {:>10.1} s",
        created.as_secs_f64()
    );
    println!(
        "  create -> all Running                  {:>10.1} s",
        converged.as_secs_f64()
    );
    println!("  Wukongs/s                              {throughput:>10.1}");
    println!("  apiserver write ceiling (raw client)   {ceiling:>10.0} writes/s");
    println!(
        "  operator writes per Wukong             {:>10.1}",
        writes / n
    );
    println!("  ceiling for those writes               {ceiling_throughput:>10.1} Wukongs/s");
    println!(
        "  Wukong throughput / ceiling            {:>10.0} %",
        100.0 * throughput / ceiling_throughput
    );
    println!("  cluster writes per Wukong (etcd)       {cluster_writes:>10.1}");
    println!("  ceiling for all those writes           {ceiling_all:>10.1} Wukongs/s");
    println!(
        "  Wukong throughput / that ceiling       {:>10.0} %",
        100.0 * throughput / ceiling_all
    );
    println!(
        "  operator requests per Wukong           {:>10.1} (watches not counted)",
        total_requests / n
    );
    for (key, value) in &requests {
        println!("    {key:<36} {:>10.2}", value / n);
    }
    // Everything the apiserver served in the run, less the operator's own: the simulated
    // KubeVirt and CDI (and the bench's creates and its watch of Wukongs).
    let served_total: f64 = served.values().sum();
    println!(
        "  others' requests per Wukong            {:>10.1} (the simulator's, plus the bench's one create)",
        (served_total - total_requests) / n
    );
    for (verb, value) in &served {
        println!("    all clients {verb:<24} {:>10.2}", value / n);
    }
    println!(
        "  reconciles per Wukong                  {:>10.1} ({:.2} failed and retried)",
        reconciles / n,
        failed_reconciles / n
    );
    println!("  reconcile triggers per Wukong, by source (several within the debounce make one)");
    let triggers_before = by_label(&before, "wukong_reconcile_triggers_total", &["source"]);
    for (source, value) in by_label(&after, "wukong_reconcile_triggers_total", &["source"]) {
        let value = value - triggers_before.get(&source).copied().unwrap_or(0.0);
        println!("    {source:<36} {:>10.2}", value / n);
    }
    println!(
        "  plugin calls per Wukong                {:>10.1}",
        calls / n
    );
    println!(
        "  plugin call mean (wall-clock)          {:>10.3} ms",
        1000.0 * call_seconds / calls.max(1.0)
    );
    println!("  operator CPU                           {operator_cpu:>10.1} s");
    println!(
        "  plugin call mean (CPU)                 {:>10.3} ms",
        1000.0 * call_cpu / calls.max(1.0)
    );
    println!(
        "  operator CPU inside plugin calls       {:>10.1} %",
        100.0 * call_cpu / operator_cpu.max(1e-9)
    );
    println!("  operator peak RSS                      {operator_rss:>10.0} MiB");
    println!("  harness CPU (simulator, bench clients) {harness_cpu:>10.1} s");
    println!(
        "  etcd / apiserver CPU since start       {:>10}",
        control_plane_cpu
            .iter()
            .map(|c| format!("{c:.1} s"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    Ok(())
}
