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
pub(super) fn endpoint(
    state: &Arc<State>,
    cluster: &Arc<ClusterState>,
    ep: Arc<EndpointState>,
    listener: TcpListener,
) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    tracing::info!(cluster = %cluster.name, endpoint = %ep.name, %addr, role = ?ep.config().role, "listening");
    tokio::spawn(frontend::serve_endpoint(
        state.clone(),
        cluster.clone(),
        ep,
        listener,
    ));
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
