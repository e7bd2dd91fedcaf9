//! `wukong ctl` (the same code as `kubectl wukong`), the real binary under the operator:
//! writes the request, follows it with `--wait`, exits 3 with the reason when KubeVirt
//! refuses it.

mod support;

use std::process::Command;
use std::time::Duration;

use support::operator::{Cluster, InProcess, create, host_config, is_running, namespace, wait_for};

fn ctl(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(["ctl", "-n", "ctl", "--kubeconfig"])
        .env_remove("KUBECONFIG")
        .arg(cluster.env.kubeconfig_path())
        .args(args)
        .output()
        .expect("run wukong ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_writes_the_request_and_follows_it() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let _operator = InProcess::start(client.clone(), &host_config("cdi", "")).await;
    namespace(&client, "ctl").await;
    create(&client, "ctl", "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: box}\nspec: {cpu: 1, memory: 1Gi}\n").await;
    wait_for(&client, "ctl", "box", Duration::from_secs(30), is_running).await;

    // The operator runs on this runtime: block only this worker while the binary runs.
    let (ok, output) = ctl_blocking(
        &cluster,
        &[
            "stop",
            "box",
            "--wait",
            "--timeout",
            "60s",
            "--grace-period",
            "1",
        ],
    )
    .await;
    assert!(ok, "stop --wait succeeds: {output}");
    assert!(output.contains("Succeeded"), "{output}");

    let (ok, output) =
        ctl_blocking(&cluster, &["unpause", "box", "--wait", "--timeout", "60s"]).await;
    assert!(!ok, "unpause of a stopped VM is refused: {output}");
    assert!(output.contains("Refused"), "{output}");

    let (ok, output) = ctl_blocking(&cluster, &["start", "box", "--wait", "--timeout", "1m"]).await;
    assert!(ok, "start --wait succeeds: {output}");
}

async fn ctl_blocking(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    tokio::task::block_in_place(|| ctl(cluster, args))
}
