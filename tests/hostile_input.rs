//! 10,000 connections of random and truncated bytes against a running `pgfleet run`,
//! 32 at a time, each with a deadline; then a normal client logs in and queries, and
//! the process is still running with no panic in its log.
//!
//! The inputs come from a seeded generator; the seed is printed, and
//! `PGFLEET_HOSTILE_SEED=<seed>` replays the same inputs.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::raw::{read_message, HANG};
use common::*;
use futures_util::StreamExt;
use pgfleet::auth::{ScramClient, ScramCredential};
use pgfleet::harness::TestCluster;
use postgres_protocol::message::frontend as fe;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_pgfleet");
const CONNECTIONS: usize = 10_000;
const CONCURRENCY: usize = 32;
/// Connections that stop sending without closing: pgfleet must drop them itself.
const LOGIN_TIMEOUT: &str = "2s";

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// One connection's input.
#[derive(Debug)]
struct Case {
    kind: &'static str,
    bytes: Vec<u8>,
    /// Logs in as `app` with SCRAM before sending `bytes`.
    login: bool,
    /// Leaves the connection open after sending, instead of closing its sending side.
    stall: bool,
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max);
    (0..len).map(|_| rng.gen()).collect()
}

/// A StartupMessage a real client could send, with random values.
fn valid_startup(rng: &mut StdRng) -> Vec<u8> {
    let user = ["app", "nobody", "trustuser", ""][rng.gen_range(0..4)];
    let value = String::from_utf8_lossy(&random_bytes(rng, 20))
        .replace('\0', "")
        .to_string();
    let mut params = vec![("user", user), ("database", "app")];
    match rng.gen_range(0..4) {
        0 => params.push(("application_name", &value)),
        1 => params.push(("options", &value)),
        2 => params.push(("_pq_.x", &value)),
        _ => {}
    }
    startup(&params)
}

