//! One client's life: accept, startup, authentication, the session.

mod acquire;
mod auth;
mod conn;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod pending;
mod pin;
mod prepared;
mod pump;
mod session;
mod settings;
mod startup;
mod track;
mod transaction;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::cancel::send_cancel;
use crate::capacity::Capacity;
use crate::clients::NewClient;
use crate::cluster::{ClusterState, EndpointState, Phase};
use crate::config::AuthType;
use crate::dormant::Dormant;
use crate::limits::Throttle;
use crate::pool::Credentials;
use crate::protocol::sqlstate;
use crate::state::{State, Topology};

pub use error::ClientError;
pub use pending::PendingByAddress;
pub use prepared::SharedStatements;

pub(crate) use conn::ClientConn;
pub(crate) use startup::{Hello, StartupParams};

/// Accepts clients of one endpoint until pgfleet stops accepting or a reload removes
/// the endpoint. Each worker runs one of these on each of its sockets of the
/// endpoint's group; `first` is the one that logs the endpoint's removal.
pub async fn serve_endpoint(
    state: Arc<State>,
    cluster: Arc<ClusterState>,
    endpoint: Arc<EndpointState>,
    listener: TcpListener,
    first: bool,
) {
    let accepting = accept_loop(&state, &listener, |stream, peer| {
        if endpoint.phase() != Phase::Open {
            // Accepted in the same instant the endpoint was removed: closed unanswered.
            drop(stream);
            return;
        }
        let id = state.next_client_id();
        // One span per client, entered at each of its task's wake-ups: `user` and `db`
        // are filled in at login rather than in a second, nested span.
        let span = tracing::info_span!(
            "client",
            id,
            endpoint = %endpoint.name,
            %peer,
            user = tracing::field::Empty,
            db = tracing::field::Empty
        );
        let ep = endpoint.clone();
        let task = handle_client(state.clone(), cluster.clone(), ep, stream, id, peer);
        // On this worker, whose event loop the socket is registered with.
        tokio::spawn(task.instrument(span));
    });
    tokio::select! {
        _ = accepting => {}
        _ = endpoint.reached(Phase::Closing) => if first {
            info!(cluster = %cluster.name, endpoint = %endpoint.name, "endpoint removed: no longer accepting");
        }
    }
}

/// Accepts connections on `listener` until pgfleet stops or stops accepting
/// (`State::closing`), handing each to `accepted`.
pub(crate) async fn accept_loop(
    state: &State,
    listener: &TcpListener,
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    let mut stop = state.stop.subscribe();
    let mut closing = state.closing.subscribe();
    let mut failures = Throttle::new(std::time::Duration::from_secs(1));
    loop {
        if *stop.borrow() || *closing.borrow() {
            return;
        }
        let next = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => continue,
            _ = closing.changed() => continue,
        };
        match next {
            Ok((stream, peer)) => accepted(stream, peer),
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                if let Some(held_back) = failures.allow() {
                    warn!(error = %e, held_back, "accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle_client(
    state: Arc<State>,
    cluster: Arc<ClusterState>,
    ep: Arc<EndpointState>,
    stream: TcpStream,
    id: u32,
    peer: SocketAddr,
) {
    let connected_at = std::time::Instant::now();
    let _counted = ep.client();
    let _ = stream.set_nodelay(true);
    let topology = state.current.load_full();
    let general = &topology.config.general;
    let mut conn = ClientConn::new(stream);
    let slot = state.client_slots.try_acquire();
    let stop = state.stop.subscribe();

    let admit = |_: &StartupParams| match slot {
        Some(_) => Ok(()),
        None => Err(ClientError::fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            "no more connections allowed (max_client_conn)",
        )),
    };
    // Boxed: the login's state (TLS handshake, an auth_query lookup's connect) lives on
    // the heap while it runs and is gone after, instead of sizing every client's task.
    let gate = Gate {
        budget: &state.pending_logins,
        peer: peer.ip(),
        auth_type: general.auth_type,
    };
    let login = Box::pin(login(
        &state,
        &mut conn,
        &topology,
        gate,
        Some(&cluster),
        admit,
    ));
    let Some((params, cred)) = login.await else {
        return;
    };
    conn.max_message = general.max_message_size;
    let span = tracing::Span::current();
    span.record("user", params.user.as_str());
    span.record("db", params.database.as_str());
    let key: u32 = rand::random();
    let cancel = state
        .cancels
        .register(id, key, cluster.pools.cancel_targets.clone());
    let application_name = params
        .settings
        .iter()
        .find(|(n, _)| n == "application_name")
        .map_or("", |(_, v)| v.as_str());
    let new = NewClient {
        id,
        user: &params.user,
        database: &params.database,
        cluster: &cluster.name,
        endpoint: &ep.name,
        peer,
        application_name,
        tls: conn.stream.tls_text(),
    };
    let registered = state.clients.register(new, conn.stream.fd());
    let client = session::Client {
        info: &registered.info,
        id,
        key,
        cancel: &cancel,
        params: &params,
        cred: &cred,
        connected_at,
        log: general.log_connections,
        statements: &state.statements,
    };
    // Boxed, as the login: otherwise the session's state sizes the client's task, which
    // is moved whole (several times) when it is spawned.
    let run = Box::pin(session::run(&cluster, &ep, &mut conn, client));
    let removed = ep.reached(Phase::Ended);
    let result = until_stopped(stop, removed, run).await;
    state.cancels.unregister(id);
    match result {
        Some(Err(e)) => {
            info!(code = e.code(), error = %e, "session ended with an error");
            if !matches!(e, ClientError::Io(_)) {
                cluster.count_error(e.code());
            }
            conn.send_error(&e).await;
        }
        None => {
            let e = match ep.phase() {
                Phase::Ended => ClientError::fatal(
                    sqlstate::ADMIN_SHUTDOWN,
                    "this endpoint was removed from the configuration (drain_timeout passed)",
                ),
                _ => ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "pgfleet is shutting down"),
            };
            cluster.count_error(e.code());
            conn.send_error(&e).await;
        }
        Some(Ok(_)) => {}
    }
}

/// Runs `f` unless the process is told to stop, or `ended` resolves, first. The two
/// signals are polled only when they fire, not on each of `f`'s wake-ups.
async fn until_stopped<F: std::future::Future>(
    mut stop: watch::Receiver<bool>,
    ended: impl std::future::Future<Output = ()>,
    f: F,
) -> Option<F::Output> {
    if *stop.borrow() {
        return None;
    }
    let stopped = Dormant::new(async move {
        let _ = stop.changed().await;
    });
    let ended = Dormant::new(ended);
    tokio::select! {
        biased;
        out = f => Some(out),
        _ = stopped => None,
        _ = ended => None,
    }
}

/// Where a connection logs in: the client endpoints or the admin console.
pub(crate) struct Gate<'a> {
    /// The pending logins it counts in (`max_pending_logins`, or the console's).
    pub budget: &'a Capacity,
    /// The client's address (`max_pending_logins_per_address`).
    pub peer: IpAddr,
    /// How the client authenticates (`auth_type`, or the console's `admin_auth`).
    pub auth_type: AuthType,
}

