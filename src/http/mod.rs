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

use crate::capacity::{Capacity, Permit};
use crate::limits::Throttle;
use crate::state::State;

/// How long a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish their answer once pgfleet stops or their
/// `http_connection_timeout` is up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The most bytes of requests read ahead (pipelined) per connection: requests are a
/// line and a few headers.
const MAX_BUF: usize = 16 * 1024;

/// Accepts HTTP clients until pgfleet stops or stops accepting (`State::closing`);
/// connections already open go on until it stops or `http_connection_timeout`. At
/// most `http_max_connections` are open: one more is closed as soon as it is accepted,
/// so HTTP clients cannot take the file descriptors the client endpoints need.
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    let mut stop = state.stop.subscribe();
    let mut closing = state.closing.subscribe();
    let open = Capacity::new(state.current.load().config.general.http_max_connections);
    let mut refused = 0u64;
    let mut failures = Throttle::new(Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => return,
            _ = stopped(&mut closing) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let general = &state.current.load().config.general;
                open.resize(general.http_max_connections);
                let Some(permit) = open.try_acquire() else {
                    refused += 1;
                    // Once per power of two: a flood does not flood the log too.
                    if refused.is_power_of_two() {
                        warn!(%peer, refused, "http connection closed: http_max_connections are open");
                    }
                    drop(stream);
                    continue;
                };
                let lifetime = general.http_connection_timeout;
                tokio::spawn(connection(state.clone(), stream, lifetime, permit));
            }
            Err(e) => {
                if let Some(held_back) = failures.allow() {
                    warn!(error = %e, held_back, "http accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection's requests (keep-alive) until the client leaves, `lifetime`
/// is up, or pgfleet stops; holds `_open` meanwhile.
async fn connection(state: Arc<State>, stream: TcpStream, lifetime: Duration, _open: Permit) {
    let mut stop = state.stop.subscribe();
    let service = service_fn(move |req: Request<Incoming>| {
        let response = route(&state, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = tokio::time::sleep(lifetime) => {
            debug!("http connection closed: http_connection_timeout");
            None
        }
        _ = stopped(&mut stop) => None,
    };
    // Ended early: the answer being written gets `SHUTDOWN_GRACE`, then the connection
    // is dropped whatever the client does.
    let result = match ended {
        Some(r) => r,
        None => {
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
