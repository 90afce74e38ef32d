//! Restarts and upgrades: a second `pgfleet run` on the same configuration takes the
//! listening sockets over with no client refused; SIGTERM drains, SIGINT stops now; a
//! successor that cannot start leaves the running pgfleet serving.

mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pgfleet::harness::TestCluster;

const BIN: &str = env!("CARGO_BIN_EXE_pgfleet");

/// A configuration on fixed free ports: endpoints, admin console and HTTP.
struct Conf {
    path: PathBuf,
    writer: SocketAddr,
    admin: SocketAddr,
    http: SocketAddr,
    /// The default control socket's path comes from it.
    lowest_port: u16,
}

fn write_conf(cluster: &TestCluster, dir: &Path, name: &str, general: &str) -> Conf {
    let port = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
    let (reader, writer, any, admin, http) = (port(), port(), port(), port(), port());
    let general = format!(
        "admin_listen = \"{admin}\"\nadmin_users = [\"app\"]\nhttp_listen = \"{http}\"\n{general}"
    );
    let text = config_text(cluster, &general, "", "pool_mode = \"transaction\"")
        .replacen("127.0.0.1:0", &reader.to_string(), 1)
        .replacen("127.0.0.1:0", &writer.to_string(), 1)
        .replacen("127.0.0.1:0", &any.to_string(), 1);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let lowest_port = [reader, writer, any, admin, http]
        .iter()
        .map(|a| a.port())
        .min()
        .unwrap();
    Conf {
        path,
        writer,
        admin,
        http,
        lowest_port,
    }
}

/// One `pgfleet run` process; killed (by its pid) if the test ends while it runs.
struct Pgfleet {
    child: Child,
    name: &'static str,
    notify: UnixDatagram,
    log: PathBuf,
}

