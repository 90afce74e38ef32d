//! Reloading the configuration (SIGHUP or the console's `RELOAD`) as a difference
//! applied to the running process.
//!
//! Everything that can fail is done first: the files are read and validated, the auth
//! file loaded, new discovery sources built and new endpoints' addresses bound. Any
//! failure leaves the running configuration as it was. Then the change is applied:
//! clusters and endpoints that stay keep their clients, members, pools and server
//! connections; settings and pool sizes change in place; new clusters and endpoints
//! start; removed endpoints stop accepting and their clients get `drain_timeout` to
//! finish; removed members and clusters drain the same way. A member listed before and
//! after keeps its health, role and lag: no session goes to a member whose role is not
//! known.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::launch;
use crate::auth::Userlist;
use crate::cluster::{ClusterState, EndpointState, Phase};
use crate::config::{self, Config};
use crate::discovery::Source;
use crate::state::{State, Topology};
use crate::tls::{self, ClientTls, ServerTls};

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// One line per change (cluster or endpoint added, removed or changed).
    pub changes: Vec<String>,
    /// Settings that only take effect on restart, and were left as they are.
    pub warnings: Vec<String>,
}

/// Reads the configuration again from where it was loaded and applies it. One reload
/// runs at a time. An error says what was wrong; the running configuration is then
/// unchanged.
pub async fn reload(state: &Arc<State>) -> anyhow::Result<Reloaded> {
    let _one_at_a_time = state.reloads.running.lock().await;
    match prepare(state) {
        Ok(plan) => {
            let reloaded = apply(state, plan);
            state.reloads.applied.fetch_add(1, Ordering::Relaxed);
            info!(changes = ?reloaded.changes, "configuration reloaded");
            for w in &reloaded.warnings {
                warn!("reload: {w}");
            }
            Ok(reloaded)
        }
        Err(e) => {
            state.reloads.refused.fetch_add(1, Ordering::Relaxed);
            warn!(error = %format!("{e:#}"), "reload refused; the running configuration stays");
            Err(e)
        }
    }
}

/// A reload ready to apply: nothing of it can fail any more.
struct Plan {
    config: Arc<Config>,
    users: Arc<Userlist>,
    /// Read from the files again, changed or not: a renewed certificate is taken.
    client_tls: Option<Arc<ClientTls>>,
    server_tls: BTreeMap<String, Arc<ServerTls>>,
    warnings: Vec<String>,
    clusters: Vec<ClusterPlan>,
    /// Running clusters the configuration no longer has.
    removed: Vec<Arc<ClusterState>>,
}

struct ClusterPlan {
    cluster: Arc<ClusterState>,
    /// False for a cluster the reload adds.
    running: bool,
    config: config::Cluster,
    health_password: Option<String>,
    /// A new source when the cluster's settings changed (or it is new).
    source: Option<Arc<dyn Source>>,
    /// Listeners of the endpoints to add, by endpoint name.
    listeners: Vec<(String, TcpListener)>,
}

fn prepare(state: &State) -> anyhow::Result<Plan> {
    let loaded = config::load(&state.config_path)?;
    let mut config = loaded.config;
    let users = Userlist::load(&config.general.auth_file)?;
    let client_tls = ClientTls::load(&config.general).context("client TLS")?;
    let server_tls = tls::load_server_tls(&config)?;
    let old = state.current.load_full();
    let warnings = keep_restart_settings(&mut config, &old.config);
    let known = state.listeners.addrs();
    let mut fresh: Vec<SocketAddr> = Vec::new();
    let planned = plan_clusters(state, &old, &config, &users, &known, &mut fresh);
    let clusters = match planned {
        Ok(c) => c,
        Err(e) => {
            // Sockets bound for this reload close with their listeners.
            for addr in fresh {
                state.listeners.release(addr);
            }
            return Err(e);
        }
    };
    let removed = old
        .clusters
        .iter()
        .filter(|c| !config.clusters.contains_key(&c.name))
        .cloned()
        .collect();
    Ok(Plan {
        config: Arc::new(config),
        users: Arc::new(users),
        client_tls,
        server_tls,
        warnings,
        clusters,
        removed,
    })
}

