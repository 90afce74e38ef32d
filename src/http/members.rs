//! One reading of each member of a cluster, shared by `/metrics` and `/status.json`,
//! with the words `SHOW BACKENDS` uses.

use std::collections::HashMap;
use std::time::Duration;

use crate::cluster::{ClusterState, Health, NodeRole};

/// What is known of one member at one moment.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// `host:port`.
    pub addr: String,
    pub role: NodeRole,
    pub health: Health,
    /// See [`ClusterState::member_state`].
    pub state: &'static str,
    pub lag: Duration,
    pub lag_bytes: u64,
    /// Sessions (or transactions, in transaction mode) running on it now.
    pub sessions: usize,
    /// Server sockets open to it.
    pub server_conns: usize,
    /// Removed by discovery and draining.
    pub removed: bool,
    /// What discovery says of its zone, if anything.
    pub zone: Option<String>,
    /// Transactions completed over all its pools.
    pub xacts: u64,
    /// Queries completed over all its pools.
    pub queries: u64,
}

/// Every member state.
pub const STATES: [&str; 6] = ClusterState::MEMBER_STATES;

/// Every node role.
pub const ROLES: [NodeRole; 3] = [NodeRole::Primary, NodeRole::Replica, NodeRole::Unknown];

/// The current members of `cluster`, then the ones draining.
pub fn members(cluster: &ClusterState) -> Vec<MemberView> {
    // Pools are per (node, database, user): a member's counts are its pools' sums.
    let mut counts: HashMap<usize, (u64, u64)> = HashMap::new();
    for pool in cluster.pools.all() {
        let s = pool.stats.snapshot();
        let c = counts.entry(pool.key.node).or_default();
        c.0 += s.xacts;
        c.1 += s.queries;
    }
    let draining = cluster.draining();
    cluster
        .nodes()
        .iter()
        .chain(draining.iter())
        .map(|node| {
            let health = node.health();
            let role = node.role();
            let state = cluster.member_state(node);
            let (xacts, queries) = counts.get(&node.index).copied().unwrap_or_default();
            MemberView {
                addr: node.addr.clone(),
                role,
                health,
                state,
                lag: node.lag(),
                lag_bytes: node.lag_bytes(),
                sessions: node.total_sessions(),
                server_conns: node.sockets.len(),
                removed: node.removed(),
                zone: node.member().zone.clone(),
                xacts,
                queries,
            }
        })
        .collect()
}
