//! `/metrics`: a registry built for each scrape from the live state, encoded in the
//! Prometheus text format (or OpenMetrics, when the scraper asks for it).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::SnapshotHistogram;
use super::members::{members, ROLES, STATES};
use super::ready::{endpoint_ready, role_name};
use crate::state::{State, Topology};

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    cluster: String,
    endpoint: String,
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    cluster: String,
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberRoleLabels {
    cluster: String,
    member: String,
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberStateLabels {
    cluster: String,
    member: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    cluster: String,
    sqlstate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    cluster: String,
    member: String,
    database: String,
    user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    cluster: String,
    member: String,
    database: String,
    user: String,
    state: &'static str,
}

type IntGauge = Gauge<i64>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The exposition of the state now, and its content type.
pub fn encode(
    state: &State,
    topology: &Topology,
    openmetrics: bool,
) -> Result<(String, &'static str), std::fmt::Error> {
    let registry = registry(state, topology);
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok((out, OPENMETRICS))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok((
            out,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        ))
    }
}

fn registry(state: &State, topology: &Topology) -> Registry {
    let mut r = Registry::default();
    let max = topology.config.general.max_client_conn;
    let clients = IntGauge::default();
    clients.set(int(state.client_slots.in_use()));
    r.register(
        "pgfleet_clients_connected",
        "Client connections open now, over all endpoints",
        clients,
    );
    let max_clients = IntGauge::default();
    max_clients.set(int(max));
    r.register(
        "pgfleet_clients_max",
        "Client connections allowed at once (max_client_conn)",
        max_clients,
    );
    reloads(&mut r, state);
    endpoints(&mut r, topology);
    member_metrics(&mut r, topology);
    pools(&mut r, topology);
    errors(&mut r, topology);
    pins(&mut r, topology);
    auth_query(&mut r, topology);
    r
}

fn reloads(r: &mut Registry, state: &State) {
    let reloads = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    let r_ = &state.reloads;
    for (result, n) in [("applied", &r_.applied), ("refused", &r_.refused)] {
        let n = n.load(std::sync::atomic::Ordering::Relaxed);
        reloads.get_or_create(&vec![("result", result)]).inc_by(n);
    }
    r.register(
        "pgfleet_reloads",
        "Configuration reloads (SIGHUP or RELOAD), applied or refused as invalid",
        reloads,
    );
}

fn errors(r: &mut Registry, topology: &Topology) {
    let sent = Family::<ErrorLabels, Counter>::default();
    for cluster in &topology.clusters {
        for (sqlstate, n) in cluster.errors() {
            let labels = ErrorLabels {
                cluster: cluster.name.clone(),
                sqlstate,
            };
            sent.get_or_create(&labels).inc_by(n);
        }
    }
    r.register(
        "pgfleet_client_errors",
        "ErrorResponses pgfleet itself sent clients (refusals, timeouts, lost servers), by SQLSTATE",
        sent,
    );
}

