//! Validating admission webhooks, registered on the real API server as KubeVirt's
//! virt-api and Multus' net-attach-def admission controller register theirs: a
//! migration is refused at create (not failed later), and a NetworkAttachmentDefinition
//! must carry a CNI config. The apiserver calls the webhook over HTTPS with the
//! cluster CA in `caBundle`; it answers the client with the denial.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::Ctx;
use super::util::{self, str_at};
use crate::TestEnv;
use crate::env::certs;
use crate::error::{Error, Result};

/// KubeVirt's ValidatingWebhookConfiguration and the migration webhook in it.
pub const VIRT_API_VALIDATOR: &str = "virt-api-validator";
pub const MIGRATION_WEBHOOK: &str = "migration-create-validator.kubevirt.io";
const MIGRATION_PATH: &str = "/migration-validate-create";
/// Multus' admission controller (net-attach-def-admission-controller).
pub const NAD_VALIDATOR: &str = "net-attach-def-admission-controller-validating-config";
pub const NAD_WEBHOOK: &str = "net-attach-def-admission-controller-validating-config.k8s.io";
const NAD_PATH: &str = "/validate";

/// A denial: HTTP-like code and message, as the webhook's `status`.
type Denial = (u16, String);

/// Serves the webhooks on a loopback HTTPS listener (a webhook `url` may be loopback,
/// unlike an Endpoints address), registers them and waits until the API server calls them.
pub(crate) async fn serve(env: &TestEnv, ctx: Arc<Ctx>) -> Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Io {
            context: "binding the admission webhook listener".into(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| Error::Io {
        context: "admission webhook address".into(),
        source: e,
    })?;
    let pair = env.issue_serving_cert(&["127.0.0.1"])?;
    let tls = certs::server_config(&pair, None)?;
    let task = super::https::serve(listener, tls, "admission webhook", move |_, req| {
        handle(ctx.clone(), req)
    });
    register(&env.client(), addr, &env.ca_pem()).await?;
    Ok(task)
}

async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let review: Value = match req.into_body().collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or_default(),
        Err(_) => Value::Null,
    };
    let request = review.get("request").cloned().unwrap_or_default();
    let verdict = match path.as_str() {
        MIGRATION_PATH => admit_migration(&ctx, &request).await,
        NAD_PATH => admit_nad(&request),
        _ => Err((404, format!("no webhook at {path}"))),
    };
    let mut response =
        json!({"uid": request.get("uid").cloned().unwrap_or_default(), "allowed": verdict.is_ok()});
    if let Err((code, message)) = &verdict {
        tracing::info!(webhook = %path, %message, "denied");
        response["status"] = json!({"code": code, "message": message});
        if *code == 422 {
            // ToAdmissionResponse: a validation failure carries its cause.
            response["status"]["reason"] = json!("Invalid");
            response["status"]["details"] = json!({"causes": [{"message": message}]});
        }
    }
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Follows virt-api's `MigrationCreateAdmitter.Admit`: the VMI must exist, not be final,
/// not be `LiveMigratable=False`, and have no other migration in flight.
async fn admit_migration(ctx: &Ctx, request: &Value) -> std::result::Result<(), Denial> {
    let bad = |e: kube::Error| (400, e.to_string());
    let ns = str_at(request, "/namespace").unwrap_or_default();
    let vmi_name = str_at(request, "/object/spec/vmiName").unwrap_or_default();
    // ValidateVirtualMachineInstanceMigrationSpec
    if vmi_name.is_empty() {
        return Err((422, "vmiName is missing".into()));
    }
    // Only virt-controller's service account may set a priority.
    let user = str_at(request, "/userInfo/username").unwrap_or_default();
    if request
        .pointer("/object/spec/priority")
        .is_some_and(|p| !p.is_null())
        && !user.ends_with(":kubevirt-controller")
    {
        return Err((
            422,
            "Migration priority queue, only virt-controller is allowed to set priority field"
                .into(),
        ));
    }
    let vmis = util::api(&ctx.client, &util::vmi(), ns);
    let Some(vmi) = vmis.get_opt(vmi_name).await.map_err(bad)? else {
        return Err((400, format!("the VMI \"{ns}/{vmi_name}\" does not exist")));
    };
    // vmi.IsFinal()
    if matches!(
        str_at(&vmi.data, "/status/phase"),
        Some("Succeeded" | "Failed")
    ) {
        return Err((400, "Cannot migrate VMI in finalized state.".into()));
    }
    // isMigratable: only an explicit False refuses.
    if let Some(c) = util::conditions(&vmi.data).iter().find(|c| {
        str_at(c, "/type") == Some("LiveMigratable") && str_at(c, "/status") == Some("False")
    }) {
        return Err((
            400,
            format!(
                "Cannot migrate VMI, Reason: {}, Message: {}",
                str_at(c, "/reason").unwrap_or_default(),
                str_at(c, "/message").unwrap_or_default()
            ),
        ));
    }
    // ensureNoMigrationConflict: the migrations labelled with this VMI, none unfinished.
    let lp = ListParams::default().labels(&format!("{}={vmi_name}", super::migration::VMI_LABEL));
    let others = util::api(&ctx.client, &util::vmim(), ns)
        .list(&lp)
        .await
        .map_err(bad)?;
    if let Some(m) = others.iter().find(|m| {
        !matches!(
            str_at(&m.data, "/status/phase"),
            Some("Succeeded" | "Failed")
        )
    }) {
        return Err((
            400,
            format!(
                "in-flight migration detected. Active migration job ({}) is currently already in progress for VMI {vmi_name}.",
                m.metadata.uid.as_deref().unwrap_or_default()
            ),
        ));
    }
    // Decentralized migrations need a feature gate the simulated KubeVirt does not enable.
    let spec = request.pointer("/object/spec").cloned().unwrap_or_default();
    if ["sendTo", "receive"]
        .iter()
        .any(|k| spec.get(*k).is_some_and(|v| !v.is_null()))
    {
        return Err((
            422,
            "DecentralizedLiveMigration feature gate is not enabled in kubevirt resource".into(),
        ));
    }
    Ok(())
}

