//! Choosing the node for a new session among those that fit the endpoint's role.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::Rng;

use crate::cluster::{ClusterState, EndpointState, Node, View};
use crate::config::{self, Balance, Fallback, Role};

/// Picks a node for a new session on `endpoint`, or `None` if no node fits now.
///
/// `leastconn` takes the node with the fewest sessions in use through this endpoint,
/// then the fewest over all endpoints (they share the pools); among equals it goes
/// round-robin. `roundrobin` goes round the nodes that fit. O(nodes), no lock: the
/// counts are atomics.
///
/// A `replica` endpoint with `fallback = "primary"` takes the writer when no replica
/// fits.
///
/// The endpoint's settings and the members are as the client's `view` has them.
pub fn pick(cluster: &ClusterState, endpoint: &EndpointState, view: &View) -> Option<Arc<Node>> {
    let config = &view.endpoint;
    let chosen = choose(cluster, endpoint, config, &view.nodes);
    match (chosen, config.role, config.fallback) {
        (None, Role::Replica, Fallback::Primary) => cluster.writer(),
        (chosen, _, _) => chosen,
    }
}

/// Whether `pick` would find a node now; unlike `pick`, it moves no round-robin
/// cursor.
pub fn available(cluster: &ClusterState, endpoint: &EndpointState) -> bool {
    let config = endpoint.config();
    let role = config.role;
    cluster.nodes().iter().any(|n| cluster.fits(n, role))
        || (role == Role::Replica
            && config.fallback == Fallback::Primary
            && cluster.writer().is_some())
}

