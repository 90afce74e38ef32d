//! TLS between pgfleet and PostgreSQL: each `server_tls_sslmode` against servers with
//! and without TLS, for pooled connections and health checks alike.

mod common;

use std::time::Duration;

use common::certs::Pki;
use pgfleet::cluster::Health;
use pgfleet::harness::TestCluster;
use pgfleet::{config, Fleet};

/// Whether the session's own server connection is encrypted.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    let sql = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Starts pgfleet on `cluster` with `general` lines, without waiting for the nodes to
/// come up (they may not, by design).
async fn start(cluster: &TestCluster, general: &str) -> (Fleet, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let users = common::blocking(|| common::userlist(cluster));
    std::fs::write(dir.path().join("userlist.txt"), users).unwrap();
    let text = common::config_text(cluster, general, "", "query_wait_timeout = \"2s\"");
    let path = dir.path().join("pgfleet.toml");
    std::fs::write(&path, text).unwrap();
    let fleet = Fleet::start(config::load(&path).unwrap()).await.unwrap();
    (fleet, dir)
}

/// Waits until every node has failed a health check (nodes start `Unknown`).
async fn all_fail_their_checks(fleet: &Fleet, why: &str) {
    let cluster = common::main_cluster(fleet);
    common::wait_for(why, Duration::from_secs(15), || {
        cluster.nodes().iter().all(|n| n.health() == Health::Down)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_pooled_connections_and_health_checks() {
    let pki = Pki::new();
    let server = pki.issue("server", &["localhost"]);
    let cluster = common::blocking(|| TestCluster::start(1)).unwrap();
    common::blocking(|| cluster.enable_tls(&server.cert_pem, &server.key_pem, None)).unwrap();
    let general = "server_tls_sslmode = \"require\"\nauth_type = \"md5\"";
    let (fleet, _dir) = common::start_fleet(&cluster, general, "", "").await;
    // `app` has a SCRAM secret: pgfleet logs in with the client's keys and, since the
    // server offers SCRAM-SHA-256-PLUS over TLS, binds the exchange to the channel (a
    // wrong binding would fail the login).
    for endpoint in ["reader", "writer"] {
        let client = common::app(fleet.endpoints[&format!("main.{endpoint}")]).await;
        assert!(encrypted(&client).await, "{endpoint}");
    }
    let client = common::connect(fleet.endpoints["main.reader"], "app_md5", "app_md5")
        .await
        .expect("md5 user");
    assert!(encrypted(&client).await);
    // SHOW SERVERS' `tls` column.
    let nodes = common::main_cluster(&fleet).nodes();
    let servers: Vec<_> = nodes.iter().flat_map(|n| n.sockets.list()).collect();
    assert!(!servers.is_empty());
    assert!(
        servers.iter().all(|s| s.tls.starts_with("TLSv1.")),
        "{servers:?}"
    );
    let sql = "select count(*) filter (where ssl), count(*) from pg_stat_ssl \
               join pg_stat_activity using (pid) \
               where application_name = 'pgfleet health check'";
    for node in 0..cluster.len() {
        let counts = common::blocking(|| cluster.psql(node, sql)).unwrap();
        let (tls, all) = counts.split_once('|').unwrap();
        assert!(tls == all && all != "0", "node {node}: {counts}");
    }
    drop(fleet);

    // The same servers with prefer (the default) and disable.
    for (general, want) in [("", true), ("server_tls_sslmode = \"disable\"", false)] {
        let (fleet, _dir) = common::start_fleet(&cluster, general, "", "").await;
        let client = common::app(fleet.endpoints["main.reader"]).await;
        assert_eq!(encrypted(&client).await, want, "{general}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_to_plaintext_and_require_does_not() {
    let cluster = common::blocking(|| TestCluster::start(1)).unwrap();
    // The default, prefer: servers without TLS are used in plaintext.
    let (fleet, _dir) = common::start_fleet(&cluster, "", "", "").await;
    let client = common::app(fleet.endpoints["main.reader"]).await;
    assert!(!encrypted(&client).await);
    drop(fleet);

    let (fleet, _dir) = start(&cluster, "server_tls_sslmode = \"require\"").await;
    all_fail_their_checks(&fleet, "nodes without TLS fail require").await;
    let err = common::connect(fleet.endpoints["main.reader"], "app", "app")
        .await
        .expect_err("no node can be used");
    assert_eq!(common::sqlstate(&err), "57P03", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_chain_and_verify_full_the_name() {
    let pki = Pki::new();
    // A certificate that names `localhost`, not `127.0.0.1`.
    let server = pki.issue("server", &["localhost"]);
    let cluster = common::blocking(|| TestCluster::start(1)).unwrap();
    common::blocking(|| cluster.enable_tls(&server.cert_pem, &server.key_pem, None)).unwrap();
    let ca = pki.ca_file().display().to_string();

    let general = format!("server_tls_sslmode = \"verify-ca\"\nserver_tls_ca_file = \"{ca}\"");
    let (fleet, _dir) = common::start_fleet(&cluster, &general, "", "").await;
    let client = common::app(fleet.endpoints["main.reader"]).await;
    assert!(encrypted(&client).await);
    drop(client);
    drop(fleet);

    // Another CA: the chain does not verify.
    let other = Pki::new();
    let general = format!(
        "server_tls_sslmode = \"verify-ca\"\nserver_tls_ca_file = \"{}\"",
        other.ca_file().display()
    );
    let (fleet, _dir) = start(&cluster, &general).await;
    all_fail_their_checks(&fleet, "another CA's certificate fails verify-ca").await;
    drop(fleet);

    let general = format!("server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{ca}\"");
    let (fleet, _dir) = start(&cluster, &general).await;
    all_fail_their_checks(&fleet, "127.0.0.1 is not localhost: verify-full fails").await;
    let err = common::connect(fleet.endpoints["main.reader"], "app", "app")
        .await
        .expect_err("no node can be used");
    assert_eq!(common::sqlstate(&err), "57P03", "{err}");
    drop(fleet);

    // The same servers named as the certificate names them.
    let hosts: Vec<String> = (0..cluster.len())
        .map(|n| format!("\"localhost:{}\"", cluster.port(n)))
        .collect();
    let members = format!("discovery = \"static\"\nhosts = [{}]", hosts.join(", "));
    let (fleet, _dir) = common::start_fleet(&cluster, &general, &members, "").await;
    let client = common::app(fleet.endpoints["main.reader"]).await;
    assert!(encrypted(&client).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_shown_to_servers_that_ask() {
    let pki = Pki::new();
    let server = pki.issue("server", &["localhost"]);
    let ca_pem = std::fs::read_to_string(pki.ca_file()).unwrap();
    let cluster = common::blocking(|| TestCluster::start(1)).unwrap();
    common::blocking(|| cluster.enable_tls(&server.cert_pem, &server.key_pem, Some(&ca_pem)))
        .unwrap();

    // No certificate: the servers refuse every password login, health checks included.
    let (fleet, _dir) = start(&cluster, "server_tls_sslmode = \"require\"").await;
    all_fail_their_checks(&fleet, "logins without a client certificate fail").await;
    drop(fleet);

    let mine = pki.issue("pgfleet-client", &["pgfleet"]);
    let general = format!(
        "server_tls_sslmode = \"require\"\nserver_tls_cert_file = \"{}\"\nserver_tls_key_file = \"{}\"",
        mine.cert_file.display(),
        mine.key_file.display()
    );
    let (fleet, _dir) = common::start_fleet(&cluster, &general, "", "").await;
    let client = common::app(fleet.endpoints["main.reader"]).await;
    assert!(encrypted(&client).await);
}
