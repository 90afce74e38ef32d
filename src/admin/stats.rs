//! `SHOW STATS`: per pool, totals since it was created and per-second averages over
//! the last `stats_period`, with PgBouncer's column names (times in microseconds).

use super::Table;
use crate::state::Topology;

pub fn table(topology: &Topology) -> Table {
    let mut t = Table::new(&[
        "cluster",
        "member",
        "database",
        "user",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_wait_time",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_wait_time",
    ]);
    for cluster in &topology.clusters {
        for pool in cluster.pools.all() {
            let total = pool.stats.snapshot();
            let (per_s, avg_wait) = match pool.stats.last_period() {
                Some((d, period)) if !period.is_zero() => {
                    let secs = period.as_secs_f64();
                    let rate = move |n: u64| ((n as f64) / secs).round() as u64;
                    let wait = d.wait_us.checked_div(d.checkouts).unwrap_or(0);
                    (
                        [
                            rate(d.xacts),
                            rate(d.queries),
                            rate(d.bytes_received),
                            rate(d.bytes_sent),
                        ],
                        wait,
                    )
                }
                _ => ([0; 4], 0),
            };
            t.push([
                cluster.name.clone(),
                pool.node.addr.clone(),
                pool.key.database.clone(),
                pool.key.user.clone(),
                total.xacts.to_string(),
                total.queries.to_string(),
                total.bytes_received.to_string(),
                total.bytes_sent.to_string(),
                total.wait_us.to_string(),
                per_s[0].to_string(),
                per_s[1].to_string(),
                per_s[2].to_string(),
                per_s[3].to_string(),
                avg_wait.to_string(),
            ]);
        }
    }
    t
}
