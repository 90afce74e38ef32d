//! Background upkeep of a cluster's pools: close idle connections past
//! `server_idle_timeout` or `server_lifetime` or from an older node generation, and keep
//! `min_pool_size` connections open to every healthy node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{close_all, idle_expired, Pool};
use crate::cluster::{ClusterState, Health};

/// How often the janitor runs.
const PERIOD: Duration = Duration::from_millis(500);

/// Runs until `stop` changes or a reload removes the cluster (its members' drains
/// close what is left).
pub async fn run(cluster: Arc<ClusterState>, max_message: usize, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
            _ = cluster.until_retired() => return,
        }
        for pool in cluster.pools.all() {
            expire_idle(&pool);
        }
        warm(&cluster, max_message).await;
    }
}

fn expire_idle(pool: &Pool) {
    let generation = pool.node.generation();
    let config = pool.config();
    let (min, max) = (config.min_pool_size, config.default_pool_size);
    let mut open = pool.open();
    let expired = pool.take_idle_where(|c| {
        let stale = c.generation != generation || c.created.elapsed() >= config.server_lifetime;
        // Beyond the size (after a reload shrank it), idle connections close first.
        let drop = stale || open > max || (open > min && idle_expired(c, &config));
        if drop {
            open = open.saturating_sub(1);
        }
        drop
    });
    if !expired.is_empty() {
        tracing::debug!(node = %pool.node.addr, db = %pool.key.database, user = %pool.key.user, closed = expired.len(), "closed idle server connections");
    }
    close_all(expired);
}

/// Opens connections up to `min_pool_size` in each (database, user) pool of every
/// healthy node, creating the node's pool when another node has one.
async fn warm(cluster: &ClusterState, max_message: usize) {
    let settings = cluster.config();
    let config = &settings.pool;
    if config.min_pool_size == 0 {
        return;
    }
    for (database, cred) in cluster.pools.identities() {
        for node in cluster.nodes().iter().filter(|n| n.health() == Health::Up) {
            let pool = cluster
                .pools
                .get(node, &database, &cred, config, max_message);
            while pool.open() < config.min_pool_size {
                let Some(slot) = pool.slots.try_acquire() else {
                    break;
                };
                let deadline = tokio::time::Instant::now() + config.server_connect_timeout;
                match pool.connect(&cluster.pools, deadline).await {
                    Ok(conn) => pool.put_idle(conn, Instant::now()),
                    Err(e) => {
                        tracing::debug!(node = %node.addr, db = %database, error = %e, "min_pool_size: cannot open a server connection");
                        break;
                    }
                }
                drop(slot);
            }
        }
    }
}
