//! Transaction mode never hands one client another client's answers, nor another
//! client's session state, whatever protocol sequences the clients send.
//!
//! The generator (`isolation/`) runs several raw-socket clients at once through the
//! writer endpoint over one or two server connections; each asks only for its own
//! markers and checks every value it gets back. The same clients run against
//! PostgreSQL directly too, which keeps their model of its answers honest.
//!
//! Long runs by hand: `PGFLEET_ISOLATION_SECONDS=60 PGFLEET_ISOLATION_CLIENTS=6
//! PGFLEET_ISOLATION_SEED=<seed printed by a failure> cargo test --test isolation
//! -- --nocapture`; `PGFLEET_ISOLATION_SKIP=copy_bad_sync,drop` leaves step kinds out.

mod common;
mod isolation {
    pub mod kind;
    pub mod model;
    pub mod report;
    pub mod run;
    pub mod steps;
    pub mod wire;
}

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use isolation::run::{run, FaultKind, Settings, Target};
use isolation::wire::{Conn, Event, Marker, COPY_TABLE};
use pgfleet::harness::TestCluster;
use postgres_protocol::message::frontend as fe;

const TRUST: &str = "auth_type = \"trust\"";

/// The deadline of every read through pgfleet or from PostgreSQL.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn transaction_pool(size: u32) -> String {
    format!("pool_mode = \"transaction\"\ndefault_pool_size = {size}")
}

/// Creates what the clients use on the primary; returns the oid of `textcat`.
fn prepare(cluster: &TestCluster) -> u32 {
    let primary = cluster.primary();
    let sql = format!(
        "create table {COPY_TABLE}(i int); grant all on {COPY_TABLE} to public;\n\
         select 'textcat(text,text)'::regprocedure::oid"
    );
    let oid = cluster
        .psql_db(primary, "app", &sql)
        .expect("prepare the tables");
    oid.trim().parse().expect("textcat's oid")
}

async fn generated_clients_through_pgfleet(pool_size: u32) {
    let s = setup(0, TRUST, "", &transaction_pool(pool_size)).await;
    let textcat = blocking(|| prepare(&s.cluster));
    let target = Target {
        name: format!("pgfleet, transaction mode, pool of {pool_size}"),
        addr: s.addr("writer"),
        textcat,
        timeout: READ_TIMEOUT,
    };
    let report = run(target, Settings::from_env(4.0, 5)).await;
    let text = report.text();
    println!("{text}");
    assert_eq!(report.wrong_answers(), 0, "wrong answers\n{text}");
    // A client's own answers that differ from PostgreSQL's (an error code, say) are
    // reported above, but they are no isolation failure, nor is the session of a client
    // whose own misstep pgfleet could not follow; a hang or a dropped client is.
    let lost: Vec<_> = report
        .faults()
        .into_iter()
        .filter(|f| !matches!(f.what, FaultKind::Mismatch | FaultKind::FailedClosed))
        .collect();
    assert!(lost.is_empty(), "hangs or closed connections\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_get_only_their_own_answers_over_one_server_connection() {
    generated_clients_through_pgfleet(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_get_only_their_own_answers_over_two_server_connections() {
    generated_clients_through_pgfleet(2).await;
}

/// The self-check: against PostgreSQL itself the clients' model predicts every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_clients_predict_postgresql_itself() {
    let cluster = blocking(|| TestCluster::start(0)).expect("start the test cluster");
    let textcat = blocking(|| prepare(&cluster));
    let target = Target {
        name: "PostgreSQL directly".into(),
        addr: cluster.addr(cluster.primary()),
        textcat,
        timeout: READ_TIMEOUT,
    };
    let report = run(target, Settings::from_env(3.0, 5)).await;
    let text = report.text();
    println!("{text}");
    assert!(report.steps() > 0);
    assert_eq!(report.wrong_answers(), 0, "wrong answers\n{text}");
    assert!(report.faults().is_empty(), "faults\n{text}");
}

/// A client that runs `select '<marker>'` in a loop until `until`; returns the answers
/// that were not exactly its row and a ReadyForQuery, described.
async fn marker_client(addr: SocketAddr, id: u32, until: Instant) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut conn = None;
    let mut step = 0;
    while Instant::now() < until {
        if conn.is_none() {
            match Conn::open(addr, READ_TIMEOUT).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    wrong.push(format!("client {id}: login: {e}"));
                    continue;
                }
            }
        }
        let c = conn.as_mut().unwrap();
        let m = Marker {
            client: id,
            step,
            index: 0,
        };
        step += 1;
        let mut q = BytesMut::new();
        fe::query(&format!("select '{m}'"), &mut q).unwrap();
        let mut got = Vec::new();
        let end = match c.send(&q).await {
            Ok(()) => loop {
                match c.event().await {
                    Ok(e @ Event::Ready(_)) => {
                        got.push(e);
                        break None;
                    }
                    Ok(e) => got.push(e),
                    Err(e) => break Some(e),
                }
            },
            Err(e) => Some(e),
        };
        if end.is_some() || got != [Event::Row(Ok(m)), Event::Ready(b'I')] {
            wrong.push(format!("client {id} asked for {m}, got {got:?} {end:?}"));
            // Out of step now: start over on a fresh connection.
            conn = None;
        }
    }
    wrong
}