fn pins(r: &mut Registry, topology: &Topology) {
    let pinned = Family::<Vec<(&'static str, String)>, Counter>::default();
    for cluster in &topology.clusters {
        for (reason, n) in cluster.pins() {
            let labels = vec![
                ("cluster", cluster.name.clone()),
                ("reason", reason.name().to_owned()),
            ];
            pinned.get_or_create(&labels).inc_by(n);
        }
    }
    r.register(
        "pgfleet_pinned_clients",
        "Transaction-mode clients pinned to their server connection by session state, by reason (a client counts once per reason)",
        pinned,
    );
}

/// The `auth_query` counters of the clusters with an `auth_user`.
fn auth_query(r: &mut Registry, topology: &Topology) {
    let lookups = Family::<Vec<(&'static str, String)>, Counter>::default();
    let hits = Family::<Vec<(&'static str, String)>, Counter>::default();
    let cached = Family::<Vec<(&'static str, String)>, IntGauge>::default();
    let general = &topology.config.general;
    for cluster in &topology.clusters {
        if crate::config::AuthQuery::of(general, &cluster.config()).is_none() {
            continue;
        }
        let stats = &cluster.auth_query.stats;
        let name = || ("cluster", cluster.name.clone());
        for (result, n) in [
            ("found", &stats.found),
            ("missing", &stats.missing),
            ("failed", &stats.failed),
        ] {
            let labels = vec![name(), ("result", result.to_owned())];
            lookups
                .get_or_create(&labels)
                .inc_by(n.load(std::sync::atomic::Ordering::Relaxed));
        }
        let n = stats.cache_hits.load(std::sync::atomic::Ordering::Relaxed);
        hits.get_or_create(&vec![name()]).inc_by(n);
        let n = int(cluster.auth_query.cached());
        cached.get_or_create(&vec![name()]).set(n);
    }
    r.register(
        "pgfleet_auth_query_lookups",
        "auth_query lookups run for users not in auth_file, by result",
        lookups,
    );
    r.register(
        "pgfleet_auth_query_cache_hits",
        "Logins of users not in auth_file answered from the auth_query cache",
        hits,
    );
    r.register(
        "pgfleet_auth_query_cached",
        "Users (found or not) the auth_query cache holds now",
        cached,
    );
}

fn endpoints(r: &mut Registry, topology: &Topology) {
    let ready = Family::<EndpointLabels, IntGauge>::default();
    let xacts = Family::<EndpointLabels, Counter>::default();
    let queries = Family::<EndpointLabels, Counter>::default();
    for cluster in &topology.clusters {
        for endpoint in cluster.endpoints().iter() {
            let labels = EndpointLabels {
                cluster: cluster.name.clone(),
                endpoint: endpoint.name.clone(),
                role: role_name(endpoint.config().role),
            };
            ready
                .get_or_create(&labels)
                .set(endpoint_ready(cluster, endpoint).into());
            let s = endpoint.stats.snapshot();
            xacts.get_or_create(&labels).inc_by(s.xacts);
            queries.get_or_create(&labels).inc_by(s.queries);
        }
    }
    r.register(
        "pgfleet_endpoint_transactions",
        "Transactions completed through the endpoint",
        xacts,
    );
    r.register(
        "pgfleet_endpoint_queries",
        "Queries completed through the endpoint",
        queries,
    );
    r.register(
        "pgfleet_endpoint_ready",
        "1 when the endpoint has a member that would take a new session now",
        ready,
    );
}

fn member_metrics(r: &mut Registry, topology: &Topology) {
    let up = Family::<MemberLabels, IntGauge>::default();
    let role = Family::<MemberRoleLabels, IntGauge>::default();
    let state = Family::<MemberStateLabels, IntGauge>::default();
    let lag = Family::<MemberLabels, FloatGauge>::default();
    let lag_bytes = Family::<MemberLabels, IntGauge>::default();
    let sessions = Family::<MemberLabels, IntGauge>::default();
    let conns = Family::<MemberLabels, IntGauge>::default();
    let draining = Family::<MemberLabels, IntGauge>::default();
    for cluster in &topology.clusters {
        for m in members(cluster) {
            let labels = MemberLabels {
                cluster: cluster.name.clone(),
                member: m.addr.clone(),
            };
            up.get_or_create(&labels)
                .set((m.health == crate::cluster::Health::Up).into());
            for each in ROLES {
                let l = MemberRoleLabels {
                    cluster: cluster.name.clone(),
                    member: m.addr.clone(),
                    role: each.as_str(),
                };
                role.get_or_create(&l).set((m.role == each).into());
            }
            for s in STATES {
                let l = MemberStateLabels {
                    cluster: cluster.name.clone(),
                    member: m.addr.clone(),
                    state: s,
                };
                state.get_or_create(&l).set((m.state == s).into());
            }
            lag.get_or_create(&labels).set(m.lag.as_secs_f64());
            lag_bytes.get_or_create(&labels).set(int(m.lag_bytes));
            sessions.get_or_create(&labels).set(int(m.sessions));
            conns.get_or_create(&labels).set(int(m.server_conns));
            draining.get_or_create(&labels).set(m.removed.into());
        }
    }
    r.register(
        "pgfleet_member_up",
        "1 when the member passed its health checks",
        up,
    );
    r.register(
        "pgfleet_member_role",
        "1 for the role the member's last checks saw (primary, replica, unknown)",
        role,
    );
    r.register(
        "pgfleet_member_state",
        "1 for the member's state: serving, out (down), lagging (beyond max_lag), \
         fenced (an old primary), draining (removed by discovery)",
        state,
    );
    r.register_with_unit(
        "pgfleet_member_lag",
        "Replication lag the last check measured",
        Unit::Seconds,
        lag,
    );
    r.register_with_unit(
        "pgfleet_member_lag",
        "WAL the replica has still to replay, behind the writer's last known position",
        Unit::Bytes,
        lag_bytes,
    );
    r.register(
        "pgfleet_member_sessions",
        "Sessions (transactions, in transaction mode) running on the member now",
        sessions,
    );
    r.register(
        "pgfleet_member_server_connections",
        "Server connections open to the member",
        conns,
    );
    r.register(
        "pgfleet_member_draining",
        "1 when discovery removed the member and its last sessions are draining",
        draining,
    );
}

fn pools(r: &mut Registry, topology: &Topology) {
    let conns = Family::<PoolStateLabels, IntGauge>::default();
    let size = Family::<PoolLabels, IntGauge>::default();
    let xacts = Family::<PoolLabels, Counter>::default();
    let queries = Family::<PoolLabels, Counter>::default();
    let received = Family::<PoolLabels, Counter>::default();
    let sent = Family::<PoolLabels, Counter>::default();
    let wait = Family::<PoolLabels, SnapshotHistogram>::default();
    let checkouts = Family::<PoolLabels, Counter>::default();
    for cluster in &topology.clusters {
        for pool in cluster.pools.all() {
            let labels = PoolLabels {
                cluster: cluster.name.clone(),
                member: pool.node.addr.clone(),
                database: pool.key.database.clone(),
                user: pool.key.user.clone(),
            };
            for (state, n) in [("active", pool.active()), ("idle", pool.idle())] {
                let l = PoolStateLabels {
                    cluster: labels.cluster.clone(),
                    member: labels.member.clone(),
                    database: labels.database.clone(),
                    user: labels.user.clone(),
                    state,
                };
                conns.get_or_create(&l).set(int(n));
            }
            size.get_or_create(&labels)
                .set(int(pool.config().default_pool_size));
            let s = pool.stats.snapshot();
            xacts.get_or_create(&labels).inc_by(s.xacts);
            queries.get_or_create(&labels).inc_by(s.queries);
            received.get_or_create(&labels).inc_by(s.bytes_received);
            sent.get_or_create(&labels).inc_by(s.bytes_sent);
            let waited = s.wait_us as f64 / 1_000_000.0;
            let buckets = pool.stats.wait_histogram();
            let count = buckets.iter().map(|(_, n)| n).sum();
            wait.get_or_create(&labels).set(waited, count, buckets);
            checkouts.get_or_create(&labels).inc_by(s.checkouts);
        }
    }
    r.register(
        "pgfleet_pool_server_connections",
        "Server connections of the pool: active (handed out or being reset) or idle",
        conns,
    );
    r.register(
        "pgfleet_pool_server_connections_max",
        "Server connections the pool may have (default_pool_size)",
        size,
    );
    r.register("pgfleet_pool_transactions", "Transactions completed", xacts);
    r.register("pgfleet_pool_queries", "Queries completed", queries);
    r.register_with_unit(
        "pgfleet_pool_received",
        "Bytes forwarded from clients to the servers",
        Unit::Bytes,
        received,
    );
    r.register_with_unit(
        "pgfleet_pool_sent",
        "Bytes forwarded from the servers to clients",
        Unit::Bytes,
        sent,
    );
    r.register_with_unit(
        "pgfleet_pool_wait",
        "Time clients waited for a server connection, per checkout",
        Unit::Seconds,
        wait,
    );
    r.register(
        "pgfleet_pool_checkouts",
        "Server connections handed to clients",
        checkouts,
    );
}
