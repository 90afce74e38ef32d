//! Getting a server connection for a client: a node that fits the endpoint, then a
//! connection from its pool, trying other nodes when one cannot be reached.

use tokio::time::timeout_at;

use crate::balance;
use crate::cluster::{health, ClusterState, EndpointState, SessionSlot};
use crate::pool::{CheckoutError, Credentials, PooledConn, ServerError};
use crate::protocol::sqlstate;

use super::error::ClientError;

/// Picks a node that fits the endpoint and checks out a server connection to it,
/// trying other nodes when one cannot be reached, until `query_wait_timeout`.
pub async fn acquire(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    database: &str,
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
            .get(&node, database, cred, config, max_message);
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
