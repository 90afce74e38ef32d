//! An endpoint at run time: its settings (replaced in place on reload), its slot in
//! the nodes' session counters, and its phase (open, closing, ended) when a reload
//! removes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config;
use crate::pool::PoolStats;

pub use crate::config::MAX_ENDPOINTS;

/// Where an endpoint is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting clients.
    Open,
    /// Removed by a reload: accepts no client; its sessions go on.
    Closing,
    /// Its last sessions are ended (`drain_timeout` passed).
    Ended,
}

/// An endpoint at run time.
#[derive(Debug)]
pub struct EndpointState {
    /// Indexes the nodes' per-endpoint session counters; held until the endpoint
    /// and every session of it are gone.
    pub slot: usize,
    pub name: String,
    /// The address it was started on (a different `listen` on reload is a new endpoint).
    pub listen: SocketAddr,
    config: ArcSwap<config::Endpoint>,
    /// Round-robin cursor, shared by `roundrobin` and the tie-break of `leastconn`.
    pub cursor: AtomicUsize,
    /// Clients connected through the endpoint (logged in or logging in).
    clients: AtomicUsize,
    /// Traffic through the endpoint (its transactions, queries and bytes).
    pub stats: PoolStats,
    phase: watch::Sender<Phase>,
    slots: Arc<Slots>,
}

impl EndpointState {
    pub(super) fn new(
        slot: usize,
        name: &str,
        config: &config::Endpoint,
        slots: Arc<Slots>,
    ) -> EndpointState {
        EndpointState {
            slot,
            name: name.to_owned(),
            listen: config.listen,
            config: ArcSwap::from_pointee(config.clone()),
            cursor: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
            stats: PoolStats::default(),
            phase: watch::channel(Phase::Open).0,
            slots,
        }
    }

    /// The endpoint's settings now.
    pub fn config(&self) -> arc_swap::Guard<Arc<config::Endpoint>> {
        self.config.load()
    }

    pub(super) fn set_config(&self, config: &config::Endpoint) {
        self.config.store(Arc::new(config.clone()));
    }

    /// Counts a client of the endpoint until the guard is dropped.
    pub fn client(self: &Arc<Self>) -> EndpointClient {
        self.clients.fetch_add(1, Ordering::Relaxed);
        EndpointClient(self.clone())
    }

    /// Clients connected through the endpoint.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }

    /// Resolves once the endpoint is at `phase` or later.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= phase).await;
    }
}

/// One client of an endpoint, counted until dropped.
#[derive(Debug)]
pub struct EndpointClient(Arc<EndpointState>);

impl Drop for EndpointClient {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for EndpointState {
    fn drop(&mut self) {
        self.slots.release(self.slot);
    }
}

/// Which session-counter slots a cluster's endpoints hold.
#[derive(Debug, Default)]
pub struct Slots {
    used: Mutex<u64>,
}

impl Slots {
    /// The lowest free slot, if any.
    pub(super) fn take(&self) -> Option<usize> {
        let mut used = crate::sync::lock(&self.used);
        let slot = (0..MAX_ENDPOINTS).find(|i| *used & (1 << i) == 0)?;
        *used |= 1 << slot;
        Some(slot)
    }

    /// Slots free now.
    pub(super) fn free(&self) -> usize {
        let used = crate::sync::lock(&self.used);
        MAX_ENDPOINTS - used.count_ones() as usize
    }

    fn release(&self, slot: usize) {
        let mut used = crate::sync::lock(&self.used);
        *used &= !(1u64 << slot);
    }
}
