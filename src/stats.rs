//! The periodic statistics line per pool, like PgBouncer's `log_stats`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pool::{PoolKey, StatsSnapshot};
use crate::state::State;

/// Logs, every `stats_period`, each pool's transactions, queries, bytes and average wait
/// over the period. Pools with no traffic in the period are skipped.
pub async fn log_periodically(state: Arc<State>) {
    let mut stop = state.stop.subscribe();
    let mut last: HashMap<(String, PoolKey), StatsSnapshot> = HashMap::new();
    loop {
        let period = state.current.load().config.general.stats_period;
        if period.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                _ = stop.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        let secs = period.as_secs_f64();
        for cluster in &state.current.load().clusters {
            for pool in cluster.pools.all() {
                let now = pool.stats.snapshot();
                let key = (cluster.name.clone(), pool.key.clone());
                let d = now.since(&last.get(&key).copied().unwrap_or_default());
                last.insert(key, now);
                pool.stats.set_last_period(d, period);
                if d == StatsSnapshot::default() {
                    continue;
                }
                let avg_wait_us = d.wait_us.checked_div(d.checkouts).unwrap_or(0);
                tracing::info!(
                    cluster = %cluster.name,
                    node = %pool.node.addr,
                    db = %pool.key.database,
                    user = %pool.key.user,
                    xact_per_s = format!("{:.1}", d.xacts as f64 / secs),
                    query_per_s = format!("{:.1}", d.queries as f64 / secs),
                    in_bytes_per_s = (d.bytes_received as f64 / secs) as u64,
                    out_bytes_per_s = (d.bytes_sent as f64 / secs) as u64,
                    avg_wait_us,
                    server_conns = pool.open(),
                    "stats"
                );
            }
        }
    }
}
