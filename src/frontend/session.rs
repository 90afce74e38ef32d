//! One client session in session pooling: pick a node, check out a server connection,
//! apply the client's settings, greet the client, pump, give the connection back.

use std::time::Instant;

use tokio::time::timeout_at;
use tracing::info;

use crate::balance;
use crate::cancel::CancelTarget;
use crate::cluster::{health, ClusterState, EndpointState, SessionSlot};
use crate::pool::{CheckoutError, Credentials, PooledConn, Release, ServerError};
use crate::protocol::backend as msg;
use crate::protocol::sqlstate;
use crate::state::State;

use super::conn::ClientConn;
use super::error::ClientError;
use super::pump::{pump, PumpEnd};
use super::startup::StartupParams;

/// Who the client is, once authenticated.
pub struct Client<'a> {
    pub id: u32,
    pub key: u32,
    pub params: &'a StartupParams,
    pub cred: &'a Credentials,
    /// When the client connected, for the disconnect line's duration.
    pub connected_at: Instant,
    /// `log_connections`.
    pub log: bool,
}

/// Runs the session to its end; returns how it ended. An error is for the caller to
/// send to the client.
pub async fn run(
    state: &State,
    cluster: &ClusterState,
    endpoint: &EndpointState,
    conn: &mut ClientConn,
    client: Client<'_>,
) -> Result<PumpEnd, ClientError> {
    let (slot, mut server) = acquire(
        cluster,
        endpoint,
        client.params,
        client.cred,
        conn.max_message,
    )
    .await?;
    if client.log {
        info!(node = %slot.node.addr, server_pid = server.backend_pid, "client connected");
    }
    let result = serve(state, conn, &mut server, &client).await;
    state.cancels.set_target(client.id, None);
    if client.log {
        info!(
            node = %slot.node.addr,
            duration_ms = client.connected_at.elapsed().as_millis() as u64,
            end = ?result.as_ref().map_err(|e| e.to_string()),
            "client disconnected"
        );
    }
    drop(server);
    drop(slot);
    result
}

async fn serve(
    state: &State,
    conn: &mut ClientConn,
    server: &mut PooledConn,
    client: &Client<'_>,
) -> Result<PumpEnd, ClientError> {
    apply_settings(conn, server, client.params).await?;
    for (name, value) in &server.params {
        msg::parameter_status(&mut conn.out, name, value);
    }
    msg::backend_key_data(&mut conn.out, client.id, client.key);
    msg::ready_for_query(&mut conn.out, b'I');
    conn.flush().await?;
    state.cancels.set_target(
        client.id,
        Some(CancelTarget {
            addr: server.pool().node.addr.clone(),
            pid: server.backend_pid,
            key: server.backend_key,
        }),
    );
    // Until the pump says otherwise the connection may be mid-query: if the session is
    // dropped while pumping (shutdown), it must be closed, not reset and reused.
    server.release = Release::Close;
    let (end, release) = pump(conn, server).await;
    server.release = release;
    match end {
        PumpEnd::ClientProtocol(e) => Err(e.into()),
        PumpEnd::ServerClosed => Err(ClientError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("server connection to {} closed", server.pool().node.addr),
        )),
        PumpEnd::ServerProtocol(e) => Err(ClientError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("server sent an invalid message: {e}"),
        )),
        end => Ok(end),
    }
}

/// Sets on the server connection the client's settings that differ from the server's.
async fn apply_settings(
    conn: &mut ClientConn,
    server: &mut PooledConn,
    params: &StartupParams,
) -> Result<(), ClientError> {
    // set_config takes the value as the startup packet does (a list stays a list).
    let calls: Vec<String> = params
        .settings
        .iter()
        .filter(|(name, value)| server.param(name) != Some(value.as_str()))
        .map(|(name, value)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                quote_literal(name),
                quote_literal(value)
            )
        })
        .collect();
    let sql = if calls.is_empty() {
        String::new()
    } else {
        format!("SELECT {}", calls.join(", "))
    };
    if sql.is_empty() {
        server.release = Release::Clean;
        return Ok(());
    }
    let max = conn.max_message;
    match server.simple_query(&sql, max).await {
        Ok(None) => {
            server.release = Release::Clean;
            Ok(())
        }
        Ok(Some(e)) => {
            server.release = Release::Clean;
            Err(ClientError::Server(e))
        }
        Err(e) => Err(ClientError::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!("server connection failed while applying settings: {e}"),
        )),
    }
}

fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Picks a node that fits the endpoint and checks out a server connection to it,
/// trying other nodes when one cannot be reached, until `query_wait_timeout`.
async fn acquire(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    params: &StartupParams,
    cred: &Credentials,
    max_message: usize,
) -> Result<(SessionSlot, PooledConn), ClientError> {
    let config = &cluster.config.pool;
    let deadline = tokio::time::Instant::now() + config.query_wait_timeout;
    loop {
        let changed = cluster.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let Some(node) = balance::pick(cluster, endpoint) else {
            if timeout_at(deadline, changed).await.is_err() {
                return Err(ClientError::fatal(
                    sqlstate::CANNOT_CONNECT_NOW,
                    format!(
                        "no healthy {:?} node for endpoint \"{}\" within query_wait_timeout",
                        endpoint.config.role, endpoint.name
                    )
                    .to_lowercase(),
                ));
            }
            continue;
        };
        let slot = SessionSlot::new(node.clone(), endpoint.index);
        let pool = cluster
            .pools
            .get(&node, &params.database, cred, config, max_message);
        match pool.checkout(&cluster.pools, deadline).await {
            Ok(server) => return Ok((slot, server)),
            Err(CheckoutError::Timeout) => {
                return Err(ClientError::fatal(
                    sqlstate::CANNOT_CONNECT_NOW,
                    "no server connection became free within query_wait_timeout",
                ))
            }
            Err(CheckoutError::Server(ServerError::Refused(f))) => {
                if f.code.starts_with("57P") {
                    health::mark_down(cluster, &node, &f.message);
                    continue;
                }
                cluster.pools.forget_if_unused(&pool);
                return Err(ClientError::Server(f));
            }
            Err(CheckoutError::Server(e @ (ServerError::Io(_) | ServerError::Timeout(_)))) => {
                health::mark_down(cluster, &node, &e.to_string());
            }
            Err(CheckoutError::Server(e)) => {
                tracing::warn!(node = %node.addr, error = %e, "server login failed");
                return Err(ClientError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!("server login failed: {e}"),
                ));
            }
        }
    }
}
