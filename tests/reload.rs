//! Reloading the configuration under load: applied as a difference, clients and server
//! connections of what stays untouched, invalid configurations refused.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgfleet::cluster::{ClusterState, Health};
use pgfleet::harness::TestCluster;
use pgfleet::{config, fleet, Fleet};

/// Fixed loopback addresses for the endpoints, so the configurations written for
/// each reload agree on them.
struct Ports {
    s_reader: SocketAddr,
    s_writer: SocketAddr,
    t_reader: SocketAddr,
    t_writer: SocketAddr,
    extra: SocketAddr,
    admin: SocketAddr,
}

impl Ports {
    fn new() -> Ports {
        let next = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        Ports {
            s_reader: next(),
            s_writer: next(),
            t_reader: next(),
            t_writer: next(),
            extra: next(),
            admin: next(),
        }
    }
}

/// One variant of the configuration: clusters `s` (session mode) and `t`
/// (transaction mode) over the same servers, with `hosts` members and pool size
/// `size`; `extra` is appended as is.
///
/// The health checks wait up to 5 s for an answer: with twelve pgbench clients on two
/// cores, the servers themselves sometimes take 1 to 4 s to answer a `select 1` on their
/// Unix socket. Two such checks in a row would take the node down and close its idle
/// server connections, as designed, which is not what the reload tests are about.
fn config(cluster: &TestCluster, p: &Ports, hosts: &[usize], size: usize, extra: &str) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", cluster.addr(*n)))
        .collect();
    let hosts = hosts.join(", ");
    let mut text = format!(
        "[general]\nauth_file = \"userlist.txt\"\nadmin_listen = \"{}\"\nadmin_users = [\"app\"]\n",
        p.admin
    );
    for (name, mode, reader, writer) in [
        ("s", "session", p.s_reader, p.s_writer),
        ("t", "transaction", p.t_reader, p.t_writer),
    ] {
        text += &format!(
            r#"
[clusters.{name}]
hosts = [{hosts}]
health_user = "pgcheck"
health_interval = "250ms"
health_timeout = "5s"
drain_timeout = "2s"

[clusters.{name}.pool]
pool_mode = "{mode}"
default_pool_size = {size}
server_connect_timeout = "3s"
query_wait_timeout = "10s"

[clusters.{name}.endpoints.reader]
listen = "{reader}"
role = "replica"

[clusters.{name}.endpoints.writer]
listen = "{writer}"
role = "primary"
"#
        );
    }
    text + extra
}

struct Reloading {
    fleet: Fleet,
    ports: Ports,
    path: PathBuf,
    dir: tempfile::TempDir,
    cluster: TestCluster,
}

impl Reloading {
    async fn start(first: impl Fn(&TestCluster, &Ports) -> String) -> Reloading {
        let cluster = blocking(|| TestCluster::start(2)).expect("start the test cluster");
        let dir = tempfile::Builder::new()
            .prefix("pgfleet-reload-")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("userlist.txt"),
            blocking(|| userlist(&cluster)),
        )
        .unwrap();
        let ports = Ports::new();
        let path = dir.path().join("pgfleet.toml");
        std::fs::write(&path, first(&cluster, &ports)).unwrap();
        let fleet = Fleet::start(config::load(&path).unwrap()).await.unwrap();
        let r = Reloading {
            fleet,
            ports,
            path,
            dir,
            cluster,
        };
        for name in ["s", "t"] {
            let c = r.cluster_state(name);
            wait_for("every member up", Duration::from_secs(10), || {
                c.nodes().iter().all(|n| n.health() == Health::Up)
            })
            .await;
        }
        r
    }

    fn cluster_state(&self, name: &str) -> Arc<ClusterState> {
        let topology = self.fleet.state.current.load();
        topology
            .clusters
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no cluster {name}"))
    }

    /// Writes `text` as the configuration and reloads it.
    async fn reload(&self, text: &str) -> anyhow::Result<fleet::Reloaded> {
        std::fs::write(&self.path, text).unwrap();
        fleet::reload(&self.fleet.state).await
    }
}

