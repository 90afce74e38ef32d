//! Transaction pooling: the client holds a server connection from the first message of a
//! transaction to the ReadyForQuery that ends it, and each transaction goes to the node
//! that fits the endpoint with the fewest transactions in flight.

use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::clients::ClientState;
use crate::cluster::{ClusterState, EndpointState, SessionSlot};
use crate::config::Role;
use crate::pool::{Params, PooledConn, Release};
use crate::protocol::backend as msg;
use crate::protocol::next_message;
use crate::protocol::sqlstate;

use super::acquire::{acquire, node_available, PoolCache};
use super::conn::ClientConn;
use super::error::ClientError;
use super::prepared::ClientStatements;
use super::pump::{pump, PumpEnd};
use super::session::{
    checkout, greet, options, pump_end, report_changes, run_on_server, set_cancel_target, Client,
};
use super::settings::{ClientSettings, SqlCommand};

/// What the client did while it held no server connection.
pub(super) enum Next {
    /// A message is ready to be forwarded.
    Message,
    Terminate,
    Closed,
}

/// Runs a transaction-mode session to its end.
pub async fn run(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    conn: &mut ClientConn,
    client: &Client<'_>,
) -> Result<PumpEnd, ClientError> {
    let mut pools = PoolCache::default();
    let greeted = greet_from_pool(cluster, endpoint, conn, client, &mut pools).await?;
    // Back to the pool before the client is waited for.
    drop(greeted.held);
    let (mut settings, baseline) = (greeted.settings, greeted.baseline);
    let spellings = &cluster.pools.spellings;
    let mut warned = false;
    let mut statements = ClientStatements::default();
    let max_prepared = cluster.config().pool.max_prepared_statements;
    loop {
        // Read each time: a reload changes the timeouts of running clients too.
        let opts = options(&cluster.config().pool, true);
        match wait_for_client(conn, opts.client_idle_timeout).await? {
            Next::Message => {}
            Next::Terminate => return Ok(PumpEnd::ClientTerminated),
            Next::Closed => return Ok(PumpEnd::ClientClosed),
        }
        let (_slot, mut server) = checkout(cluster, endpoint, conn, client, &mut pools).await?;
        let synced = settings.sync_sql(&mut server);
        let resynced = synced.is_some();
        if let Some(sql) = synced {
            let before = server.params.clone();
            run_on_server(conn, &mut server, &sql).await?;
            server.applied = settings.unreported.clone();
            let spelt = settings.learn_spellings(&before, &server, &baseline, spellings);
            if !spelt.is_empty() {
                for (name, value) in spelt {
                    msg::parameter_status(&mut conn.out, &name, &value);
                }
                conn.flush().await?;
            }
        }
        let target = set_cancel_target(client.cancel, &server);
        // Closed unless the pump says otherwise, as in session mode.
        server.release = Release::Close;
        let named = (max_prepared > 0).then_some((&mut statements, max_prepared));
        let result = pump(conn, &mut server, opts, named, &endpoint.stats).await;
        client.info.set(ClientState::Idle, None);
        server.release = result.release;
        drop(target);
        if server.cancel_gate.busy() && !server.cancel_gate.settle().await {
            server.release = Release::Close;
        }
        if result.untracked_set && !warned {
            warned = true;
            warn!("SET outside a single simple-protocol statement is not carried to other server connections in transaction mode");
        }
        let dirty = result.settings_dirty || result.statements_dirty;
        match result.end {
            PumpEnd::TransactionDone => {
                // Parameters move only with a sync or a ParameterStatus from the server.
                if resynced || result.params_changed {
                    settings.snapshot(&server);
                }
                let mut reset = false;
                for command in result.commands {
                    if command == SqlCommand::DiscardAll {
                        statements.clear();
                        server.prepared.clear();
                    }
                    reset |= settings.apply(command, &mut server);
                }
                if result.reset_seen && !reset {
                    // A RESET inside a larger query string: as RESET ALL.
                    reset = settings.apply(SqlCommand::ResetAll, &mut server);
                }
                // Settings the server just reset need no second reset.
                let settings_dirty = result.settings_dirty && !reset;
                if settings_dirty || result.statements_dirty {
                    let max = conn.max_message;
                    clean_up(&mut server, settings_dirty, result.statements_dirty, max).await;
                }
                if reset {
                    // RESET brings startup settings back on PostgreSQL; here they were
                    // set after login, so set them again, and tell the client.
                    resync(conn, &mut server, &mut settings).await?;
                }
            }
            PumpEnd::ServerClosed if result.recoverable => {
                // Failover or a server crash between statements of no transaction
                // block: the client's requests fail, the client stays.
                server.release = Release::Close;
                let addr = &server.pool().node.addr;
                let text = format!(
                    "server connection to {addr} lost; the statement did not complete, retry it"
                );
                msg::error_response(
                    &mut conn.out,
                    msg::Severity::Error,
                    sqlstate::CONNECTION_FAILURE,
                    &text,
                );
                cluster.count_error(sqlstate::CONNECTION_FAILURE);
                for _ in 0..result.unanswered {
                    msg::ready_for_query(&mut conn.out, b'I');
                }
                conn.flush().await?;
                warn!(node = %addr, "server connection lost; the client goes on");
            }
            end => {
                // Leaving: a connection with state pgfleet cannot undo is not reused.
                if dirty {
                    server.release = Release::Close;
                }
                return pump_end(end, &server);
            }
        }
    }
}

