//! The answers virt-api writes: `metav1.Status` bodies built the way apimachinery's
//! `errors.New…` constructors build them (`pkg/virt-api/rest/subresource.go` `writeError`),
//! so a client reads the same code, reason and message text as from real KubeVirt.

use hyper::StatusCode;
use serde_json::{Value, json};

/// An HTTP status and a JSON body (`Value::Null`: no body).
pub type Reply = (StatusCode, Value);

/// The kinds virt-api names in its errors (`v1.Resource("virtualmachine")`).
pub const VM: &str = "virtualmachine";
/// See [`VM`].
pub const VMI: &str = "virtualmachineinstance";

fn status(code: StatusCode, reason: &str, message: &str, details: Value) -> Reply {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    if !details.is_null() {
        body["details"] = details;
    }
    (code, body)
}

fn details(kind: &str, name: &str) -> Value {
    json!({"name": name, "group": "kubevirt.io", "kind": kind})
}

/// `errors.NewConflict(v1.Resource(kind), name, err)`: 409, the message wrapped as
/// `Operation cannot be fulfilled on virtualmachine.kubevirt.io "vm1": …`.
pub fn conflict(kind: &str, name: &str, message: &str) -> Reply {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!("Operation cannot be fulfilled on {kind}.kubevirt.io \"{name}\": {message}"),
        details(kind, name),
    )
}

/// `errors.NewNotFound(v1.Resource(kind), name)`: 404 `virtualmachine.kubevirt.io "vm1" not found`.
pub fn not_found(kind: &str, name: &str) -> Reply {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind}.kubevirt.io \"{name}\" not found"),
        details(kind, name),
    )
}

/// `errors.NewForbidden(v1.Resource(kind), name, err)`: 403.
pub fn forbidden(kind: &str, name: &str, message: &str) -> Reply {
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!("{kind}.kubevirt.io \"{name}\" is forbidden: {message}"),
        details(kind, name),
    )
}

/// `errors.NewInternalError(err)`: 500 `Internal error occurred: …`.
pub fn internal(message: impl std::fmt::Display) -> Reply {
    let message = message.to_string();
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &format!("Internal error occurred: {message}"),
        json!({"causes": [{"message": message}]}),
    )
}

/// `errors.NewBadRequest(message)`: 400 with the message as given.
pub fn bad_request(message: &str) -> Reply {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, Value::Null)
}

/// A route virt-api does not serve.
pub fn no_route(message: &str) -> Reply {
    status(StatusCode::NOT_FOUND, "NotFound", message, Value::Null)
}

/// A method virt-api does not serve on a route.
pub fn method_not_allowed(message: &str) -> Reply {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        message,
        Value::Null,
    )
}

/// The request carried no client certificate from the aggregator.
pub fn unauthorized() -> Reply {
    status(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "a client certificate from the aggregator is required",
        Value::Null,
    )
}

/// VMI actions (pause, unpause, softreboot) answer 200 with no body: virt-api proxies
/// them to virt-handler and writes no header of its own (`putRequestHandler`).
pub fn ok() -> Reply {
    (StatusCode::OK, Value::Null)
}

/// VM actions (start, stop, restart, migrate) answer 202 Accepted with no body
/// (`response.WriteHeader(http.StatusAccepted)` in `lifecycle.go`).
pub fn accepted() -> Reply {
    (StatusCode::ACCEPTED, Value::Null)
}
