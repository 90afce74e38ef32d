//! Changing a running cluster to a reloaded configuration, in place: settings and
//! pool sizes swapped, endpoints kept, added or closed, the discovery source replaced
//! (the membership runner applies the difference of its members).

use std::sync::Arc;

use tokio::sync::watch;

use super::endpoint::Phase;
use super::{ClusterState, EndpointState};
use crate::config;
use crate::discovery::Source;

/// The discovery source of a cluster, replaced on reload; the membership runner
/// follows it.
pub struct SourceSlot(watch::Sender<Option<Arc<dyn Source>>>);

impl Default for SourceSlot {
    fn default() -> SourceSlot {
        SourceSlot(watch::channel(None).0)
    }
}

impl std::fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.0.borrow().as_ref().map(|s| s.name());
        f.debug_tuple("SourceSlot").field(&name).finish()
    }
}

impl SourceSlot {
    /// Makes `source` the one polled (at once, then every `discovery_interval`).
    pub fn set(&self, source: Arc<dyn Source>) {
        self.0.send_replace(Some(source));
    }

    /// Follows the source set.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<dyn Source>>> {
        self.0.subscribe()
    }
}

/// What a reload did to a cluster's endpoints.
#[derive(Debug, Default)]
pub struct EndpointChanges {
    /// New endpoints (or ones whose `listen` changed): to start accepting on.
    pub added: Vec<Arc<EndpointState>>,
    /// Endpoints gone: closing now, to end after `drain_timeout`.
    pub removed: Vec<Arc<EndpointState>>,
    /// Endpoints kept whose settings changed.
    pub changed: Vec<Arc<EndpointState>>,
}

impl ClusterState {
    /// The endpoints `config` would add: named anew or with a new `listen`.
    pub fn endpoints_to_add<'a>(
        &self,
        config: &'a config::Cluster,
    ) -> Vec<(&'a String, &'a config::Endpoint)> {
        let current = self.endpoints();
        config
            .endpoints
            .iter()
            .filter(|(name, e)| {
                !current
                    .iter()
                    .any(|c| &c.name == *name && c.listen == e.listen)
            })
            .collect()
    }

    /// Endpoint slots free now (each endpoint added takes one until it and its
    /// sessions are gone).
    pub fn free_endpoint_slots(&self) -> usize {
        self.slots.free()
    }

    /// Applies a reloaded configuration of this cluster. Endpoints named as before on
    /// the same address keep their state and sessions; the others are replaced. Fails,
    /// changing nothing, when more endpoints would be open or draining than there are
    /// session-counter slots.
    pub fn reconfigure(&self, config: &config::Cluster) -> Result<EndpointChanges, String> {
        let current = self.endpoints.load_full();
        let mut changes = EndpointChanges::default();
        let mut next = Vec::with_capacity(config.endpoints.len());
        for (name, e) in &config.endpoints {
            match current
                .iter()
                .find(|c| &c.name == name && c.listen == e.listen)
            {
                Some(kept) => {
                    if **kept.config() != *e {
                        kept.set_config(e);
                        changes.changed.push(kept.clone());
                    }
                    next.push(kept.clone());
                }
                None => {
                    // Nothing has changed yet: dropping `changes.added` frees the slots.
                    let slot = self.slots.take().ok_or_else(|| {
                        format!(
                            "more than {} endpoints open or draining in cluster {}",
                            super::MAX_ENDPOINTS,
                            self.name
                        )
                    })?;
                    let ep = Arc::new(EndpointState::new(slot, name, e, self.slots.clone()));
                    changes.added.push(ep.clone());
                    next.push(ep);
                }
            }
        }
        changes.removed = current
            .iter()
            .filter(|c| !next.iter().any(|n| Arc::ptr_eq(n, c)))
            .cloned()
            .collect();
        for ep in &changes.removed {
            ep.set_phase(Phase::Closing);
        }
        self.endpoints.store(Arc::new(next));
        self.pools.reconfigure(&config.pool);
        self.config.store(Arc::new(config.clone()));
        self.changed_view();
        self.changed.notify_waiters();
        Ok(changes)
    }

    /// Removes the cluster: its endpoints close, its members are removed (they drain)
    /// and its background tasks end.
    pub fn retire(&self) -> Vec<Arc<EndpointState>> {
        let endpoints = self.endpoints.swap(Arc::new(Vec::new()));
        for ep in endpoints.iter() {
            ep.set_phase(Phase::Closing);
        }
        self.retired.send_replace(true);
        self.changed.notify_waiters();
        endpoints.iter().cloned().collect()
    }
}
