//! `pgfleet demo`: a local primary and replicas (the test harness), pgfleet in front,
//! and a live view of each node's role, health, sessions and transaction rate.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::harness::TestCluster;
use crate::{config, Fleet};

/// Options of `pgfleet demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Streaming replicas to start.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Reader endpoint (role = "replica").
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub reader: SocketAddr,
    /// Writer endpoint (role = "primary").
    #[arg(long, default_value = "127.0.0.1:6433")]
    pub writer: SocketAddr,
    /// pgbench scale of the sample data (pgbench_accounts has 100,000 rows per unit).
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// Stop by itself after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
}

/// The demo's configuration: one cluster with a reader and a writer endpoint.
pub fn config_text(hosts: &[String], reader: SocketAddr, writer: SocketAddr) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        r#"[general]
auth_file = "userlist.txt"
auth_type = "scram-sha-256"
stats_period = "60s"

[clusters.demo]
hosts = [{}]
health_user = "pgcheck"
health_interval = "1s"
health_timeout = "1s"

[clusters.demo.pool]
pool_mode = "session"
default_pool_size = 20

[clusters.demo.endpoints.reader]
listen = "{reader}"
role = "replica"
balance = "leastconn"

[clusters.demo.endpoints.writer]
listen = "{writer}"
role = "primary"
"#,
        hosts.join(", ")
    )
}

/// The demo's users: the harness's roles with their plaintext passwords.
pub const USERLIST: &str = "\"app\" \"app\"\n\"app_md5\" \"app_md5\"\n\"pgcheck\" \"pgcheck\"\n";

/// Runs the demo until Ctrl-C (or `--seconds`).
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let runtime = crate::runtime()?;
    // Caught from here on, so that Ctrl-C or SIGTERM (`kill`, `timeout`) at any point
    // stops the demo through the path below, which stops the servers it started,
    // instead of killing it and leaving them behind.
    let stops = {
        let _in = runtime.enter();
        Stops::new()?
    };
    println!(
        "Starting a PostgreSQL primary and {} streaming replicas...",
        args.replicas
    );
    let cluster = TestCluster::start(args.replicas).context("cannot start the demo cluster")?;
    println!("Loading pgbench data (scale {})...", args.scale);
    cluster.pgbench_init(args.scale)?;
    let dir = tempfile::Builder::new().prefix("pgfleet-demo-").tempdir()?;
    std::fs::write(dir.path().join("userlist.txt"), USERLIST)?;
    let config_path = dir.path().join("pgfleet.toml");
    std::fs::write(
        &config_path,
        config_text(&cluster.hosts(), args.reader, args.writer),
    )?;
    let loaded = config::load(&config_path)?;
    let result = runtime.block_on(serve(loaded, &cluster, &args, &config_path, stops));
    drop(runtime);
    println!("Stopping the demo cluster.");
    drop(cluster);
    result
}

async fn serve(
    loaded: config::Loaded,
    cluster: &TestCluster,
    args: &DemoArgs,
    config_path: &Path,
    mut stops: Stops,
) -> anyhow::Result<()> {
    let fleet = Fleet::start(loaded)
        .await
        .context("cannot start pgfleet (is the port free? see --reader/--writer)")?;
    let (r, w) = (args.reader, args.writer);
    println!("\npgfleet is running with {}\n", config_path.display());
    println!("  nodes:   {}", cluster.hosts().join("  "));
    println!(
        "  reader:  PGPASSWORD=app psql -h {} -p {} -U app app",
        r.ip(),
        r.port()
    );
    println!(
        "  writer:  PGPASSWORD=app psql -h {} -p {} -U app app",
        w.ip(),
        w.port()
    );
    println!(
        "  load:    PGPASSWORD=app pgbench -S -n -c 16 -j 2 -T 30 -h {} -p {} -U app app",
        r.ip(),
        r.port()
    );
    println!("\nPer node, every 2 s (Ctrl-C stops everything):");
    let started = Instant::now();
    let mut last: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stops.int.recv() => break,
            _ = stops.term.recv() => break,
        }
        print!("{}", figures(&fleet, &mut last));
        if args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
            break;
        }
    }
    fleet.stop();
    Ok(())
}

/// The signals that stop the demo: Ctrl-C (SIGINT) and SIGTERM.
struct Stops {
    int: Signal,
    term: Signal,
}

impl Stops {
    /// Catches both from now on (within a runtime's context).
    fn new() -> std::io::Result<Stops> {
        Ok(Stops {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// One block of lines: each node's role, health, lag, sessions per endpoint, server
/// connections and transactions per second since the previous block.
pub fn figures(fleet: &Fleet, last: &mut HashMap<String, (u64, Instant)>) -> String {
    let mut out = String::new();
    let topology = fleet.state.current.load();
    for cluster in &topology.clusters {
        let pools = cluster.pools.all();
        for node in cluster.nodes().iter() {
            let node_pools = pools.iter().filter(|p| p.key.node == node.index);
            let (xacts, conns) = node_pools.fold((0, 0), |(x, c), p| {
                (x + p.stats.snapshot().xacts, c + p.open())
            });
            let now = Instant::now();
            let rate = match last.insert(node.addr.clone(), (xacts, now)) {
                Some((before, at)) => {
                    (xacts - before.min(xacts)) as f64 / now.duration_since(at).as_secs_f64()
                }
                None => 0.0,
            };
            let sessions: Vec<String> = cluster
                .endpoints()
                .iter()
                .map(|e| format!("{}={}", e.name, node.sessions(e.slot)))
                .collect();
            let _ = writeln!(
                out,
                "  {:<16} {:<8} {:<5} lag {:>5}ms  sessions {:<22} server_conns {:<3} xact/s {:>8.0}",
                node.addr,
                node.role().as_str(),
                node.health().as_str(),
                node.lag().as_millis(),
                sessions.join(" "),
                conns,
                rate
            );
        }
    }
    out.push('\n');
    out
}
