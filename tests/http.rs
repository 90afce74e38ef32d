//! The HTTP side on `http_listen`: `/healthz` and `/readyz` as a load balancer sees them,
//! and `/metrics` read by Prometheus' own parser. The status page: `tests/status_page.rs`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{get, request};
use common::*;
use pgfleet::cluster::Health;

const HTTP: &str = "http_listen = \"127.0.0.1:0\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_naming_the_reader_while_both_replicas_are_down() {
    let s = setup(2, HTTP, "", "").await;
    let http = s.fleet.http.expect("http_listen is served");

    let r = get(http, "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = get(http, "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
    let r = request(http, "HEAD", "/healthz", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(get(http, "/nowhere").await.status, 404);
    let r = request(http, "POST", "/readyz", "Content-Length: 0\r\n").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");

    blocking(|| {
        s.cluster.stop(1).unwrap();
        s.cluster.stop(2).unwrap();
    });
    let main = s.main();
    wait_for("both replicas are down", Duration::from_secs(10), || {
        main.nodes()[1..].iter().all(|n| n.health() == Health::Down)
    })
    .await;
    let r = get(http, "/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("main.reader"), "{}", r.body);
    // The writer and `any` still have the primary.
    assert!(!r.body.contains("main.writer"), "{}", r.body);
    assert!(!r.body.contains("main.any"), "{}", r.body);
    // The process is alive all the same.
    assert_eq!(get(http, "/healthz").await.status, 200);

    blocking(|| {
        s.cluster.start_node(1).unwrap();
        s.cluster.start_node(2).unwrap();
    });
    let limit = Duration::from_secs(30);
    let start = Instant::now();
    loop {
        let r = get(http, "/readyz").await;
        if r.status == 200 {
            assert_eq!(r.body, "ready\n");
            break;
        }
        assert!(
            start.elapsed() < limit,
            "readyz still {} after the replicas came back: {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sample as Prometheus' Python client parses it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    /// The metric family's name, type and unit.
    family: String,
    #[serde(rename = "type")]
    kind: String,
    unit: String,
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses an exposition with `prometheus_client`'s parser for `format` (`text` or
/// `openmetrics`); fails on anything the parser rejects.
fn parse_metrics(text: &str, format: &str) -> Vec<Sample> {
    const SCRIPT: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "unit": fam.unit,
                    "name": s.name, "labels": s.labels, "value": s.value})
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_owned();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the one sample `name` with (at least) `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

fn kind<'a>(samples: &'a [Sample], name: &str) -> (&'a str, &'a str) {
    let s = samples.iter().find(|s| s.name == name).unwrap();
    (s.kind.as_str(), s.unit.as_str())
}

/// `/metrics` in both formats, each parsed by its parser, with checks on the formats.
async fn scrape(http: SocketAddr) -> Vec<(&'static str, Vec<Sample>)> {
    let plain = get(http, "/metrics").await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n";
    let open = request(http, "GET", "/metrics", accept).await;
    assert_eq!(open.status, 200);
    assert!(
        open.headers["content-type"].starts_with("application/openmetrics-text"),
        "{:?}",
        open.headers
    );
    assert!(open.body.ends_with("# EOF\n"));
    let mut out = Vec::new();
    for (format, body) in [("text", &plain.body), ("openmetrics", &open.body)] {
        let m = parse_metrics(body, format);
        assert_eq!(kind(&m, "pgfleet_pool_transactions_total").0, "counter");
        assert_eq!(kind(&m, "pgfleet_pool_wait_seconds_count").0, "histogram");
        assert_eq!(kind(&m, "pgfleet_reloads_total").0, "counter");
        assert_eq!(kind(&m, "pgfleet_member_up").0, "gauge");
        if format == "openmetrics" {
            assert_eq!(kind(&m, "pgfleet_member_lag_seconds"), ("gauge", "seconds"));
            let sent = m
                .iter()
                .find(|x| x.name == "pgfleet_pool_sent_bytes_total")
                .unwrap();
            assert_eq!(
                (sent.family.as_str(), sent.kind.as_str(), sent.unit.as_str()),
                ("pgfleet_pool_sent_bytes", "counter", "bytes")
            );
        }
        out.push((format, m));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_clients_members_and_pools_to_prometheus_parsers() {
    let s = setup(2, HTTP, "", "").await;
    let http = s.fleet.http.expect("http_listen is served");
    let writer = app(s.addr("writer")).await;
    for _ in 0..5 {
        writer.simple_query("select 1").await.unwrap();
    }
    let reader = app(s.addr("reader")).await;
    for _ in 0..3 {
        reader.simple_query("select 1").await.unwrap();
    }
    let reader_port = whereami(&reader).await.1;
    let writer_addr = s.cluster.addr(0).to_string();
    let reader_addr = format!("127.0.0.1:{reader_port}");
    let pool_of = |addr: &str| -> Vec<(&'static str, String)> {
        vec![
            ("cluster", "main".into()),
            ("member", addr.to_owned()),
            ("database", "app".into()),
            ("user", "app".into()),
        ]
    };
    let pool_value = |m: &[Sample], name: &str, addr: &str, extra: &[(&'static str, &str)]| {
        let mut labels: Vec<(&str, String)> = pool_of(addr);
        labels.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(m, name, &labels)
    };

    // While both clients are connected (session mode: each holds its member).
    for (format, m) in scrape(http).await {
        assert_eq!(value(&m, "pgfleet_clients_connected", &[]), 2.0, "{format}");
        assert_eq!(value(&m, "pgfleet_clients_max", &[]), 10000.0);
        for ep in ["reader", "writer", "any"] {
            let labels = [("cluster", "main"), ("endpoint", ep)];
            assert_eq!(value(&m, "pgfleet_endpoint_ready", &labels), 1.0);
        }
        for n in 0..3 {
            let addr = s.cluster.addr(n).to_string();
            let member = [("cluster", "main"), ("member", addr.as_str())];
            let with = |k: &'static str, v: &'static str| {
                [("cluster", "main"), ("member", addr.as_str()), (k, v)]
            };
            assert_eq!(value(&m, "pgfleet_member_up", &member), 1.0);
            let role = if n == 0 { "primary" } else { "replica" };
            assert_eq!(value(&m, "pgfleet_member_role", &with("role", role)), 1.0);
            let other = if n == 0 { "replica" } else { "primary" };
            assert_eq!(value(&m, "pgfleet_member_role", &with("role", other)), 0.0);
            assert_eq!(
                value(&m, "pgfleet_member_state", &with("state", "serving")),
                1.0
            );
            assert_eq!(
                value(&m, "pgfleet_member_state", &with("state", "out")),
                0.0
            );
            assert_eq!(value(&m, "pgfleet_member_draining", &member), 0.0);
            let lag = value(&m, "pgfleet_member_lag_seconds", &member);
            assert!((0.0..5.0).contains(&lag), "lag {lag}");
            assert!(value(&m, "pgfleet_member_lag_bytes", &member) >= 0.0);
            let in_use = n == 0 || s.cluster.port(n) == reader_port;
            let expected = if in_use { 1.0 } else { 0.0 };
            let sessions = value(&m, "pgfleet_member_sessions", &member);
            assert_eq!(sessions, expected, "{addr}");
            let conns = value(&m, "pgfleet_member_server_connections", &member);
            assert_eq!(conns, expected, "{addr}");
        }
        for addr in [&writer_addr, &reader_addr] {
            let conns = "pgfleet_pool_server_connections";
            assert_eq!(pool_value(&m, conns, addr, &[("state", "active")]), 1.0);
            assert_eq!(pool_value(&m, conns, addr, &[("state", "idle")]), 0.0);
            assert_eq!(
                pool_value(&m, "pgfleet_pool_checkouts_total", addr, &[]),
                1.0
            );
            assert!(pool_value(&m, "pgfleet_pool_server_connections_max", addr, &[]) > 0.0);
        }
    }

    // A session's traffic reaches the pool's counters in batches and when it ends.
    drop((writer, reader));
    let fleet = &s.fleet;
    // A session's server connection is reset (DISCARD ALL) after the client has gone:
    // wait for both to be back in their pools too.
    let main = main_cluster(fleet);
    wait_for("both clients gone", Duration::from_secs(5), || {
        fleet.state.client_slots.in_use() == 0 && main.pools.all().iter().all(|p| p.active() == 0)
    })
    .await;
    for (format, m) in scrape(http).await {
        assert_eq!(value(&m, "pgfleet_clients_connected", &[]), 0.0, "{format}");
        for (addr, n) in [(&writer_addr, 5.0), (&reader_addr, 3.0)] {
            // tokio-postgres' own startup queries come on top.
            let xacts = pool_value(&m, "pgfleet_pool_transactions_total", addr, &[]);
            let queries = pool_value(&m, "pgfleet_pool_queries_total", addr, &[]);
            assert!(xacts >= n && queries >= n, "{addr}: {xacts} {queries}");
            assert!(pool_value(&m, "pgfleet_pool_received_bytes_total", addr, &[]) > 0.0);
            assert!(pool_value(&m, "pgfleet_pool_sent_bytes_total", addr, &[]) > 0.0);
            let wait = pool_value(&m, "pgfleet_pool_wait_seconds_sum", addr, &[]);
            assert!((0.0..10.0).contains(&wait), "wait {wait}");
            // Every checkout is in the histogram, in the +Inf bucket at least.
            let checkouts = pool_value(&m, "pgfleet_pool_checkouts_total", addr, &[]);
            let count = pool_value(&m, "pgfleet_pool_wait_seconds_count", addr, &[]);
            let inf = pool_value(
                &m,
                "pgfleet_pool_wait_seconds_bucket",
                addr,
                &[("le", "+Inf")],
            );
            assert!(
                checkouts >= 1.0 && count == checkouts && inf == count,
                "{checkouts} {count} {inf}"
            );
            let conns = "pgfleet_pool_server_connections";
            assert_eq!(pool_value(&m, conns, addr, &[("state", "active")]), 0.0);
            assert_eq!(pool_value(&m, conns, addr, &[("state", "idle")]), 1.0);
        }
        let writer = [("cluster", "main"), ("endpoint", "writer")];
        assert!(value(&m, "pgfleet_endpoint_transactions_total", &writer) >= 5.0);
        assert!(value(&m, "pgfleet_endpoint_queries_total", &writer) >= 5.0);
        let member = [("cluster", "main"), ("member", writer_addr.as_str())];
        assert_eq!(value(&m, "pgfleet_member_sessions", &member), 0.0);
        // The idle server connection stays open.
        assert_eq!(value(&m, "pgfleet_member_server_connections", &member), 1.0);
    }

    // Errors pgfleet sends are counted by SQLSTATE.
    assert!(connect(s.addr("reader"), "app", "wrong").await.is_err());
    for (format, m) in scrape(http).await {
        let labels = [("cluster", "main"), ("sqlstate", "28P01")];
        let n = value(&m, "pgfleet_client_errors_total", &labels);
        assert_eq!(n, 1.0, "{format}");
    }
}
