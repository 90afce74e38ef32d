//! The health checker: one task per node that connects, asks `pg_is_in_recovery()` and
//! the replay lag, and moves the node up or down with rise/fall hysteresis.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_postgres::tls::MakeTlsConnect;
use tracing::{info, warn};

use super::{ClusterState, Health, Node, NodeRole};
use crate::tls::{host_of, ServerTls};

/// Role, WAL receiver state, lag, (for a primary) timeline, and the WAL position
/// (written on a primary, replayed on a replica) in one round trip.
///
/// The lag of a streaming replica counts only while it has received WAL it has not
/// replayed yet, so an idle primary does not make its replicas look late. A replica
/// whose WAL receiver is not streaming (its primary is gone, or it cannot follow the
/// new timeline) is as late as the last time it heard from a primary. The receiver's
/// `status` needs `pg_read_all_stats` (`pg_monitor`); without it the receiver's pid
/// tells whether one runs.
const PROBE: &str = "with r as (select coalesce((select coalesce(status = 'streaming', pid is not null) \
                                         from pg_stat_wal_receiver), false) as streaming) \
    select pg_is_in_recovery(), r.streaming, \
    case when not pg_is_in_recovery() then 0::float8 \
         when not r.streaming \
           then coalesce(extract(epoch from now() - greatest( \
                  (select last_msg_receipt_time from pg_stat_wal_receiver), \
                  pg_last_xact_replay_timestamp())), 1e9)::float8 \
         when pg_last_wal_receive_lsn() is not distinct from pg_last_wal_replay_lsn() then 0::float8 \
         else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0)::float8 end, \
    case when pg_is_in_recovery() then 0::int8 \
         else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 end, \
    pg_wal_lsn_diff(case when pg_is_in_recovery() then coalesce(pg_last_wal_replay_lsn(), '0/0') \
                         else pg_current_wal_lsn() end, '0/0')::int8 \
    from r";

/// What one check found.
#[derive(Debug)]
enum Probe {
    Ok {
        in_recovery: bool,
        streaming: bool,
        lag: Duration,
        timeline: u64,
        lsn: u64,
    },
    /// Connect refused or timed out: the node goes down at once.
    Unreachable(String),
    /// Connected but the check failed (e.g. the server is starting): counts towards `fall`.
    Failed(String),
}

/// Starts the checker of `node` until it is removed or pgfleet stops. A node that is
/// `joining` (added to a running cluster) serves after `rise` passed checks; one known
/// from the start serves after its first. Each check uses the cluster's settings and
/// health user's password as they are then (a reload may change them).
pub fn spawn(
    cluster: Arc<ClusterState>,
    node: Arc<Node>,
    stop: watch::Receiver<bool>,
    joining: bool,
) {
    if node.claim_checker() {
        tokio::spawn(check_loop(cluster, node, stop, joining));
    }
}

