//! Starting one cluster's background tasks and one endpoint's accept loop; used when
//! pgfleet starts and when a reload adds a cluster or an endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::Secret;
use crate::cluster::{membership, ClusterState};
use crate::state::State;
use crate::{discovery, frontend, pool};

/// Starts the cluster's membership runner (discovery and health checks) and pool
/// janitor. Fails when the discovery source cannot be built from the configuration.
pub(super) fn cluster_tasks(state: &Arc<State>, cluster: &Arc<ClusterState>) -> anyhow::Result<()> {
    let password = health_password(state, &cluster.config.health_user);
    let ctx = discovery::Context {
        health_password: password.clone(),
    };
    let source = discovery::source(&cluster.config, &ctx)
        .with_context(|| format!("clusters.{}.discovery", cluster.name))?;
    let max_message = state.current.load().config.general.max_message_size;
    tokio::spawn(membership::run(
        cluster.clone(),
        source,
        password,
        state.stop.subscribe(),
    ));
    tokio::spawn(pool::janitor::run(
        cluster.clone(),
        max_message,
        state.stop.subscribe(),
    ));
    Ok(())
}

/// Starts accepting the clients of endpoint `index` on `listener`; returns the bound
/// address.
pub(super) fn endpoint(
    state: &Arc<State>,
    cluster: &Arc<ClusterState>,
    index: usize,
    listener: TcpListener,
) -> anyhow::Result<SocketAddr> {
    let ep = &cluster.endpoints[index];
    let addr = listener.local_addr()?;
    tracing::info!(cluster = %cluster.name, endpoint = %ep.name, %addr, role = ?ep.config.role, "listening");
    tokio::spawn(frontend::serve_endpoint(
        state.clone(),
        cluster.clone(),
        index,
        listener,
    ));
    Ok(addr)
}

/// The health user's password: its plaintext `auth_file` entry, or none (trust).
fn health_password(state: &State, user: &str) -> Option<String> {
    match state.current.load().users.get(user) {
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
