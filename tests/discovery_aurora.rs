//! `discovery = "aurora"` against the real test cluster, which plays Aurora: an
//! `aurora_replica_status()` with Aurora's documented columns reads its rows from a table
//! the tests change, and each node's `server_id` is its port, so the instance endpoint
//! `127.0.0.1:{server_id}` is the node's address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgfleet::config;
use pgfleet::discovery::{self, Member, Source};
use pgfleet::harness::TestCluster;

/// The source gives a member this long to connect, log in and answer.
const ATTEMPT: Duration = Duration::from_secs(3);
/// Room for a loaded machine on top of the attempts' bound.
const SLACK: Duration = Duration::from_secs(5);

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Aurora's columns (from its documentation), in its order.
const STATUS_TABLE: &str = "create table aurora_status (
    server_id text primary key,
    session_id text not null,
    durable_lsn pg_lsn,
    highest_lsn_rcvd pg_lsn,
    current_read_lsn pg_lsn,
    cur_replay_latency_in_usec bigint,
    active_txns integer,
    is_current boolean,
    last_transport_error integer,
    last_error_timestamp timestamptz,
    last_update_timestamp timestamptz,
    feedback_xmin bigint,
    feedback_epoch integer,
    replica_lag_in_msec real,
    log_stream_speed_in_kib_per_second real,
    log_buffer_sequence_number bigint,
    oldest_read_view_trx_id bigint,
    oldest_read_view_lsn pg_lsn,
    pending_read_ios bigint,
    read_ios bigint,
    iops integer,
    cpu real
);";

/// Like Aurora's, the function runs with its owner's rights: the health user needs only
/// EXECUTE on it.
const STATUS_FUNCTION: &str = "create function aurora_replica_status() returns setof aurora_status
    language sql stable security definer set search_path = pg_catalog, public
    as 'select * from public.aurora_status';
revoke execute on function aurora_replica_status() from public;
grant execute on function aurora_replica_status() to pgcheck, trustuser;";

/// Starts a primary and `replicas` replicas, and on the primary (so on every node) the
/// function with one row per node: node 0 the writer, each replica a reader lagging
/// `10 * node + 2.5` ms.
fn start(replicas: usize) -> TestCluster {
    let cluster = TestCluster::start(replicas).expect("start the test cluster");
    let mut sql = format!("{STATUS_TABLE}\n{STATUS_FUNCTION}\n");
    for node in 0..cluster.len() {
        sql.push_str(&row_sql(&cluster, node));
    }
    cluster
        .psql(0, &sql)
        .expect("create aurora_replica_status()");
    cluster.wait_caught_up().expect("replicas caught up");
    cluster
}

fn row_sql(cluster: &TestCluster, node: usize) -> String {
    let port = cluster.port(node);
    let (session, lag) = if node == 0 {
        ("'MASTER_SESSION_ID'".to_owned(), "null".to_owned())
    } else {
        let lag = 10.0 * node as f64 + 2.5;
        ("gen_random_uuid()::text".to_owned(), lag.to_string())
    };
    format!(
        "insert into aurora_status (server_id, session_id, last_update_timestamp, \
         replica_lag_in_msec, durable_lsn, is_current, cpu) \
         values ('{port}', {session}, now(), {lag}, pg_current_wal_lsn(), true, 1.5);\n"
    )
}

/// Changes the rows on the primary and waits until every running replica has them.
fn change(cluster: &TestCluster, sql: &str) {
    cluster.psql(0, sql).expect("change aurora_status");
    cluster.wait_caught_up().expect("replicas caught up");
}

/// The aurora source of a cluster with these seeds and the instance endpoint
/// `127.0.0.1:{server_id}`. `extra` adds lines to `[clusters.main]`.
fn source(hosts: &[String], extra: &str, password: Option<&str>) -> Arc<dyn Source> {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let text = format!(
        r#"discovery = "aurora"
hosts = [{hosts}]
instance_endpoint = "127.0.0.1:{{server_id}}"
{extra}
[endpoints.writer]
listen = "127.0.0.1:0"
role = "primary"
"#,
        hosts = hosts.join(", ")
    );
    let cluster: config::Cluster = toml::from_str(&text).expect("a cluster table");
    build(&cluster, password)
}

fn build(cluster: &config::Cluster, password: Option<&str>) -> Arc<dyn Source> {
    let ctx = discovery::Context {
        health_password: password.map(String::from),
        server_tls: Arc::default(),
    };
    let source = discovery::source(cluster, &ctx).unwrap();
    assert_eq!(source.name(), "aurora");
    source
}

fn pgcheck(hosts: &[String]) -> Arc<dyn Source> {
    source(hosts, "", Some("pgcheck"))
}

/// The members, in address order (the source's order is its own business).
async fn members(source: &Arc<dyn Source>) -> Vec<Member> {
    match source.members().await {
        Ok(m) => by_addr(m),
        Err(e) => panic!("members(): {e:#}"),
    }
}

