//! `SHOW LISTS`: how many of each thing pgfleet holds, as PgBouncer's `SHOW LISTS`.

use super::Table;
use crate::state::State;

pub fn table(state: &State) -> Table {
    let topology = state.current.load();
    let used_clients = state.client_slots.in_use();
    let (mut pools, mut idle, mut active, mut members, mut endpoints) = (0, 0, 0, 0, 0);
    for cluster in &topology.clusters {
        endpoints += cluster.endpoints().len();
        members += cluster.nodes().len();
        for pool in cluster.pools.all() {
            pools += 1;
            idle += pool.idle();
            active += pool.active();
        }
    }
    let mut t = Table::new(&["list", "items"]);
    for (list, items) in [
        ("databases", endpoints),
        ("users", topology.users.len()),
        ("pools", pools),
        ("members", members),
        ("used_clients", used_clients),
        ("free_servers", idle),
        ("used_servers", active),
    ] {
        t.push([list.to_owned(), items.to_string()]);
    }
    t
}
