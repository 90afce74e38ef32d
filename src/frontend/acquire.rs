//! Getting a server connection for a client: a node that fits the endpoint, then a
//! connection from its pool, trying other nodes when one cannot be reached.

use tokio::time::timeout_at;

use crate::balance;
use crate::cluster::{health, ClusterState, EndpointState, SessionSlot, View};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Node;
use crate::config::Role;
use crate::pool::{CheckoutError, Credentials, Pool, PooledConn, ServerError};
use crate::protocol::sqlstate;

use super::error::ClientError;

/// Picks a node that fits the endpoint and checks out a server connection to it,
/// trying other nodes when one cannot be reached, until `query_wait_timeout`. While no
/// node fits a `primary` endpoint (a failover), it waits up to `failover_timeout` for a
/// writer instead. The settings and members come from `view`, brought up to date
/// by the caller (and here, after waiting for a change).
pub async fn acquire(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    view: &mut View,
    database: &str,
    cred: &Credentials,
    max_message: usize,
    cache: &mut PoolCache,
) -> Result<(SessionSlot, PooledConn), ClientError> {
    let started = tokio::time::Instant::now();
    let deadline = started + view.config.pool.query_wait_timeout;
    // Only needed (and read) once no node fits.
    let mut node_deadline = None;
    loop {
        // The common case registers for no wake-up: not paused, and a node fits.
        let picked = match cluster.paused() {
            true => None,
            false => balance::pick(cluster, endpoint, view),
        };
        let Some(node) = picked else {
            let node_deadline =
                *node_deadline.get_or_insert_with(|| started + node_wait(cluster, endpoint).0);
            wait_for_change(cluster, endpoint, deadline, node_deadline).await?;
            view.refresh(cluster, endpoint);
            continue;
        };
        let slot = SessionSlot::new(node.clone(), endpoint.slot);
        let pool = cache.get(cluster, &node, database, cred, max_message);
        let config = &view.config.pool;
        match pool
            .checkout(&cluster.pools, config, started.into_std(), deadline)
            .await
        {
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
                cluster.pools.forget_if_unused(pool);
                cache.forget(node.index);
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

/// Waits, while the cluster is paused or no node fits the endpoint, for a change
/// (RESUME, a node's health or role), until `deadline` for a pause and `node_deadline`
/// for a node. Returns at once if the state changed since the caller looked.
async fn wait_for_change(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    deadline: tokio::time::Instant,
    node_deadline: tokio::time::Instant,
) -> Result<(), ClientError> {
    let changed = cluster.changed.notified();
    tokio::pin!(changed);
    // Registered before looking again, so a change from here on is not missed.
    changed.as_mut().enable();
    if cluster.paused() {
        // PAUSE: wait for RESUME (which notifies `changed`).
        if timeout_at(deadline, changed).await.is_err() {
            return Err(ClientError::fatal(
                sqlstate::CANNOT_CONNECT_NOW,
                "the cluster stayed paused (PAUSE) for query_wait_timeout",
            ));
        }
        return Ok(());
    }
    if balance::available(cluster, endpoint) {
        return Ok(());
    }
    if timeout_at(node_deadline, changed).await.is_err() {
        return Err(no_node(cluster, endpoint));
    }
    Ok(())
}

/// Waits until a node fits the endpoint, as `acquire` would, without taking a server
/// connection: a login is refused when no node could serve it. PAUSE does not hold a
/// login.
pub async fn node_available(
    cluster: &ClusterState,
    endpoint: &EndpointState,
) -> Result<(), ClientError> {
    if balance::available(cluster, endpoint) {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + node_wait(cluster, endpoint).0;
    loop {
        let changed = cluster.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if balance::available(cluster, endpoint) {
            return Ok(());
        }
        if timeout_at(deadline, changed).await.is_err() {
            return Err(no_node(cluster, endpoint));
        }
    }
}

/// How long a client waits for a node that fits the endpoint, and that setting's name:
/// `failover_timeout` for a `primary` endpoint (a failover), `query_wait_timeout`
/// otherwise.
fn node_wait(cluster: &ClusterState, endpoint: &EndpointState) -> (Duration, &'static str) {
    let config = cluster.config();
    match endpoint.config().role {
        Role::Primary => (config.failover_timeout, "failover_timeout"),
        _ => (config.pool.query_wait_timeout, "query_wait_timeout"),
    }
}

fn no_node(cluster: &ClusterState, endpoint: &EndpointState) -> ClientError {
    let role = format!("{:?}", endpoint.config().role).to_lowercase();
    let waited = node_wait(cluster, endpoint).1;
    ClientError::fatal(
        sqlstate::CANNOT_CONNECT_NOW,
        format!(
            "no healthy {role} node for endpoint \"{}\" within {waited}",
            endpoint.name
        ),
    )
}

/// One client's pools by node, so a transaction finds its pool without the pool set's
/// lock and without building a key. A few entries, searched in order.
#[derive(Debug, Default)]
pub struct PoolCache {
    pools: Vec<Arc<Pool>>,
}

impl PoolCache {
    fn get(
        &mut self,
        cluster: &ClusterState,
        node: &Arc<Node>,
        database: &str,
        cred: &Credentials,
        max_message: usize,
    ) -> &Arc<Pool> {
        let found = self.pools.iter().position(|p| p.key.node == node.index);
        let at = match found {
            Some(at) => at,
            None => {
                // Pools of members removed from the cluster are not needed any more.
                self.pools.retain(|p| !p.node.removed());
                let config = &cluster.config().pool;
                let pool = cluster.pools.get(node, database, cred, config, max_message);
                self.pools.push(pool);
                self.pools.len() - 1
            }
        };
        &self.pools[at]
    }

    fn forget(&mut self, node: usize) {
        self.pools.retain(|p| p.key.node != node);
    }
}
