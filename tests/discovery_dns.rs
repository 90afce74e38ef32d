//! `discovery = "dns"` against a real name server: dnsmasq on 127.0.0.1, with A/AAAA
//! records from a hosts directory (re-read on change) and SRV records from its
//! configuration (changed by a restart on the same port). Records live 1s (`local-ttl`).

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dnsmasq::{free_port, Dnsmasq};
use pgfleet::config::Cluster;
use pgfleet::discovery::{self, Context, Source};

/// A poll gives up after 5s; this leaves room for a slow machine.
const POLL_LIMIT: Duration = Duration::from_secs(7);

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

/// A UDP socket and a TCP listener on one loopback port that never answer. The
/// port is the TCP listener's ephemeral one; when its UDP twin is taken (other
/// tests run beside this one), another ephemeral port is tried.
fn silent_server() -> (UdpSocket, TcpListener, SocketAddr) {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        if let Ok(udp) = UdpSocket::bind(addr) {
            return (udp, tcp, addr);
        }
    }
    panic!("no loopback port free for both UDP and TCP in 100 tries");
}

#[tokio::test]
async fn an_unreachable_name_server_fails_the_poll_in_time() {
    // Nothing listens on this port: the datagram is refused.
    let refused = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // This one listens and never answers, as a hung server.
    let (_udp, _tcp, silent) = silent_server();
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