async fn check_loop(
    cluster: Arc<ClusterState>,
    node: Arc<Node>,
    mut stop: watch::Receiver<bool>,
    joining: bool,
) {
    let mut streak = HealthStreak {
        joining,
        ..HealthStreak::default()
    };
    // The checks' connection, kept between checks: logging in (SCRAM) for every check
    // would cost more CPU than the check itself.
    let mut session: Option<Session> = None;
    loop {
        if node.removed() {
            node.release_checker();
            // Listed again meanwhile, with no other checker started: go on.
            if node.removed() || !node.claim_checker() {
                return;
            }
        }
        // Settings as they are now (a reload may change them), not held while waiting.
        let (pg, timeout, interval) = {
            let c = cluster.config();
            let password = cluster.health_password();
            let mut pg = pg_config(&node.addr, &c.health_user, &c.health_database, password);
            let tls = cluster.pools.server_tls();
            if let Some(pg) = pg.as_mut() {
                pg.ssl_mode(tls.ssl_mode());
            }
            (pg.map(|pg| (pg, tls)), c.health_timeout, c.health_interval)
        };
        let Some((pg, tls)) = pg else {
            warn!(cluster = %cluster.name, node = %node.addr, "cannot parse the node address; not checked");
            return;
        };
        let started = Instant::now();
        let probe = probe(&mut session, &node.addr, (&pg, &tls), timeout).await;
        if streak.apply(&cluster, &node, probe) {
            cluster.changed.notify_waiters();
        }
        tokio::select! {
            _ = sleep_until(started + interval) => {}
            _ = stop.changed() => {
                node.release_checker();
                return;
            }
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

/// One check within `limit`, on the connection kept from the last check when it still
/// answers, else on a new one (kept for the next check when it works). Only a refused
/// or timed-out TCP connect is `Unreachable`: a server that accepts the connection but is
/// slow to log in or answer (a saturated machine, a frozen process) fails the check and
/// counts towards `fall`.
async fn probe(
    session: &mut Option<Session>,
    addr: &str,
    (pg, tls): (&tokio_postgres::Config, &ServerTls),
    limit: Duration,
) -> Probe {
    let deadline = Instant::now() + limit;
    if let Some(kept) = session.take().filter(|s| !s.0.is_closed()) {
        match timeout_at(deadline, query(&kept)).await {
            Ok(Ok(probe)) => {
                *session = Some(kept);
                return probe;
            }
            // The server went away since the last check (a restart): try a new login.
            Ok(Err(e)) if e.is_closed() => {}
            Ok(Err(e)) => return Probe::Failed(e.to_string()),
            Err(_) => return Probe::Failed(format!("no answer within {limit:?}")),
        }
    }
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Probe::Unreachable(e.to_string()),
        Err(_) => return Probe::Unreachable(format!("connect timed out after {limit:?}")),
    };
    let _ = stream.set_nodelay(true);
    let run = async {
        let make = &mut tls.for_postgres();
        let connect = match MakeTlsConnect::<TcpStream>::make_tls_connect(make, host_of(addr)) {
            Ok(c) => c,
            Err(e) => return Probe::Failed(format!("TLS: {e}")),
        };
        let (client, conn) = match pg.connect_raw(stream, connect).await {
            Ok(c) => c,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        // Ends when the client is dropped or the server closes the connection.
        tokio::spawn(conn);
        let statement = match client.prepare(PROBE).await {
            Ok(s) => s,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        let fresh = Session(client, statement);
        match query(&fresh).await {
            Ok(probe) => {
                *session = Some(fresh);
                probe
            }
            Err(e) => Probe::Failed(e.to_string()),
        }
    };
    timeout_at(deadline, run)
        .await
        .unwrap_or_else(|_| Probe::Failed(format!("no answer within {limit:?}")))
}

/// A health-check connection and its prepared health query.
struct Session(tokio_postgres::Client, tokio_postgres::Statement);

/// Runs the health query.
async fn query(session: &Session) -> Result<Probe, tokio_postgres::Error> {
    let row = session.0.query_one(&session.1, &[]).await?;
    Ok(
        match (
            row.try_get(0),
            row.try_get(1),
            row.try_get::<_, f64>(2),
            row.try_get::<_, i64>(3),
            row.try_get::<_, i64>(4),
        ) {
            (Ok(in_recovery), Ok(streaming), Ok(lag), Ok(timeline), Ok(lsn)) => Probe::Ok {
                in_recovery,
                streaming,
                lag: Duration::try_from_secs_f64(lag.max(0.0)).unwrap_or(Duration::MAX),
                timeline: timeline.max(0) as u64,
                lsn: lsn.max(0) as u64,
            },
            _ => Probe::Failed("unexpected answer to the health query".into()),
        },
    )
}

/// Consecutive results, for rise/fall.
#[derive(Debug, Default)]
struct HealthStreak {
    passed: u32,
    failed: u32,
    /// Checks in a row that found the replica beyond `max_lag`.
    late: u32,
    /// Added to a running cluster: `rise` passed checks before the first client.
    joining: bool,
}

impl HealthStreak {
    /// Applies one check to the node; returns true when its health or role changed.
    fn apply(&mut self, cluster: &ClusterState, node: &Node, probe: Probe) -> bool {
        let c = cluster.config();
        let (name, rise, fall) = (&cluster.name, c.rise, c.fall);
        match probe {
            Probe::Ok {
                in_recovery,
                streaming,
                lag,
                timeline,
                lsn,
            } => {
                self.failed = 0;
                // A source that reports lag (Aurora: readers have no WAL receiver) is
                // believed over the probe's.
                let reported = node.member().lag;
                node.set_orphaned(in_recovery && !streaming && reported.is_none());
                let lag = reported.unwrap_or(lag);
                let lag_bytes = if in_recovery {
                    cluster.primary_lsn().saturating_sub(lsn)
                } else {
                    cluster.observe_primary_lsn(lsn);
                    0
                };
                node.set_lag_bytes(lag_bytes);
                let role = if in_recovery {
                    NodeRole::Replica
                } else {
                    NodeRole::Primary
                };
                let mut changed = self.apply_lag(cluster, node, lag);
                if node.set_role(role) {
                    if role == NodeRole::Primary {
                        node.set_primary_since(cluster.next_promotion());
                    }
                    info!(cluster = %name, node = %node.addr, role = role.as_str(), timeline, "node role");
                    changed = true;
                }
                if role == NodeRole::Primary {
                    changed |= cluster.observe_primary(node, timeline);
                }
                let up = match node.health() {
                    Health::Up => false,
                    Health::Unknown if !self.joining => true,
                    Health::Unknown | Health::Down => {
                        self.passed += 1;
                        self.passed >= rise
                    }
                };
                if up {
                    self.passed = 0;
                    self.joining = false;
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
                if self.failed >= fall || (node.health() == Health::Unknown && !self.joining) {
                    mark_down(cluster, node, &why)
                } else {
                    false
                }
            }
        }
    }
}

impl HealthStreak {
    /// Records the lag; two checks in a row beyond `max_lag` take a replica out of the
    /// reader set, one check within it brings it back. Returns true on a change.
    fn apply_lag(&mut self, cluster: &ClusterState, node: &Node, lag: Duration) -> bool {
        node.set_lag(lag);
        let c = cluster.config();
        let max_bytes = c.max_lag_bytes;
        let late = lag > c.max_lag || (max_bytes > 0 && node.lag_bytes() > max_bytes);
        self.late = if late { self.late + 1 } else { 0 };
        let lagging = if late {
            self.late >= 2 || node.lagging()
        } else {
            false
        };
        let changed = node.set_lagging(lagging);
        if changed {
            let state = if lagging {
                "beyond max_lag: out of the readers"
            } else {
                "within max_lag again"
            };
            info!(cluster = %cluster.name, node = %node.addr, lag_ms = lag.as_millis() as u64, lag_bytes = node.lag_bytes(), "replica {state}");
        }
        changed
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
