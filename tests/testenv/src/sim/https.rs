//! The HTTPS/1.1 accept loop the simulator's servers share (the aggregated API and the
//! admission webhooks): a TLS handshake per connection, then the handler per request,
//! told whether the client presented a certificate.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves `listener` with `tls` until the task is aborted; `what` names the server in logs.
pub(crate) fn serve<H, F>(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    what: &'static str,
    handler: H,
) -> JoinHandle<()>
where
    H: Fn(bool, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(t) => t,
                    Err(e) => return tracing::debug!("{what} TLS: {e}"),
                };
                let authenticated = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let svc = service_fn(move |req| handler(authenticated, req));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await
                {
                    tracing::debug!("{what} connection: {e}");
                }
            });
        }
    })
}
