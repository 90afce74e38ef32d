//! `SHOW BACKENDS`: each member of each cluster, where it came from, its role and
//! health as the checks last saw them, its lag, and its load.

use super::Table;
use crate::state::Topology;

pub fn table(topology: &Topology) -> Table {
    let mut t = Table {
        columns: vec![
            "cluster",
            "member",
            "source",
            "role",
            "health",
            "state",
            "lag_ms",
            "lag_bytes",
            "source_writer",
            "zone",
            "in_use",
            "server_conns",
        ],
        rows: Vec::new(),
        notices: Vec::new(),
    };
    for cluster in &topology.clusters {
        let draining = cluster.draining();
        for node in cluster.nodes().iter().chain(draining.iter()) {
            let member = node.member();
            let state = cluster.member_state(node);
            t.rows.push(vec![
                Some(cluster.name.clone()),
                Some(node.addr.clone()),
                Some(cluster.config().discovery.as_str().to_owned()),
                Some(node.role().as_str().to_owned()),
                Some(node.health().as_str().to_owned()),
                Some(state.to_owned()),
                Some(node.lag().as_millis().to_string()),
                Some(node.lag_bytes().to_string()),
                member
                    .writer
                    .map(|w| if w { "yes" } else { "no" }.to_owned()),
                member.zone.clone(),
                Some(node.total_sessions().to_string()),
                Some(node.sockets.len().to_string()),
            ]);
        }
    }
    t
}
