//! Counts the operator's own requests to the apiserver by verb and resource, as a client
//! layer (`wukong_kube_requests_total`): what a Wukong costs the apiserver, seen from the
//! side that pays it.

use http::{Method, Request};
use tower::util::MapRequestLayer;

use super::Metrics;

/// The layer to put on the operator's client.
pub fn layer<B>() -> MapRequestLayer<fn(Request<B>) -> Request<B>> {
    MapRequestLayer::new(count::<B>)
}

fn count<B>(request: Request<B>) -> Request<B> {
    let (verb, resource) = classify(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    Metrics::global().kube_request(verb, &resource);
    request
}

/// `(verb, resource)` of a request, as RBAC names them: `get`/`list`/`watch`, `create`,
/// `update`, `patch`, `delete`; the resource with its subresource (`wukongs/status`).
/// Discovery paths are `discovery`.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/...` or `/apis/GROUP/VERSION/...`.
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, named) = match rest {
        [] => return (verb(method, false, query), "discovery".into()),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, subresource, ..] => (format!("{resource}/{subresource}"), true),
    };
    (verb(method, named, query), resource)
}

fn verb(method: &Method, named: bool, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_rbac_names_them() {
        let cases = [
            (
                Method::GET,
                "/apis/vm.novasphere.dev/v1alpha1/namespaces/a/wukongs/vm1",
                None,
                "get",
                "wukongs",
            ),
            (
                Method::PATCH,
                "/apis/vm.novasphere.dev/v1alpha1/namespaces/a/wukongs/vm1/status",
                None,
                "patch",
                "wukongs/status",
            ),
            (
                Method::GET,
                "/apis/kubevirt.io/v1/virtualmachines",
                Some("watch=true&resourceVersion=5"),
                "watch",
                "virtualmachines",
            ),
            (
                Method::GET,
                "/apis/storage.k8s.io/v1/storageclasses/longhorn",
                None,
                "get",
                "storageclasses",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/persistentvolumeclaims",
                Some("labelSelector=x"),
                "list",
                "persistentvolumeclaims",
            ),
            (
                Method::PUT,
                "/apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachines/vm1/stop",
                None,
                "update",
                "virtualmachines/stop",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a",
                None,
                "get",
                "namespaces",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None,
                "create",
                "events",
            ),
            (
                Method::GET,
                "/apis/kubevirt.io/v1",
                None,
                "list",
                "discovery",
            ),
        ];
        for (method, path, query, verb, resource) in cases {
            assert_eq!(
                classify(&method, path, query),
                (verb, resource.to_owned()),
                "{path}"
            );
        }
    }
}