/// A client greeted before it had a server connection.
pub(super) struct Greeted {
    pub settings: ClientSettings,
    /// The parameters of a fresh server connection of the client's pool.
    pub baseline: Params,
    /// The parameters the client was told.
    pub greeting: Vec<(String, String)>,
    /// The server connection taken for `baseline` when the pool had none yet (its
    /// `release` set to `Reuse`): session mode keeps it, transaction mode lets it go.
    pub held: Option<(SessionSlot, PooledConn)>,
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
            let (slot, mut server) =
                acquire(cluster, endpoint, database, client.cred, max, pools).await?;
            server.release = Release::Reuse;
            let params = server.params.clone();
            let baseline = server.pool().baseline_or(params);
            held = Some((slot, server));
            baseline
        }
    };
    let spellings = &cluster.pools.spellings;
    let startup = &client.params.settings;
    let settings = ClientSettings::for_login(&baseline, startup, spellings);
    let mut greeting = settings.greeting(&baseline);
    // Which node the client's transactions run on is the endpoint's role, whichever
    // node's parameters the greeting came from.
    let standby = match endpoint.config().role {
        Role::Replica => Some("on"),
        Role::Primary => Some("off"),
        Role::Any => None,
    };
    for (name, value) in greeting.iter_mut() {
        if let (true, Some(v)) = (name == "in_hot_standby", standby) {
            *value = v.to_owned();
        }
    }
    greet(conn, &greeting, client).await?;
    if client.log {
        info!("client connected");
    }
    Ok(Greeted {
        settings,
        baseline,
        greeting,
        held,
    })
}

/// Applies the client's settings on `server` after a RESET, and sends the client the
/// reported parameters that changed.
async fn resync(
    conn: &mut ClientConn,
    server: &mut PooledConn,
    settings: &mut ClientSettings,
) -> Result<(), ClientError> {
    let Some(sql) = settings.sync_sql(server) else {
        return Ok(());
    };
    let before = server.params.clone();
    run_on_server(conn, server, &sql).await?;
    server.release = Release::Reuse;
    server.applied = settings.unreported.clone();
    report_changes(conn, &before, &server.params).await?;
    settings.snapshot(server);
    Ok(())
}

/// Undoes on a server connection what the client did that pgfleet cannot carry over:
/// settings it does not know of (RESET ALL), prepared statements it lost track of
/// (DEALLOCATE ALL). The connection is closed if that fails.
async fn clean_up(server: &mut PooledConn, settings: bool, statements: bool, max: usize) {
    let mut sql = Vec::new();
    if settings {
        sql.push("RESET ALL");
    }
    if statements {
        sql.push("DEALLOCATE ALL");
    }
    match server.simple_query(&sql.join("; "), max).await {
        Ok(None) => {
            if settings {
                server.applied.clear();
            }
            if statements {
                server.prepared.clear();
            }
        }
        _ => server.release = Release::Close,
    }
}

/// Waits, holding no server connection, until the client has sent a whole message.
pub(super) async fn wait_for_client(
    conn: &mut ClientConn,
    idle_timeout: Option<Duration>,
) -> Result<Next, ClientError> {
    loop {
        if let Some(h) = next_message(&conn.buf, conn.max_message)? {
            match h.tag {
                b'X' => return Ok(Next::Terminate),
                // Copy messages outside COPY: what libpq sends after the server ended
                // a COPY early. PostgreSQL drops them without an answer; so does
                // pgfleet, without taking a server connection for them.
                b'd' | b'c' | b'f' => {
                    conn.buf.advance(h.total);
                    continue;
                }
                _ => return Ok(Next::Message),
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
