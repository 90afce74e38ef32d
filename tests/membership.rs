//! Members that come and go while clients run: `dir` and `dns` sources add and remove
//! replicas under pgbench, a new member waits for `rise` passed checks, and a removed
//! one drains (its session-mode clients end after `drain_timeout`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::dnsmasq::Dnsmasq;
use common::*;
use pgfleet::cluster::Health;

/// Writes the member file `name` (one `host:port`) the way tools do: a temporary file
/// renamed into place.
fn write_member(dir: &Path, name: &str, addr: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("{addr}\n")).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Node `node` serves its share of the load running on the reader.
async fn takes_its_share(s: &Setup, node: usize) {
    let gained = commits_during(&s.cluster, Duration::from_secs(2)).await;
    assert!(
        gained[node] > 100,
        "node {node} serves its share: {gained:?}"
    );
}

/// Node `node` leaves the members and takes no transaction after; `others` go on.
async fn leaves(s: &Setup, node: usize, others: &[usize]) {
    let main = s.main();
    let addr = s.cluster.addr(node).to_string();
    wait_for("the member is gone", Duration::from_secs(8), || {
        !main.nodes().iter().any(|n| n.addr == addr)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gained = commits_during(&s.cluster, Duration::from_secs(2)).await;
    assert!(
        gained[node] <= 2,
        "a removed member takes no transaction: {gained:?}"
    );
    for &o in others {
        assert!(gained[o] > 100, "{gained:?}");
    }
}

async fn setup_dir(
    replicas: usize,
    members: &[usize],
    extra: &str,
    pool: &str,
) -> (Setup, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cluster_extra = format!(
        "discovery = \"dir\"\nmember_dir = \"{}\"\ndiscovery_interval = \"100ms\"\n{extra}",
        dir.path().display()
    );
    // The cluster must exist before its addresses can be written: start it, then write.
    let cluster = blocking(|| pgfleet::harness::TestCluster::start(replicas)).unwrap();
    for &n in members {
        write_member(
            dir.path(),
            &format!("node{n}"),
            &cluster.addr(n).to_string(),
        );
    }
    let (fleet, fleet_dir) = start_fleet(&cluster, "", &cluster_extra, pool).await;
    let s = Setup {
        fleet,
        dir: fleet_dir,
        cluster,
    };
    let main = s.main();
    let expected = members.len();
    wait_for("the members are up", Duration::from_secs(10), || {
        let nodes = main.nodes();
        nodes.len() == expected && nodes.iter().all(|n| n.health() == Health::Up)
    })
    .await;
    (s, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_members_join_and_leave_under_load() {
    let pool = "pool_mode = \"transaction\"\ndefault_pool_size = 4";
    let (s, dir) = setup_dir(3, &[0, 1, 2], "rise = 3", pool).await;
    blocking(|| s.cluster.pgbench_init(1)).unwrap();
    blocking(|| s.cluster.wait_caught_up()).unwrap();
    let main = s.main();
    let reader = s.addr("reader");
    let load = pgbench_spawn(reader, &["-S", "-c", "8", "-j", "2", "-T", "9"]);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Node 3 joins: listed at once, serving only after rise = 3 passed checks.
    write_member(dir.path(), "node3", &s.cluster.addr(3).to_string());
    let addr3 = s.cluster.addr(3).to_string();
    wait_for("node 3 is listed", Duration::from_secs(3), || {
        main.nodes().iter().any(|n| n.addr == addr3)
    })
    .await;
    let listed = Instant::now();
    let node3 = main
        .nodes()
        .iter()
        .find(|n| n.addr == addr3)
        .cloned()
        .unwrap();
    assert_ne!(
        node3.health(),
        Health::Up,
        "a new member serves after its checks"
    );
    wait_for("node 3 serves", Duration::from_secs(5), || {
        main.fits(&node3, pgfleet::config::Role::Replica)
    })
    .await;
    // Three checks 250 ms apart: the first right away, the third 500 ms later.
    assert!(
        listed.elapsed() >= Duration::from_millis(450),
        "{:?}",
        listed.elapsed()
    );
    takes_its_share(&s, 3).await;

    // Node 1 leaves: no new transactions on it, the others carry on.
    std::fs::remove_file(dir.path().join("node1")).unwrap();
    leaves(&s, 1, &[2, 3]).await;
    // pgbench saw no error at all (an aborted client fails the run).
    let out = blocking(|| pgbench_finish(load));
    assert!(out.contains("number of failed transactions: 0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_drains_then_its_sessions_end() {
    let (s, dir) = setup_dir(2, &[0, 1, 2], "drain_timeout = \"1500ms\"", "").await;
    let main = s.main();
    let reader = s.addr("reader");
    // Session mode: two sessions, one on each replica.
    let (a, b) = (app(reader).await, app(reader).await);
    let port_a = whereami(&a).await.1;
    let port_b = whereami(&b).await.1;
    assert_ne!(port_a, port_b);
    let (leaving, staying) = if port_a == s.cluster.port(1) {
        (a, b)
    } else {
        (b, a)
    };
    std::fs::remove_file(dir.path().join("node1")).unwrap();
    let addr1 = s.cluster.addr(1).to_string();
    wait_for("node 1 is gone", Duration::from_secs(3), || {
        !main.nodes().iter().any(|n| n.addr == addr1)
    })
    .await;
    let removed = Instant::now();
    // Its session goes on while it drains, and new sessions go elsewhere.
    leaving
        .batch_execute("select 1")
        .await
        .expect("a draining member serves its sessions");
    let newcomer = app(reader).await;
    assert_eq!(whereami(&newcomer).await.1, s.cluster.port(2));
    // After drain_timeout its session ends with a clean error; the others go on.
    let mut ended = None;
    while removed.elapsed() < Duration::from_secs(5) {
        if let Err(e) = leaving.batch_execute("select 1").await {
            ended = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = ended.expect("the draining session ends");
    assert!(
        removed.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        removed.elapsed()
    );
    assert!(e.is_closed() || sqlstate(&e) == "08006", "{e:?}");
    staying.batch_execute("select 1").await.unwrap();
    newcomer.batch_execute("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_members_join_and_leave_under_load() {
    // The nodes share 127.0.0.1, so their ports come from SRV records.
    let cluster = blocking(|| pgfleet::harness::TestCluster::start(3)).unwrap();
    let ports: Vec<u16> = (0..cluster.len()).map(|n| cluster.port(n)).collect();
    let records = |nodes: &[usize]| -> Vec<String> {
        let srv = |n: &usize| format!("_pg._tcp.fleet.test,db.fleet.test,{}", ports[*n]);
        nodes.iter().map(srv).collect()
    };
    let mut dns = Dnsmasq::start("127.0.0.1 db.fleet.test\n", &refs(&records(&[0, 1, 2])));
    let extra = format!(
        "discovery = \"dns\"\nhosts = [\"_pg._tcp.fleet.test\"]\ndns_server = \"{}\"\ndiscovery_interval = \"200ms\"",
        dns.addr()
    );
    let pool = "pool_mode = \"transaction\"\ndefault_pool_size = 4";
    let (fleet, fleet_dir) = start_fleet(&cluster, "", &extra, pool).await;
    let s = Setup {
        fleet,
        dir: fleet_dir,
        cluster,
    };
    let main = s.main();
    wait_for("three members up", Duration::from_secs(10), || {
        let nodes = main.nodes();
        nodes.len() == 3 && nodes.iter().all(|n| n.health() == Health::Up)
    })
    .await;
    blocking(|| s.cluster.pgbench_init(1)).unwrap();
    blocking(|| s.cluster.wait_caught_up()).unwrap();
    let load = pgbench_spawn(s.addr("reader"), &["-S", "-c", "8", "-j", "2", "-T", "10"]);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Node 3 gets a record: it joins and takes transactions.
    blocking(|| dns.restart(&refs(&records(&[0, 1, 2, 3]))));
    let addr3 = s.cluster.addr(3).to_string();
    wait_for("node 3 serves", Duration::from_secs(8), || {
        main.nodes()
            .iter()
            .any(|n| n.addr == addr3 && main.fits(n, pgfleet::config::Role::Replica))
    })
    .await;
    takes_its_share(&s, 3).await;

    // Node 1's record goes: it leaves.
    blocking(|| dns.restart(&refs(&records(&[0, 2, 3]))));
    leaves(&s, 1, &[2, 3]).await;
    let out = blocking(|| pgbench_finish(load));
    assert!(out.contains("number of failed transactions: 0"), "{out}");
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
