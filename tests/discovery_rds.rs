//! `discovery = "rds"` against a real RDS API: moto's server on loopback, with an
//! Aurora PostgreSQL cluster made through the API.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use aws_sdk_rds::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_rds::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use pgfleet::config;
use pgfleet::discovery::{self, Member, Source};

const REGION: &str = "us-east-1";

/// The source reads credentials from the standard chain, so they come from the
/// environment: set once, the same for every test here, before any source is built.
/// The chain is kept off this user's AWS files and off instance metadata (not a
/// loopback address).
fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "pgfleet-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "pgfleet-test");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/pgfleet-test/config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/pgfleet-test/credentials",
        );
        for var in [
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_RDS",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            std::env::remove_var(var);
        }
    });
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A moto server of its own for each test; killed by pid when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port().to_string();
        let args = ["-H", "127.0.0.1", "-p", &port];
        let spawn = |program: &str, pre: &[&str]| {
            Command::new(program)
                .args(pre)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect("start moto_server (pip install 'moto[server]')");
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server not listening in 30s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// A client of this server with its own credentials (not the environment's).
    fn client(&self) -> Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_rds::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("admin", "admin", None, None, "test"))
            .http_client(http)
            .build();
        Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The source a cluster table with `lines` builds.
fn source(lines: &str) -> Arc<dyn Source> {
    aws_env();
    let text = format!(
        "discovery = \"rds\"\n{lines}\n\
         [endpoints.reader]\nlisten = \"127.0.0.1:0\"\nrole = \"replica\"\n"
    );
    let cluster: config::Cluster = toml::from_str(&text).unwrap();
    discovery::source(&cluster, &discovery::Context::default()).unwrap()
}

fn rds_source(moto: &Moto, cluster_identifier: &str) -> Arc<dyn Source> {
    source(&format!(
        "cluster_identifier = \"{cluster_identifier}\"\n\
         endpoint_url = \"{}\"\nregion = \"{REGION}\"",
        moto.url
    ))
}

async fn create_cluster(client: &Client, id: &str) {
    client
        .create_db_cluster()
        .db_cluster_identifier(id)
        .engine("aurora-postgresql")
        .master_username("pgfleet")
        .master_user_password("pgfleet-secret")
        .send()
        .await
        .unwrap();
}

async fn create_instance(client: &Client, cluster: &str, id: &str, zone: &str) {
    client
        .create_db_instance()
        .db_instance_identifier(id)
        .db_cluster_identifier(cluster)
        .engine("aurora-postgresql")
        .db_instance_class("db.r6g.large")
        .availability_zone(zone)
        .send()
        .await
        .unwrap();
}

/// What RDS itself says an instance's address is.
async fn endpoint_of(client: &Client, id: &str) -> String {
    let out = client
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .unwrap();
    let endpoint = out.db_instances()[0].endpoint().unwrap();
    format!(
        "{}:{}",
        endpoint.address().unwrap(),
        endpoint.port().unwrap()
    )
}

async fn member(client: &Client, id: &str, writer: bool, zone: &str) -> Member {
    Member {
        addr: endpoint_of(client, id).await,
        writer: Some(writer),
        lag: None,
        zone: Some(zone.into()),
    }
}

async fn addrs(source: &dyn Source) -> Vec<String> {
    let members = source.members().await.unwrap();
    members.into_iter().map(|m| m.addr).collect()
}