/// Reads the startup packet (forwarding a cancel request) within
/// `client_startup_timeout`, lets `admit` refuse the client, and authenticates it (a
/// client of `cluster` who is not in `auth_file` with what `auth_query` finds), within
/// `client_login_timeout`, holding a permit of the gate's budget and one of its peer's
/// source. `None`
/// when the connection ends here (a cancel request, or a refusal the client was told
/// of, counted on `cluster` when there is one).
pub(crate) async fn login(
    state: &State,
    conn: &mut ClientConn,
    topology: &Topology,
    gate: Gate<'_>,
    cluster: Option<&ClusterState>,
    admit: impl FnOnce(&StartupParams) -> Result<(), ClientError>,
) -> Option<(StartupParams, Credentials)> {
    let general = &topology.config.general;
    let Gate {
        budget,
        peer,
        auth_type,
    } = gate;
    let Some(_pending) = budget.try_acquire() else {
        let text = "too many connections waiting to log in (max_pending_logins)";
        let e = ClientError::fatal(sqlstate::TOO_MANY_CONNECTIONS, text);
        refuse(conn, e, cluster).await;
        return None;
    };
    let per_address = general.max_pending_logins_per_address;
    let Some(_from) = state.pending_by_address.try_acquire(peer, per_address) else {
        let text = "too many connections from this address waiting to log in \
                    (max_pending_logins_per_address)";
        let e = ClientError::fatal(sqlstate::TOO_MANY_CONNECTIONS, text);
        refuse(conn, e, cluster).await;
        return None;
    };
    let steps = async {
        let tls = topology.client_tls.as_deref();
        let hello = tokio::time::timeout(
            general.client_startup_timeout,
            startup::read_hello(conn, tls),
        );
        let Ok(hello) = hello.await else {
            return Err(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "client_startup_timeout: no startup packet in time",
            ));
        };
        let params = match hello? {
            Hello::Cancel { pid, key } => {
                cancel(state, pid, key);
                return Ok(None);
            }
            Hello::Startup(p) => p,
        };
        admit(&params)?;
        let found = auth::find_secret(&params.user, topology, cluster).await?;
        let cred = auth::authenticate(
            conn,
            &params.user,
            auth_type,
            found,
            &state.derived,
            &state.mock_key,
        )
        .await?;
        Ok(Some((params, cred)))
    };
    match tokio::time::timeout(general.client_login_timeout, steps).await {
        Ok(Ok(login)) => login,
        Ok(Err(e)) => {
            refuse(conn, e, cluster).await;
            None
        }
        Err(_) => {
            let e = ClientError::fatal(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout");
            refuse(conn, e, cluster).await;
            None
        }
    }
}

async fn refuse(conn: &mut ClientConn, e: ClientError, cluster: Option<&ClusterState>) {
    match &e {
        ClientError::Io(_) => debug!(error = %e, "client left during login"),
        _ => {
            info!(code = e.code(), error = %e, "client refused");
            if let Some(c) = cluster {
                c.count_error(e.code());
            }
        }
    }
    conn.send_error(&e).await;
}

fn cancel(state: &State, pid: u32, key: u32) {
    match state.cancels.lookup(pid, key) {
        Some((target, pass)) => {
            info!(client = pid, node = %target.node.addr, server_pid = target.pid, "cancel request forwarded");
            // On its own: the request holds no pending login while it reaches the server.
            tokio::spawn(async move {
                if let Err(e) = send_cancel(&target, pass).await {
                    warn!(node = %target.node.addr, error = %e, "cancel request could not be sent");
                }
            });
        }
        None => debug!(
            client = pid,
            "cancel request for no running query, or a wrong key"
        ),
    }
}

/// The address a listener is bound to, for logs.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
