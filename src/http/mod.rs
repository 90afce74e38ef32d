//! The HTTP side on `http_listen`: `/healthz` and `/readyz` for load balancers,
//! `/metrics` for Prometheus, and `/status` (with `/status.json`) for people.
//! Every answer is built from the live state when asked; nothing here is on the path
//! of a client's queries.

mod histogram;
mod members;
mod metrics;
mod ready;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::state::State;

/// How long a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish their answer once pgfleet stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Accepts HTTP clients until pgfleet stops or stops accepting (`State::closing`);
/// connections already open go on until it stops.
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    let mut stop = state.stop.subscribe();
    let mut closing = state.closing.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => return,
            _ = stopped(&mut closing) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(state.clone(), stream));
            }
            Err(e) => {
                warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection's requests (keep-alive) until the client leaves or pgfleet
/// stops.
async fn connection(state: Arc<State>, stream: TcpStream) {
    let mut stop = state.stop.subscribe();
    let service = service_fn(move |req: Request<Incoming>| {
        let response = route(&state, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "http connection ended with an error");
    }
}

/// Resolves once the flag is set (at once if it already is).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The answer to one request.
fn route(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/status" | "/status.json"
    );
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let topology = state.current.load();
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready::not_ready(&topology).as_slice() {
            [] => text(StatusCode::OK, "ready\n".into()),
            endpoints => {
                let mut body = String::from("not ready:\n");
                for e in endpoints {
                    body.push_str(e);
                    body.push('\n');
                }
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        },
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            match metrics::encode(state, &topology, openmetrics) {
                Ok((body, content_type)) => respond(StatusCode::OK, content_type, body),
                Err(e) => {
                    warn!(error = %e, "metrics could not be encoded");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics could not be encoded\n".into(),
                    )
                }
            }
        }
        "/status.json" => respond(
            StatusCode::OK,
            "application/json",
            status::json(state, &topology),
        ),
        _ => {
            let mut r = respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status::PAGE.to_owned(),
            );
            // Everything the page needs is in it; it only talks back to /status.json.
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; \
                     style-src 'unsafe-inline'; connect-src 'self'",
                ),
            );
            r
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer is the state of this moment.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
