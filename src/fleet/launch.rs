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
/// Every worker accepts on its own socket of the address's `SO_REUSEPORT` group,
/// registered with its own event loop, and keeps the clients it accepts: the kernel
/// hands each new connection to one socket, so one worker, and no connection moves
/// between threads. Where the address has a single socket that cannot be shared (one
/// handed over by a process that bound it without `SO_REUSEPORT`), every worker
/// accepts on a duplicate of it: a new connection then wakes them all and the first to
/// get there takes it.
pub(super) fn endpoint(
    state: &Arc<State>,
    cluster: &Arc<ClusterState>,
    ep: Arc<EndpointState>,
    listener: TcpListener,
) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let workers = state.workers.len();
    let mut group = state.listeners.group(addr, workers)?;
    if group.is_empty() {
        // No longer in `Listeners` (released meanwhile): this listener alone.
        group.push(std::os::fd::OwnedFd::from(listener.into_std()?));
    } else {
        drop(listener);
    }
    // Worker i accepts on sockets i, i + workers, ...; each worker on one at least.
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    for i in 0..group.len().max(workers) {
        let fd = group[i % group.len()].try_clone()?;
        per_worker[i % workers].push(std::net::TcpListener::from(fd));
    }
    tracing::info!(cluster = %cluster.name, endpoint = %ep.name, %addr, role = ?ep.config().role, sockets = group.len(), "listening");
    for (i, sockets) in per_worker.into_iter().enumerate() {
        for (j, socket) in sockets.into_iter().enumerate() {
            let (st, cluster, ep) = (state.clone(), cluster.clone(), ep.clone());
            let first = i == 0 && j == 0;
            state.workers.spawn_on(i, async move {
                let accepting = socket.set_nonblocking(true).and_then(|()| TcpListener::from_std(socket));
                match accepting {
                    Ok(listener) => frontend::serve_endpoint(st, cluster, ep, listener, first).await,
                    Err(e) => tracing::error!(%addr, error = %e, "a worker cannot accept on the endpoint's socket"),
                }
            });
        }
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