fn by_addr(members: impl Into<Vec<Member>>) -> Vec<Member> {
    let mut members = members.into();
    members.sort_by(|a, b| a.addr.cmp(&b.addr));
    members
}

async fn error(source: &Arc<dyn Source>) -> String {
    match source.members().await {
        Ok(m) => panic!("members() should fail, found {m:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn writer(cluster: &TestCluster, node: usize) -> Member {
    Member {
        addr: cluster.addr(node).to_string(),
        writer: Some(true),
        lag: Some(Duration::ZERO),
        zone: None,
    }
}

fn reader(cluster: &TestCluster, node: usize, lag_us: u64) -> Member {
    Member {
        addr: cluster.addr(node).to_string(),
        writer: Some(false),
        lag: Some(Duration::from_micros(lag_us)),
        zone: None,
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_writer_flag_lag_and_the_300_s_rule() {
    let cluster = blocking(|| start(2));
    let (p1, p2) = (cluster.port(1), cluster.port(2));
    // Asked through a replica, as any member will do.
    let source = pgcheck(&[cluster.addr(1).to_string()]);
    let all = by_addr([
        writer(&cluster, 0),
        reader(&cluster, 1, 12_500),
        reader(&cluster, 2, 22_500),
    ]);
    assert_eq!(members(&source).await, all);

    // A reader not updated for over 300 s is gone; the writer never is; a NULL
    // timestamp (Aurora's for the instance asked) is current.
    blocking(|| {
        change(
            &cluster,
            &format!(
                "update aurora_status set last_update_timestamp = now() - interval '301 s' \
                 where server_id = '{p2}';
                 update aurora_status set last_update_timestamp = now() - interval '1 h' \
                 where session_id = 'MASTER_SESSION_ID';
                 update aurora_status set last_update_timestamp = null where server_id = '{p1}';"
            ),
        )
    });
    assert_eq!(
        members(&source).await,
        by_addr([writer(&cluster, 0), reader(&cluster, 1, 12_500)])
    );

    // Updated again, it is back, with its new lag; a NULL lag is unknown.
    blocking(|| {
        change(
            &cluster,
            &format!(
                "update aurora_status set last_update_timestamp = now() - interval '299 s', \
                 replica_lag_in_msec = 7 where server_id = '{p2}';
                 update aurora_status set replica_lag_in_msec = null where server_id = '{p1}';"
            ),
        )
    });
    let mut unknown_lag = reader(&cluster, 1, 0);
    unknown_lag.lag = None;
    assert_eq!(
        members(&source).await,
        by_addr([writer(&cluster, 0), unknown_lag, reader(&cluster, 2, 7_000)])
    );

    // A removed row is a removed member, even the one asked.
    blocking(|| {
        change(
            &cluster,
            &format!("delete from aurora_status where server_id = '{p1}';"),
        )
    });
    let now = by_addr([writer(&cluster, 0), reader(&cluster, 2, 7_000)]);
    assert_eq!(members(&source).await, now);

    // An answer without the writer (a member's partial view) is refused by every
    // member asked: the seed, then the members found last time.
    blocking(|| {
        change(
            &cluster,
            "delete from aurora_status where session_id = 'MASTER_SESSION_ID';",
        )
    });
    let msg = error(&source).await;
    for node in [1, 0, 2] {
        let tried = format!(
            "{} (its answer lists no writer: no usable row has session_id MASTER_SESSION_ID)",
            cluster.addr(node)
        );
        assert!(msg.contains(&tried), "{msg}");
    }
    blocking(|| change(&cluster, &row_sql(&cluster, 0)));
    assert_eq!(members(&source).await, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_in_order_then_the_members_found_last_time() {
    let cluster = blocking(|| start(2));
    let all = by_addr([
        writer(&cluster, 0),
        reader(&cluster, 1, 12_500),
        reader(&cluster, 2, 22_500),
    ]);
    let closed = closed_port();
    let (n1, n2) = (cluster.addr(1).to_string(), cluster.addr(2).to_string());

    // A refused seed costs nothing: the next one answers.
    let t = Instant::now();
    assert_eq!(members(&pgcheck(&[closed.clone(), n2.clone()])).await, all);
    assert!(t.elapsed() < SLACK, "took {:?}", t.elapsed());

    // A seed that accepts connections but never answers is given up after one attempt.
    blocking(|| cluster.pause(1)).unwrap();
    let t = Instant::now();
    let via_third = pgcheck(&[closed.clone(), n1.clone(), n2.clone()]);
    assert_eq!(members(&via_third).await, all);
    let took = t.elapsed();
    assert!(took >= ATTEMPT && took < ATTEMPT + SLACK, "took {took:?}");

    // No seed answers: an error naming each, within the bound.
    let t = Instant::now();
    let msg = error(&pgcheck(&[closed.clone(), n1.clone()])).await;
    let took = t.elapsed();
    assert!(took < ATTEMPT + SLACK, "took {took:?}");
    assert!(
        msg.starts_with("no usable answer to aurora_replica_status() from any member; tried "),
        "{msg}"
    );
    assert!(msg.contains(&format!("{closed} (")), "{msg}");
    assert!(
        msg.contains(&format!("{n1} (no answer within 3s)")),
        "{msg}"
    );
    blocking(|| cluster.resume(1)).unwrap();

    // Once the only seed is gone, the members found last time are asked.
    let source = pgcheck(std::slice::from_ref(&n2));
    assert_eq!(members(&source).await, all);
    blocking(|| cluster.stop(2)).unwrap();
    assert_eq!(members(&source).await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_where_the_function_is_missing_forbidden_or_odd() {
    let cluster = blocking(|| start(0));
    let node = cluster.addr(0).to_string();
    let hosts = [node.clone()];

    // A loaded configuration, an instance endpoint with the server id in the host name,
    // and a health user without a password (trust).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgfleet.toml");
    let text = format!(
        r#"[clusters.main]
discovery = "aurora"
hosts = ["{node}"]
instance_endpoint = "{{server_id}}.instances.example:5432"
health_user = "trustuser"
[clusters.main.endpoints.writer]
listen = "127.0.0.1:0"
role = "primary"
"#
    );
    std::fs::write(&path, text).unwrap();
    let loaded = config::load(&path).expect("valid configuration");
    let trust = build(&loaded.config.clusters["main"], None);
    let mut expected = writer(&cluster, 0);
    expected.addr = format!("{}.instances.example:5432", cluster.port(0));
    assert_eq!(members(&trust).await, by_addr([expected]));

    // Plain PostgreSQL: database `app` has no such function.
    let plain = source(&hosts, "health_database = \"app\"", Some("pgcheck"));
    let msg = error(&plain).await;
    assert!(
        msg.starts_with(&format!(
            "aurora_replica_status() is not available on {node}: \
             is this an Aurora PostgreSQL cluster?"
        )),
        "{msg}"
    );

    // A user without EXECUTE on it.
    let app = source(&hosts, "health_user = \"app\"", Some("app"));
    let msg = error(&app).await;
    assert!(
        msg.starts_with(&format!(
            "health_user \"app\" may not run aurora_replica_status() on {node}"
        )),
        "{msg}"
    );

    // A column of another type than Aurora's.
    blocking(|| {
        cluster.psql(
            0,
            "create database odd;
             \\c odd
             create function aurora_replica_status() returns table (server_id text, \
             session_id text, replica_lag_in_msec text, last_update_timestamp timestamptz) \
             language sql as $$ select 'x', 'MASTER_SESSION_ID', '1', now() $$;",
        )
    })
    .unwrap();
    let odd = source(&hosts, "health_database = \"odd\"", Some("pgcheck"));
    let msg = error(&odd).await;
    assert_eq!(
        msg,
        format!(
            "aurora_replica_status() on {node}: column replica_lag_in_msec is of type text, \
             expected real"
        )
    );
}

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgfleet_follows_aurora_s_members_and_lag() {
    let cluster = blocking(|| start(2));
    let extra = format!(
        "discovery = \"aurora\"\nhosts = [\"{}\"]\ninstance_endpoint = \"127.0.0.1:{{server_id}}\"\n\
         discovery_interval = \"200ms\"\nmax_lag = \"1s\"",
        cluster.addr(0)
    );
    let (fleet, dir) = common::start_fleet(&cluster, "", &extra, "").await;
    let s = common::Setup {
        fleet,
        dir,
        cluster,
    };
    let main = s.main();
    common::wait_for("three members up", Duration::from_secs(10), || {
        let nodes = main.nodes();
        nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n.health() == pgfleet::cluster::Health::Up)
    })
    .await;
    // Aurora's lag is the lag: 22.5 ms for node 2.
    let addr2 = s.cluster.addr(2).to_string();
    let node2 = main
        .nodes()
        .iter()
        .find(|n| n.addr == addr2)
        .cloned()
        .unwrap();
    common::wait_for("node 2's lag from Aurora", Duration::from_secs(3), || {
        node2.lag() == Duration::from_millis(22)
    })
    .await;
    // Aurora says node 2 is 5 s behind: it leaves the readers.
    let port2 = s.cluster.port(2);
    let sql =
        format!("update aurora_status set replica_lag_in_msec = 5000 where server_id = '{port2}'");
    blocking(|| change(&s.cluster, &sql));
    common::wait_for("node 2 lags", Duration::from_secs(5), || node2.lagging()).await;
    for _ in 0..4 {
        let c = common::app(s.addr("reader")).await;
        assert_eq!(common::whereami(&c).await.1, s.cluster.port(1));
    }
    // Its row goes: it is removed.
    let sql = format!("delete from aurora_status where server_id = '{port2}'");
    blocking(|| change(&s.cluster, &sql));
    common::wait_for("node 2 removed", Duration::from_secs(5), || {
        node2.removed() && main.nodes().len() == 2
    })
    .await;
}
