//! The members of a cluster, their role, health and lag, and the endpoints in front.

pub mod health;
mod node;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

pub use node::{Health, Node, NodeRole};

use crate::config::{self, Role};
use crate::pool::PoolSet;

/// A cluster at run time: its settings, its nodes and its endpoints.
#[derive(Debug)]
pub struct ClusterState {
    pub name: String,
    pub config: config::Cluster,
    pub nodes: Vec<Arc<Node>>,
    pub endpoints: Vec<EndpointState>,
    pub pools: PoolSet,
    /// Woken whenever a node's health or role changes, so clients waiting for a node
    /// that fits re-check at once.
    pub changed: Notify,
    /// Counts promotions seen, to order nodes that became primary.
    promotion_clock: AtomicU64,
    /// The highest timeline seen on a primary: only a primary on it may be the writer.
    writer_timeline: AtomicU64,
}

/// An endpoint at run time.
#[derive(Debug)]
pub struct EndpointState {
    /// Position in `ClusterState::endpoints`; indexes `Node` session counters.
    pub index: usize,
    pub name: String,
    pub config: config::Endpoint,
    /// Round-robin cursor, shared by `roundrobin` and the tie-break of `leastconn`.
    pub cursor: AtomicUsize,
}

impl ClusterState {
    pub fn new(name: &str, config: &config::Cluster) -> ClusterState {
        let endpoints: Vec<EndpointState> = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, (name, e))| EndpointState {
                index,
                name: name.clone(),
                config: e.clone(),
                cursor: AtomicUsize::new(0),
            })
            .collect();
        let nodes = config
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Arc::new(Node::new(i, h.clone(), endpoints.len())))
            .collect();
        ClusterState {
            name: name.to_owned(),
            config: config.clone(),
            nodes,
            endpoints,
            pools: PoolSet::default(),
            changed: Notify::new(),
            promotion_clock: AtomicU64::new(0),
            writer_timeline: AtomicU64::new(0),
        }
    }

    /// Whether `node` may take new sessions of an endpoint with `role`.
    ///
    /// A node out of recovery fits `primary` and `any` only if it is the writer: after a
    /// promotion the old primary may still run, out of recovery, until it is stopped or
    /// rebuilt, and must take no session at all.
    ///
    /// A replica beyond `max_lag` is out, except one that receives no WAL while there is
    /// no writer: when the primary is gone and nothing was promoted, the replicas are as
    /// fresh as anything there is, and reads go on.
    pub fn fits(&self, node: &Node, role: Role) -> bool {
        if node.health() != Health::Up {
            return false;
        }
        match (role, node.role()) {
            (Role::Replica | Role::Any, NodeRole::Replica) => {
                !node.lagging() || (node.orphaned() && self.writer().is_none())
            }
            (Role::Primary | Role::Any, NodeRole::Primary) => {
                self.writer().is_some_and(|w| w.index == node.index)
            }
            _ => false,
        }
    }

    /// The current writer: the healthy primary on the newest timeline (of two on the same
    /// timeline, the one seen becoming primary last). While the newest primary is down
    /// there is no writer: an older primary is never used again.
    pub fn writer(&self) -> Option<&Arc<Node>> {
        let timeline = self.writer_timeline.load(Ordering::Acquire);
        self.nodes
            .iter()
            .filter(|n| n.health() == Health::Up && n.role() == NodeRole::Primary)
            .filter(|n| n.timeline() == timeline)
            .max_by_key(|n| n.primary_since())
    }

    /// Records the timeline a primary writes on. A newer timeline than any seen before
    /// fences the primaries on older ones: their pooled connections are closed. Returns
    /// true when the writer may have changed.
    pub(crate) fn observe_primary(&self, node: &Node, timeline: u64) -> bool {
        let changed = node.timeline() != timeline;
        node.set_timeline(timeline);
        let before = self.writer_timeline.fetch_max(timeline, Ordering::AcqRel);
        if timeline > before {
            for other in &self.nodes {
                if other.index != node.index && other.role() == NodeRole::Primary {
                    other.new_generation();
                    self.pools.close_idle(other.index);
                }
            }
            return true;
        }
        changed
    }

    /// Ticks the promotion clock.
    pub(crate) fn next_promotion(&self) -> u64 {
        self.promotion_clock.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// A session's place on a node, counted in the node's load until dropped.
#[derive(Debug)]
pub struct SessionSlot {
    pub node: Arc<Node>,
    endpoint: usize,
}

impl SessionSlot {
    pub fn new(node: Arc<Node>, endpoint: usize) -> SessionSlot {
        node.add_session(endpoint);
        SessionSlot { node, endpoint }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.node.remove_session(self.endpoint);
    }
}
