//! `SHOW CLIENTS`: every logged-in client, with PgBouncer's column names where they
//! mean the same; `id` is what `KILL_CLIENT` takes; `pinned` says why a transaction-mode
//! client keeps its server connection (`role,advisory_lock`...), empty when it does not.

use super::{time_text, Table};
use crate::state::State;

pub fn table(state: &State) -> Table {
    let topology = state.current.load();
    let mut t = Table::new(&[
        "id",
        "user",
        "database",
        "cluster",
        "endpoint",
        "state",
        "addr",
        "port",
        "connect_time",
        "member",
        "application_name",
        "tls",
        "pinned",
    ]);
    for c in state.clients.all() {
        let member = c.node().and_then(|index| {
            let cluster = topology.clusters.iter().find(|k| k.name == c.cluster)?;
            let nodes = cluster.nodes();
            let node = nodes.iter().find(|n| n.index == index)?;
            Some(node.addr.clone())
        });
        t.push([
            c.id.to_string(),
            c.user.clone(),
            c.database.clone(),
            c.cluster.clone(),
            c.endpoint.clone(),
            c.state().as_str().to_owned(),
            c.peer.ip().to_string(),
            c.peer.port().to_string(),
            time_text(c.connected_at),
            member.unwrap_or_default(),
            c.application_name.clone(),
            c.tls.clone(),
            c.pins().names(),
        ]);
    }
    t
}
