//! Choosing the node for a new session among those that fit the endpoint's role.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::Rng;

use crate::cluster::{ClusterState, EndpointState, Node};
use crate::config::Balance;

/// Picks a node for a new session on `endpoint`, or `None` if no node fits now.
///
/// `leastconn` takes the node with the fewest sessions in use through this endpoint;
/// among equals it goes round-robin, starting after the node it picked last. O(nodes),
/// no lock: the counts are atomics read once each.
pub fn pick(cluster: &ClusterState, endpoint: &EndpointState) -> Option<Arc<Node>> {
    let role = endpoint.config.role;
    let nodes = &cluster.nodes;
    let n = nodes.len();
    if n == 0 {
        return None;
    }
    let fits = |node: &Node| cluster.fits(node, role);
    match endpoint.config.balance {
        Balance::Leastconn => {
            let start = endpoint.cursor.fetch_add(1, Ordering::Relaxed);
            let mut best: Option<(&Arc<Node>, usize)> = None;
            for k in 0..n {
                let node = &nodes[(start + k) % n];
                if !fits(node) {
                    continue;
                }
                let load = node.sessions(endpoint.index);
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((node, load));
                }
            }
            best.map(|(node, _)| node.clone())
        }
        Balance::Roundrobin => {
            let start = endpoint.cursor.fetch_add(1, Ordering::Relaxed);
            (0..n)
                .map(|k| &nodes[(start + k) % n])
                .find(|node| fits(node))
                .cloned()
        }
        Balance::Random => {
            let candidates: Vec<&Arc<Node>> = nodes.iter().filter(|n| fits(n)).collect();
            if candidates.is_empty() {
                return None;
            }
            let i = rand::thread_rng().gen_range(0..candidates.len());
            Some(candidates[i].clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::cluster::{Health, NodeRole, SessionSlot};
    use crate::config::Config;

    fn cluster(balance: &str) -> ClusterState {
        let text = format!(
            r#"[clusters.c]
hosts = ["h:1", "h:2", "h:3"]
[clusters.c.endpoints.reader]
listen = "127.0.0.1:0"
role = "replica"
balance = "{balance}"
[clusters.c.endpoints.writer]
listen = "127.0.0.1:0"
role = "primary"
"#
        );
        let config: Config = toml::from_str(&text).unwrap();
        let c = ClusterState::new("c", &config.clusters["c"]);
        for (i, role) in [NodeRole::Primary, NodeRole::Replica, NodeRole::Replica]
            .into_iter()
            .enumerate()
        {
            c.nodes[i].set_role(role);
            c.nodes[i].set_health(Health::Up);
        }
        c.nodes[0].set_primary_since(c.next_promotion());
        c
    }

    fn endpoint<'a>(c: &'a ClusterState, name: &str) -> &'a EndpointState {
        c.endpoints.iter().find(|e| e.name == name).unwrap()
    }

    #[test]
    fn leastconn_fills_the_emptier_replica_and_alternates_on_ties() {
        let c = cluster("leastconn");
        let reader = endpoint(&c, "reader");
        let mut held = Vec::new();
        for _ in 0..10 {
            let node = pick(&c, reader).unwrap();
            assert_eq!(node.role(), NodeRole::Replica);
            held.push(SessionSlot::new(node, reader.index));
        }
        assert_eq!(c.nodes[1].sessions(reader.index), 5);
        assert_eq!(c.nodes[2].sessions(reader.index), 5);
        // Free three on node 1: the next three go there.
        for _ in 0..3 {
            let at = held.iter().position(|s| s.node.index == 1).unwrap();
            held.swap_remove(at);
        }
        for _ in 0..3 {
            assert_eq!(pick(&c, reader).map(|n| n.index), Some(1));
            held.push(SessionSlot::new(c.nodes[1].clone(), reader.index));
        }
    }

    #[test]
    fn roles_health_and_lag_decide_who_fits() {
        let c = cluster("roundrobin");
        let (reader, writer) = (endpoint(&c, "reader"), endpoint(&c, "writer"));
        for _ in 0..6 {
            assert_eq!(pick(&c, writer).map(|n| n.index), Some(0));
            assert_ne!(pick(&c, reader).map(|n| n.index), Some(0));
        }
        c.nodes[1].set_health(Health::Down);
        assert_eq!(pick(&c, reader).map(|n| n.index), Some(2));
        c.nodes[2].set_lag(Duration::from_secs(60));
        assert!(pick(&c, reader).is_none(), "a replica past max_lag is out");
        // Node 2 is promoted while node 0 still runs out of recovery: the writer moves.
        c.nodes[2].set_role(NodeRole::Primary);
        c.nodes[2].set_primary_since(c.next_promotion());
        assert_eq!(pick(&c, writer).map(|n| n.index), Some(2));
    }

    #[test]
    fn random_and_roundrobin_use_only_fitting_nodes() {
        for balance in ["random", "roundrobin"] {
            let c = cluster(balance);
            let reader = endpoint(&c, "reader");
            let mut seen = HashMap::new();
            for _ in 0..200 {
                *seen.entry(pick(&c, reader).unwrap().index).or_insert(0) += 1;
            }
            assert_eq!(seen.len(), 2, "{balance}: {seen:?}");
            assert!(seen.values().all(|&n| n > 50), "{balance}: {seen:?}");
        }
    }
}
