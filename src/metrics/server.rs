//! The HTTP listener of `-metrics-bind-address`: `/metrics`, `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::ready;
use crate::util::ready::Readiness;
use tokio_util::sync::CancellationToken;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// What a request gets: status, content type, body. Pure, so the routes are unit-tested.
fn route(method: &Method, path: &str, readiness: &Readiness) -> (StatusCode, &'static str, String) {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD\n".into(),
        );
    }
    let probe = |p: ready::Probe| {
        let code = if p.ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, TEXT, p.body)
    };
    match path {
        "/metrics" => (StatusCode::OK, OPENMETRICS, super::get().encode()),
        "/healthz" | "/livez" => probe(ready::liveness(readiness)),
        "/readyz" => probe(ready::readiness(readiness)),
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

async fn handle(
    req: Request<Incoming>,
    ready: Readiness,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (code, ctype, body) = route(req.method(), req.uri().path(), &ready);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

/// Binds `addr` (a bind failure is a configuration error) and returns the serving task's future.
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
    cancel: CancellationToken,
) -> Result<impl Future<Output = ()> + Send + 'static> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "binding the metrics listener on {addr} (-metrics-bind-address): is the port in use?"
        )
    })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz on http://{bound}");
    Ok(async move {
        // E.g. out of file descriptors: back off instead of spinning.
        let mut failing = crate::util::retry::Retrying::new(
            "metrics listener: accepting a connection",
            crate::util::retry::DEPENDENCY,
        );
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    failing.succeeded();
                    let ready = ready.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(req, ready.clone()));
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = conn.await {
                            tracing::debug!("metrics connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    if failing.failed(e.into(), &cancel).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = Readiness::new();
        let route = |m: &Method, path: &str| route(m, path, &r);
        let (code, ctype, body) = route(&Method::GET, "/metrics");
        assert_eq!((code, ctype), (StatusCode::OK, OPENMETRICS));
        assert!(body.contains("# TYPE ovnkube_master_build_info gauge"));
        assert_eq!(route(&Method::GET, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(
            route(&Method::POST, "/metrics").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Nothing registered and not sealed: alive, but not ready.
        assert_eq!(route(&Method::GET, "/healthz").0, StatusCode::OK);
        assert_eq!(
            route(&Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        r.seal();
        assert_eq!(route(&Method::GET, "/readyz").0, StatusCode::OK);
        r.failed();
        assert_eq!(
            route(&Method::GET, "/healthz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
