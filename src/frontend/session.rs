//! One client's session after login: session pooling keeps one server connection until
//! the client leaves; transaction pooling (`transaction.rs`) takes one per transaction.
//! Both greet the client from its pool's parameters and wait for its first message
//! holding no server connection; those steps, and checkout, live here.

use std::time::{Duration, Instant};

use bytes::Buf;
use tokio::io::AsyncReadExt;
use tracing::info;

use crate::cancel::{CancelSlot, TargetScope};
use crate::clients::{ClientInfo, ClientState};
use crate::cluster::{ClusterState, EndpointState, SessionSlot, View};
use crate::config::{self, PoolMode, Role};
use crate::pool::{Credentials, Params, PooledConn};
use crate::protocol::backend as msg;
use crate::protocol::frame::announced_size;
use crate::protocol::sqlstate;

use super::acquire::{acquire, node_available, PoolCache};
use super::conn::ClientConn;
use super::error::ClientError;
use super::prepared::SharedStatements;
use super::pump::stream::STREAM_AT;
use super::pump::{pump, PumpEnd, PumpOptions};
use super::settings::{set_config, ClientSettings, SqlCommand};
use super::startup::StartupParams;
use super::track::Tracker;
use super::transaction;

/// Who the client is, once authenticated.
pub struct Client<'a> {
    /// The client as the admin console sees it.
    pub info: &'a ClientInfo,
    pub id: u32,
    pub key: u32,
    pub params: &'a StartupParams,
    pub cred: &'a Credentials,
    /// Where this client's cancel requests go.
    pub cancel: &'a CancelSlot,
    /// When the client connected, for the disconnect line's duration.
    pub connected_at: Instant,
    /// `log_connections`.
    pub log: bool,
    /// Transaction mode's named statements, shared by every client.
    pub statements: &'a SharedStatements,
}

/// Runs the session to its end; returns how it ended. An error is for the caller to
/// send to the client.
pub async fn run(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    conn: &mut ClientConn,
    client: Client<'_>,
) -> Result<PumpEnd, ClientError> {
    // Read into a local: a guard in the `match` itself would live (and hold one of the
    // thread's few fast `ArcSwap` slots) for the whole session.
    let mode = cluster.config().pool.pool_mode;
    let result = match mode {
        PoolMode::Session => session_mode(cluster, endpoint, conn, &client).await,
        PoolMode::Transaction => transaction::run(cluster, endpoint, conn, &client).await,
    };
    if client.log {
        info!(
            duration_ms = client.connected_at.elapsed().as_millis() as u64,
            end = ?result.as_ref().map_err(|e| e.to_string()),
            "client disconnected"
        );
    }
    result
}

async fn session_mode(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    conn: &mut ClientConn,
    client: &Client<'_>,
) -> Result<PumpEnd, ClientError> {
    // As PgBouncer: greeted from the pool's parameters, the client gets its server
    // connection with its first message, so a connected client that sends nothing
    // holds none.
    let mut pools = PoolCache::default();
    let mut greeted = greet_from_pool(cluster, endpoint, conn, client, &mut pools).await?;
    // The pool's first client keeps the connection its greeting came from.
    let (slot, mut server) = match greeted.held.take() {
        Some(held) => {
            client
                .info
                .set(ClientState::Active, Some(held.0.node.index));
            held
        }
        None => {
            let idle_timeout = options(&cluster.config().pool, false).client_idle_timeout;
            match wait_for_client(conn, idle_timeout).await? {
                Next::Message => {}
                Next::Terminate => return Ok(PumpEnd::ClientTerminated),
                Next::Closed => return Ok(PumpEnd::ClientClosed),
            }
            let view = &mut View::new(cluster, endpoint);
            checkout(cluster, endpoint, view, conn, client, &mut pools).await?
        }
    };
    if client.log {
        info!(node = %slot.node.addr, server_pid = server.backend_pid, "session bound to a server connection");
    }
    apply_settings(conn, &mut server, &client.params.settings).await?;
    // What this connection's values are where they differ from the greeting.
    report_changes(conn, |name| greeted.told(name), &server.params).await?;
    drop(greeted);
    let target = set_cancel_target(client.cancel, &server);
    let mut track = Tracker::new(false);
    loop {
        let opts = options(&cluster.config().pool, false);
        let result = pump(conn, &mut server, &mut track, opts, None, &endpoint.stats).await;
        if matches!(result.end, PumpEnd::Resync) {
            // RESET brings startup settings back on PostgreSQL; here they were set after
            // login, so set the ones reset again, and tell the client.
            let reset = reset_startup_settings(&client.params.settings, &result);
            let before = server.params.clone();
            apply_settings(conn, &mut server, &reset).await?;
            report_changes(conn, lookup(&before), &server.params).await?;
            continue;
        }
        drop(target);
        let end = pump_end(result.end, &server);
        server.finish(result.release);
        return end;
    }
}