/// Messages with a type byte a client uses and a random body (the length field right,
/// or random).
fn random_messages(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..4) {
        let tag = b"pQPBEDSHCXFcdfZ\0"[rng.gen_range(0..16)];
        let body = random_bytes(rng, 64);
        let len = match rng.gen_bool(0.8) {
            true => body.len() as u32 + 4,
            false => rng.gen(),
        };
        out.push(tag);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// A SCRAM exchange gone wrong: a client-first-message with random damage, then
/// random bytes as the client-final-message.
fn scram_garbage(rng: &mut StdRng) -> Vec<u8> {
    let mut first = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO".to_vec();
    for _ in 0..rng.gen_range(0..4) {
        let at = rng.gen_range(0..first.len());
        first[at] = rng.gen();
    }
    let mut out = BytesMut::new();
    fe::sasl_initial_response("SCRAM-SHA-256", &first, &mut out).unwrap();
    fe::sasl_response(&random_bytes(rng, 128), &mut out).unwrap();
    out.to_vec()
}

impl Case {
    fn random(rng: &mut StdRng) -> Case {
        let (kind, bytes, login) = match rng.gen_range(0..100) {
            0..=19 => ("random bytes", random_bytes(rng, 512), false),
            20..=29 => {
                // A plausible header, then random bytes.
                let mut b = rng.gen_range(8u32..12_000).to_be_bytes().to_vec();
                b.extend_from_slice(&[0, 3, 0, 0]);
                b.extend(random_bytes(rng, 256));
                ("startup header then random bytes", b, false)
            }
            30..=49 => {
                let mut b = valid_startup(rng);
                b.truncate(rng.gen_range(0..b.len()));
                ("truncated startup", b, false)
            }
            50..=64 => {
                let mut b = valid_startup(rng);
                b.extend(random_messages(rng));
                ("startup then random messages", b, false)
            }
            65..=74 => {
                let mut b = valid_startup(rng);
                b.extend(random_bytes(rng, 256));
                ("startup then random bytes", b, false)
            }
            75..=84 => {
                let mut b = startup(&[("user", "app"), ("database", "app")]);
                b.extend(scram_garbage(rng));
                ("startup then broken SCRAM", b, false)
            }
            85..=94 => {
                let mut b = SSL_REQUEST.to_vec();
                match rng.gen_range(0..3) {
                    0 => b.extend(random_bytes(rng, 256)),
                    1 => b.extend_from_slice(&GSSENC_REQUEST),
                    _ => {
                        let mut s = valid_startup(rng);
                        s.truncate(rng.gen_range(0..=s.len()));
                        b.extend(s);
                    }
                }
                ("SSLRequest then garbage", b, false)
            }
            95..=97 => {
                let mut b = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
                b.extend_from_slice(&rng.gen::<[u8; 8]>());
                ("cancel request", b, false)
            }
            _ => (
                "logged in, then random messages",
                random_messages(rng),
                true,
            ),
        };
        Case {
            kind,
            bytes,
            login,
            stall: !login && rng.gen_ratio(1, 100),
        }
    }
}

/// Logs in as `app` over `sock` with SCRAM, up to AuthenticationOk.
async fn scram_login(sock: &mut TcpStream) {
    let mut buf = BytesMut::new();
    sock.write_all(&startup(&[("user", "app"), ("database", "app")]))
        .await
        .unwrap();
    let mut client = ScramClient::new(ScramCredential::Password("app".into()));
    let _sasl = read_message(sock, &mut buf).await;
    let mut out = BytesMut::new();
    fe::sasl_initial_response("SCRAM-SHA-256", &client.client_first(), &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    let cont = read_message(sock, &mut buf).await;
    let reply = client
        .handle_server_first(&cont[9..])
        .expect("server-first");
    out.clear();
    fe::sasl_response(&reply, &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    let fin = read_message(sock, &mut buf).await;
    client.handle_server_final(&fin[9..]).expect("server-final");
}

/// Runs one case; `Err` says what went wrong.
async fn run(addr: SocketAddr, case: &Case) -> Result<(), String> {
    let mut sock = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if case.login {
        scram_login(&mut sock).await;
    }
    // pgfleet may close before it has read everything: a failed write is fine.
    let _ = sock.write_all(&case.bytes).await;
    if !case.stall {
        let _ = sock.shutdown().await;
    }
    let mut sink = Vec::new();
    match tokio::time::timeout(HANG, sock.read_to_end(&mut sink)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("neither answered nor closed within {HANG:?}")),
    }
}

/// `pgfleet run` on fixed free ports; returns the process and the writer's address.
fn start_pgfleet(cluster: &TestCluster, dir: &Path) -> (Child, SocketAddr) {
    std::fs::write(dir.join("userlist.txt"), userlist(cluster)).unwrap();
    let general = format!("client_login_timeout = \"{LOGIN_TIMEOUT}\"");
    let mut text = config_text(cluster, &general, "", "");
    let mut writer = None;
    for endpoint in ["reader", "writer", "any"] {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        text = text.replacen("127.0.0.1:0", &addr.to_string(), 1);
        if endpoint == "writer" {
            writer = Some(addr);
        }
    }
    let config = dir.join("pgfleet.toml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("pgfleet.log")).unwrap())
        .spawn()
        .unwrap();
    (child, writer.expect("a writer endpoint"))
}

/// Kills the process (by its pid) if the test ends while it runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_truncated_input_never_harms_pgfleet() {
    let seed: u64 = match std::env::var("PGFLEET_HOSTILE_SEED") {
        Ok(s) => s.parse().expect("PGFLEET_HOSTILE_SEED is a number"),
        Err(_) => rand::random(),
    };
    println!("hostile input seed {seed} (PGFLEET_HOSTILE_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let cases: Vec<Case> = (0..CONNECTIONS).map(|_| Case::random(&mut rng)).collect();

    let cluster = blocking(|| TestCluster::start(0)).expect("start the test cluster");
    let dir = tempfile::Builder::new()
        .prefix("pgfleet-hostile-")
        .tempdir()
        .unwrap();
    let (child, addr) = blocking(|| start_pgfleet(&cluster, dir.path()));
    let mut pgfleet = Running(child);
    wait_for_login(addr).await;

    let failures: Vec<String> = futures_util::stream::iter(cases.iter().enumerate())
        .map(|(i, case)| async move {
            run(addr, case)
                .await
                .err()
                .map(|e| format!("case {i} ({}, {} bytes): {e}", case.kind, case.bytes.len()))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    let log = std::fs::read_to_string(dir.path().join("pgfleet.log")).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // A normal client logs in and queries.
    let c = app(addr).await;
    let row = c.query_one("select 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert!(
        pgfleet.0.try_wait().unwrap().is_none(),
        "pgfleet exited; its log:\n{log}"
    );
    let log = std::fs::read_to_string(dir.path().join("pgfleet.log")).unwrap();
    assert!(!log.contains("panicked"), "seed {seed}: a panic:\n{log}");
}

/// Waits until `app` can log in through pgfleet.
async fn wait_for_login(addr: SocketAddr) {
    let start = std::time::Instant::now();
    while connect(addr, "app", "app").await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pgfleet never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
