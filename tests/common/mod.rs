//! What the integration tests share: a real cluster with pgfleet in front, and clients.
#![allow(dead_code)]

pub mod certs;
pub mod dnsmasq;
pub mod http;
pub mod raw;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pgfleet::cluster::{ClusterState, Health, NodeRole};
use pgfleet::harness::TestCluster;
use pgfleet::{config, Fleet};
use tokio_postgres::{Client, NoTls};

/// A cluster, pgfleet in front of it, and the folder holding pgfleet's files.
pub struct Setup {
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
    // Dropped last: pgfleet stops before the servers do.
    pub cluster: TestCluster,
}

/// Runs blocking harness calls without stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Starts `replicas` replicas and pgfleet with endpoints `reader` (replica), `writer`
/// (primary) and `any`, on free ports. `general` and `pool` are extra TOML lines for
/// those tables, `cluster` for `[clusters.main]`.
pub async fn setup(replicas: usize, general: &str, cluster_extra: &str, pool: &str) -> Setup {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let cluster = blocking(|| TestCluster::start(replicas)).expect("start the test cluster");
    let fleet_and_dir = start_fleet(&cluster, general, cluster_extra, pool).await;
    Setup {
        fleet: fleet_and_dir.0,
        dir: fleet_and_dir.1,
        cluster,
    }
}

/// The userlist: `app` with its stored SCRAM secret (pgfleet logs in with the client's
/// keys), `app_md5` with its md5 secret, `pgcheck` and `plain` in plaintext.
pub fn userlist(cluster: &TestCluster) -> String {
    let app = cluster.stored_secret("app").expect("app's secret");
    let md5 = cluster.stored_secret("app_md5").expect("app_md5's secret");
    format!(
        "\"app\" \"{app}\"\n\"app_md5\" \"{md5}\"\n\"pgcheck\" \"pgcheck\"\n\"trustuser\" \"\"\n"
    )
}

pub fn config_text(
    cluster: &TestCluster,
    general: &str,
    cluster_extra: &str,
    pool: &str,
) -> String {
    let mut pool = pool.to_owned();
    for default in [
        "server_connect_timeout = \"3s\"",
        "query_wait_timeout = \"10s\"",
    ] {
        let key = default.split(' ').next().unwrap_or_default();
        if !pool.contains(key) {
            pool = format!("{pool}\n{default}");
        }
    }
    let hosts: Vec<String> = cluster.hosts().iter().map(|h| format!("\"{h}\"")).collect();
    // A cluster_extra with its own member keys replaces the static host list.
    let hosts_line = if cluster_extra.contains("discovery =") {
        String::new()
    } else {
        format!("hosts = [{}]", hosts.join(", "))
    };
    format!(
        r#"[general]
auth_file = "userlist.txt"
stats_period = "1s"
{general}

[clusters.main]
{hosts_line}
health_user = "pgcheck"
health_interval = "250ms"
health_timeout = "1s"
{cluster_extra}

[clusters.main.pool]
{pool}

[clusters.main.endpoints.reader]
listen = "127.0.0.1:0"
role = "replica"

[clusters.main.endpoints.writer]
listen = "127.0.0.1:0"
role = "primary"

[clusters.main.endpoints.any]
listen = "127.0.0.1:0"
role = "any"
"#
    )
}

pub async fn start_fleet(
    cluster: &TestCluster,
    general: &str,
    cluster_extra: &str,
    pool: &str,
) -> (Fleet, tempfile::TempDir) {
    start_fleet_with_users(cluster, "", general, cluster_extra, pool).await
}

/// As `start_fleet`, with `extra_users` (`auth_file` lines) after the usual userlist.
pub async fn start_fleet_with_users(
    cluster: &TestCluster,
    extra_users: &str,
    general: &str,
    cluster_extra: &str,
    pool: &str,
) -> (Fleet, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("pgfleet-conf-")
        .tempdir()
        .unwrap();
    let users = blocking(|| userlist(cluster)) + extra_users;
    std::fs::write(dir.path().join("userlist.txt"), users).unwrap();
    let path = dir.path().join("pgfleet.toml");
    std::fs::write(&path, config_text(cluster, general, cluster_extra, pool)).unwrap();
    let loaded = config::load(&path).expect("valid test config");
    let fleet = Fleet::start(loaded).await.expect("pgfleet starts");
    let setup_cluster = main_cluster(&fleet);
    wait_for("every node checked", Duration::from_secs(15), || {
        setup_cluster
            .nodes()
            .iter()
            .all(|n| n.health() == Health::Up && n.role() != NodeRole::Unknown)
    })
    .await;
    (fleet, dir)
}

