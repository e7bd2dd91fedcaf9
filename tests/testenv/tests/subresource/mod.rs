//! Calling the aggregated API through the real API server and reading the answer as a
//! client does: the HTTP status code (202 and 200 apart) and the `Status` message.
#![allow(dead_code)]

use std::time::Duration;

use http_body_util::BodyExt;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};

/// The answer of one call: the HTTP status and the `Status` message ("" when no body).
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub message: String,
}

impl Answer {
    pub fn is(&self, code: u16, message: &str) -> bool {
        self.code == code && self.message == message
    }
}

/// PUT `…/namespaces/{ns}/{resource}/{name}/{action}` with a JSON body.
pub async fn put(
    client: &kube::Client,
    ns: &str,
    resource: &str,
    name: &str,
    action: &str,
    body: Value,
) -> anyhow::Result<Answer> {
    let url =
        format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{action}");
    let req = http::Request::put(url)
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(&body)?))?;
    let resp = client.send(req).await?;
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let message = if bytes.is_empty() {
        String::new()
    } else {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
        v.get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok(Answer { code, message })
}

/// A VM action.
pub async fn vm(
    client: &kube::Client,
    name: &str,
    action: &str,
    body: Value,
) -> anyhow::Result<Answer> {
    put(client, "default", "virtualmachines", name, action, body).await
}

/// A VMI action.
pub async fn vmi(client: &kube::Client, name: &str, action: &str) -> anyhow::Result<Answer> {
    put(
        client,
        "default",
        "virtualmachineinstances",
        name,
        action,
        json!({}),
    )
    .await
}

/// `Operation cannot be fulfilled on virtualmachine.kubevirt.io "name": message`.
pub fn vm_conflict(name: &str, message: &str) -> String {
    format!("Operation cannot be fulfilled on virtualmachine.kubevirt.io \"{name}\": {message}")
}

/// The same for a VMI.
pub fn vmi_conflict(name: &str, message: &str) -> String {
    format!(
        "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"{name}\": {message}"
    )
}

/// The condition object of a type, `Value::Null` when missing.
pub fn condition(o: &DynamicObject, type_: &str) -> Value {
    o.data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// `(status, reason)` of a condition type ("" when missing).
pub fn cond_reason(o: &DynamicObject, type_: &str) -> (String, String) {
    let c = condition(o, type_);
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    (s("status"), s("reason"))
}

/// The VM's printableStatus.
pub fn printable(o: &DynamicObject) -> &str {
    o.data
        .pointer("/status/printableStatus")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Asserts that an object stays absent for `d` (what must not come back).
pub async fn stays_gone(api: &Api<DynamicObject>, name: &str, d: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < deadline {
        anyhow::ensure!(api.get_opt(name).await?.is_none(), "{name} came back");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}
