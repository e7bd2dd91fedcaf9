//! The aggregated API's requests: discovery, and the PUT actions on VMIs (pause, unpause,
//! softreboot) and VMs (start, stop, restart, migrate) with KubeVirt's refusals.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::SubresourceCall;
use crate::sim::Ctx;
use crate::sim::util::{
    self, condition_status, conditions, remove_condition, set_condition, str_at,
};
use crate::sim::vm::run_strategy;

const PREFIX: &str = "/apis/subresources.kubevirt.io/v1";

type Reply = (StatusCode, Value);

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
                            failure(
                                StatusCode::UNAUTHORIZED,
                                "Unauthorized",
                                "a client certificate from the aggregator is required",
                            )
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
                        Err(e) => failure(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            &e.to_string(),
                        ),
                    }
                }
                _ => failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("the server could not find {path}"),
                ),
            }
        }
    };
    tracing::debug!(%method, %path, code = code.as_u16(), "aggregated API");
    let text = if code == StatusCode::OK && value.is_null() {
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

fn failure(code: StatusCode, reason: &str, message: &str) -> Reply {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn conflict(message: &str) -> Reply {
    failure(StatusCode::CONFLICT, "Conflict", message)
}

fn internal(e: impl std::fmt::Display) -> Reply {
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &e.to_string(),
    )
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
    let ar = match resource {
        "virtualmachineinstances" => util::vmi(),
        "virtualmachines" => util::vm(),
        _ => {
            return failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("unknown resource {resource}"),
            );
        }
    };
    let api = util::api(&ctx.client, &ar, ns);
    let body: Value = if body.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("Can not unmarshal Request body to struct, error: {e}"),
                );
            }
        }
    };
    // Conflicting writes from the controllers: read again and retry.
    for _ in 0..5 {
        let obj = match api.get_opt(name).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                return failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{resource}.kubevirt.io \"{name}\" not found"),
                );
            }
            Err(e) => return internal(e),
        };
        let result = match (method, resource, action) {
            (&Method::GET, "virtualmachineinstances", "guestosinfo") => {
                return (
                    StatusCode::OK,
                    obj.data
                        .pointer("/status/guestOSInfo")
                        .cloned()
                        .unwrap_or(json!({})),
                );
            }
            (&Method::PUT, "virtualmachineinstances", _) => vmi_action(&api, &obj, action).await,
            (&Method::PUT, "virtualmachines", _) => vm_action(ctx, &api, &obj, action, &body).await,
            _ => {
                return failure(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    &format!("{method} {action} is not supported"),
                );
            }
        };
        match result {
            Ok(Some(reply)) => return reply,
            Ok(None) => continue,
            Err(e) => return internal(e),
        }
    }
    conflict("the object kept changing; try again")
}

type Step = crate::Result<Option<Reply>>;

fn ok() -> Step {
    Ok(Some((StatusCode::OK, Value::Null)))
}

fn done(written: bool) -> Step {
    if written { ok() } else { Ok(None) }
}

async fn vmi_action(api: &Api<DynamicObject>, vmi: &DynamicObject, action: &str) -> Step {
    let running = str_at(&vmi.data, "/status/phase") == Some("Running")
        && vmi.metadata.deletion_timestamp.is_none();
    let mut conds = conditions(&vmi.data);
    let paused = condition_status(&conds, "Paused") == Some("True");
    match action {
        "pause" if !running => Ok(Some(conflict("VMI is not running"))),
        "pause" if paused => Ok(Some(conflict("VMI is already paused"))),
        "pause" => {
            set_condition(
                &mut conds,
                "Paused",
                true,
                "PausedByUser",
                "VMI was paused by user",
            );
            done(util::patch_status(api, vmi, json!({"conditions": conds})).await?)
        }
        "unpause" if !paused => Ok(Some(conflict("VMI is not paused"))),
        "unpause" => {
            remove_condition(&mut conds, "Paused");
            done(util::patch_status(api, vmi, json!({"conditions": conds})).await?)
        }
        "softreboot" if !running => Ok(Some(conflict("VMI is not running"))),
        "softreboot" if paused => Ok(Some(conflict("VMI is paused"))),
        // Upstream `SoftRebootVMI` (pkg/virt-api/rest/lifecycle.go): without a guest agent
        // the reboot is an ACPI power-button press, impossible with ACPI disabled.
        "softreboot"
            if condition_status(&conds, "AgentConnected").is_none()
                && vmi.data.pointer("/spec/domain/features/acpi/enabled")
                    == Some(&json!(false)) =>
        {
            Ok(Some(conflict(
                "VMI neither have the agent connected nor the ACPI feature enabled",
            )))
        }
        "softreboot" => ok(),
        _ => Ok(Some(failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("unknown action {action}"),
        ))),
    }
}