#[tokio::test]
async fn follows_the_instances_of_the_cluster() {
    let moto = Moto::start();
    let rds = moto.client();
    create_cluster(&rds, "fleet").await;
    create_instance(&rds, "fleet", "fleet-1", "us-east-1a").await;
    create_instance(&rds, "fleet", "fleet-2", "us-east-1b").await;
    // Another cluster's instances are not members.
    create_cluster(&rds, "other").await;
    create_instance(&rds, "other", "other-1", "us-east-1a").await;

    let source = rds_source(&moto, "fleet");
    assert_eq!(source.name(), "rds");
    let one = member(&rds, "fleet-1", true, "us-east-1a").await;
    let two = member(&rds, "fleet-2", false, "us-east-1b").await;
    assert!(one.addr.starts_with("fleet-1."), "{one:?}");
    assert!(one.addr.ends_with(":5432"), "{one:?}");
    assert_eq!(
        source.members().await.unwrap(),
        vec![one.clone(), two.clone()]
    );

    // A new instance is there on the next poll.
    create_instance(&rds, "fleet", "fleet-3", "us-east-1c").await;
    let three = member(&rds, "fleet-3", false, "us-east-1c").await;
    assert_eq!(
        source.members().await.unwrap(),
        vec![one.clone(), two.clone(), three.clone()]
    );

    // The writer flag follows a failover.
    rds.failover_db_cluster()
        .db_cluster_identifier("fleet")
        .target_db_instance_identifier("fleet-3")
        .send()
        .await
        .unwrap();
    let got = source.members().await.unwrap();
    let writers: Vec<_> = got.iter().map(|m| m.writer).collect();
    assert_eq!(writers, [Some(false), Some(false), Some(true)]);

    // A deleted instance is gone on the next poll.
    rds.delete_db_instance()
        .db_instance_identifier("fleet-2")
        .skip_final_snapshot(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        addrs(&*source).await,
        [one.addr.as_str(), three.addr.as_str()]
    );

    // A stopped instance is no member, though RDS still lists it.
    rds.stop_db_instance()
        .db_instance_identifier("fleet-1")
        .send()
        .await
        .unwrap();
    assert_eq!(addrs(&*source).await, [three.addr.as_str()]);
}

#[tokio::test]
async fn reads_every_page_of_instances() {
    let moto = Moto::start();
    let rds = moto.client();
    create_cluster(&rds, "big").await;
    // More than one page of DescribeDBInstances (20 a page).
    let ids: Vec<String> = (0..23).map(|i| format!("big-{i:02}")).collect();
    for id in &ids {
        create_instance(&rds, "big", id, "us-east-1a").await;
    }
    // Identifiers match in any case, as in RDS.
    let got = rds_source(&moto, "Big").members().await.unwrap();
    let prefixes: Vec<String> = got
        .iter()
        .map(|m| m.addr.split('.').next().unwrap().to_owned())
        .collect();
    assert_eq!(prefixes, ids);
    assert_eq!(got.iter().filter(|m| m.writer == Some(true)).count(), 1);
}

#[tokio::test]
async fn an_unknown_cluster_is_an_error_that_names_it() {
    let moto = Moto::start();
    create_cluster(&moto.client(), "fleet").await;
    let err = rds_source(&moto, "no-such-cluster")
        .members()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("no-such-cluster"), "{text}");
    assert!(text.contains(&moto.url), "{text}");
    assert!(text.contains("DBClusterNotFound"), "{text}");
}

#[tokio::test]
async fn an_unreachable_api_is_an_error_within_the_bound() {
    // Nothing listens: connections are refused.
    let refused = format!("http://127.0.0.1:{}", free_port());
    // Connections are accepted (by the kernel) and never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent.local_addr().unwrap());
    for url in [refused, silent] {
        let source = source(&format!(
            "cluster_identifier = \"fleet\"\nendpoint_url = \"{url}\"\nregion = \"{REGION}\""
        ));
        let start = Instant::now();
        let err = source.members().await.unwrap_err();
        let took = start.elapsed();
        let text = format!("{err:#}");
        assert!(took < Duration::from_secs(12), "{url}: {took:?}: {text}");
        assert!(text.contains("fleet") && text.contains(&url), "{text}");
    }
}

#[tokio::test]
async fn without_a_region_anywhere_the_error_says_so() {
    let err = source("cluster_identifier = \"fleet\"\nendpoint_url = \"http://127.0.0.1:9\"")
        .members()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("no AWS region"), "{text}");
    assert!(text.contains("fleet"), "{text}");
}
