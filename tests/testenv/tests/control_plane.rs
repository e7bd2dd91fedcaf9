//! The control plane: CRDs installed with their schemas enforced, RBAC in front of the
//! aggregated API, and nothing left behind after a panic.

mod common;
mod subresource;

use std::path::Path;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use serde_json::json;
use wukong_testenv::env::netns;
use wukong_testenv::{SimConfig, Simulator, TestEnv};

const CHILD_ENV: &str = "WUKONG_TESTENV_PANIC_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_rbac_and_kubeconfig() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::start().await?;
    // Target: ≤ 5 s with a warm cache on an idle machine; generous here for busy CI machines.
    assert!(
        env.startup_time().as_secs() < 15,
        "{:?}",
        env.startup_time()
    );
    let client = env.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<String> = crds
        .list(&ListParams::default())
        .await?
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    for want in [
        "virtualmachines.kubevirt.io",
        "virtualmachineinstances.kubevirt.io",
        "virtualmachineinstancemigrations.kubevirt.io",
        "migrationpolicies.migrations.kubevirt.io",
        "datavolumes.cdi.kubevirt.io",
        "network-attachment-definitions.k8s.cni.cncf.io",
        "volumesnapshots.snapshot.storage.k8s.io",
        "nodenetworkconfigurationpolicies.nmstate.io",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // The schemas are enforced by the real API server.
    let bad = create(
        &client,
        &util::vm(),
        "default",
        vm_body("bad", "Sometimes", "1Gi", json!([])),
    )
    .await;
    let err = bad
        .expect_err("an unknown runStrategy must be refused")
        .to_string();
    assert!(err.contains("runStrategy"), "{err}");
    let no_vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m"}, "spec": {}});
    assert!(
        create(&client, &util::vmim(), "default", no_vmi)
            .await
            .is_err(),
        "vmiName is required"
    );
    let policy = json!({"apiVersion": "migrations.kubevirt.io/v1alpha1", "kind": "MigrationPolicy",
        "metadata": {"name": "p"}, "spec": {"allowPostCopy": true, "selectors": {}}});
    let p = util::api(&client, &util::migration_policy(), "");
    let obj: kube::api::DynamicObject = serde_json::from_value(policy)?;
    Api::<kube::api::DynamicObject>::all_with(client.clone(), &util::migration_policy())
        .create(&Default::default(), &obj)
        .await?;
    let _ = p;

    // kubectl (1.20) works with the written kubeconfig.
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            &env.kubeconfig_path().display().to_string(),
            "get",
            "crd",
            "-o",
            "name",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("virtualmachines.kubevirt.io"));

    // RBAC guards the aggregated API: a service account may pause only once granted.
    let sim = Simulator::start(&env, SimConfig::fast()).await?;
    create(
        &client,
        &util::vm(),
        "default",
        vm_body("rbac", "Always", "1Gi", json!([])),
    )
    .await?;
    wait_for(
        &util::api(&client, &util::vmi(), "default"),
        "rbac",
        "Running",
        |o| phase(o) == "Running",
    )
    .await?;
    let token = env.service_account_token("default", "operator").await?;
    let sa = env.client_with_token(&token).await?;
    let code = subresource::put(
        &sa,
        "default",
        "virtualmachineinstances",
        "rbac",
        "pause",
        json!({}),
    )
    .await?
    .code;
    assert_eq!(code, 403);
    assert_eq!(
        sim.count_calls("pause", "default", "rbac"),
        0,
        "refused before reaching the simulator"
    );
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pause", "namespace": "default"},
        "rules": [{"apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachineinstances/pause"], "verbs": ["update"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "pause", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pause"},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": "default"}]});
    let pp = kube::api::PostParams::default();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), "default")
        .create(&pp, &serde_json::from_value(role)?)
        .await?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), "default")
        .create(&pp, &serde_json::from_value(binding)?)
        .await?;
    let mut code = 0;
    for _ in 0..40 {
        code = subresource::put(
            &sa,
            "default",
            "virtualmachineinstances",
            "rbac",
            "pause",
            json!({}),
        )
        .await?
        .code;
        if code == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(code, 200);
    let calls = sim.calls();
    let call = calls
        .iter()
        .find(|c| c.action == "pause")
        .expect("the pause reached the simulator");
    assert_eq!(
        call.user.as_deref(),
        Some("system:serviceaccount:default:operator")
    );
    Ok(())
}

/// Runs only as the child of `cleanup_after_panic`: starts everything, reports what it
/// made, then panics.
#[tokio::test]
#[ignore = "run by cleanup_after_panic"]
async fn child_that_panics() {
    let Some(out) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let env = TestEnv::start().await.expect("control plane");
    let _sim = Simulator::start(&env, SimConfig::fast())
        .await
        .expect("simulator");
    let report = json!({"pids": env.pids(), "dir": env.data_dir(), "netns": env.netns().map(|n| n.name().to_owned()).ok()});
    std::fs::write(out, report.to_string()).expect("report");
    panic!("deliberate panic with a running control plane");
}

#[test]
fn cleanup_after_panic() -> anyhow::Result<()> {
    let report = tempfile::NamedTempFile::new()?;
    // Output captured: the child's own "test result: FAILED" must not reach this run's log.
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "child_that_panics", "--ignored", "--nocapture"])
        .env(CHILD_ENV, report.path())
        .output()?;
    let child_log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the child test must fail: {child_log}"
    );
    assert!(child_log.contains("deliberate panic"), "{child_log}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report.path())?)?;
    let pids: Vec<u64> = serde_json::from_value(report["pids"].clone())?;
    assert_eq!(pids.len(), 2, "{report}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived the panic"
        );
    }
    let dir = report["dir"].as_str().unwrap_or_default();
    assert!(
        !dir.is_empty() && !Path::new(dir).exists(),
        "data dir {dir} survived"
    );
    let ns = report["netns"]
        .as_str()
        .expect("a network namespace was made");
    assert!(
        !netns::list()?.iter().any(|n| n == ns),
        "netns {ns} survived"
    );
    Ok(())
}
