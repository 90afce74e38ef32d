//! `/status` (a page for people) and `/status.json` (what the page polls every second).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::members::members;
use super::ready::{endpoint_ready, role_name};
use crate::state::{State, Topology};

/// The status page: self-contained, it draws everything from `/status.json`.
pub const PAGE: &str = include_str!("status.html");

#[derive(Serialize)]
struct Status {
    /// Milliseconds since the Unix epoch when this was read: the page's rates are
    /// counts over this clock, not the browser's.
    now_ms: u64,
    clients: usize,
    max_clients: usize,
    /// Transaction-mode clients pinned to their server connection now, by reason.
    pinned: Vec<(&'static str, usize)>,
    clusters: Vec<ClusterStatus>,
}

#[derive(Serialize)]
struct ClusterStatus {
    name: String,
    discovery: &'static str,
    endpoints: Vec<EndpointStatus>,
    members: Vec<MemberStatus>,
}

#[derive(Serialize)]
struct EndpointStatus {
    name: String,
    role: &'static str,
    ready: bool,
}

#[derive(Serialize)]
struct MemberStatus {
    addr: String,
    role: &'static str,
    health: &'static str,
    state: &'static str,
    lag_ms: u64,
    lag_bytes: u64,
    sessions: usize,
    server_conns: usize,
    zone: Option<String>,
    /// Totals since the member's pools were made; the page turns them into rates.
    xacts: u64,
    queries: u64,
}

/// The state now, as JSON.
pub fn json(state: &State, topology: &Topology) -> String {
    let max_clients = topology.config.general.max_client_conn;
    let status = Status {
        now_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis),
        clients: state.client_slots.in_use(),
        max_clients,
        pinned: pinned_now(state),
        clusters: topology
            .clusters
            .iter()
            .map(|c| ClusterStatus {
                name: c.name.clone(),
                discovery: c.config().discovery.as_str(),
                endpoints: c
                    .endpoints()
                    .iter()
                    .map(|e| EndpointStatus {
                        name: e.name.clone(),
                        role: role_name(e.config().role),
                        ready: endpoint_ready(c, e),
                    })
                    .collect(),
                members: members(c)
                    .into_iter()
                    .map(|m| MemberStatus {
                        addr: m.addr,
                        role: m.role.as_str(),
                        health: m.health.as_str(),
                        state: m.state,
                        lag_ms: millis(m.lag),
                        lag_bytes: m.lag_bytes,
                        sessions: m.sessions,
                        server_conns: m.server_conns,
                        zone: m.zone,
                        xacts: m.xacts,
                        queries: m.queries,
                    })
                    .collect(),
            })
            .collect(),
    };
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_string(&status).unwrap_or_else(|_| "{}".to_owned())
}

/// Clients pinned now, by reason (reasons no client has are left out).
fn pinned_now(state: &State) -> Vec<(&'static str, usize)> {
    let clients = state.clients.all();
    crate::sql::PinReason::ALL
        .iter()
        .map(|r| {
            (
                r.name(),
                clients.iter().filter(|c| c.pins().contains(*r)).count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
