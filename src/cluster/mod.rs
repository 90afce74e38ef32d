//! The members of a cluster, their role, health and lag, and the endpoints in front.

mod endpoint;
pub mod health;
pub mod membership;
mod node;
mod reconfigure;
pub mod sockets;
mod view;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sql::PinReason;
use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use tokio::sync::{watch, Notify};

pub use endpoint::{EndpointState, Phase, MAX_ENDPOINTS};
pub use node::{Health, Node, NodeRole};
pub use reconfigure::SourceSlot;
pub use view::View;

use crate::config::{self, Role};
use crate::discovery::Member;
use crate::pool::PoolSet;

/// A cluster at run time: its settings, its nodes and its endpoints.
#[derive(Debug)]
pub struct ClusterState {
    pub name: String,
    /// The cluster's settings, replaced in place on reload.
    config: ArcSwap<config::Cluster>,
    /// The health user's password (from `auth_file`, replaced on reload).
    health_password: ArcSwapOption<String>,
    /// The discovery source the membership runner polls (replaced on reload).
    pub source: SourceSlot,
    /// Set when a reload removes the cluster: its members drain, its tasks end.
    retired: watch::Sender<bool>,
    /// The current members, in order of discovery (removed ones leave the list).
    members: ArcSwap<Vec<Arc<Node>>>,
    /// The next member's `Node::index`.
    next_index: AtomicUsize,
    /// Members removed and still draining.
    draining: std::sync::Mutex<Vec<Arc<Node>>>,
    /// `PAUSE` from the admin console: no new checkout until `RESUME`.
    paused: std::sync::atomic::AtomicBool,
    /// ErrorResponses pgfleet sent this cluster's clients, by SQLSTATE.
    errors: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Clients pinned to their server connection, by `PinReason` (in `PinReason::ALL`
    /// order).
    pins: [std::sync::atomic::AtomicU64; PinReason::ALL.len()],
    endpoints: ArcSwap<Vec<Arc<EndpointState>>>,
    /// The session-counter slots the endpoints hold.
    slots: Arc<endpoint::Slots>,
    pub pools: PoolSet,
    /// `auth_query` lookups for the cluster's clients: the answers kept, the connection.
    pub auth_query: crate::auth_query::Lookups,
    /// Woken whenever a node's health or role changes, so clients waiting for a node
    /// that fits re-check at once.
    pub changed: Notify,
    /// Counts promotions seen, to order nodes that became primary.
    promotion_clock: AtomicU64,
    /// The highest timeline seen on a primary: only a primary on it may be the writer.
    writer_timeline: AtomicU64,
    /// Moves on with every change of the settings, an endpoint's settings or the
    /// member list (see [`View`]).
    version: AtomicU64,
    /// The writer's WAL position at its last check, for replicas' lag in bytes.
    primary_lsn: AtomicU64,
}

impl ClusterState {
    /// The cluster as configured. Static members are known at once; other sources
    /// fill the list when first polled. The configuration has at most
    /// `MAX_ENDPOINTS` endpoints (validated on load).
    pub fn new(name: &str, config: &config::Cluster) -> ClusterState {
        let slots = Arc::new(endpoint::Slots::default());
        let endpoints: Vec<Arc<EndpointState>> = config
            .endpoints
            .iter()
            .filter_map(|(name, e)| {
                let slot = slots.take()?;
                Some(Arc::new(EndpointState::new(slot, name, e, slots.clone())))
            })
            .collect();
        let nodes: Vec<Arc<Node>> = match config.discovery {
            config::Discovery::Static => config
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| Arc::new(Node::new(i, h.clone())))
                .collect(),
            _ => Vec::new(),
        };
        ClusterState {
            name: name.to_owned(),
            config: ArcSwap::from_pointee(config.clone()),
            health_password: ArcSwapOption::empty(),
            source: SourceSlot::default(),
            retired: watch::channel(false).0,
            next_index: AtomicUsize::new(nodes.len()),
            draining: std::sync::Mutex::default(),
            paused: std::sync::atomic::AtomicBool::new(false),
            errors: std::sync::Mutex::default(),
            pins: Default::default(),
            members: ArcSwap::from_pointee(nodes),
            endpoints: ArcSwap::from_pointee(endpoints),
            slots,
            pools: PoolSet::default(),
            auth_query: Default::default(),
            changed: Notify::new(),
            promotion_clock: AtomicU64::new(0),
            writer_timeline: AtomicU64::new(0),
            primary_lsn: AtomicU64::new(0),
            version: AtomicU64::new(0),
        }
    }