impl Pgfleet {
    fn start(name: &'static str, config: &Path, dir: &Path) -> Pgfleet {
        let notify_path = dir.join(format!("{name}.notify"));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Pgfleet {
            child,
            name,
            notify,
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the notification `what` (READY=1, STOPPING=1).
    fn notified(&self, what: &str, limit: Duration) {
        self.notify.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 256];
        let n = self.notify.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "{}: no {what} within {limit:?} ({e}):\n{}",
                self.name,
                self.logs()
            )
        });
        assert_eq!(String::from_utf8_lossy(&buf[..n]), what, "{}", self.logs());
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Its exit status, if it exits within `limit`.
    fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pgfleet {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `addr` answers a query (the nodes' first health checks take a moment).
/// A one-replica cluster and a folder holding its userlist.
fn cluster_and_dir() -> (TestCluster, tempfile::TempDir) {
    let cluster = blocking(|| TestCluster::start(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let users = blocking(|| userlist(&cluster));
    std::fs::write(dir.path().join("userlist.txt"), users).unwrap();
    (cluster, dir)
}

/// Starts pgfleet `name` on `conf` and waits until it is ready and serves its writer.
async fn start_serving(name: &'static str, conf: &Conf, dir: &Path) -> Pgfleet {
    let p = Pgfleet::start(name, &conf.path, dir);
    blocking(|| p.notified("READY=1", Duration::from_secs(15)));
    serving(conf.writer).await;
    p
}

async fn serving(addr: SocketAddr) {
    let start = Instant::now();
    loop {
        let (ok, out) = blocking(|| psql(addr, "app", "app", "select 1"));
        if ok {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{addr}: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A session on `addr`, and its connection task's end (the error the server sent last).
async fn session(
    addr: SocketAddr,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    (client, tokio::spawn(conn))
}

/// Whether a TCP connect to `addr` is refused.
async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// A number from pgbench's report line starting with `label`.
fn pgbench_count(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_takes_over_with_no_client_refused() {
    let (cluster, dir) = cluster_and_dir();
    blocking(|| cluster.pgbench_init(1)).unwrap();
    let conf = write_conf(
        &cluster,
        dir.path(),
        "pgfleet.toml",
        "shutdown_timeout = \"20s\"",
    );
    let mut a = start_serving("a", &conf, dir.path()).await;

    // Persistent clients, and clients that connect anew for every transaction.
    let bench = ["-c", "4", "-j", "1", "-T", "6"];
    let persistent = pgbench_spawn(conf.writer, &bench);
    let reconnecting = pgbench_spawn(conf.writer, &[&["-C"][..], &bench].concat());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut b = Pgfleet::start("b", &conf.path, dir.path());
    let handed_at = Instant::now();
    blocking(|| b.notified("READY=1", Duration::from_secs(15)));
    blocking(|| a.notified("STOPPING=1", Duration::from_secs(5)));
    let mut totals = (0, 0);
    for (name, run) in [("persistent", persistent), ("-C", reconnecting)] {
        let out = blocking(|| pgbench_finish(run));
        let done = pgbench_count(&out, "number of transactions actually processed: ");
        let failed = pgbench_count(&out, "number of failed transactions: ");
        println!("pgbench {name}: {done} transactions, {failed} failed, no connection error");
        assert!(done > 0 && failed == 0, "{out}");
        totals = (totals.0 + done, totals.1 + failed);
    }
    println!(
        "pgbench total: {} transactions, {} failed",
        totals.0, totals.1
    );
    // A's clients are gone with pgbench: it exits well before shutdown_timeout.
    let status = blocking(|| a.exit_within(Duration::from_secs(25)));
    assert!(
        status.is_some_and(|s| s.success()),
        "a: {status:?}\n{}",
        a.logs()
    );
    println!(
        "a exited {:?} after the successor started",
        handed_at.elapsed()
    );
    assert!(
        a.logs().contains("handed the listening sockets over"),
        "{}",
        a.logs()
    );
    let logs = b.logs();
    assert!(logs.contains("took the listening sockets over"), "{logs}");
    assert!(!logs.contains("did not confirm"), "{logs}");
    // B serves every endpoint, the admin console and HTTP, and owns the control socket.
    let (ok, out) = blocking(|| psql(conf.writer, "app", "app", "select 1"));
    assert!(ok, "{out}");
    let (ok, out) = blocking(|| {
        run(Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
            .arg(conf.admin.port().to_string())
            .args(["-U", "app", "-d", "pgfleet", "-c", "show version"])
            .env("PGPASSWORD", "app"))
    });
    assert!(ok, "{out}");
    let health = common::http::get(conf.http, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(b.running());
    // The default path: in the runtime directory (the child has this environment).
    let control = pgfleet::takeover::runtime_dir().join(format!(".s.PGFLEET.{}", conf.lowest_port));
    assert!(control.exists(), "{}", control.display());
    // And B hands over in turn.
    let mut c = Pgfleet::start("c", &conf.path, dir.path());
    blocking(|| c.notified("READY=1", Duration::from_secs(15)));
    assert!(blocking(|| b.exit_within(Duration::from_secs(10))).is_some_and(|s| s.success()));
    let (ok, out) = blocking(|| psql(conf.writer, "app", "app", "select 1"));
    assert!(ok, "{out}");
    c.signal(libc::SIGINT);
    assert!(blocking(|| c.exit_within(Duration::from_secs(10))).is_some_and(|s| s.success()));
    assert!(!control.exists(), "{} left behind", control.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_sigint_stops_now() {
    let (cluster, dir) = cluster_and_dir();
    let conf = write_conf(
        &cluster,
        dir.path(),
        "pgfleet.toml",
        "shutdown_timeout = \"3s\"",
    );

    // SIGTERM: new clients are refused, the connected one goes on; it leaves, pgfleet exits.
    let mut a = start_serving("a", &conf, dir.path()).await;
    let (client, _conn) = session(conf.writer).await;
    a.signal(libc::SIGTERM);
    blocking(|| a.notified("STOPPING=1", Duration::from_secs(5)));
    wait_for_refused(conf.writer).await;
    assert!(refused(conf.admin).await && refused(conf.http).await);
    client.simple_query("select 1").await.unwrap();
    assert!(a.running());
    drop(client);
    let status = blocking(|| a.exit_within(Duration::from_secs(2)));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        a.logs()
    );

    // SIGTERM with a client that stays: it is disconnected (57P01) at shutdown_timeout.
    let mut b = start_serving("b", &conf, dir.path()).await;
    let (client, conn) = session(conf.writer).await;
    let signalled = Instant::now();
    b.signal(libc::SIGTERM);
    blocking(|| b.notified("STOPPING=1", Duration::from_secs(5)));
    client.simple_query("select 1").await.unwrap();
    let status = blocking(|| b.exit_within(Duration::from_secs(8)));
    let waited = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        b.logs()
    );
    assert!(
        waited >= Duration::from_millis(2900),
        "exited after {waited:?}"
    );
    println!("SIGTERM with a client connected: exited after {waited:?} (shutdown_timeout 3s)");
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sqlstate(&ended.unwrap_err()), "57P01");

    // A second SIGTERM during the drain, and SIGINT, stop at once.
    for (name, signals) in [
        ("c", &[libc::SIGTERM, libc::SIGTERM][..]),
        ("d", &[libc::SIGINT][..]),
    ] {
        let mut p = start_serving(name, &conf, dir.path()).await;
        let (client, conn) = session(conf.writer).await;
        client.simple_query("select 1").await.unwrap();
        let signalled = Instant::now();
        for sig in signals {
            p.signal(*sig);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let status = blocking(|| p.exit_within(Duration::from_secs(2)));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name}: {status:?}\n{}",
            p.logs()
        );
        println!("{name}: {signals:?} exited after {:?}", signalled.elapsed());
        let ended = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sqlstate(&ended.unwrap_err()), "57P01");
    }
}

async fn wait_for_refused(addr: SocketAddr) {
    let start = Instant::now();
    while !refused(addr).await {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{addr} still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_that_cannot_start_leaves_the_running_one_serving() {
    let (cluster, dir) = cluster_and_dir();
    let socket = dir.path().join("takeover.sock");
    let general = format!("takeover_socket = \"{}\"", socket.display());
    let conf = write_conf(&cluster, dir.path(), "pgfleet.toml", &general);
    let mut a = start_serving("a", &conf, dir.path()).await;
    assert!(socket.exists());

    // An invalid configuration: refused before anything is asked of A.
    let text = std::fs::read_to_string(&conf.path).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replacen("[general]", "[general]\nshutdown_timeout = \"soon\"", 1),
    )
    .unwrap();
    let mut b = Pgfleet::start("b", &bad, dir.path());
    let status = blocking(|| b.exit_within(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(b.logs().contains("soon"), "{}", b.logs());

    // A configuration with one more endpoint on a port someone else holds: B takes
    // A's sockets, fails to bind, and goes without telling A to stop.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!(
        "{text}\n[clusters.main.endpoints.extra]\nlisten = \"{}\"\nrole = \"any\"\n",
        taken.local_addr().unwrap()
    );
    let clash = dir.path().join("clash.toml");
    std::fs::write(&clash, extra).unwrap();
    let mut c = Pgfleet::start("c", &clash, dir.path());
    let status = blocking(|| c.exit_within(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(c.logs().contains("endpoints.extra.listen"), "{}", c.logs());
    assert!(a.running());
    let (ok, out) = blocking(|| psql(conf.writer, "app", "app", "select 1"));
    assert!(ok, "a stopped serving: {out}\n{}", a.logs());
    assert!(
        a.logs().contains("went away before taking over"),
        "{}",
        a.logs()
    );

    // A still hands over to a successor that starts.
    let mut d = Pgfleet::start("d", &conf.path, dir.path());
    blocking(|| d.notified("READY=1", Duration::from_secs(15)));
    let status = blocking(|| a.exit_within(Duration::from_secs(10)));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        a.logs()
    );
    let (ok, out) = blocking(|| psql(conf.writer, "app", "app", "select 1"));
    assert!(ok, "{out}");
    assert!(
        socket.exists(),
        "the successor's control socket was removed"
    );
    assert!(d.running());
}
