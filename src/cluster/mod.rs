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
        }
    }

    /// Whether `node` may take new sessions of an endpoint with `role`.
    ///
    /// For `primary` that is the healthy node not in recovery that became primary last:
    /// after a promotion the old primary may still run, out of recovery, until it is
    /// stopped or rebuilt, and must not take writes.
    pub fn fits(&self, node: &Node, role: Role) -> bool {
        if node.health() != Health::Up {
            return false;
        }
        match (role, node.role()) {
            (Role::Replica, NodeRole::Replica) => node.lag() <= self.config.max_lag,
            (Role::Primary, NodeRole::Primary) => {
                self.writer().is_some_and(|w| w.index == node.index)
            }
            (Role::Any, NodeRole::Replica | NodeRole::Primary) => true,
            _ => false,
        }
    }

    /// The current writer: the healthy primary that was promoted last.
    pub fn writer(&self) -> Option<&Arc<Node>> {
        self.nodes
            .iter()
            .filter(|n| n.health() == Health::Up && n.role() == NodeRole::Primary)
            .max_by_key(|n| n.primary_since())
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
