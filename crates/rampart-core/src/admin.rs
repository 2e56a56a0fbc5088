//! The admin listener: `/metrics` (Prometheus), `/healthz`, `/readyz`. Separate from traffic.

use crate::proxy::Shared;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

/// An admin request handed to an extension.
pub struct AdminRequest<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub peer: std::net::SocketAddr,
}

/// Extra admin endpoints plugged in by the binary (e.g. the ban list), answered with JSON.
pub trait AdminExtension: Send + Sync {
    /// Paths this extension answers (exact match).
    fn paths(&self) -> &[&'static str];
    fn handle<'a>(
        &'a self,
        req: AdminRequest<'a>,
    ) -> crate::guard::BoxFuture<'a, (StatusCode, String)>;
}

async fn route(
    shared: Arc<Shared>,
    draining: bool,
    ext: Arc<Vec<Arc<dyn AdminExtension>>>,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(e) = ext.iter().find(|e| e.paths().contains(&path.as_str())) {
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_string);
        let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
            req.into_body(),
            64 * 1024,
        ))
        .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Ok(reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "application/json",
                    "{\"error\":\"body too large\"}",
                ))
            }
        };
        let (status, json) = e
            .handle(AdminRequest {
                method: &method,
                path: &path,
                query: query.as_deref(),
                body: &body,
                peer,
            })
            .await;
        return Ok(reply(status, "application/json", json));
    }
    Ok(match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if draining => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n"),
        "/readyz" => reply(
            StatusCode::OK,
            "text/plain",
            format!("ready generation={}\n", shared.snapshot.load().generation),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found (try /metrics, /healthz, /readyz)\n",
        ),
    })
}

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    ext: Arc<Vec<Arc<dyn AdminExtension>>>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let ext = ext.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                route(shared.clone(), *shutdown.borrow(), ext.clone(), peer, req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
