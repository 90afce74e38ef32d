//! `SHOW SERVERS`: every server connection open, per member, with PgBouncer's column
//! names where they mean the same.

use std::collections::HashSet;

use super::{time_text, Table};
use crate::state::Topology;

pub fn table(topology: &Topology) -> Table {
    let mut t = Table::new(&[
        "cluster",
        "member",
        "database",
        "user",
        "state",
        "remote_pid",
        "connect_time",
        "tls",
    ]);
    for cluster in &topology.clusters {
        let idle: HashSet<(usize, u32)> = cluster
            .pools
            .all()
            .iter()
            .flat_map(|p| p.idle_pids().into_iter().map(|pid| (p.key.node, pid)))
            .collect();
        let draining = cluster.draining();
        for node in cluster.nodes().iter().chain(draining.iter()) {
            let mut servers = node.sockets.list();
            servers.sort_by_key(|s| s.pid);
            for s in servers {
                let state = if idle.contains(&(node.index, s.pid)) {
                    "idle"
                } else {
                    "active"
                };
                t.push([
                    cluster.name.clone(),
                    node.addr.clone(),
                    s.database,
                    s.user,
                    state.to_owned(),
                    s.pid.to_string(),
                    time_text(s.connected_at),
                    s.tls,
                ]);
            }
        }
    }
    t
}