    /// The cluster's settings now (one atomic load; no reference count touched).
    pub fn config(&self) -> Guard<Arc<config::Cluster>> {
        self.config.load()
    }

    /// The endpoints, open ones in configuration order (removed ones leave the list).
    pub fn endpoints(&self) -> Guard<Arc<Vec<Arc<EndpointState>>>> {
        self.endpoints.load()
    }

    /// The endpoint named `name`.
    pub fn endpoint(&self, name: &str) -> Option<Arc<EndpointState>> {
        self.endpoints().iter().find(|e| e.name == name).cloned()
    }

    /// The health user's password, if `auth_file` has it in plaintext.
    pub fn health_password(&self) -> Option<String> {
        self.health_password.load_full().map(|p| p.as_ref().clone())
    }

    pub fn set_health_password(&self, password: Option<String>) {
        self.health_password.store(password.map(Arc::new));
    }

    /// Whether a reload removed the cluster.
    pub fn retired(&self) -> bool {
        *self.retired.borrow()
    }

    /// Resolves once a reload removes the cluster.
    pub async fn until_retired(&self) {
        let mut rx = self.retired.subscribe();
        let _ = rx.wait_for(|r| *r).await;
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
        if node.health() != Health::Up || node.removed() || node.disabled() {
            return false;
        }
        match (role, node.role()) {
            (Role::Replica | Role::Any, NodeRole::Replica) => {
                !node.lagging() || (node.orphaned() && self.writer_index().is_none())
            }
            (Role::Primary | Role::Any, NodeRole::Primary) => {
                self.writer_index() == Some(node.index)
            }
            _ => false,
        }
    }

    /// The current writer: the healthy primary on the newest timeline (of two on the same
    /// timeline, the one seen becoming primary last). While the newest primary is down
    /// there is no writer: an older primary is never used again.
    pub fn writer(&self) -> Option<Arc<Node>> {
        let index = self.writer_index()?;
        self.members
            .load()
            .iter()
            .find(|n| n.index == index)
            .cloned()
    }

    /// The writer's `Node::index`.
    fn writer_index(&self) -> Option<usize> {
        let timeline = self.writer_timeline.load(Ordering::Acquire);
        self.members
            .load()
            .iter()
            .filter(|n| n.health() == Health::Up && n.role() == NodeRole::Primary)
            .filter(|n| !n.removed() && n.timeline() == timeline)
            .max_by_key(|n| n.primary_since())
            .map(|n| n.index)
    }

    /// Counts an ErrorResponse pgfleet sent one of the cluster's clients.
    pub fn count_error(&self, sqlstate: &str) {
        let mut errors = crate::sync::lock(&self.errors);
        *errors.entry(sqlstate.to_owned()).or_default() += 1;
    }