/// The pids of `app`'s backends on `node`.
fn app_backends(cluster: &TestCluster, node: usize) -> BTreeSet<i64> {
    let sql = "select pid from pg_stat_activity where usename = 'app' and backend_type = 'client backend'";
    let out = cluster.psql(node, sql).unwrap();
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// A pgbench script that fails the run if a read lands on a node out of recovery.
fn reads_on_replicas(dir: &Path) -> PathBuf {
    let text = "\\set aid random(1, 100000)\nselect pg_is_in_recovery() as rec \\gset\n\\if :rec\n\\else\nselect 1/0;\n\\endif\nselect abalance from pgbench_accounts where aid = :aid;\n";
    let path = dir.join("replica-reads.sql");
    std::fs::write(&path, text).unwrap();
    path
}

fn processed(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in {out}"))
}

fn failed(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_pgbench_drop_nothing() {
    let with_all = |c: &TestCluster, p: &Ports| config(c, p, &[0, 1, 2], 10, "");
    let r = Reloading::start(with_all).await;
    blocking(|| r.cluster.pgbench_init(1)).unwrap();
    let (a, b) = (
        with_all(&r.cluster, &r.ports),
        config(&r.cluster, &r.ports, &[0, 1], 6, ""),
    );
    let guard = reads_on_replicas(r.dir.path());
    let guard = guard.to_str().unwrap();
    let runs = [
        (
            "session reader",
            r.ports.s_reader,
            vec!["-c", "4", "-T", "12", "-f", guard],
        ),
        (
            "session writer",
            r.ports.s_writer,
            vec!["-c", "2", "-T", "12", "-N"],
        ),
        (
            "transaction reader",
            r.ports.t_reader,
            vec!["-c", "4", "-T", "12", "-f", guard],
        ),
        (
            "transaction writer",
            r.ports.t_writer,
            vec!["-c", "2", "-T", "12", "-N"],
        ),
    ];
    let benches: Vec<_> = runs
        .iter()
        .map(|(name, addr, args)| (*name, pgbench_spawn(*addr, args)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Server connections to the members listed in both configurations.
    let before: Vec<BTreeSet<i64>> =
        blocking(|| (0..2).map(|n| app_backends(&r.cluster, n)).collect());
    assert!(before.iter().all(|pids| !pids.is_empty()), "{before:?}");
    // The transaction cluster's objects for the members in both configurations.
    let t = r.cluster_state("t");
    let kept_nodes: Vec<_> = t.nodes().iter().take(2).cloned().collect();
    let kept_pools = t.pools.all();
    let xacts_before: u64 = kept_pools.iter().map(|p| p.stats.snapshot().xacts).sum();
    let mut applied = 0;
    for i in 0..50 {
        let text = if i % 2 == 0 { &b } else { &a };
        let reloaded = r.reload(text).await.expect("the reload applies");
        assert!(!reloaded.changes.is_empty());
        applied += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let after: Vec<BTreeSet<i64>> =
        blocking(|| (0..2).map(|n| app_backends(&r.cluster, n)).collect());
    for (node, (was, now)) in before.iter().zip(&after).enumerate() {
        let lost: Vec<_> = was.difference(now).collect();
        assert!(
            lost.is_empty(),
            "node {node} lost server connections {lost:?}"
        );
    }
    // Members, their health and role, pools and statistics carried on.
    for node in &kept_nodes {
        assert!(
            t.nodes().iter().any(|n| Arc::ptr_eq(n, node)),
            "{} kept",
            node.addr
        );
        assert_eq!(node.health(), Health::Up);
    }
    let pools_now = t.pools.all();
    for pool in kept_pools.iter().filter(|p| p.key.node < 2) {
        assert!(
            pools_now.iter().any(|p| Arc::ptr_eq(p, pool)),
            "{:?} kept",
            pool.key
        );
    }
    let xacts_after: u64 = kept_pools.iter().map(|p| p.stats.snapshot().xacts).sum();
    assert!(
        xacts_after > xacts_before,
        "{xacts_before} -> {xacts_after}"
    );
    let mut total = 0;
    for (name, child) in benches {
        let out = blocking(|| pgbench_finish(child));
        let (done, errors) = (processed(&out), failed(&out));
        println!("{name}: {done} transactions, {errors} failed");
        assert_eq!(errors, 0, "{name}: {out}");
        assert!(done > 0, "{name}: {out}");
        total += done;
    }
    println!(
        "{applied} reloads, {total} transactions, 0 errors; kept server connections: {before:?}"
    );
    let state = &r.fleet.state;
    assert_eq!(
        state
            .reloads
            .applied
            .load(std::sync::atomic::Ordering::Relaxed),
        50
    );
    // The last configuration lists node 2 again: it serves once its checks pass.
    let t = r.cluster_state("t");
    wait_for(
        "node 2 back in the readers",
        Duration::from_secs(10),
        || t.nodes().len() == 3 && t.nodes().iter().all(|n| t.member_state(n) == "serving"),
    )
    .await;
    let pool_sizes: BTreeSet<usize> = t
        .pools
        .all()
        .iter()
        .map(|p| p.config().default_pool_size)
        .collect();
    assert_eq!(pool_sizes, BTreeSet::from([10]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_and_the_running_one_stays() {
    let good = |c: &TestCluster, p: &Ports| config(c, p, &[0, 1, 2], 10, "");
    let r = Reloading::start(good).await;
    let client = app(r.ports.t_reader).await;
    let valid = good(&r.cluster, &r.ports);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cases = [
        (valid.replace("[general]", "[general\n"), "pgfleet.toml"),
        (
            valid.replace(
                "default_pool_size = 10",
                "default_pool_size = 10\nmin_pool_size = 11",
            ),
            "min_pool_size",
        ),
        (
            valid.clone()
                + &format!(
                    "\n[clusters.t.endpoints.extra]\nlisten = \"{}\"\nrole = \"any\"\n",
                    taken.local_addr().unwrap()
                ),
            "clusters.t.endpoints.extra.listen",
        ),
        (
            valid.replace(
                "auth_file = \"userlist.txt\"",
                "auth_file = \"missing.txt\"",
            ),
            "missing.txt",
        ),
    ];
    for (text, named) in &cases {
        let e = r
            .reload(text)
            .await
            .expect_err("an invalid configuration is refused");
        let e = format!("{e:#}");
        assert!(e.contains(named), "the error names {named}: {e}");
        client
            .batch_execute("select 1")
            .await
            .expect("the client goes on");
    }
    // The console reports the refusal with the reason.
    std::fs::write(&r.path, &cases[1].0).unwrap();
    let (ok, out) = blocking(|| console(r.ports.admin, "app", "app", "RELOAD"));
    assert!(!ok && out.contains("min_pool_size"), "{out}");
    assert_eq!(
        r.fleet
            .state
            .reloads
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    // Nothing changed: the extra endpoint's address stays free for its owner, and the
    // running configuration is the first one.
    let current = r.fleet.state.current.load();
    assert!(!current.config.clusters["t"].endpoints.contains_key("extra"));
    assert_eq!(current.config.clusters["t"].pool.min_pool_size, 0);
    drop(taken);
    client.batch_execute("select 1").await.unwrap();
    let fresh = app(r.ports.s_writer).await;
    fresh.batch_execute("select 1").await.unwrap();
    // A valid one applies, and the console lists what changed.
    std::fs::write(
        &r.path,
        valid.replace("default_pool_size = 10", "default_pool_size = 12"),
    )
    .unwrap();
    let (ok, out) = blocking(|| console(r.ports.admin, "app", "app", "RELOAD"));
    assert!(ok && out.contains("NOTICE:  cluster s changed"), "{out}");
    assert_eq!(r.cluster_state("t").config().pool.default_pool_size, 12);
    client.batch_execute("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_clusters_added_and_removed_by_reload() {
    let base = |c: &TestCluster, p: &Ports| config(c, p, &[0, 1, 2], 10, "");
    let r = Reloading::start(base).await;
    let (c, p) = (&r.cluster, &r.ports);
    // A new endpoint listens at once; a new cluster serves once its members are up.
    let u_writer = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let u = format!(
        "\n[clusters.t.endpoints.extra]\nlisten = \"{}\"\nrole = \"any\"\n\n[clusters.u]\nhosts = [\"{}\"]\nhealth_user = \"pgcheck\"\nhealth_interval = \"250ms\"\ndrain_timeout = \"1s\"\n\n[clusters.u.endpoints.writer]\nlisten = \"{u_writer}\"\nrole = \"primary\"\n",
        p.extra,
        c.addr(0),
    );
    let reloaded = r.reload(&(base(c, p) + &u)).await.unwrap();
    println!("{:?}", reloaded.changes);
    assert!(
        reloaded.changes.iter().any(|l| l == "cluster u added"),
        "{:?}",
        reloaded.changes
    );
    assert!(
        reloaded
            .changes
            .iter()
            .any(|l| l == "endpoint t.extra added"),
        "{:?}",
        reloaded.changes
    );
    app(p.extra).await.batch_execute("select 1").await.unwrap();
    let on_u = app(u_writer).await;
    on_u.batch_execute("select 1").await.unwrap();
    // Clients of the session reader and of cluster u stay through the reload that
    // removes them; new clients are refused.
    let on_reader = app(p.s_reader).await;
    let pid = backend_pid(&on_reader).await;
    let without = config(c, p, &[0, 1, 2], 10, "").replace(
        &format!(
            "[clusters.s.endpoints.reader]\nlisten = \"{}\"\nrole = \"replica\"\n",
            p.s_reader
        ),
        "",
    );
    let reloaded = r.reload(&without).await.unwrap();
    assert!(
        reloaded
            .changes
            .iter()
            .any(|l| l == "endpoint s.reader removed"),
        "{:?}",
        reloaded.changes
    );
    assert!(
        reloaded.changes.iter().any(|l| l == "cluster u removed"),
        "{:?}",
        reloaded.changes
    );
    assert!(
        connect(p.s_reader, "app", "app").await.is_err(),
        "a removed endpoint accepts no client"
    );
    assert!(
        connect(u_writer, "app", "app").await.is_err(),
        "a removed cluster accepts no client"
    );
    assert!(connect(p.extra, "app", "app").await.is_err());
    assert_eq!(
        backend_pid(&on_reader).await,
        pid,
        "the session goes on, on its server connection"
    );
    on_u.batch_execute("select 1").await.unwrap();
    // After drain_timeout (2 s for s, 1 s for u), the clients left are ended.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let e = on_reader.batch_execute("select 1").await.unwrap_err();
    assert!(e.is_closed() || sqlstate(&e) == "57P01", "{e:?}");
    let e = on_u.batch_execute("select 1").await.unwrap_err();
    assert!(
        e.is_closed() || sqlstate(&e) == "57P01" || sqlstate(&e) == "08006",
        "{e:?}"
    );
    // The other endpoints never noticed.
    app(p.s_writer)
        .await
        .batch_execute("select 1")
        .await
        .unwrap();
    app(p.t_reader)
        .await
        .batch_execute("select 1")
        .await
        .unwrap();
    // The removed endpoint's address can be configured again. A new admin_listen
    // waits for a restart: the console stays where it is, and the reload says so.
    let moved = base(c, p).replace(&p.admin.to_string(), "127.0.0.1:1");
    let reloaded = r.reload(&moved).await.unwrap();
    assert!(
        reloaded
            .warnings
            .iter()
            .any(|w| w.contains("admin_listen changes on restart only")),
        "{:?}",
        reloaded.warnings
    );
    let (ok, out) = blocking(|| console(p.admin, "app", "app", "SHOW VERSION"));
    assert!(ok, "{out}");
    assert!(
        reloaded
            .changes
            .iter()
            .any(|l| l == "endpoint s.reader added"),
        "{:?}",
        reloaded.changes
    );
    app(p.s_reader)
        .await
        .batch_execute("select 1")
        .await
        .unwrap();
}
