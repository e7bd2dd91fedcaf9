//! Operator benchmark: prints figures, asserts nothing.
//!
//! `KUBEBUILDER_ASSETS=~/.cache/wukong/assets cargo bench -p wukong --bench operator_scale`
//! (after `tests/build-plugins.sh`): the time from create to `Running` for one Wukong and
//! for 100 at once, on the real apiserver with the zero-delay KubeVirt simulator, and the
//! writes a converged Wukong costs on a re-reconcile, and how many reads the watch caches
//! answered.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use wukong::api::{Wukong, WukongPhase};
use wukong::config::{Backends, HostConfig};
use wukong::controller::{self, Context};
use wukong_testenv::{SimConfig, Simulator, TestEnv};

fn config() -> String {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin");
    format!(
        r#"
[plugins]
dir = "{}"
[network.multus]
plugin = "multus_network.wasm"
grants = {{ reads = ["k8s.cni.cncf.io/v1/NetworkAttachmentDefinition"], writes = ["k8s.cni.cncf.io/v1/NetworkAttachmentDefinition"] }}
[storage.cdi]
plugin = "cdi_storage.wasm"
grants = {{ reads = ["cdi.kubevirt.io/v1beta1/DataVolume", "v1/PersistentVolumeClaim", "storage.k8s.io/v1/StorageClass"], writes = ["cdi.kubevirt.io/v1beta1/DataVolume", "v1/PersistentVolumeClaim"] }}
[lifecycle.kubevirt]
plugin = "kubevirt_lifecycle.wasm"
grants = {{ reads = ["kubevirt.io/v1/VirtualMachine", "kubevirt.io/v1/VirtualMachineInstance", "v1/Node"], writes = ["kubevirt.io/v1/VirtualMachine", "kubevirt.io/v1/VirtualMachineInstance"], actions = ["virtualmachines/start", "virtualmachines/stop", "virtualmachineinstances/pause", "virtualmachineinstances/unpause", "virtualmachineinstances/softreboot"] }}
"#,
        dir.display()
    )
}

fn wukong(name: &str) -> Wukong {
    serde_yaml::from_str(&format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  cpu: 1\n  memory: 256Mi\n  disks: [{{name: root, size: 1Gi, image: \"docker://quay.io/containerdisks/fedora:40\"}}]\n  networks: [{{name: lan, config: {{bridge: br0}}}}]\n"
    ))
    .expect("wukong")
}

/// Waits until `count` Wukongs are `Running`, following a watch (as `kubectl wait` does):
/// polling with LISTs of every Wukong would load the apiserver being measured.
async fn all_running(api: &Api<Wukong>, count: usize) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
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

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut sim_config = SimConfig::fast();
    sim_config.nodes = 10;
    sim_config.node_memory = "512Gi".into();
    sim_config.node_cpu = "256".into();
    let _sim = Simulator::start(&env, sim_config).await?;
    let client = env.client();
    let host = HostConfig::parse(&config(), "bench.toml")?;
    let backends =
        tokio::task::spawn_blocking(move || Backends::load(&host, "bench.toml")).await??;
    let ctx = Context::new(client.clone(), Arc::new(RwLock::new(Arc::new(backends))));
    let operator = tokio::spawn(controller::run(Arc::clone(&ctx)));
    let api = Api::<Wukong>::namespaced(client.clone(), "default");

    let started = Instant::now();
    api.create(&PostParams::default(), &wukong("single"))
        .await?;
    all_running(&api, 1).await?;
    let one = started.elapsed();

    let writes = ctx.applier.stats.writes();
    api.patch(
        "single",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"poke": "1"}}})),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let converged_writes = ctx.applier.stats.writes() - writes;

    let started = Instant::now();
    for i in 0..100 {
        api.create(&PostParams::default(), &wukong(&format!("many-{i}")))
            .await?;
    }
    all_running(&api, 101).await?;
    let hundred = started.elapsed();

    println!(
        "operator benchmark (real apiserver, zero-delay simulator, 1 image disk + 1 network each)"
    );
    println!(
        "  1 Wukong create -> Running            {:>8.2} s",
        one.as_secs_f64()
    );
    println!(
        "  100 Wukongs create -> all Running     {:>8.2} s",
        hundred.as_secs_f64()
    );
    println!("  writes by a converged re-reconcile    {converged_writes:>8}");
    let cache = ctx.kinds.cache().stats();
    println!(
        "  reads from the watch caches / from the apiserver  {} / {}",
        cache.hits.load(std::sync::atomic::Ordering::Relaxed),
        cache.misses.load(std::sync::atomic::Ordering::Relaxed)
    );
    operator.abort();
    Ok(())
}