async fn vm_action(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    vm: &DynamicObject,
    action: &str,
    body: &Value,
) -> Step {
    let ns = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let vmis = util::api(&ctx.client, &util::vmi(), &ns);
    let vmi = vmis.get_opt(&name).await?;
    let vmi_uid = vmi.as_ref().and_then(|v| v.uid());
    let vmi_phase = vmi
        .as_ref()
        .and_then(|v| str_at(&v.data, "/status/phase"))
        .unwrap_or("")
        .to_owned();
    let alive = vmi.is_some() && !matches!(vmi_phase.as_str(), "Succeeded" | "Failed");
    let strategy = run_strategy(vm);
    let grace = body
        .get("gracePeriod")
        .or_else(|| body.get("gracePeriodSeconds"))
        .and_then(Value::as_i64);
    if let (Some(g), Some(v)) = (grace, &vmi)
        && matches!(action, "stop" | "restart")
        && alive
    {
        let patch = json!({"spec": {"terminationGracePeriodSeconds": g}});
        vmis.patch(
            &v.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    let stop_req = json!({"action": "Stop", "uid": vmi_uid});
    match action {
        "start" if alive => Ok(Some(conflict("VM is already running"))),
        "start" if strategy == "Halted" => done(set_strategy(api, vm, "Always").await?),
        "start" => {
            let mut reqs = vec![];
            if vmi.is_some() {
                reqs.push(stop_req);
            }
            reqs.push(json!({"action": "Start"}));
            done(util::patch_status(api, vm, json!({"stateChangeRequests": reqs})).await?)
        }
        "stop" if !alive && strategy != "Always" => Ok(Some(conflict("VM is not running"))),
        // As KubeVirt: a stop with a grace period on a VM already stopping shortens its
        // grace period (a forced stop after a graceful one); without one it is refused.
        "stop" if strategy == "Halted" && alive && grace.is_some() => ok(),
        "stop" if strategy == "Halted" => Ok(Some(conflict("VM is not running"))),
        "stop" if strategy == "Manual" => {
            done(util::patch_status(api, vm, json!({"stateChangeRequests": [stop_req]})).await?)
        }
        "stop" => done(set_strategy(api, vm, "Halted").await?),
        "restart" if strategy == "Halted" => Ok(Some(conflict(
            "RunStategy Halted does not support manual restart requests",
        ))),
        "restart" if vmi.is_none() => Ok(Some(conflict("VM is not running"))),
        "restart" => {
            let reqs = json!([stop_req, {"action": "Start"}]);
            done(util::patch_status(api, vm, json!({"stateChangeRequests": reqs})).await?)
        }
        "migrate" if vmi_phase != "Running" => Ok(Some(conflict("VM is not running"))),
        "migrate" => {
            let mut spec = json!({"vmiName": name});
            if let Some(sel) = body.get("addedNodeSelector") {
                spec["addedNodeSelector"] = sel.clone();
            }
            let m: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": {"generateName": "kubevirt-migrate-vm-", "namespace": ns}, "spec": spec}))?;
            util::api(&ctx.client, &util::vmim(), &ns)
                .create(&PostParams::default(), &m)
                .await?;
            ok()
        }
        _ => Ok(Some(failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("unknown action {action}"),
        ))),
    }
}

/// Sets `spec.runStrategy` (dropping the deprecated `spec.running`) with the VM's
/// resourceVersion as precondition.
async fn set_strategy(
    api: &Api<DynamicObject>,
    vm: &DynamicObject,
    strategy: &str,
) -> crate::Result<bool> {
    util::patch_object(
        api,
        vm,
        json!({"spec": {"runStrategy": strategy, "running": null}}),
    )
    .await
}
