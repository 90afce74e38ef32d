//! Roles and health: promotion, a killed or frozen replica, no node at all.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use pgfleet::cluster::Health;

/// Opens `n` reader sessions at once and returns the ports they landed on.
async fn reader_ports(s: &Setup, n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n {
        let c = app(s.addr("reader")).await;
        let (in_recovery, port) = whereami(&c).await;
        assert!(
            in_recovery,
            "reader session on port {port}, not in recovery"
        );
        ports.push(port);
        held.push(c);
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_moves_the_writer_and_the_old_primary_rejoins_as_reader() {
    let s = setup(2, "", "", "").await;
    let (p0, p1, p2) = (s.cluster.port(0), s.cluster.port(1), s.cluster.port(2));
    let writer_before = app(s.addr("writer")).await;
    assert_eq!(whereami(&writer_before).await.1, p0);

    blocking(|| s.cluster.promote(1)).unwrap();
    let promoted = Instant::now();
    let main = s.main();
    wait_for(
        "the writer follows the promotion",
        Duration::from_secs(3),
        || main.writer().is_some_and(|w| w.index == 1),
    )
    .await;
    println!("writer followed the promotion in {:?}", promoted.elapsed());
    // Node 0 still runs, out of recovery, but the writer endpoint never picks it again.
    for _ in 0..6 {
        let c = app(s.addr("writer")).await;
        assert_eq!(whereami(&c).await, (false, p1));
        c.batch_execute("create table if not exists after_promotion(i int)")
            .await
            .unwrap();
    }
    let ports: HashSet<u16> = reader_ports(&s, 6).await.into_iter().collect();
    assert_eq!(
        ports,
        HashSet::from([p2]),
        "the promoted node left the readers"
    );

    // The old primary comes back as a replica of the new one and takes reader sessions.
    blocking(|| s.cluster.rebuild_as_replica(0)).unwrap();
    wait_for(
        "the old primary is a healthy replica",
        Duration::from_secs(10),
        || {
            main.nodes()[0].role() == pgfleet::cluster::NodeRole::Replica
                && main.nodes()[0].health() == Health::Up
        },
    )
    .await;
    // Node 2 followed node 0; rebuilt from the new primary, it serves again too.
    blocking(|| s.cluster.rebuild_as_replica(2)).unwrap();
    wait_for(
        "the rebuilt replica is back",
        Duration::from_secs(10),
        || main.fits(&main.nodes()[2], pgfleet::config::Role::Replica),
    )
    .await;
    let ports: HashSet<u16> = reader_ports(&s, 6).await.into_iter().collect();
    assert_eq!(ports, HashSet::from([p0, p2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_replica_serves_until_another_primary_exists() {
    let s = setup(2, "", "max_lag = \"1s\"", "query_wait_timeout = \"1s\"").await;
    let main = s.main();
    blocking(|| s.cluster.kill(0)).unwrap();
    wait_for(
        "the replicas see they receive nothing",
        Duration::from_secs(5),
        || main.nodes()[1].orphaned() && main.nodes()[2].orphaned(),
    )
    .await;
    // No primary at all: the replicas are the freshest data there is; reads go on,
    // also well past max_lag.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        main.nodes()[2].lagging(),
        "lag is still measured: {:?}",
        main.nodes()[2].lag()
    );
    assert!(whereami(&app(s.addr("reader")).await).await.0);
    // Node 1 is promoted: node 2, still following the dead node 0, is stale now.
    blocking(|| s.cluster.promote(1)).unwrap();
    wait_for("node 1 is the writer", Duration::from_secs(3), || {
        main.writer().is_some_and(|w| w.index == 1)
    })
    .await;
    let e = connect(s.addr("reader"), "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57P03", "no replica fits: {e}");
    assert!(!whereami(&app(s.addr("writer")).await).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_sessions_go_to_the_other_at_once() {
    let s = setup(2, "", "", "").await;
    let (p1, p2) = (s.cluster.port(1), s.cluster.port(2));
    blocking(|| s.cluster.kill(1)).unwrap();
    let killed = Instant::now();
    // No client error, even before the health check notices: a refused connect takes
    // the node out and the session goes to the other replica.
    let ports = reader_ports(&s, 8).await;
    assert!(ports.iter().all(|&p| p == p2), "{ports:?}");
    let main = s.main();
    wait_for("the killed node is down", Duration::from_secs(2), || {
        main.nodes()[1].health() == Health::Down
    })
    .await;
    println!("killed node down after {:?}", killed.elapsed());

    blocking(|| s.cluster.start_node(1)).unwrap();
    wait_for(
        "the restarted node is up again",
        Duration::from_secs(10),
        || main.nodes()[1].health() == Health::Up,
    )
    .await;
    let ports: HashSet<u16> = reader_ports(&s, 6).await.into_iter().collect();
    assert_eq!(ports, HashSet::from([p1, p2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_replica_is_taken_out_by_the_health_timeout() {
    let s = setup(2, "", "", "").await;
    let p2 = s.cluster.port(2);
    let main = s.main();
    blocking(|| s.cluster.pause(1)).unwrap();
    let paused = Instant::now();
    wait_for("the frozen node is down", Duration::from_secs(4), || {
        main.nodes()[1].health() == Health::Down
    })
    .await;
    // health_timeout (1s) × fall (2), plus up to one health_interval (250ms) before
    // the first check that hangs, plus scheduling slack.
    let took = paused.elapsed();
    println!("frozen node down after {took:?}");
    assert!(took <= Duration::from_millis(3000), "{took:?}");
    let ports = reader_ports(&s, 4).await;
    assert!(ports.iter().all(|&p| p == p2), "{ports:?}");
    blocking(|| s.cluster.resume(1)).unwrap();
    wait_for("the resumed node is up", Duration::from_secs(10), || {
        main.nodes()[1].health() == Health::Up
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fitting_node_is_a_clear_error_not_a_hang() {
    let s = setup(1, "", "", "query_wait_timeout = \"1s\"").await;
    blocking(|| s.cluster.stop(1)).unwrap();
    let main = s.main();
    wait_for("the replica is down", Duration::from_secs(3), || {
        main.nodes()[1].health() == Health::Down
    })
    .await;
    let started = Instant::now();
    let e = connect(s.addr("reader"), "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57P03", "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // The writer is unaffected, and a waiting reader gets in once a replica is back.
    whereami(&app(s.addr("writer")).await).await;
    blocking(|| s.cluster.start_node(1)).unwrap();
    wait_for("the replica is back", Duration::from_secs(10), || {
        main.nodes()[1].health() == Health::Up
    })
    .await;
    assert!(whereami(&app(s.addr("reader")).await).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_through_a_failover_and_land_on_the_new_writer() {
    let pool = "pool_mode = \"transaction\"";
    let s = setup(2, "", "failover_timeout = \"20s\"", pool).await;
    let main = s.main();
    let writer = s.addr("writer");
    let c = app(writer).await;
    c.batch_execute("create table ft(i int)").await.unwrap();
    blocking(|| s.cluster.wait_caught_up()).unwrap();
    // A transaction running on the writer when it dies: a clean error, the client stays.
    let running = tokio::spawn(async move {
        let r = c.batch_execute("select pg_sleep(20)").await;
        (r, c)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(|| s.cluster.kill(0)).unwrap();
    let (r, c) = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the running statement ends")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(sqlstate(&e), "08006", "{e:?}");
    wait_for("no writer", Duration::from_secs(5), || {
        main.writer().is_none()
    })
    .await;
    // Its next write waits for a writer instead of failing.
    let write = tokio::spawn(async move {
        let r = c.batch_execute("insert into ft values (1)").await;
        (r, c)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!write.is_finished(), "the write waits for a writer");
    let asked = Instant::now();
    // Returns once node 1 accepts writes.
    blocking(|| s.cluster.promote(1)).unwrap();
    let promoted = Instant::now();
    let (r, c) = write.await.unwrap();
    r.expect("the waiting write succeeds on the new writer");
    let waited = promoted.elapsed();
    println!(
        "first write through the writer endpoint {waited:?} after the promotion ({:?} after pg_ctl promote)",
        asked.elapsed()
    );
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(whereami(&c).await, (false, s.cluster.port(1)));
    let n: i64 = c
        .query_one("select count(*) from ft", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_leaves_the_readers_and_rejoins() {
    let s = setup(2, "", "max_lag = \"1s\"", "").await;
    let main = s.main();
    blocking(|| s.cluster.psql(0, "create table lagt(i int)")).unwrap();
    blocking(|| s.cluster.wait_caught_up()).unwrap();
    blocking(|| s.cluster.psql(2, "select pg_wal_replay_pause()")).unwrap();
    let paused = Instant::now();
    // Writes keep coming; node 2 receives them but replays none.
    let mut left = None;
    for i in 0..100 {
        let sql = format!("insert into lagt values ({i})");
        blocking(|| s.cluster.psql(0, &sql)).unwrap();
        if main.nodes()[2].lagging() {
            left = Some(paused.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = left.expect("node 2 leaves the readers");
    println!(
        "node 2 out after {left:?}; lag {:?}, {} bytes",
        main.nodes()[2].lag(),
        main.nodes()[2].lag_bytes()
    );
    assert!(left >= Duration::from_secs(1), "{left:?}");
    assert!(main.nodes()[2].lag_bytes() > 0);
    let ports = reader_ports(&s, 4).await;
    assert!(ports.iter().all(|&p| p == s.cluster.port(1)), "{ports:?}");
    blocking(|| s.cluster.psql(2, "select pg_wal_replay_resume()")).unwrap();
    wait_for("node 2 rejoins", Duration::from_secs(5), || {
        !main.nodes()[2].lagging()
    })
    .await;
    let ports: HashSet<u16> = reader_ports(&s, 4).await.into_iter().collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_endpoint_can_fall_back_to_the_writer() {
    let fallback = "\n[clusters.main.endpoints.reads]\nlisten = \"127.0.0.1:0\"\nrole = \"replica\"\nfallback = \"primary\"\n";
    let s = setup(1, "", fallback, "query_wait_timeout = \"1s\"").await;
    let main = s.main();
    assert_eq!(
        whereami(&app(s.addr("reads")).await).await.1,
        s.cluster.port(1)
    );
    blocking(|| s.cluster.stop(1)).unwrap();
    wait_for("the replica is down", Duration::from_secs(3), || {
        main.nodes()[1].health() == Health::Down
    })
    .await;
    // `reads` serves from the writer; `reader` (fallback = "error") refuses.
    assert_eq!(
        whereami(&app(s.addr("reads")).await).await,
        (false, s.cluster.port(0))
    );
    let e = connect(s.addr("reader"), "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57P03", "{e}");
}