impl Setup {
    pub fn addr(&self, endpoint: &str) -> SocketAddr {
        self.fleet.endpoints[&format!("main.{endpoint}")]
    }

    pub fn main(&self) -> std::sync::Arc<ClusterState> {
        main_cluster(&self.fleet)
    }
}

pub fn main_cluster(fleet: &Fleet) -> std::sync::Arc<ClusterState> {
    fleet.state.current.load().clusters[0].clone()
}

/// A loopback port free now, never handed out twice in this process.
pub fn free_port() -> u16 {
    pgfleet::harness::free_port().unwrap()
}

/// Polls `cond` every 50 ms until it holds; panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects with tokio-postgres.
pub async fn connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("app")
        .connect_timeout(Duration::from_secs(20));
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

pub async fn app(addr: SocketAddr) -> Client {
    match connect(addr, "app", "app").await {
        Ok(c) => c,
        Err(e) => panic!("app cannot connect: {e:?}"),
    }
}

/// (in recovery, server port) as the session sees them.
pub async fn whereami(client: &Client) -> (bool, u16) {
    let row = client
        .query_one("select pg_is_in_recovery(), inet_server_port()", &[])
        .await
        .expect("whereami");
    (row.get(0), row.get::<_, i32>(1) as u16)
}

/// The SQLSTATE of a failed connect or query.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Runs a command; returns (success, stdout + stderr).
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().expect("command runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// psql against an endpoint, -XAtq, with ON_ERROR_STOP.
pub fn psql(addr: SocketAddr, user: &str, password: &str, sql: &str) -> (bool, String) {
    run(std::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", user, "-d", "app", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20"))
}

/// psql against the admin console (database `pgfleet`), -XAq, with ON_ERROR_STOP.
pub fn console(addr: SocketAddr, user: &str, password: &str, sql: &str) -> (bool, String) {
    run(std::process::Command::new("psql")
        .args(["-X", "-A", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", user, "-d", "pgfleet", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20"))
}

/// A StartupMessage for protocol 3.0.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(params.iter().copied(), &mut out)
        .unwrap();
    out.to_vec()
}

/// Logs in as trustuser (auth_type = "trust") over a raw socket, up to ReadyForQuery.
pub async fn raw_session(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&[("user", "trustuser"), ("database", "app")]))
        .await
        .unwrap();
    read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    sock
}

/// Reads until `marker` has arrived; returns everything read.
pub async fn read_until(sock: &mut tokio::net::TcpStream, marker: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    while !buf.windows(marker.len()).any(|w| w == marker) {
        let mut chunk = [0u8; 4096];
        let Ok(n) = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await
        else {
            panic!(
                "no {marker:?} within 5 s; got {:?}",
                String::from_utf8_lossy(&buf)
            );
        };
        let n = n.unwrap();
        assert!(n > 0, "closed before {marker:?}: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// Starts pgbench as `app` against `addr` with `args` (add bounds: -t or -T).
pub fn pgbench_spawn(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Child {
    std::process::Command::new("pgbench")
        .args(["-n", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "app"])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", "app")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pgbench runs")
}

/// Waits for pgbench to end; asserts it succeeded (no client aborted) and returns its
/// output.
pub fn pgbench_finish(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Transactions pgfleet has run on each node of `cluster` (in `nodes()` order) so far,
/// over all its pools.
pub fn routed(cluster: &ClusterState) -> Vec<u64> {
    let pools = cluster.pools.all();
    let nodes = cluster.nodes();
    let on = |n: &std::sync::Arc<pgfleet::cluster::Node>| {
        let mine = pools.iter().filter(|p| std::sync::Arc::ptr_eq(&p.node, n));
        mine.map(|p| p.stats.snapshot().xacts).sum()
    };
    nodes.iter().map(on).collect()
}

/// Commits in database `app` on each node of `cluster` over the next `period`.
pub async fn commits_during(cluster: &TestCluster, period: Duration) -> Vec<i64> {
    let commits = || -> Vec<i64> {
        (0..cluster.len())
            .map(|n| {
                let sql = "select xact_commit from pg_stat_database where datname = 'app'";
                cluster.psql(n, sql).unwrap().parse().unwrap()
            })
            .collect()
    };
    let before = blocking(commits);
    tokio::time::sleep(period).await;
    let after = blocking(commits);
    after.iter().zip(&before).map(|(a, b)| a - b).collect()
}

/// The pid of the server backend the client's session or transaction runs on.
pub async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}
