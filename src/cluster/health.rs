//! The health checker: one task per node that connects, asks `pg_is_in_recovery()` and
//! the replay lag, and moves the node up or down with rise/fall hysteresis.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{info, warn};

use super::{ClusterState, Health, Node, NodeRole};

/// Role and lag in one round trip. The lag counts only while the replica has received
/// WAL it has not replayed yet, so an idle primary does not make its replicas look late.
const PROBE: &str = "select pg_is_in_recovery(), \
    case when not pg_is_in_recovery() then 0::float8 \
         when pg_last_wal_receive_lsn() is not distinct from pg_last_wal_replay_lsn() then 0::float8 \
         else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0)::float8 end";

/// What one check found.
#[derive(Debug)]
enum Probe {
    Ok {
        in_recovery: bool,
        lag: Duration,
    },
    /// Connect refused or timed out: the node goes down at once.
    Unreachable(String),
    /// Connected but the check failed (e.g. the server is starting): counts towards `fall`.
    Failed(String),
}

/// Starts the checker of every node of `cluster`. `password` is the health user's.
pub fn spawn(cluster: Arc<ClusterState>, password: Option<String>, stop: watch::Receiver<bool>) {
    for node in &cluster.nodes {
        let task = check_loop(
            cluster.clone(),
            node.clone(),
            password.clone(),
            stop.clone(),
        );
        tokio::spawn(task);
    }
}

async fn check_loop(
    cluster: Arc<ClusterState>,
    node: Arc<Node>,
    password: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let c = &cluster.config;
    let Some(pg) = pg_config(&node.addr, &c.health_user, &c.health_database, password) else {
        warn!(cluster = %cluster.name, node = %node.addr, "cannot parse the node address; not checked");
        return;
    };
    let mut streak = HealthStreak::default();
    loop {
        let started = Instant::now();
        let probe = probe(&pg, c.health_timeout).await;
        if streak.apply(&cluster, &node, probe) {
            cluster.changed.notify_waiters();
        }
        tokio::select! {
            _ = sleep_until(started + c.health_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

fn pg_config(
    addr: &str,
    user: &str,
    database: &str,
    password: Option<String>,
) -> Option<tokio_postgres::Config> {
    let (host, port) = addr.rsplit_once(':')?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(host.trim_start_matches('[').trim_end_matches(']'))
        .port(port.parse().ok()?)
        .user(user)
        .dbname(database)
        .application_name("pgfleet health check");
    if let Some(pw) = password {
        pg.password(pw);
    }
    Some(pg)
}

async fn probe(pg: &tokio_postgres::Config, limit: Duration) -> Probe {
    let run = async {
        let (client, conn) = match pg.connect(tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) if e.as_db_error().is_some() => return Probe::Failed(e.to_string()),
            Err(e) => return Probe::Unreachable(e.to_string()),
        };
        let conn = tokio::spawn(conn);
        let probe = match client.query_one(PROBE, &[]).await {
            Ok(row) => match (row.try_get::<_, bool>(0), row.try_get::<_, f64>(1)) {
                (Ok(in_recovery), Ok(lag)) => Probe::Ok {
                    in_recovery,
                    lag: Duration::try_from_secs_f64(lag.max(0.0)).unwrap_or(Duration::MAX),
                },
                _ => Probe::Failed("unexpected answer to the health query".into()),
            },
            Err(e) => Probe::Failed(e.to_string()),
        };
        drop(client);
        let _ = conn.await;
        probe
    };
    timeout(limit, run)
        .await
        .unwrap_or_else(|_| Probe::Unreachable(format!("no answer within {limit:?}")))
}

/// Consecutive results, for rise/fall.
#[derive(Debug, Default)]
struct HealthStreak {
    passed: u32,
    failed: u32,
}

impl HealthStreak {
    /// Applies one check to the node; returns true when its health or role changed.
    fn apply(&mut self, cluster: &ClusterState, node: &Node, probe: Probe) -> bool {
        let (name, rise, fall) = (&cluster.name, cluster.config.rise, cluster.config.fall);
        match probe {
            Probe::Ok { in_recovery, lag } => {
                self.failed = 0;
                node.set_lag(lag);
                let role = if in_recovery {
                    NodeRole::Replica
                } else {
                    NodeRole::Primary
                };
                let mut changed = false;
                if node.set_role(role) {
                    if role == NodeRole::Primary {
                        node.set_primary_since(cluster.next_promotion());
                    }
                    info!(cluster = %name, node = %node.addr, role = role.as_str(), "node role");
                    changed = true;
                }
                let up = match node.health() {
                    Health::Up => false,
                    Health::Unknown => true,
                    Health::Down => {
                        self.passed += 1;
                        self.passed >= rise
                    }
                };
                if up {
                    self.passed = 0;
                    node.set_health(Health::Up);
                    info!(cluster = %name, node = %node.addr, role = role.as_str(), "node up");
                    changed = true;
                }
                changed
            }
            Probe::Unreachable(why) => {
                self.passed = 0;
                mark_down(cluster, node, &why)
            }
            Probe::Failed(why) => {
                self.passed = 0;
                self.failed += 1;
                if self.failed >= fall || node.health() == Health::Unknown {
                    mark_down(cluster, node, &why)
                } else {
                    false
                }
            }
        }
    }
}

/// Takes `node` out of every endpoint at once (a failed check, or a client that could
/// not connect); returns true when it was not down already.
pub fn mark_down(cluster: &ClusterState, node: &Node, why: &str) -> bool {
    if !node.set_health(Health::Down) {
        return false;
    }
    warn!(cluster = %cluster.name, node = %node.addr, reason = %why, "node down");
    cluster.pools.close_idle(node.index);
    cluster.changed.notify_waiters();
    true
}