/// `pick` among the nodes that fit the endpoint's role.
fn choose(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    config: &config::Endpoint,
    nodes: &[Arc<Node>],
) -> Option<Arc<Node>> {
    let role = config.role;
    let fitting = || nodes.iter().filter(move |n| cluster.fits(n, role));
    let chosen = match config.balance {
        Balance::Leastconn => {
            let load = |n: &Node| (n.sessions(endpoint.slot), n.total_sessions());
            let (mut best, mut ties) = (None, 0usize);
            for node in fitting() {
                let l = load(node);
                match best {
                    Some(b) if l > b => {}
                    Some(b) if l == b => ties += 1,
                    _ => (best, ties) = (Some(l), 1),
                }
            }
            let best = best?;
            let k = endpoint.cursor.fetch_add(1, Ordering::Relaxed) % ties;
            fitting().filter(|n| load(n) == best).nth(k)
        }
        Balance::Roundrobin => {
            let count = fitting().count();
            if count == 0 {
                return None;
            }
            let k = endpoint.cursor.fetch_add(1, Ordering::Relaxed) % count;
            fitting().nth(k)
        }
        Balance::Random => {
            let count = fitting().count();
            if count == 0 {
                return None;
            }
            fitting().nth(rand::thread_rng().gen_range(0..count))
        }
    };
    // Loads and health may move between the two passes: then take any node that fits.
    chosen.or_else(|| fitting().next()).cloned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
[clusters.c.endpoints.any]
listen = "127.0.0.1:0"
role = "any"
"#
        );
        let config: Config = toml::from_str(&text).unwrap();
        let c = ClusterState::new("c", &config.clusters["c"]);
        for (i, role) in [NodeRole::Primary, NodeRole::Replica, NodeRole::Replica]
            .into_iter()
            .enumerate()
        {
            c.nodes()[i].set_role(role);
            c.nodes()[i].set_health(Health::Up);
        }
        c.nodes()[0].set_primary_since(c.next_promotion());
        c.observe_primary(&c.nodes()[0], 1);
        c
    }

    fn endpoint(c: &ClusterState, name: &str) -> Arc<EndpointState> {
        c.endpoint(name).unwrap()
    }

    /// `pick` with the cluster as it is now.
    fn pick_now(c: &ClusterState, endpoint: &EndpointState) -> Option<Arc<Node>> {
        pick(c, endpoint, &View::new(c, endpoint))
    }

    #[test]
    fn available_moves_no_cursor() {
        let c = cluster("roundrobin");
        let reader = endpoint(&c, "reader");
        let first = pick_now(&c, &reader).unwrap().index;
        assert!(available(&c, &reader));
        assert!(available(&c, &reader));
        assert_ne!(pick_now(&c, &reader).unwrap().index, first);
        for n in 1..3 {
            c.nodes()[n].set_health(Health::Down);
        }
        assert!(!available(&c, &reader));
        assert!(available(&c, &endpoint(&c, "writer")));
    }

    #[test]
    fn leastconn_fills_the_emptier_replica_and_alternates_on_ties() {
        let c = cluster("leastconn");
        let reader = endpoint(&c, "reader");
        let mut held = Vec::new();
        for _ in 0..10 {
            let node = pick_now(&c, &reader).unwrap();
            assert_eq!(node.role(), NodeRole::Replica);
            held.push(SessionSlot::new(node, reader.slot));
        }
        assert_eq!(c.nodes()[1].sessions(reader.slot), 5);
        assert_eq!(c.nodes()[2].sessions(reader.slot), 5);
        // Free three on node 1: the next three go there.
        for _ in 0..3 {
            let at = held.iter().position(|s| s.node.index == 1).unwrap();
            held.swap_remove(at);
        }
        for _ in 0..3 {
            assert_eq!(pick_now(&c, &reader).map(|n| n.index), Some(1));
            held.push(SessionSlot::new(c.nodes()[1].clone(), reader.slot));
        }
    }

    #[test]
    fn short_sessions_alternate_exactly() {
        // Every pick is a tie at load 0; the primary in the list must not skew the turn.
        let c = cluster("leastconn");
        let reader = endpoint(&c, "reader");
        let mut seen = HashMap::new();
        for _ in 0..300 {
            *seen
                .entry(pick_now(&c, &reader).unwrap().index)
                .or_insert(0) += 1;
        }
        assert_eq!(seen, HashMap::from([(1, 150), (2, 150)]));
    }

    #[test]
    fn leastconn_counts_the_pools_shared_with_other_endpoints() {
        let c = cluster("leastconn");
        let (reader, any) = (endpoint(&c, "reader"), endpoint(&c, "any"));
        let _held: Vec<SessionSlot> = (0..3)
            .map(|_| SessionSlot::new(c.nodes()[1].clone(), any.slot))
            .collect();
        for _ in 0..4 {
            assert_eq!(pick_now(&c, &reader).map(|n| n.index), Some(2));
        }
    }

    #[test]
    fn roles_health_and_lag_decide_who_fits() {
        let c = cluster("roundrobin");
        let (reader, writer) = (endpoint(&c, "reader"), endpoint(&c, "writer"));
        for _ in 0..6 {
            assert_eq!(pick_now(&c, &writer).map(|n| n.index), Some(0));
            assert_ne!(pick_now(&c, &reader).map(|n| n.index), Some(0));
        }
        c.nodes()[1].set_health(Health::Down);
        assert_eq!(pick_now(&c, &reader).map(|n| n.index), Some(2));
        c.nodes()[2].set_lagging(true);
        assert!(
            pick_now(&c, &reader).is_none(),
            "a replica past max_lag is out"
        );
        // Node 2 is promoted while node 0 still runs out of recovery: the writer moves,
        // and does not go back to node 0 while node 2 is down.
        c.nodes()[2].set_role(NodeRole::Primary);
        c.nodes()[2].set_primary_since(c.next_promotion());
        c.observe_primary(&c.nodes()[2], 2);
        assert_eq!(pick_now(&c, &writer).map(|n| n.index), Some(2));
        c.nodes()[2].set_health(Health::Down);
        assert!(pick_now(&c, &writer).is_none());
        let any = endpoint(&c, "any");
        assert!(
            pick_now(&c, &any).is_none(),
            "the fenced old primary takes no session"
        );
    }

    #[test]
    fn random_and_roundrobin_use_only_fitting_nodes() {
        for balance in ["random", "roundrobin"] {
            let c = cluster(balance);
            let reader = endpoint(&c, "reader");
            let mut seen = HashMap::new();
            for _ in 0..200 {
                *seen
                    .entry(pick_now(&c, &reader).unwrap().index)
                    .or_insert(0) += 1;
            }
            assert_eq!(seen.len(), 2, "{balance}: {seen:?}");
            assert!(seen.values().all(|&n| n > 70), "{balance}: {seen:?}");
            if balance == "roundrobin" {
                assert_eq!(seen[&1], seen[&2], "an exact alternation: {seen:?}");
            }
        }
    }
}
