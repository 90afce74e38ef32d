//! `SHOW POOLS`: one row per pool (cluster, member, database, user), with PgBouncer's
//! column names where they mean the same.

use super::Table;
use crate::state::Topology;

pub fn table(topology: &Topology) -> Table {
    let mut t = Table::new(&[
        "cluster",
        "member",
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_login",
        "pool_size",
        "pool_mode",
    ]);
    for cluster in &topology.clusters {
        for pool in cluster.pools.all() {
            let (active, idle, open) = (pool.active(), pool.idle(), pool.open());
            // Open connections neither lent out nor idle are logging in.
            let login = open.saturating_sub(active + idle);
            t.push([
                cluster.name.clone(),
                pool.node.addr.clone(),
                pool.key.database.clone(),
                pool.key.user.clone(),
                active.to_string(),
                pool.waiting().to_string(),
                active.to_string(),
                idle.to_string(),
                login.to_string(),
                pool.config().default_pool_size.to_string(),
                format!("{:?}", pool.key.mode).to_lowercase(),
            ]);
        }
    }
    t
}
