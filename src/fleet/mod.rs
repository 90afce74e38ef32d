//! Building the running process from a configuration: listeners, health checkers,
//! pool janitors and the statistics logger, all stopped through `State::stop`; and
//! changing it in place when the configuration is reloaded (`reload`).

mod launch;
mod reload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::auth::Userlist;
use crate::cluster::ClusterState;
use crate::config::Loaded;
use crate::listen::Listeners;
use crate::state::{State, Topology};
use crate::tls::{self, ClientTls};
use crate::workers::Workers;
use crate::{admin, http, stats};

pub use reload::{reload, Reloaded};

/// A running pgfleet: its state and the addresses it listens on.
pub struct Fleet {
    pub state: Arc<State>,
    /// `cluster.endpoint` → bound address, as started.
    pub endpoints: BTreeMap<String, SocketAddr>,
    /// The admin console's bound address, if `admin_listen` is set.
    pub admin: Option<SocketAddr>,
    /// The HTTP endpoints' bound address, if `http_listen` is set.
    pub http: Option<SocketAddr>,
}

impl Fleet {
    /// Binds every endpoint and starts every background task. Fails (without leaving
    /// anything running) when the auth file cannot be read or an address cannot be bound.
    pub async fn start(loaded: Loaded) -> anyhow::Result<Fleet> {
        Fleet::start_with(loaded, Listeners::default()).await
    }

    /// `start`, taking the listening sockets from `listeners` where it holds one for
    /// the address (sockets handed over by a predecessor process).
    pub async fn start_with(loaded: Loaded, listeners: Listeners) -> anyhow::Result<Fleet> {
        let config = Arc::new(loaded.config);
        let users = Userlist::load(&config.general.auth_file)?;
        let client_tls = ClientTls::load(&config.general).context("client TLS")?;
        let mut server_tls = tls::load_server_tls(&config)?;
        let clusters: Vec<Arc<ClusterState>> = config
            .clusters
            .iter()
            .map(|(name, c)| Arc::new(ClusterState::new(name, c)))
            .collect();
        for cluster in &clusters {
            if let Some(tls) = server_tls.remove(&cluster.name) {
                cluster.pools.set_server_tls(tls);
            }
        }
        let topology = Topology {
            config: config.clone(),
            users: Arc::new(users),
            clusters: clusters.clone(),
            client_tls,
        };
        let workers = Workers::start(config.general.workers).context("worker threads")?;
        let state = Arc::new(State::new(topology, loaded.path, listeners, workers));
        let admin_listener = match config.general.admin_listen {
            Some(addr) => Some(state.listeners.bind(addr).context("general.admin_listen")?),
            None => None,
        };
        let http_listener = match config.general.http_listen {
            Some(addr) => Some(state.listeners.bind(addr).context("general.http_listen")?),
            None => None,
        };
        let mut bound = Vec::new();
        for cluster in &clusters {
            for ep in cluster.endpoints().iter() {
                let listener = state.listeners.bind(ep.config().listen).with_context(|| {
                    format!("clusters.{}.endpoints.{}.listen", cluster.name, ep.name)
                })?;
                bound.push((cluster.clone(), ep.clone(), listener));
            }
        }
        // Every source is built before any task starts, so a failure leaves nothing.
        let mut sources = Vec::new();
        for cluster in &clusters {
            let c = cluster.config();
            let password = launch::health_password(&state.current.load().users, &c.health_user);
            sources.push(launch::source(
                &cluster.name,
                &c,
                password.clone(),
                cluster,
            )?);
            cluster.set_health_password(password);
        }
        for (cluster, source) in clusters.iter().zip(sources) {
            launch::start_cluster(&state, cluster, source);
        }
        tokio::spawn(stats::log_periodically(state.clone()));
        tokio::spawn(close_listeners_when_done(state.clone()));
        let mut endpoints = BTreeMap::new();
        for (cluster, ep, listener) in bound {
            let name = format!("{}.{}", cluster.name, ep.name);
            let addr = launch::endpoint(&state, &cluster, ep, listener)?;
            endpoints.insert(name, addr);
        }
        let admin = match admin_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                tracing::info!(%addr, "admin console listening");
                tokio::spawn(admin::serve(state.clone(), listener));
                Some(addr)
            }
            None => None,
        };
        let http = match http_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                tracing::info!(%addr, "http listening");
                tokio::spawn(http::serve(state.clone(), listener));
                Some(addr)
            }
            None => None,
        };
        Ok(Fleet {
            state,
            endpoints,
            admin,
            http,
        })
    }

    /// Stops listening and ends every session (each client gets `57P01`) and
    /// background task.
    pub fn stop(&self) {
        self.state.stop.send_replace(true);
    }

    /// Waits until every client connection has ended, at most `grace`; returns whether
    /// they all did.
    pub async fn wait_clients_gone(&self, grace: std::time::Duration) -> bool {
        self.state.client_slots.wait_idle(grace).await
    }
}

/// Once pgfleet stops, or stops accepting, its listening sockets close with the accept
/// loops (a successor process was handed its own copies before).
async fn close_listeners_when_done(state: Arc<State>) {
    let mut stop = state.stop.subscribe();
    let mut closing = state.closing.subscribe();
    while !*stop.borrow() && !*closing.borrow() {
        tokio::select! {
            _ = stop.changed() => {}
            _ = closing.changed() => {}
        }
    }
    state.listeners.clear();
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}
