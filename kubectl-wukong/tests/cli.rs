//! The real `kubectl-wukong` binary against a real kube-apiserver with the Wukong CRD. The
//! test plays the operator's part (it writes the status a request gets), so what is
//! checked is the tool: what it writes, how it finds the namespace and context, what it
//! prints, and its exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use wukong_testenv::TestEnv;

fn crd_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/wukongs.vm.novasphere.dev.yaml")
}

async fn install_crd(client: &Client) {
    let text = std::fs::read_to_string(crd_file()).expect("CRD file");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD yaml");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    // The test environment may have installed it already.
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create CRD: {e}"),
    }
    // Served once established; a Wukong create proves it.
    for _ in 0..100 {
        let established = crds
            .get("wukongs.vm.novasphere.dev")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the CRD was never established");
}

fn wukongs(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kubectl_wukong::wukong_resource())
}

async fn wukong(client: &Client, ns: &str, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
        )
        .await
        .ok();
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
        "metadata": {"name": name, "namespace": ns}, "spec": {"cpu": 1, "memory": "1Gi"}}))
    .expect("wukong");
    wukongs(client, ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("create wukong");
}

async fn spec(client: &Client, ns: &str, name: &str) -> Value {
    wukongs(client, ns)
        .get(name)
        .await
        .expect("get wukong")
        .data["spec"]
        .clone()
}

/// Runs the binary with `envs`, on a blocking thread (the test's runtime keeps going).
async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    spawn(args, envs).await.expect("join")
}

fn spawn(args: &[&str], envs: &[(&str, &str)]) -> tokio::task::JoinHandle<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-wukong"));
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run kubectl-wukong"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A second kubeconfig file with a context `team-b` (namespace `team-b`) on the same
/// cluster and user, current when `current`.
fn team_b_kubeconfig(env: &TestEnv, dir: &Path, current: bool) -> PathBuf {
    let base = std::fs::read_to_string(env.kubeconfig_path()).expect("kubeconfig");
    let config: Value = serde_yaml::from_str(&base).expect("kubeconfig yaml");
    let context = config["contexts"][0]["context"].clone();
    let mut context = context;
    context["namespace"] = json!("team-b");
    let only_b = json!({"apiVersion": "v1", "kind": "Config",
        "contexts": [{"name": "team-b", "context": context}],
        "current-context": if current { "team-b" } else { "" }});
    let path = dir.join(if current { "b-current.yaml" } else { "b.yaml" });
    std::fs::write(&path, serde_yaml::to_string(&only_b).expect("yaml")).expect("write");
    path
}

/// Writes the status the operator would for request `id`: in progress at `stage`, or
/// finished with `outcome`.
async fn operator_reports(
    client: &Client,
    ns: &str,
    name: &str,
    id: &str,
    stage: &str,
    outcome: Option<&str>,
) {
    let mut record = json!({"action": "stop", "requestId": id, "startedAt": "2026-12-01T00:00:00Z",
        "outcome": outcome.unwrap_or("InProgress"), "message": "as KubeVirt said"});
    if !stage.is_empty() {
        record["stage"] = json!(stage);
    }
    let state = match outcome {
        Some(_) => {
            json!({"state": "Running", "ready": true, "liveMigratable": false, "currentAction": null,
            "history": [record]})
        }
        None => {
            json!({"state": "Stopping", "ready": false, "liveMigratable": false, "currentAction": record})
        }
    };
    let patch = json!({"status": {"lifecycleState": state}});
    if let Err(e) = wukongs(client, ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        panic!("patch status {patch}: {e}");
    }
}