fn plan_clusters(
    state: &State,
    old: &Topology,
    config: &Config,
    users: &Userlist,
    known: &[SocketAddr],
    fresh: &mut Vec<SocketAddr>,
) -> anyhow::Result<Vec<ClusterPlan>> {
    let mut plans = Vec::new();
    for (name, c) in &config.clusters {
        let running = old.clusters.iter().find(|k| &k.name == name).cloned();
        let health_password = launch::health_password(users, &c.health_user);
        let (cluster, is_running) = match running {
            Some(cluster) => (cluster, true),
            None => (Arc::new(ClusterState::new(name, c)), false),
        };
        let unchanged =
            is_running && **cluster.config() == *c && cluster.health_password() == health_password;
        let source = match unchanged {
            true => None,
            false => Some(launch::source(name, c, health_password.clone(), &cluster)?),
        };
        let to_add: Vec<(String, SocketAddr)> = match is_running {
            true => cluster
                .endpoints_to_add(c)
                .into_iter()
                .map(|(n, e)| (n.clone(), e.listen))
                .collect(),
            false => cluster
                .endpoints()
                .iter()
                .map(|e| (e.name.clone(), e.listen))
                .collect(),
        };
        if is_running && to_add.len() > cluster.free_endpoint_slots() {
            anyhow::bail!(
                "clusters.{name}.endpoints: too many endpoints open or still draining; reload again once they have drained"
            );
        }
        let mut listeners = Vec::new();
        for (ename, addr) in to_add {
            let listener = state
                .listeners
                .bind(addr)
                .with_context(|| format!("clusters.{name}.endpoints.{ename}.listen"))?;
            if !known.contains(&addr) || addr.port() == 0 {
                fresh.push(listener.local_addr()?);
            }
            listeners.push((ename, listener));
        }
        plans.push(ClusterPlan {
            cluster,
            running: is_running,
            config: c.clone(),
            health_password,
            source,
            listeners,
        });
    }
    Ok(plans)
}

/// Settings a running process cannot change: the new values are replaced by the
/// running ones, and each is named in a warning.
fn keep_restart_settings(new: &mut Config, old: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let (n, o) = (&mut new.general, &old.general);
    if n.admin_listen != o.admin_listen {
        warnings.push("general.admin_listen changes on restart only".to_owned());
        n.admin_listen = o.admin_listen;
    }
    if n.http_listen != o.http_listen {
        warnings.push("general.http_listen changes on restart only".to_owned());
        n.http_listen = o.http_listen;
    }
    if n.takeover_socket != o.takeover_socket {
        warnings.push("general.takeover_socket changes on restart only".to_owned());
        n.takeover_socket = o.takeover_socket.clone();
    }
    if n.workers != o.workers {
        warnings.push("general.workers changes on restart only".to_owned());
        n.workers = o.workers;
    }
    warnings
}

