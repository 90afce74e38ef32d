//! A client's copy of what its transactions read from the cluster: the settings, its
//! endpoint's settings and the member list. Each of those sits behind its own
//! `ArcSwap`, and a transaction used to load several of them; the view is brought up
//! to date with one atomic load of the cluster's version per transaction, and reloads
//! all three only when a reload or a membership change moved it.
//!
//! A node's health, role and lag are atomics on the node itself, read where they are
//! used: the view holds the nodes, not facts about them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ClusterState, EndpointState, Node};
use crate::config;

/// See the module documentation.
#[derive(Debug)]
pub struct View {
    /// The cluster's version the view was loaded at.
    version: u64,
    pub config: Arc<config::Cluster>,
    pub endpoint: Arc<config::Endpoint>,
    pub nodes: Arc<Vec<Arc<Node>>>,
}

impl View {
    /// The cluster and `endpoint` as they are now.
    pub fn new(cluster: &ClusterState, endpoint: &EndpointState) -> View {
        // The version first: a change after this load moves it again, and the next
        // refresh loads again.
        let version = cluster.version.load(Ordering::Acquire);
        View {
            version,
            config: cluster.config.load_full(),
            endpoint: arc_swap::Guard::into_inner(endpoint.config()),
            nodes: cluster.members.load_full(),
        }
    }

    /// Brings the view up to date: one atomic load unless something changed.
    pub fn refresh(&mut self, cluster: &ClusterState, endpoint: &EndpointState) {
        if cluster.version.load(Ordering::Acquire) != self.version {
            *self = View::new(cluster, endpoint);
        }
    }
}

impl ClusterState {
    /// Moves the version on, after a change a [`View`] holds.
    pub(super) fn changed_view(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }
}