/// The startup settings a RESET just brought back to the server's defaults: those it
/// named, or all of them after RESET ALL, DISCARD ALL, or a RESET pgfleet did not read
/// (inside a longer query string).
fn reset_startup_settings(
    startup: &[(String, String)],
    result: &super::pump::PumpResult,
) -> Vec<(String, String)> {
    let mut names: Vec<&str> = Vec::new();
    let mut all = result.commands.is_empty();
    for command in &result.commands {
        match command {
            SqlCommand::Reset { name } => names.push(name),
            SqlCommand::ResetAll | SqlCommand::DiscardAll => all = true,
            SqlCommand::Set { .. } => {}
        }
    }
    startup
        .iter()
        .filter(|(n, _)| all || names.iter().any(|r| r.eq_ignore_ascii_case(n)))
        .cloned()
        .collect()
}

/// A member and a server connection for the client's session or transaction, with the
/// client shown as waiting, then active on that member.
pub async fn checkout(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    view: &mut View,
    conn: &ClientConn,
    client: &Client<'_>,
    pools: &mut PoolCache,
) -> Result<(SessionSlot, PooledConn), ClientError> {
    client.info.set(ClientState::Waiting, None);
    let database = &client.params.database;
    let (cred, max) = (client.cred, conn.max_message);
    let (slot, server) = acquire(cluster, endpoint, view, database, cred, max, pools).await?;
    client.info.set(ClientState::Active, Some(slot.node.index));
    Ok((slot, server))
}

/// The pump settings of a cluster's pool.
pub fn options(pool: &config::Pool, transaction: bool) -> PumpOptions {
    let some = |d: Duration| (!d.is_zero()).then_some(d);
    PumpOptions {
        transaction,
        client_idle_timeout: some(pool.client_idle_timeout),
        idle_transaction_timeout: some(pool.idle_transaction_timeout),
        query_timeout: some(pool.query_timeout),
    }
}

/// Sends the client ParameterStatus for each parameter of `now` whose value is not
/// the one `told` gives for it: what the client was told last.
pub async fn report_changes<'a>(
    conn: &mut ClientConn,
    told: impl Fn(&str) -> Option<&'a str>,
    now: &[(String, String)],
) -> Result<(), ClientError> {
    for (name, value) in now {
        if told(name) != Some(value.as_str()) {
            msg::parameter_status(&mut conn.out, name, value);
        }
    }
    conn.flush().await
}

/// The value a parameter list has for `name`, for `report_changes`.
pub fn lookup<'a>(list: &'a [(String, String)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Cancel requests with the client's key reach this server connection until the
/// returned scope is dropped (before the connection is).
pub fn set_cancel_target<'a>(cancel: &'a CancelSlot, server: &PooledConn) -> TargetScope<'a> {
    TargetScope::new(cancel, &server.cancel_target)
}

