//! Keeping a cluster's members as its discovery source says: polled every
//! `discovery_interval` (and at once when a reload sets a new source), the difference
//! applied without touching the members that stay. A new member is health-checked and
//! serves after `rise` passed checks; a removed one takes no new session, its running
//! sessions finish, and after `drain_timeout` the last ones are ended. When a reload
//! removes the cluster, every member is removed that way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use super::{health, ClusterState, Node};

/// Health-checks the cluster's members and follows its discovery source
/// (`ClusterState::source`) until pgfleet stops or the cluster is retired.
pub async fn run(cluster: Arc<ClusterState>, mut stop: watch::Receiver<bool>) {
    let mut sources = cluster.source.subscribe();
    let checks_stop = stop.clone();
    let check = |node: &Arc<Node>, joining: bool| {
        health::spawn(cluster.clone(), node.clone(), checks_stop.clone(), joining)
    };
    for node in cluster.nodes().iter() {
        check(node, false);
    }
    // The members of the first answer are the cluster as pgfleet starts: they serve
    // after their first passed check, as static members do.
    let mut starting = cluster.nodes().is_empty();
    loop {
        if cluster.retired() {
            for node in cluster.apply_members(Vec::new()).removed {
                info!(cluster = %cluster.name, node = %node.addr, "cluster removed: draining its member");
                tokio::spawn(drain(cluster.clone(), node, stop.clone()));
            }
            return;
        }
        let source = sources.borrow_and_update().clone();
        let mut polls = false;
        if let Some(source) = &source {
            match source.members().await {
                Ok(members) => {
                    let changes = cluster.apply_members(members);
                    for node in &changes.added {
                        info!(cluster = %cluster.name, node = %node.addr, source = source.name(), "member added");
                        check(node, !starting);
                    }
                    for node in &changes.revived {
                        info!(cluster = %cluster.name, node = %node.addr, source = source.name(), "member listed again while draining: serving on");
                        check(node, false);
                    }
                    for node in changes.removed {
                        info!(cluster = %cluster.name, node = %node.addr, source = source.name(), "member removed: draining");
                        tokio::spawn(drain(cluster.clone(), node, stop.clone()));
                    }
                    starting = false;
                }
                Err(e) => {
                    warn!(cluster = %cluster.name, source = source.name(), error = %format!("{e:#}"), "discovery failed; members kept as they are");
                }
            }
            polls = source.polls();
        }
        let interval = cluster.config().discovery_interval;
        tokio::select! {
            _ = sleep(interval), if polls => {}
            _ = sources.changed() => {}
            _ = cluster.until_retired() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Waits for a removed member's sessions to end, at most `drain_timeout`, then shuts
/// down its server connections still open and forgets its pools.
async fn drain(cluster: Arc<ClusterState>, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let deadline = Instant::now() + cluster.config().drain_timeout;
    loop {
        if !node.removed() {
            return; // listed again
        }
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
    if !cluster.drained(&node) {
        return;
    }
    cluster.pools.forget_node(node.index);
    info!(cluster = %cluster.name, node = %node.addr, "member drained");
}
