//! `discovery = "dns"` against a real name server: dnsmasq on 127.0.0.1, with A/AAAA
//! records from a hosts directory (re-read on change) and SRV records from its
//! configuration (changed by a restart on the same port). Records live 1s (`local-ttl`).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgfleet::config::Cluster;
use pgfleet::discovery::{self, Context, Source};

/// A poll gives up after 5s; this leaves room for a slow machine.
const POLL_LIMIT: Duration = Duration::from_secs(7);

/// A dnsmasq process serving `fleet.test` on 127.0.0.1, killed by pid on drop.
struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// dnsmasq on a free port, with `hosts` (hosts file lines) and `srv`
    /// (`srv-host=` values).
    fn start(hosts: &str, srv: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("hosts")).unwrap();
        let mut d = Dnsmasq {
            child: None,
            port: free_port(),
            dir,
        };
        d.set_hosts(hosts);
        d.run(srv);
        d
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Replaces the A/AAAA records; dnsmasq sees the new file through inotify.
    fn set_hosts(&self, lines: &str) {
        // Written aside, then renamed in, so dnsmasq never reads half a file.
        let tmp = self.dir.path().join("fleet.tmp");
        std::fs::write(&tmp, lines).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("hosts/fleet")).unwrap();
    }

    /// Stops dnsmasq and starts it again on the same port with other SRV records.
    fn restart(&mut self, srv: &[&str]) {
        self.stop();
        self.run(srv);
    }

    fn run(&mut self, srv: &[&str]) {
        let dir = self.dir.path();
        let mut conf = format!(
            "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
             local=/fleet.test/\nlocal-ttl=1\nhostsdir={hosts}\nlog-facility={log}\n\
             log-queries\npid-file=\n",
            port = self.port,
            hosts = dir.join("hosts").display(),
            log = log_path(dir).display(),
        );
        // As root dnsmasq would switch to a user that may not exist here.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user=root\ngroup=root\n");
        }
        for s in srv {
            conf.push_str(&format!("srv-host={s}\n"));
        }
        let conf_path = dir.join("dnsmasq.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new(dnsmasq_binary())
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf_path.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("dnsmasq runs (apt-get install dnsmasq-base)");
        let limit = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("dnsmasq exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < limit,
                "dnsmasq not listening: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(log_path(self.dir.path())).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("dnsmasq.log")
}

fn dnsmasq_binary() -> PathBuf {
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("dnsmasq"))
            .find(|p| p.exists())
    });
    // Debian puts it in /usr/sbin, which a user's PATH may lack.
    in_path.unwrap_or_else(|| "/usr/sbin/dnsmasq".into())
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The `dns` source of a cluster with these `hosts`, asking `server` (or the system's
/// name servers).
fn source(hosts: &[&str], server: Option<SocketAddr>) -> Arc<dyn Source> {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let server = server.map_or(String::new(), |s| format!("dns_server = \"{s}\"\n"));
    let text = format!(
        "discovery = \"dns\"\nhosts = [{}]\n{server}[endpoints]\n",
        hosts.join(", ")
    );
    let cluster: Cluster = toml::from_str(&text).unwrap();
    discovery::source(&cluster, &Context::default()).unwrap()
}

async fn members(source: &Arc<dyn Source>) -> anyhow::Result<Vec<String>> {
    let list = tokio::time::timeout(POLL_LIMIT, source.members())
        .await
        .expect("a poll ends within its bound")?;
    Ok(list.into_iter().map(|m| m.addr).collect())
}

/// Polls until the members are `want` (a change is due within the records' 1s TTL
/// plus dnsmasq's re-read); returns how long that took.
async fn poll_until(source: &Arc<dyn Source>, want: &[&str], dns: &Dnsmasq) -> Duration {
    let start = Instant::now();
    loop {
        let got = members(source).await;
        if matches!(&got, Ok(g) if g == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "members still {got:?}, want {want:?}; dnsmasq log:\n{}",
            dns.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const TWO_NODES: &str = "127.0.0.2 db.fleet.test\n127.0.0.3 db.fleet.test\n";

#[tokio::test]
async fn name_port_gives_one_member_per_address_and_follows_changes() {
    let dns = Dnsmasq::start(TWO_NODES, &[]);
    let src = source(&["db.fleet.test:5432"], Some(dns.addr()));
    assert_eq!(src.name(), "dns");
    let got = members(&src).await.unwrap();
    assert_eq!(got, ["127.0.0.2:5432", "127.0.0.3:5432"]);

    dns.set_hosts(&format!("{TWO_NODES}127.0.0.10 db.fleet.test\n"));
    let took = poll_until(
        &src,
        &["127.0.0.2:5432", "127.0.0.3:5432", "127.0.0.10:5432"],
        &dns,
    )
    .await;
    eprintln!("an added record was seen after {took:?}");

    dns.set_hosts("127.0.0.3 db.fleet.test\n127.0.0.10 db.fleet.test\n");
    let took = poll_until(&src, &["127.0.0.3:5432", "127.0.0.10:5432"], &dns).await;
    eprintln!("a removed record was gone after {took:?}");
}

#[tokio::test]
async fn aaaa_records_and_address_literals_join_one_sorted_list() {
    let dns = Dnsmasq::start("127.0.0.2 dual.fleet.test\n::1 dual.fleet.test\n", &[]);
    let hosts = [
        "[::1]:6432",
        "dual.fleet.test:5432",
        "127.0.0.9:5432",
        // Also an address of dual.fleet.test: listed once.
        "127.0.0.2:5432",
    ];
    let src = source(&hosts, Some(dns.addr()));
    let got = members(&src).await.unwrap();
    assert_eq!(
        got,
        [
            "127.0.0.2:5432",
            "127.0.0.9:5432",
            "[::1]:5432",
            "[::1]:6432"
        ]
    );
}

#[tokio::test]
async fn srv_name_gives_one_member_per_record_at_its_port() {
    let hosts = "127.0.0.1 node1.fleet.test\n127.0.0.1 node2.fleet.test\n\
                 127.0.0.5 node3.fleet.test\n";
    let two = [
        "_postgresql._tcp.fleet.test,node1.fleet.test,5433",
        "_postgresql._tcp.fleet.test,node2.fleet.test,5434",
    ];
    let mut dns = Dnsmasq::start(hosts, &two);
    let src = source(
        &["_postgresql._tcp.fleet.test", "node3.fleet.test:6000"],
        Some(dns.addr()),
    );
    let got = members(&src).await.unwrap();
    assert_eq!(got, ["127.0.0.1:5433", "127.0.0.1:5434", "127.0.0.5:6000"]);

    let three = [
        two[0],
        two[1],
        "_postgresql._tcp.fleet.test,node3.fleet.test,5435",
    ];
    dns.restart(&three);
    poll_until(
        &src,
        &[
            "127.0.0.1:5433",
            "127.0.0.1:5434",
            "127.0.0.5:5435",
            "127.0.0.5:6000",
        ],
        &dns,
    )
    .await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_fails_the_poll_naming_it() {
    let srv = ["_broken._tcp.fleet.test,gone.fleet.test,5432"];
    let dns = Dnsmasq::start(TWO_NODES, &srv);
    let cases = [
        (
            vec!["db.fleet.test:5432", "nope.fleet.test:5432"],
            "nope.fleet.test",
        ),
        (
            vec!["db.fleet.test:5432", "_missing._tcp.fleet.test"],
            "_missing._tcp.fleet.test",
        ),
        (vec!["_broken._tcp.fleet.test"], "gone.fleet.test"),
        // The name exists (it has an SRV record) but has no address.
        (
            vec!["_broken._tcp.fleet.test:5432"],
            "_broken._tcp.fleet.test:5432",
        ),
    ];
    for (hosts, name) in cases {
        let src = source(&hosts, Some(dns.addr()));
        let e = format!("{:#}", members(&src).await.unwrap_err());
        eprintln!("{e}");
        assert!(e.contains(name), "{e}");
        assert!(e.contains(&dns.addr().to_string()), "{e}");
    }
}

#[tokio::test]
async fn an_unreachable_name_server_fails_the_poll_in_time() {
    // Nothing listens on this port: the datagram is refused.
    let refused = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // This one listens and never answers, as a hung server.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = udp.local_addr().unwrap();
    let _tcp = TcpListener::bind(silent).unwrap();
    for server in [refused, silent] {
        let src = source(&["db.fleet.test:5432"], Some(server));
        let start = Instant::now();
        let e = format!("{:#}", members(&src).await.unwrap_err());
        eprintln!("{server}: {e} after {:?}", start.elapsed());
        assert!(e.contains("db.fleet.test"), "{e}");
        assert!(start.elapsed() < POLL_LIMIT);
    }
}

#[tokio::test]
async fn without_dns_server_the_system_configuration_answers() {
    // localhost is answered without a query (RFC 6761), so no name server is asked.
    let src = source(&["localhost.:5432"], None);
    let got = members(&src).await.unwrap();
    assert!(got.contains(&"127.0.0.1:5432".to_string()), "{got:?}");
}
