//! Keeping a cluster's members as its discovery source says: polled every
//! `discovery_interval`, the difference applied without touching the members that
//! stay. A new member is health-checked and serves after `rise` passed checks; a
//! removed one takes no new session, its running sessions finish, and after
//! `drain_timeout` the last ones are ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use super::{health, ClusterState, Node};
use crate::discovery::Source;

/// Health-checks the cluster's members and follows its discovery source until
/// pgfleet stops. `password` is the health user's.
pub async fn run(
    cluster: Arc<ClusterState>,
    source: Arc<dyn Source>,
    password: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let checks_stop = stop.clone();
    let check = |node: &Arc<Node>, joining: bool| {
        health::spawn(
            cluster.clone(),
            node.clone(),
            password.clone(),
            checks_stop.clone(),
            joining,
        )
    };
    for node in cluster.nodes().iter() {
        check(node, false);
    }
    // The members of the first answer are the cluster as pgfleet starts: they serve
    // after their first passed check, as static members do.
    let mut starting = cluster.nodes().is_empty();
    loop {
        match source.members().await {
            Ok(members) => {
                let (added, removed) = cluster.apply_members(members);
                for node in &added {
                    info!(cluster = %cluster.name, node = %node.addr, source = source.name(), "member added");
                    check(node, !starting);
                }
                for node in removed {
                    info!(cluster = %cluster.name, node = %node.addr, source = source.name(), "member removed: draining");
                    tokio::spawn(drain(cluster.clone(), node, stop.clone()));
                }
                starting = false;
            }
            Err(e) => {
                warn!(cluster = %cluster.name, source = source.name(), error = %format!("{e:#}"), "discovery failed; members kept as they are");
            }
        }
        if source.name() == "static" {
            // The list only changes with the configuration.
            return;
        }
        tokio::select! {
            _ = sleep(cluster.config.discovery_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Waits for a removed member's sessions to end, at most `drain_timeout`, then shuts
/// down its server connections still open and forgets its pools.
async fn drain(cluster: Arc<ClusterState>, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let deadline = Instant::now() + cluster.config.drain_timeout;
    loop {
        cluster.pools.close_idle(node.index);
        if node.total_sessions() == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            let closed = node.sockets.shutdown_all();
            warn!(cluster = %cluster.name, node = %node.addr, sessions = node.total_sessions(), closed, "drain_timeout: sessions on a removed member ended");
            break;
        }
        let step = (deadline - now).min(Duration::from_millis(100));
        tokio::select! {
            _ = sleep(step) => {}
            _ = stop.changed() => return,
        }
    }
    cluster.pools.forget_node(node.index);
    cluster.drained(&node);
    info!(cluster = %cluster.name, node = %node.addr, "member drained");
}
