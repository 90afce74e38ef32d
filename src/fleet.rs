//! Building the running process from a configuration: listeners, health checkers,
//! pool janitors and the statistics logger, all stopped through `State::stop`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::{Secret, Userlist};
use crate::cluster::{membership, ClusterState};
use crate::config::Loaded;
use crate::state::{State, Topology};
use crate::{admin, discovery, frontend, http, pool, stats};

/// A running pgfleet: its state and the addresses it listens on.
pub struct Fleet {
    pub state: Arc<State>,
    /// `cluster.endpoint` → bound address.
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
        let config = Arc::new(loaded.config);
        let auth_file = &config.general.auth_file;
        let users = Userlist::load(auth_file)?;
        let admin_listener = match config.general.admin_listen {
            Some(addr) => Some(bind(addr).await.context("general.admin_listen")?),
            None => None,
        };
        let http_listener = match config.general.http_listen {
            Some(addr) => Some(bind(addr).await.context("general.http_listen")?),
            None => None,
        };
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        for (name, c) in &config.clusters {
            let cluster = Arc::new(ClusterState::new(name, c));
            for ep in &cluster.endpoints {
                let listener = bind(ep.config.listen)
                    .await
                    .with_context(|| format!("clusters.{name}.endpoints.{}.listen", ep.name))?;
                listeners.push((cluster.clone(), ep.index, listener));
            }
            clusters.push(cluster);
        }
        let topology = Topology {
            config: config.clone(),
            users: Arc::new(users),
            clusters: clusters.clone(),
        };
        let state = Arc::new(State::new(topology));
        let max_message = config.general.max_message_size;
        let mut sources = Vec::new();
        for cluster in &clusters {
            let password = health_password(&state, &cluster.config.health_user);
            let ctx = discovery::Context {
                health_password: password.clone(),
            };
            let source = discovery::source(&cluster.config, &ctx)
                .with_context(|| format!("clusters.{}.discovery", cluster.name))?;
            sources.push((source, password));
        }
        for (cluster, (source, password)) in clusters.iter().zip(sources) {
            let members =
                membership::run(cluster.clone(), source, password, state.stop.subscribe());
            tokio::spawn(members);
            tokio::spawn(pool::janitor::run(
                cluster.clone(),
                max_message,
                state.stop.subscribe(),
            ));
        }
        tokio::spawn(stats::log_periodically(state.clone()));
        let mut endpoints = BTreeMap::new();
        for (cluster, index, listener) in listeners {
            let ep = &cluster.endpoints[index];
            let addr = listener.local_addr()?;
            tracing::info!(cluster = %cluster.name, endpoint = %ep.name, %addr, role = ?ep.config.role, "listening");
            endpoints.insert(format!("{}.{}", cluster.name, ep.name), addr);
            tokio::spawn(frontend::serve_endpoint(
                state.clone(),
                cluster.clone(),
                index,
                listener,
            ));
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
        let all = self.state.current.load().config.general.max_client_conn;
        let all = u32::try_from(all).unwrap_or(u32::MAX);
        let slots = self.state.client_slots.clone();
        matches!(
            tokio::time::timeout(grace, slots.acquire_many_owned(all)).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot bind {addr}"))?;
    Ok(socket.listen(1024)?)
}

/// The health user's password: its plaintext `auth_file` entry, or none (trust).
fn health_password(state: &State, user: &str) -> Option<String> {
    match state.current.load().users.get(user) {
        Some(Secret::Plain(pw)) => Some(pw.clone()),
        Some(_) => {
            tracing::warn!(
                user,
                "health_user needs a plaintext password in auth_file; trying without one"
            );
            None
        }
        None => None,
    }
}
