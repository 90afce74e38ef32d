//! `SHOW DATABASES`: one row per endpoint (what a PgBouncer `[databases]` entry is to
//! its clients), with PgBouncer's column names where they mean the same.

use super::Table;
use crate::state::Topology;

pub fn table(topology: &Topology) -> Table {
    let mut t = Table::new(&[
        "name",
        "host",
        "port",
        "role",
        "balance",
        "fallback",
        "pool_size",
        "min_pool_size",
        "pool_mode",
        "max_connections",
        "current_connections",
        "members",
        "paused",
    ]);
    for cluster in &topology.clusters {
        let pool = &cluster.config().pool;
        let nodes = cluster.nodes();
        for ep in cluster.endpoints().iter() {
            let in_use: usize = nodes.iter().map(|n| n.sessions(ep.slot)).sum();
            let fits = nodes
                .iter()
                .filter(|n| cluster.fits(n, ep.config().role))
                .count();
            let lower = |v: String| v.to_lowercase();
            t.push([
                format!("{}.{}", cluster.name, ep.name),
                ep.config().listen.ip().to_string(),
                ep.config().listen.port().to_string(),
                lower(format!("{:?}", ep.config().role)),
                lower(format!("{:?}", ep.config().balance)),
                lower(format!("{:?}", ep.config().fallback)),
                pool.default_pool_size.to_string(),
                pool.min_pool_size.to_string(),
                lower(format!("{:?}", pool.pool_mode)),
                pool.max_db_connections.to_string(),
                in_use.to_string(),
                fits.to_string(),
                u8::from(cluster.paused()).to_string(),
            ]);
        }
    }
    t
}