    /// ErrorResponses pgfleet sent the cluster's clients, by SQLSTATE.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let errors = crate::sync::lock(&self.errors);
        errors.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Counts a client pinned to its server connection for `reason`.
    pub fn count_pin(&self, reason: PinReason) {
        self.pins[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Clients pinned to their server connection so far, by reason.
    pub fn pins(&self) -> Vec<(PinReason, u64)> {
        PinReason::ALL
            .iter()
            .map(|r| (*r, self.pins[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Whether the admin console paused the cluster.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// Members removed and still draining.
    pub fn draining(&self) -> Vec<Arc<Node>> {
        self.draining_list().clone()
    }

    /// Forgets a drained member, unless it was listed again meanwhile: returns
    /// whether it was forgotten.
    pub(crate) fn drained(&self, node: &Node) -> bool {
        let mut draining = self.draining_list();
        if !node.removed() {
            return false;
        }
        draining.retain(|n| n.index != node.index);
        true
    }

    fn draining_list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Node>>> {
        crate::sync::lock(&self.draining)
    }

    /// Whether `node` takes new clients, in HAProxy's words: `draining` (removed by
    /// discovery), `disabled` (from the admin console), `out` (not up), `lagging`
    /// (beyond `max_lag`), `fenced` (an old primary) or `serving`.
    pub fn member_state(&self, node: &Node) -> &'static str {
        if node.removed() {
            "draining"
        } else if node.disabled() {
            "disabled"
        } else if node.health() != Health::Up {
            "out"
        } else if node.lagging() {
            "lagging"
        } else if node.role() == NodeRole::Primary && self.writer_index() != Some(node.index) {
            "fenced"
        } else {
            "serving"
        }
    }

    /// Every `member_state`, in the order they are checked.
    pub const MEMBER_STATES: [&'static str; 6] = [
        "draining", "disabled", "out", "lagging", "fenced", "serving",
    ];

    /// The current members. One atomic load; hold the guard briefly.
    pub fn nodes(&self) -> Guard<Arc<Vec<Arc<Node>>>> {
        self.members.load()
    }

    /// Makes `members` the cluster's member list: members already known keep their
    /// node (health, role, pools and connections untouched), members removed but
    /// still draining get theirs back (their sessions go on), new ones get a node that
    /// serves nobody until its health checks pass, and the others are removed (they
    /// drain).
    pub fn apply_members(&self, members: Vec<Member>) -> MemberChanges {
        let current = self.members.load_full();
        let mut next: Vec<Arc<Node>> = Vec::with_capacity(members.len());
        let mut added = Vec::new();
        let mut revived = Vec::new();
        for m in members {
            if next.iter().any(|n| n.addr == m.addr) {
                continue;
            }
            match current.iter().find(|n| n.addr == m.addr) {
                Some(node) => {
                    node.set_member(m);
                    next.push(node.clone());
                }
                None => match self.revive(&m.addr) {
                    Some(node) => {
                        node.set_member(m);
                        revived.push(node.clone());
                        next.push(node);
                    }
                    None => {
                        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
                        let node = Arc::new(Node::new(index, m.addr.clone()));
                        node.set_member(m);
                        added.push(node.clone());
                        next.push(node);
                    }
                },
            }
        }
        // Known members first, in their order; new ones after.
        next.sort_by_key(|n| n.index);
        let removed: Vec<Arc<Node>> = current
            .iter()
            .filter(|n| !next.iter().any(|k| k.index == n.index))
            .cloned()
            .collect();
        for node in &removed {
            node.remove();
            self.pools.close_idle(node.index);
        }
        self.draining_list().extend(removed.iter().cloned());
        if !added.is_empty() || !removed.is_empty() || !revived.is_empty() {
            self.members.store(Arc::new(next));
            self.changed_view();
            self.changed.notify_waiters();
        }
        MemberChanges {
            added,
            removed,
            revived,
        }
    }

    /// Takes the draining node at `addr` back, if there is one.
    fn revive(&self, addr: &str) -> Option<Arc<Node>> {
        let mut draining = self.draining_list();
        let i = draining.iter().position(|n| n.addr == addr)?;
        let node = draining.swap_remove(i);
        node.revive();
        Some(node)
    }

    /// Records the timeline a primary writes on. A newer timeline than any seen before
    /// fences the primaries on older ones: their pooled connections are closed. Returns
    /// true when the writer may have changed.
    pub(crate) fn observe_primary(&self, node: &Node, timeline: u64) -> bool {
        let changed = node.timeline() != timeline;
        node.set_timeline(timeline);
        let before = self.writer_timeline.fetch_max(timeline, Ordering::AcqRel);
        if timeline > before {
            for other in self.members.load().iter() {
                if other.index != node.index && other.role() == NodeRole::Primary {
                    other.new_generation();
                    self.pools.close_idle(other.index);
                }
            }
            return true;
        }
        changed
    }

    /// The writer's WAL position at its last check.
    pub fn primary_lsn(&self) -> u64 {
        self.primary_lsn.load(Ordering::Relaxed)
    }

    /// Records a primary's WAL position (a promoted node starts a new, higher one).
    pub(crate) fn observe_primary_lsn(&self, lsn: u64) {
        self.primary_lsn.fetch_max(lsn, Ordering::Relaxed);
    }

    /// Ticks the promotion clock.
    pub(crate) fn next_promotion(&self) -> u64 {
        self.promotion_clock.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// What `ClusterState::apply_members` changed.
#[derive(Debug, Default)]
pub struct MemberChanges {
    /// New members: each needs a health checker, and serves after its checks pass.
    pub added: Vec<Arc<Node>>,
    /// Members gone: each drains.
    pub removed: Vec<Arc<Node>>,
    /// Members listed again while still draining: back in service as they were.
    pub revived: Vec<Arc<Node>>,
}

/// A session's place on a node, counted in the node's load until dropped.
#[derive(Debug)]
pub struct SessionSlot {
    pub node: Arc<Node>,
    endpoint: usize,
}

impl SessionSlot {
    /// Counts a session of the endpoint in slot `endpoint` on `node`.
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