/// What PostgreSQL answers a bad row and a Sync sent in one write during a COPY FROM
/// STDIN started by a simple Query: the error ends the COPY and the Query (ReadyForQuery),
/// then the Sync, read at top level, gets a ReadyForQuery of its own.
fn probe_answer() -> [Event; 3] {
    [
        Event::Error("22P02".into(), None),
        Event::Ready(b'I'),
        Event::Ready(b'I'),
    ]
}

/// Runs the COPY probe in a loop until `until`; returns what each round got after its
/// CopyInResponse.
async fn copy_probe(addr: SocketAddr, until: Instant) -> Vec<Vec<Event>> {
    let mut answers = Vec::new();
    let mut conn: Option<Conn> = None;
    while Instant::now() < until {
        if conn.is_none() {
            conn = Conn::open(addr, READ_TIMEOUT).await.ok();
            continue;
        }
        let probe = conn.as_mut().unwrap();
        let mut out = BytesMut::new();
        fe::query("copy t from stdin", &mut out).unwrap();
        let mut started = probe.send(&out).await.is_ok();
        while started {
            match probe.event().await {
                Ok(Event::CopyIn) => break,
                Ok(_) => {}
                Err(_) => started = false,
            }
        }
        if !started {
            conn = None;
            continue;
        }
        out.clear();
        fe::CopyData::new(&b"x\n"[..]).unwrap().write(&mut out);
        fe::sync(&mut out);
        let mut got = Vec::new();
        if probe.send(&out).await.is_ok() {
            // Until both ReadyForQuery have come, or nothing more does for 200 ms.
            probe.timeout = Duration::from_millis(200);
            while got.iter().filter(|e| matches!(e, Event::Ready(_))).count() < 2 {
                match probe.event().await {
                    Ok(e) => got.push(e),
                    Err(_) => break,
                }
            }
            probe.timeout = READ_TIMEOUT;
        }
        answers.push(got);
    }
    answers
}