/// How a pump end reads as the session's result.
pub fn pump_end(end: PumpEnd, server: &PooledConn) -> Result<PumpEnd, ClientError> {
    let fatal = |code, message: &str| ClientError::fatal(code, message);
    match end {
        PumpEnd::ClientProtocol(e) => Err(e.into()),
        PumpEnd::ServerClosed => Err(fatal(
            sqlstate::CONNECTION_FAILURE,
            &format!("server connection to {} closed", server.pool().node.addr),
        )),
        PumpEnd::ServerProtocol(e) => Err(fatal(
            sqlstate::CONNECTION_FAILURE,
            &format!("server sent an invalid message: {e}"),
        )),
        PumpEnd::OutOfStep(why) => Err(fatal(
            sqlstate::PROTOCOL_VIOLATION,
            &format!("pgfleet lost track of the server connection's protocol state ({why}) and cannot go on with this session"),
        )),
        PumpEnd::ClientIdle => Err(fatal(
            sqlstate::IDLE_SESSION_TIMEOUT,
            "terminating connection due to client_idle_timeout",
        )),
        PumpEnd::IdleInTransaction => Err(fatal(
            sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
            "terminating connection due to idle_transaction_timeout",
        )),
        PumpEnd::QueryTimeout => {
            // The query goes on running on the server unless it is cancelled.
            let target = server.cancel_target.target().clone();
            let pass = target.gate.enter();
            tokio::spawn(async move { crate::cancel::send_cancel(&target, pass).await });
            Err(fatal(
                sqlstate::QUERY_CANCELED,
                "terminating connection due to query_timeout",
            ))
        }
        end => Ok(end),
    }
}

/// Sets on the server connection the client's startup `settings` that differ from the
/// server's. `set_config` takes each value as the startup packet does (a list stays a
/// list).
pub async fn apply_settings(
    conn: &mut ClientConn,
    server: &mut PooledConn,
    settings: &[(String, String)],
) -> Result<(), ClientError> {
    let calls: Vec<String> = settings
        .iter()
        .filter(|(name, value)| server.param(name) != Some(value.as_str()))
        .map(|(name, value)| set_config(name, value))
        .collect();
    if calls.is_empty() {
        return Ok(());
    }
    let sql = format!("SELECT {}", calls.join(", "));
    run_on_server(conn, server, &sql).await
}

/// Runs `sql` on the server for the client: an error from PostgreSQL goes to the client.
/// The caller ends the session on an error (and the connection is closed with it).
pub async fn run_on_server(
    conn: &mut ClientConn,
    server: &mut PooledConn,
    sql: &str,
) -> Result<(), ClientError> {
    match server.simple_query(sql, conn.max_message).await {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(ClientError::Server(e)),
        Err(e) => Err(ClientError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("server connection failed while applying settings: {e}"),
        )),
    }
}

/// What the client did while it held no server connection.
pub(super) enum Next {
    /// A message is ready to be forwarded.
    Message,
    Terminate,
    Closed,
}

/// A client greeted before it had a server connection.
pub(super) struct Greeted {
    pub settings: ClientSettings,
    /// The parameters of a fresh server connection of the client's pool.
    pub baseline: Params,
    /// `in_hot_standby` as the client is told it: the endpoint's role, not the node's
    /// the baseline came from (none for `role = "any"`).
    standby: Option<&'static str>,
    /// The server connection taken for `baseline` when the pool had none yet, fresh
    /// and idle: session mode keeps it, transaction mode gives it back (`Reuse`).
    pub held: Option<(SessionSlot, PooledConn)>,
}

impl Greeted {
    /// The value the client was greeted with for `name`, if any.
    pub fn told(&self, name: &str) -> Option<&str> {
        let fresh = self.baseline.iter().find(|(n, _)| n == name)?;
        Some(self.value(fresh))
    }

    /// The parameters the client is told at login, as (name, value).
    pub fn greeting(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.baseline
            .iter()
            .map(|fresh| (fresh.0.as_str(), self.value(fresh)))
    }

