//! Helpers shared by the test binaries: waiting for an object to reach a state, JSON access,
//! and calling the aggregated API through the real API server.
#![allow(dead_code)]

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::Value;

pub use wukong_testenv::sim::util::{self, str_at};

/// Polls `get` until `pred` holds (30 s at most); returns the object that matched.
pub async fn wait_for(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    pred: impl Fn(&DynamicObject) -> bool,
) -> anyhow::Result<DynamicObject> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        if let Some(obj) = api.get_opt(name).await? {
            if pred(&obj) {
                return Ok(obj);
            }
            last = Some(obj);
        }
        if tokio::time::Instant::now() > deadline {
            let state = last.map(|o| o.data.get("status").cloned().unwrap_or_default());
            anyhow::bail!("timed out waiting for {name} to be {what}; last status: {state:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls until the object is gone.
pub async fn wait_gone(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.get_opt(name).await?.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name} to go"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// Status phase.
pub fn phase(o: &DynamicObject) -> &str {
    str_at(&o.data, "/status/phase").unwrap_or("")
}

/// A condition's status, "" when missing.
pub fn cond<'a>(o: &'a DynamicObject, type_: &str) -> &'a str {
    o.data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == Some(type_)))
        .and_then(|c| str_at(c, "/status"))
        .unwrap_or("")
}

/// Creates an object from JSON.
pub async fn create(
    client: &kube::Client,
    ar: &ApiResource,
    ns: &str,
    body: Value,
) -> anyhow::Result<DynamicObject> {
    let obj: DynamicObject = serde_json::from_value(body)?;
    Ok(util::api(client, ar, ns)
        .create(&PostParams::default(), &obj)
        .await?)
}

/// A VirtualMachine with the given run strategy, memory and volumes.
pub fn vm_body(name: &str, strategy: &str, memory: &str, volumes: Value) -> Value {
    serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": strategy, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]},
                                "resources": {"requests": {"memory": memory}}},
                     "networks": [{"name": "default", "pod": {}}],
                     "terminationGracePeriodSeconds": 30,
                     "volumes": volumes}}},
    })
}

/// Logs to the test output (`RUST_LOG` filters; default warnings).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