fn apply(state: &Arc<State>, plan: Plan) -> Reloaded {
    let mut out = Reloaded {
        warnings: plan.warnings,
        ..Reloaded::default()
    };
    let old = state.current.load_full();
    if plan.config.general != old.config.general {
        out.changes.push("general settings changed".to_owned());
    }
    state
        .client_slots
        .resize(plan.config.general.max_client_conn);
    let mut server_tls = plan.server_tls;
    for p in &plan.clusters {
        if let Some(tls) = server_tls.remove(&p.cluster.name) {
            p.cluster.pools.set_server_tls(tls);
        }
    }
    state
        .pending_logins
        .resize(plan.config.general.max_pending_logins);
    state.current.store(Arc::new(Topology {
        config: plan.config.clone(),
        users: plan.users,
        clusters: plan.clusters.iter().map(|p| p.cluster.clone()).collect(),
        client_tls: plan.client_tls,
    }));
    let open_addrs: Vec<SocketAddr> = plan
        .config
        .clusters
        .values()
        .flat_map(|c| c.endpoints.values().map(|e| e.listen))
        .filter(|a| a.port() != 0)
        .collect();
    let mut closing: Vec<(Arc<ClusterState>, Arc<EndpointState>)> = Vec::new();
    for p in plan.clusters {
        let cluster = p.cluster;
        let mut listeners = p.listeners;
        let mut take = |name: &str| {
            let i = listeners.iter().position(|(n, _)| n == name)?;
            Some(listeners.swap_remove(i).1)
        };
        if !p.running {
            cluster.set_health_password(p.health_password);
            if let Some(source) = p.source {
                launch::start_cluster(state, &cluster, source);
            }
            for ep in cluster.endpoints().iter() {
                start_endpoint(state, &cluster, ep.clone(), take(&ep.name));
            }
            out.changes.push(format!("cluster {} added", cluster.name));
            continue;
        }
        if p.source.is_none() {
            continue; // unchanged
        }
        cluster.set_health_password(p.health_password);
        let changes = match cluster.reconfigure(&p.config) {
            Ok(c) => c,
            Err(e) => {
                // Checked in `prepare`; kept as a log line rather than a panic.
                warn!(cluster = %cluster.name, error = %e, "endpoints not changed");
                Default::default()
            }
        };
        if let Some(source) = p.source {
            cluster.source.set(source);
        }
        out.changes
            .push(format!("cluster {} changed", cluster.name));
        for ep in changes.added {
            out.changes
                .push(format!("endpoint {}.{} added", cluster.name, ep.name));
            let listener = take(&ep.name);
            start_endpoint(state, &cluster, ep, listener);
        }
        for ep in changes.changed {
            out.changes
                .push(format!("endpoint {}.{} changed", cluster.name, ep.name));
        }
        for ep in changes.removed {
            out.changes
                .push(format!("endpoint {}.{} removed", cluster.name, ep.name));
            closing.push((cluster.clone(), ep));
        }
    }
    for cluster in plan.removed {
        out.changes
            .push(format!("cluster {} removed", cluster.name));
        for ep in cluster.retire() {
            closing.push((cluster.clone(), ep));
        }
    }
    for (cluster, ep) in closing {
        if !open_addrs.contains(&ep.listen) {
            state.listeners.release(ep.listen);
        }
        let timeout = cluster.config().drain_timeout;
        tokio::spawn(drain_endpoint(state.clone(), cluster, ep, timeout));
    }
    out
}

fn start_endpoint(
    state: &Arc<State>,
    cluster: &Arc<ClusterState>,
    ep: Arc<EndpointState>,
    listener: Option<TcpListener>,
) {
    let Some(listener) = listener else {
        warn!(cluster = %cluster.name, endpoint = %ep.name, "no listener was bound for the endpoint");
        return;
    };
    if let Err(e) = launch::endpoint(state, cluster, ep, listener) {
        warn!(cluster = %cluster.name, error = %e, "endpoint not started");
    }
}

/// Lets a removed endpoint's clients finish, at most `timeout`; then ends those left.
async fn drain_endpoint(
    state: Arc<State>,
    cluster: Arc<ClusterState>,
    ep: Arc<EndpointState>,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stop = state.stop.subscribe();
    while ep.clients() > 0 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
    }
    let left = ep.clients();
    ep.set_phase(Phase::Ended);
    if left > 0 {
        warn!(cluster = %cluster.name, endpoint = %ep.name, clients = left, "drain_timeout: clients of a removed endpoint ended");
    } else {
        info!(cluster = %cluster.name, endpoint = %ep.name, "removed endpoint drained");
    }
}
