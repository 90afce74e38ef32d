//! `PAUSE [cluster]` and `RESUME [cluster]`, as PgBouncer's: while a cluster is paused
//! no new session or transaction gets a server connection (clients wait, up to
//! `query_wait_timeout`); `PAUSE` answers once every server connection of the cluster
//! is back in its pools, so the servers can be restarted or switched under the clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::ClusterState;
use crate::protocol::sqlstate;
use crate::state::Topology;

/// How long `PAUSE` waits for the running transactions (sessions, in session mode).
const PAUSE_WAIT: Duration = Duration::from_secs(60);

/// The clusters named by the command's argument (all of them without one).
fn clusters(
    topology: &Topology,
    name: Option<&str>,
) -> Result<Vec<Arc<ClusterState>>, (&'static str, String)> {
    let chosen: Vec<Arc<ClusterState>> = topology
        .clusters
        .iter()
        .filter(|c| name.is_none_or(|n| c.name == n))
        .cloned()
        .collect();
    match (chosen.is_empty(), name) {
        (true, Some(n)) => Err((sqlstate::UNDEFINED_OBJECT, format!("no cluster \"{n}\""))),
        _ => Ok(chosen),
    }
}

/// Pauses the clusters and waits until none of their server connections is in use.
pub async fn pause(topology: &Topology, name: Option<&str>) -> Result<(), (&'static str, String)> {
    let chosen = clusters(topology, name)?;
    for c in &chosen {
        c.set_paused(true);
        tracing::info!(cluster = %c.name, "paused from the admin console");
    }
    let started = Instant::now();
    loop {
        let in_use: usize = chosen
            .iter()
            .flat_map(|c| c.pools.all())
            .map(|p| p.active())
            .sum();
        if in_use == 0 {
            return Ok(());
        }
        if started.elapsed() >= PAUSE_WAIT {
            let text = format!(
                "{in_use} server connections still in use after {}s; new transactions stay paused until RESUME",
                PAUSE_WAIT.as_secs()
            );
            return Err((sqlstate::CANNOT_CONNECT_NOW, text));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets the clusters' clients go on.
pub fn resume(topology: &Topology, name: Option<&str>) -> Result<(), (&'static str, String)> {
    for c in clusters(topology, name)? {
        c.set_paused(false);
        c.changed.notify_waiters();
        tracing::info!(cluster = %c.name, "resumed from the admin console");
    }
    Ok(())
}