/// Follows net-attach-def-admission-controller's `validateNetworkAttachmentDefinition`:
/// `spec.config`, when set, is a CNI config (`type`) or config list (`plugins`), with a
/// `cniVersion`.
fn admit_nad(request: &Value) -> std::result::Result<(), Denial> {
    let Some(config) = str_at(request, "/object/spec/config") else {
        return Ok(());
    };
    cni_config_error(config).map_or(Ok(()), |e| Err((400, format!("invalid config: {e}"))))
}

/// Why `config` is not a usable CNI config, or `None`.
pub fn cni_config_error(config: &str) -> Option<String> {
    let parsed: Value = match serde_json::from_str(config) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Some("error parsing configuration: not a JSON object".into()),
        Err(e) => return Some(format!("error parsing configuration: {e}")),
    };
    if str_at(&parsed, "/cniVersion").is_none_or(str::is_empty) {
        return Some("error parsing configuration: missing 'cniVersion'".into());
    }
    match parsed.get("plugins") {
        Some(Value::Array(plugins)) => {
            if str_at(&parsed, "/name").is_none_or(str::is_empty) {
                return Some("error parsing configuration list: no name".into());
            }
            if plugins.is_empty() {
                return Some("error parsing configuration list: no plugins in list".into());
            }
            plugins
                .iter()
                .any(|p| str_at(p, "/type").is_none_or(str::is_empty))
                .then(|| "error parsing configuration list: missing 'type'".into())
        }
        Some(_) => Some("error parsing configuration list: 'plugins' is not a list".into()),
        None => str_at(&parsed, "/type")
            .is_none_or(str::is_empty)
            .then(|| "error parsing configuration: missing 'type'".into()),
    }
}

async fn register(client: &kube::Client, addr: SocketAddr, ca_pem: &str) -> Result<()> {
    let ca = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
    let hook = |name: &str, path: &str, group: &str, version: &str, resource: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
            "sideEffects": "None", "timeoutSeconds": 10,
            "rules": [{"operations": if resource == "virtualmachineinstancemigrations" { json!(["CREATE"]) } else { json!(["CREATE", "UPDATE"]) },
                "apiGroups": [group], "apiVersions": [version], "resources": [resource]}],
            "clientConfig": {"url": format!("https://{addr}{path}"), "caBundle": ca}})
    };
    let configs = [
        (
            VIRT_API_VALIDATOR,
            hook(
                MIGRATION_WEBHOOK,
                MIGRATION_PATH,
                "kubevirt.io",
                "v1",
                "virtualmachineinstancemigrations",
            ),
        ),
        (
            NAD_VALIDATOR,
            hook(
                NAD_WEBHOOK,
                NAD_PATH,
                "k8s.cni.cncf.io",
                "v1",
                "network-attachment-definitions",
            ),
        ),
    ];
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let pp = PatchParams::apply("kubevirt-sim").force();
    for (name, webhook) in configs {
        let body = json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration", "metadata": {"name": name}, "webhooks": [webhook]});
        api.patch(name, &pp, &Patch::Apply(&body)).await?;
    }
    wait_effective(client).await
}

/// The API server picks a new webhook configuration up asynchronously: probe with a
/// dry-run migration of a VMI that does not exist until the webhook refuses it.
async fn wait_effective(client: &kube::Client) -> Result<()> {
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "sim-webhook-probe"}, "spec": {"vmiName": "sim-webhook-probe"}}))?;
    let api = util::api(client, &util::vmim(), "default");
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match api.create(&pp, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("denied the request") => return Ok(()),
            other => {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout(format!(
                        "the admission webhook {MIGRATION_WEBHOOK} to be called (last: {other:?})"
                    )));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::cni_config_error;

    #[test]
    fn cni_configs() {
        assert!(cni_config_error(r#"{"cniVersion":"0.3.1","type":"bridge"}"#).is_none());
        assert!(
            cni_config_error(r#"{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"bridge"}]}"#)
                .is_none()
        );
        assert!(cni_config_error("{}").is_some_and(|e| e.contains("cniVersion")));
        assert!(cni_config_error(r#"{"cniVersion":"0.3.1"}"#).is_some_and(|e| e.contains("type")));
        assert!(cni_config_error("not json").is_some());
    }
}
