//! The aggregated API's requests: discovery, and the PUT actions on VMIs (pause, unpause,
//! softreboot, in `vmi_actions`) and VMs (start, stop, restart, migrate, in `vm_actions`),
//! each recorded as a [`SubresourceCall`].

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::SubresourceCall;
use super::replies::{self, Reply};
use super::{vm_actions, vmi_actions};
use crate::sim::Ctx;

const PREFIX: &str = "/apis/subresources.kubevirt.io/v1";

pub(super) async fn handle(
    ctx: Arc<Ctx>,
    authenticated: bool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let user = req
        .headers()
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let (code, value) = match path.as_str() {
        "/healthz" | "/readyz" | "/livez" => (StatusCode::OK, json!("ok")),
        "/apis/subresources.kubevirt.io" => (StatusCode::OK, group()),
        PREFIX => (StatusCode::OK, resource_list()),
        _ => {
            let parts: Vec<&str> = path.strip_prefix(PREFIX).unwrap_or("").split('/').collect();
            match parts.as_slice() {
                ["", "namespaces", ns, resource, name, action] => {
                    let (ns, resource, name, action) = (*ns, *resource, *name, *action);
                    // NB: run and record in a task of its own, so a client that hangs up
                    // (the aggregator cancels the proxied request) cannot leave an action
                    // done but unrecorded: the call counts must match what took effect.
                    let (ns, resource, name, action) = (
                        ns.to_owned(),
                        resource.to_owned(),
                        name.to_owned(),
                        action.to_owned(),
                    );
                    let task_ctx = Arc::clone(&ctx);
                    let method = method.clone();
                    let task = tokio::spawn(async move {
                        let ctx = task_ctx;
                        let reply = if !authenticated {
                            replies::unauthorized()
                        } else {
                            dispatch(&ctx, &method, &ns, &resource, &name, &action, &body).await
                        };
                        ctx.record(SubresourceCall {
                            method: method.to_string(),
                            resource,
                            namespace: ns,
                            name,
                            action,
                            user,
                            body,
                            code: reply.0.as_u16(),
                        });
                        reply
                    });
                    match task.await {
                        Ok(reply) => reply,
                        Err(e) => replies::internal(e),
                    }
                }
                _ => replies::no_route(&format!("the server could not find {path}")),
            }
        }
    };
    tracing::debug!(%method, %path, code = code.as_u16(), "aggregated API");
    let text = if value.is_null() {
        String::new()
    } else {
        value.to_string()
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn group() -> Value {
    let v = json!({"groupVersion": "subresources.kubevirt.io/v1", "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": "subresources.kubevirt.io", "versions": [v], "preferredVersion": v})
}

fn resource_list() -> Value {
    let r = |name: &str, kind: &str, verbs: &[&str]| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs});
    let mut resources = vec![];
    for a in ["pause", "unpause", "softreboot", "guestosinfo"] {
        let verbs: &[&str] = if a == "guestosinfo" {
            &["get"]
        } else {
            &["update"]
        };
        resources.push(r(
            &format!("virtualmachineinstances/{a}"),
            "VirtualMachineInstance",
            verbs,
        ));
    }
    for a in ["start", "stop", "restart", "migrate"] {
        resources.push(r(
            &format!("virtualmachines/{a}"),
            "VirtualMachine",
            &["update"],
        ));
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "subresources.kubevirt.io/v1", "resources": resources})
}

async fn dispatch(
    ctx: &Ctx,
    method: &Method,
    ns: &str,
    resource: &str,
    name: &str,
    action: &str,
    body: &str,
) -> Reply {
    let body: Value = if body.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                return replies::bad_request(&format!(
                    "Can not unmarshal Request body to struct, error: {e}"
                ));
            }
        }
    };
    let result = match (method, resource, action) {
        (&Method::GET, "virtualmachineinstances", "guestosinfo") => {
            vmi_actions::guest_os_info(ctx, ns, name).await
        }
        (&Method::PUT, "virtualmachineinstances", _) => {
            // Conflicting writes from the controllers: read again and retry.
            let mut outcome = Ok(None);
            for _ in 0..5 {
                outcome = vmi_actions::act(ctx, ns, name, action).await;
                if !matches!(outcome, Ok(None)) {
                    break;
                }
            }
            outcome.map(|r| {
                r.unwrap_or_else(|| {
                    replies::conflict(replies::VMI, name, "the object kept changing")
                })
            })
        }
        (&Method::PUT, "virtualmachines", _) => vm_actions::act(ctx, ns, name, action, &body).await,
        (_, "virtualmachineinstances" | "virtualmachines", _) => {
            return replies::method_not_allowed(&format!("{method} {action} is not supported"));
        }
        _ => return replies::no_route(&format!("unknown resource {resource}")),
    };
    result.unwrap_or_else(replies::internal)
}
