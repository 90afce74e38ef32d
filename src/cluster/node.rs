//! One PostgreSQL server of a cluster: its address, its role and health as the health
//! checker last saw them, and its load per endpoint. Everything is atomics, read on
//! every session start without a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::sockets::Sockets;
use super::MAX_ENDPOINTS;
use crate::discovery::Member;

/// What the last checks said about a node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Not checked yet.
    Unknown = 0,
    /// Not in recovery: the writer.
    Primary = 1,
    /// In recovery: a reader.
    Replica = 2,
}

impl NodeRole {
    fn from_u8(v: u8) -> NodeRole {
        match v {
            1 => NodeRole::Primary,
            2 => NodeRole::Replica,
            _ => NodeRole::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Unknown => "unknown",
            NodeRole::Primary => "primary",
            NodeRole::Replica => "replica",
        }
    }
}

/// Whether a node may serve clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: serves nobody.
    Unknown = 0,
    /// Passed its checks.
    Up = 1,
    /// Failed: serves nobody until it passes `rise` checks.
    Down = 2,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A member of a cluster.
#[derive(Debug)]
pub struct Node {
    /// The node's number in its cluster: given in order of discovery, never reused.
    pub index: usize,
    /// `host:port`, as configured or discovered.
    pub addr: String,
    /// What the discovery source last said of the node.
    member: ArcSwap<Member>,
    /// Removed from the cluster: takes no new sessions, drains the running ones.
    removed: AtomicBool,
    /// A health checker runs for the node.
    checking: AtomicBool,
    /// Taken out from the admin console (`DISABLE`): no new sessions until `ENABLE`.
    disabled: AtomicBool,
    /// Server sockets open to the node.
    pub sockets: Arc<Sockets>,
    health: AtomicU8,
    role: AtomicU8,
    /// Bumped whenever the node's role changes or it goes down: server connections made
    /// in an older generation are never handed out again.
    generation: AtomicU64,
    lag_ms: AtomicU64,
    /// Bytes of WAL behind the writer's last known position (replicas).
    lag_bytes: AtomicU64,
    /// Behind by more than `max_lag` on two checks in a row.
    lagging: AtomicBool,
    /// In recovery with no WAL receiver streaming.
    orphaned: AtomicBool,
    /// The timeline a primary writes on (0 for replicas and unchecked nodes).
    timeline: AtomicU64,
    /// When this node last became primary, on the cluster's promotion clock: of two
    /// nodes not in recovery, the later one is the writer.
    primary_since: AtomicU64,
    /// Sessions in use through each endpoint of the cluster (by endpoint slot).
    sessions: [AtomicUsize; MAX_ENDPOINTS],
    /// Their sum.
    total_sessions: AtomicUsize,
}

impl Node {
    pub fn new(index: usize, addr: String) -> Node {
        Node {
            index,
            member: ArcSwap::from_pointee(Member::at(addr.clone())),
            addr,
            removed: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            sockets: Arc::default(),
            health: AtomicU8::new(Health::Unknown as u8),
            role: AtomicU8::new(NodeRole::Unknown as u8),
            generation: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lagging: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            timeline: AtomicU64::new(0),
            primary_since: AtomicU64::new(0),
            sessions: std::array::from_fn(|_| AtomicUsize::new(0)),
            total_sessions: AtomicUsize::new(0),
        }
    }

    /// What the discovery source last said of the node.
    pub fn member(&self) -> Arc<Member> {
        self.member.load_full()
    }

    pub(crate) fn set_member(&self, member: Member) {
        if *self.member.load_full() != member {
            self.member.store(Arc::new(member));
        }
    }

    /// Whether the node was removed from its cluster (and is draining).
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Takes the node out: no new session, and pooled connections are not reused.
    pub(crate) fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Brings a removed node back (listed again while still draining): its running
    /// sessions go on, and its health and role are as last checked.
    pub(crate) fn revive(&self) {
        self.removed.store(false, Ordering::Release);
    }

    /// Whether the caller may start the node's health checker (none runs).
    pub(crate) fn claim_checker(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    /// The health checker ends.
    pub(crate) fn release_checker(&self) {
        self.checking.store(false, Ordering::Release);
    }

    /// Whether the node was taken out from the admin console.
    pub fn disabled(&self) -> bool {
        self.disabled.load(Ordering::Acquire)
    }

    /// Records `DISABLE`/`ENABLE`; returns true when it changed.
    pub fn set_disabled(&self, disabled: bool) -> bool {
        self.disabled.swap(disabled, Ordering::AcqRel) != disabled
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    pub fn role(&self) -> NodeRole {
        NodeRole::from_u8(self.role.load(Ordering::Acquire))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms.load(Ordering::Relaxed))
    }

    /// Bytes of WAL the replica has still to replay, against the writer's position at
    /// its last check.
    pub fn lag_bytes(&self) -> u64 {
        self.lag_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_lag_bytes(&self, bytes: u64) {
        self.lag_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Whether the node is out of the reader set for replication lag.
    pub fn lagging(&self) -> bool {
        self.lagging.load(Ordering::Acquire)
    }

    /// Records the lag state; returns true when it changed.
    pub(crate) fn set_lagging(&self, lagging: bool) -> bool {
        self.lagging.swap(lagging, Ordering::AcqRel) != lagging
    }

    /// Whether the node is a replica that receives no WAL.
    pub fn orphaned(&self) -> bool {
        self.orphaned.load(Ordering::Acquire)
    }

    pub(crate) fn set_orphaned(&self, orphaned: bool) {
        self.orphaned.store(orphaned, Ordering::Release);
    }

    /// The timeline this node writes on, if it is a primary.
    pub fn timeline(&self) -> u64 {
        self.timeline.load(Ordering::Acquire)
    }

    pub(crate) fn set_timeline(&self, timeline: u64) {
        self.timeline.store(timeline, Ordering::Release);
    }

    /// Starts a new generation: pooled connections made before are closed, not reused.
    pub(crate) fn new_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn primary_since(&self) -> u64 {
        self.primary_since.load(Ordering::Acquire)
    }

    pub(crate) fn set_primary_since(&self, clock: u64) {
        self.primary_since.store(clock, Ordering::Release);
    }

    /// Sessions in use on this node through the endpoint in slot `endpoint`.
    pub fn sessions(&self, endpoint: usize) -> usize {
        self.sessions
            .get(endpoint)
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Sessions in use on this node over all endpoints.
    pub fn total_sessions(&self) -> usize {
        self.total_sessions.load(Ordering::Relaxed)
    }

    pub(crate) fn add_session(&self, endpoint: usize) {
        if let Some(s) = self.sessions.get(endpoint) {
            s.fetch_add(1, Ordering::Relaxed);
            self.total_sessions.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn remove_session(&self, endpoint: usize) {
        if let Some(s) = self.sessions.get(endpoint) {
            s.fetch_sub(1, Ordering::Relaxed);
            self.total_sessions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records a role; returns true when it changed (and starts a new generation).
    pub(crate) fn set_role(&self, role: NodeRole) -> bool {
        let old = self.role.swap(role as u8, Ordering::AcqRel);
        if old != role as u8 {
            self.generation.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// Records health; returns true when it changed. Going down starts a new generation.
    pub(crate) fn set_health(&self, health: Health) -> bool {
        let old = self.health.swap(health as u8, Ordering::AcqRel);
        if old != health as u8 && health == Health::Down {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        old != health as u8
    }

    pub(crate) fn set_lag(&self, lag: Duration) {
        self.lag_ms.store(
            lag.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }
}
