//! Starting one cluster's background tasks and one endpoint's accept loop; used when
//! pgfleet starts and when a reload adds a cluster or an endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::{Secret, Userlist};
use crate::cluster::{membership, ClusterState, EndpointState};
use crate::discovery::Source;
use crate::state::State;
use crate::{config, discovery, frontend, pool};

/// Starts a cluster's membership runner (discovery and health checks, following
/// `source`) and its pool janitor.
pub(super) fn start_cluster(
    state: &Arc<State>,
    cluster: &Arc<ClusterState>,
    source: Arc<dyn Source>,
) {
    cluster.source.set(source);
    let max_message = state.current.load().config.general.max_message_size;
    tokio::spawn(membership::run(cluster.clone(), state.stop.subscribe()));
    tokio::spawn(pool::janitor::run(
        cluster.clone(),
        max_message,
        state.stop.subscribe(),
    ));
}

/// The discovery source `config` describes for cluster `name`.
pub(super) fn source(
    name: &str,
    config: &config::Cluster,
    health_password: Option<String>,
    cluster: &ClusterState,
) -> anyhow::Result<Arc<dyn Source>> {
    let ctx = discovery::Context {
        health_password,
        server_tls: cluster.pools.server_tls_slot(),
    };
    discovery::source(config, &ctx).with_context(|| format!("clusters.{name}.discovery"))
}

/// Starts accepting the clients of `ep` on `listener`; returns the bound address.
///
/// Every worker accepts on its own duplicate of the socket, registered with its own
/// event loop, and keeps the clients it accepts: no hand-over between threads per
/// connection. A connection wakes every worker waiting on the socket and the first to
/// get there takes it (the others find nothing), so an idle worker takes new clients
/// before a busy one.
pub(super) fn endpoint(
    state: &Arc<State>,
    cluster: &Arc<ClusterState>,
    ep: Arc<EndpointState>,
    listener: TcpListener,
) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    // Out of this runtime's event loop; each worker registers its duplicate in its own.
    let socket = listener.into_std()?;
    let mut duplicates = Vec::with_capacity(state.workers.len());
    for _ in 0..state.workers.len() {
        duplicates.push(socket.try_clone()?);
    }
    tracing::info!(cluster = %cluster.name, endpoint = %ep.name, %addr, role = ?ep.config().role, "listening");
    for (i, socket) in duplicates.into_iter().enumerate() {
        let (st, cluster, ep) = (state.clone(), cluster.clone(), ep.clone());
        state.workers.spawn_on(i, async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => frontend::serve_endpoint(st, cluster, ep, listener, i == 0).await,
                Err(e) => tracing::error!(%addr, error = %e, "a worker cannot accept on the endpoint's socket"),
            }
        });
    }
    Ok(addr)
}

/// The health user's password: its plaintext `auth_file` entry, or none (trust).
pub(super) fn health_password(users: &Userlist, user: &str) -> Option<String> {
    match users.get(user) {
        Some(Secret::Plain(pw)) => Some(pw.clone()),
        Some(_) => {
            tracing::warn!(
                user,
                "health_user needs a plaintext password in auth_file; trying without one"
            );
            None
        }
        None => None,
    }
}