/// The COPY probe: one client fails a COPY FROM STDIN with a bad row and a Sync in
/// one write, again and again; PostgreSQL answers the error with ReadyForQuery and the
/// Sync with a second one. Four clients asking for their own markers meanwhile must
/// each get exactly their own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_after_a_failed_copy_reaches_no_other_client() {
    let s = setup(0, TRUST, "", &transaction_pool(1)).await;
    let primary = s.cluster.primary();
    blocking(|| {
        s.cluster.psql_db(
            primary,
            "app",
            "create table t(i int); grant all on t to public",
        )
    })
    .unwrap();
    let addr = s.addr("writer");
    let until = Instant::now() + Duration::from_secs(3);
    let others: Vec<_> = (0..4)
        .map(|id| tokio::spawn(marker_client(addr, id, until)))
        .collect();

    let answers = copy_probe(addr, until).await;
    let whole = answers
        .iter()
        .filter(|a| a.as_slice() == probe_answer())
        .count();
    let mut wrong = Vec::new();
    for t in others {
        wrong.extend(t.await.unwrap());
    }
    println!(
        "COPY probe: {} rounds, {whole} answered as PostgreSQL does (first: {:?}); \
         {} wrong answers to the other clients",
        answers.len(),
        answers.first(),
        wrong.len()
    );
    for w in wrong.iter().take(10) {
        println!("  {w}");
    }
    assert_eq!(
        wrong.len(),
        0,
        "wrong answers to the other clients: {wrong:#?}"
    );
}

/// A fresh client logged in as `trustuser` through the writer endpoint.
async fn trust_client(s: &Setup) -> tokio_postgres::Client {
    connect(s.addr("writer"), "trustuser", "").await.unwrap()
}

/// Over one server connection; the role `r` exists and `trustuser` may take it.
async fn one_connection_with_role_r() -> Setup {
    let s = setup(0, TRUST, "", &transaction_pool(1)).await;
    let primary = s.cluster.primary();
    blocking(|| {
        s.cluster
            .psql(primary, "create role r; grant r to trustuser")
    })
    .unwrap();
    s
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    c.query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_set_in_a_committed_transaction_does_not_reach_the_next_client() {
    let s = one_connection_with_role_r().await;
    let a = trust_client(&s).await;
    a.batch_execute("BEGIN; SET ROLE r; COMMIT").await.unwrap();
    drop(a);
    let b = trust_client(&s).await;
    assert_eq!(current_user(&b).await, "trustuser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_set_by_set_config_does_not_reach_the_next_client() {
    let s = one_connection_with_role_r().await;
    let a = trust_client(&s).await;
    a.simple_query("select set_config('role', 'r', false)")
        .await
        .unwrap();
    drop(a);
    let b = trust_client(&s).await;
    assert_eq!(current_user(&b).await, "trustuser");
}

/// Checked from a session of its own on the primary: through pgfleet, the next client
/// on the same server session would be granted the lock again (advisory locks are
/// reentrant within a session) and see nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_is_released_when_its_client_leaves() {
    let s = setup(0, TRUST, "", &transaction_pool(1)).await;
    let a = trust_client(&s).await;
    a.simple_query("select pg_advisory_lock(42)").await.unwrap();
    drop(a);
    let other = connect(s.cluster.addr(s.cluster.primary()), "trustuser", "")
        .await
        .unwrap();
    let start = Instant::now();
    let mut free = false;
    while !free && start.elapsed() < Duration::from_secs(3) {
        let row = other
            .query_one("select pg_try_advisory_lock(42)", &[])
            .await
            .unwrap();
        free = row.get(0);
        if !free {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        free,
        "advisory lock 42 is still held 3 s after its client left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_table_does_not_reach_the_next_client() {
    let s = setup(0, TRUST, "", &transaction_pool(1)).await;
    let a = trust_client(&s).await;
    a.batch_execute("create temp table tt(i int)")
        .await
        .unwrap();
    drop(a);
    let b = trust_client(&s).await;
    let gone: bool = b
        .query_one("select to_regclass('pg_temp.tt') is null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        gone,
        "the next client sees the temp table of the one before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_does_not_reach_the_next_client() {
    let s = setup(0, TRUST, "", &transaction_pool(1)).await;
    let a = trust_client(&s).await;
    a.batch_execute("listen isolation_channel").await.unwrap();
    drop(a);
    let b = trust_client(&s).await;
    let channels: i64 = b
        .query_one("select count(*) from pg_listening_channels()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        channels, 0,
        "the next client listens on the channel of the one before"
    );
}