    /// The client's value for `fresh`, one of the baseline's (name, value) pairs.
    fn value<'a>(&'a self, fresh: &'a (String, String)) -> &'a str {
        match (fresh.0 == "in_hot_standby", self.standby) {
            (true, Some(v)) => v,
            _ => self.settings.told(fresh),
        }
    }
}

/// Greets a client before it has a server connection: the parameters of a fresh
/// server connection of its pool with the client's settings on top. Only the very
/// first client of a (database, user) needs a server connection for that.
pub(super) async fn greet_from_pool(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    conn: &mut ClientConn,
    client: &Client<'_>,
    pools: &mut PoolCache,
) -> Result<Greeted, ClientError> {
    let database = &client.params.database;
    let mut held = None;
    let baseline = match cluster.pools.baseline(database, &client.cred.user) {
        Some(b) => {
            node_available(cluster, endpoint).await?;
            b
        }
        None => {
            let max = conn.max_message;
            let view = &mut View::new(cluster, endpoint);
            let (slot, server) =
                acquire(cluster, endpoint, view, database, client.cred, max, pools).await?;
            let params = server.params.clone();
            let baseline = server.pool().baseline_or(params);
            held = Some((slot, server));
            baseline
        }
    };
    let spellings = &cluster.pools.spellings;
    let startup = &client.params.settings;
    let settings = ClientSettings::for_login(&baseline, startup, spellings);
    // Which node the client's transactions run on is the endpoint's role, whichever
    // node's parameters the greeting came from.
    let standby = match endpoint.config().role {
        Role::Replica => Some("on"),
        Role::Primary => Some("off"),
        Role::Any => None,
    };
    let greeted = Greeted {
        settings,
        baseline,
        standby,
        held,
    };
    // Written from the settings as they are: no copy of them per login.
    for (name, value) in greeted.greeting() {
        msg::parameter_status(&mut conn.out, name, value);
    }
    msg::backend_key_data(&mut conn.out, client.id, client.key);
    msg::ready_for_query(&mut conn.out, b'I');
    conn.flush().await?;
    if client.log {
        info!("client connected");
    }
    Ok(greeted)
}

/// Waits, holding no server connection, until the client has sent a whole message, or
/// the start of a large Bind (passed on as it comes).
pub(super) async fn wait_for_client(
    conn: &mut ClientConn,
    idle_timeout: Option<Duration>,
) -> Result<Next, ClientError> {
    // What is still to come of a CopyData being dropped.
    let mut dropping = 0;
    loop {
        if dropping > 0 {
            let n = dropping.min(conn.buf.len());
            conn.buf.advance(n);
            dropping -= n;
        }
        if dropping == 0 {
            if let Some(total) = announced_size(&conn.buf, conn.max_message)? {
                let whole = conn.buf.len() >= total;
                match conn.buf[0] {
                    b'X' if whole => return Ok(Next::Terminate),
                    // Copy messages outside COPY: what libpq sends after the server
                    // ended a COPY early. PostgreSQL drops them without an answer; so
                    // does pgfleet, without taking a server connection for them (a
                    // large CopyData as it comes).
                    b'd' | b'c' | b'f' if whole || conn.buf[0] == b'd' => {
                        dropping = total;
                        continue;
                    }
                    b'B' if total > STREAM_AT => return Ok(Next::Message),
                    _ if whole => return Ok(Next::Message),
                    _ => {}
                }
            }
        }
        let read = conn.stream.read_buf(&mut conn.buf);
        let n = match idle_timeout {
            None => read.await,
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(n) => n,
                Err(_) => {
                    return Err(ClientError::fatal(
                        sqlstate::IDLE_SESSION_TIMEOUT,
                        "terminating connection due to client_idle_timeout",
                    ))
                }
            },
        };
        match n {
            Ok(0) | Err(_) => return Ok(Next::Closed),
            Ok(_) => {}
        }
    }
}