/// Waits until the spec carries a request and returns its id.
async fn request_id(client: &Client, ns: &str, name: &str) -> String {
    for _ in 0..200 {
        if let Some(id) = spec(client, ns, name).await["lifecycleAction"]["requestId"].as_str() {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no request was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wukong_writes_requests_finds_namespaces_and_tells_outcomes_apart() {
    let started = std::time::Instant::now();
    let step = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let env = TestEnv::start().await.expect("control plane");
    let client = env.client();
    install_crd(&client).await;
    wukong(&client, "default", "box").await;
    wukong(&client, "team-b", "box").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = env.kubeconfig_path().display().to_string();
    let kubeconfig = [("KUBECONFIG", base.as_str())];

    // Verb first; the context's namespace (`default`) when no -n.
    let out = run(&["stop", "box", "--grace-period", "5"], &kubeconfig).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("wukong.vm.novasphere.dev/box stop requested (ctl-"),
        "{}",
        text(&out)
    );
    let action = &spec(&client, "default", "box").await["lifecycleAction"];
    assert_eq!(
        (
            action["action"].as_str(),
            action["gracePeriodSeconds"].as_u64()
        ),
        (Some("stop"), Some(5))
    );

    // --dry-run: the apiserver checks the write, -o yaml prints it, nothing is stored.
    let out = run(&["pause", "box", "--dry-run", "-o", "yaml"], &kubeconfig).await;
    assert!(out.status.success(), "{}", text(&out));
    let printed: Value = serde_yaml::from_slice(&out.stdout).expect("-o yaml prints YAML");
    assert_eq!(
        printed["spec"]["lifecycleAction"]["action"], "suspend",
        "pause is the operator's suspend"
    );
    assert_eq!(
        spec(&client, "default", "box").await["lifecycleAction"]["action"],
        "stop",
        "dry run stored nothing"
    );

    // -o json and -o name.
    let out = run(
        &["migrate", "box", "--to", "node-2", "-o", "json"],
        &kubeconfig,
    )
    .await;
    let printed: Value = serde_json::from_slice(&out.stdout).expect("-o json prints JSON");
    assert_eq!(printed["spec"]["migration"]["targetNode"], "node-2");
    let out = run(&["get", "box", "-o", "name"], &kubeconfig).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "wukong.vm.novasphere.dev/box"
    );

    // KUBECONFIG lists are merged: --context picks a context of the second file, and its
    // namespace is the default one.
    let b = team_b_kubeconfig(&env, dir.path(), false);
    let list = format!("{base}:{}", b.display());
    let out = run(
        &["--context", "team-b", "start", "box"],
        &[("KUBECONFIG", &list)],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        spec(&client, "team-b", "box").await["lifecycleAction"]["action"],
        "start"
    );
    // The first file that names a current context wins, as in kubectl.
    let b_current = team_b_kubeconfig(&env, dir.path(), true);
    let list = format!("{}:{base}", b_current.display());
    let out = run(&["restart", "box", "--force"], &[("KUBECONFIG", &list)]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        spec(&client, "team-b", "box").await["lifecycleAction"]["action"],
        "restart"
    );
    // -n wins over the context.
    let out = run(
        &["-n", "default", "soft-reboot", "box"],
        &[("KUBECONFIG", &list)],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        spec(&client, "default", "box").await["lifecycleAction"]["action"],
        "softReboot"
    );

    // Errors exit 1 and say what is wrong.
    let out = run(&["stop", "nobody"], &kubeconfig).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("wukong \"nobody\" not found in namespace \"default\""),
        "{}",
        text(&out)
    );
    let out = run(&["stop"], &kubeconfig).await;
    assert_eq!(out.status.code(), Some(2), "bad usage: {}", text(&out));

    step("errors");
    // --wait with nobody acting: timed out, exit 4.
    let out = run(&["start", "box", "--wait", "--timeout", "2s"], &kubeconfig).await;
    assert_eq!(
        out.status.code(),
        Some(kubectl_wukong::EXIT_TIMED_OUT.into()),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("timed out after 2s"), "{}", text(&out));

    step("timeout");
    // --wait follows the watch: progress lines, then the outcome; refused exits 3.
    for (outcome, code) in [
        ("Succeeded", 0),
        ("Refused", kubectl_wukong::EXIT_NOT_SUCCEEDED),
    ] {
        // The previous request's id is in the spec: wait for this one's.
        let before = spec(&client, "default", "box").await["lifecycleAction"]["requestId"].clone();
        let waiting = spawn(&["stop", "box", "--wait", "--timeout", "60s"], &kubeconfig);
        let id = loop {
            let id = request_id(&client, "default", "box").await;
            if json!(id) != before {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        operator_reports(&client, "default", "box", &id, "stop-issued", None).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        operator_reports(&client, "default", "box", &id, "", Some(outcome)).await;
        let out = waiting.await.expect("join");
        let printed = text(&out);
        assert_eq!(out.status.code(), Some(code.into()), "{outcome}: {printed}");
        assert!(
            printed.contains("Stopping (stop-issued): as KubeVirt said"),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("{outcome}: as KubeVirt said")),
            "{printed}"
        );
    }

    step("outcomes");
    // get and describe read the status.
    let out = run(&["get"], &kubeconfig).await;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.starts_with("NAME") && table.contains("box") && table.contains("stop Refused"),
        "{table}"
    );
    let out = run(&["describe", "box"], &kubeconfig).await;
    assert!(
        text(&out).contains("Actions (newest first):"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completion", shell], &[]).await;
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("migrate-cancel"),
            "{shell} completion knows the verbs"
        );
    }
}
