//! Memory pgfleet holds for clients, measured as the resident size of this process
//! (pgfleet runs in it; the clients here are raw sockets that hold no large buffers).
//! The tests run one at a time (`ONE_AT_A_TIME`): each reads the process's size.

mod common;

use common::*;

const TXN: &str = "pool_mode = \"transaction\"";

/// Held by each test: another test's allocations would show in its measure.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The resident memory of this process (pgfleet runs in it), in bytes, once the
/// allocator gave back what is free.
fn rss() -> usize {
    // Memory freed but kept by the allocator is not held by pgfleet: given back first.
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A raw protocol client (trust), for messages tokio-postgres does not send.
struct Raw {
    sock: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr, user: &str) -> Raw {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let hello = common::startup(&[("user", user), ("database", "app")]);
        sock.write_all(&hello).await.unwrap();
        let mut raw = Raw {
            sock,
            buf: bytes::BytesMut::new(),
        };
        raw.until_ready().await;
        raw
    }

    /// Reads up to ReadyForQuery; the messages' tags, and the DataRows' first values.
    async fn until_ready(&mut self) -> (Vec<u8>, Vec<String>) {
        let (mut tags, mut values) = (Vec::new(), Vec::new());
        loop {
            let m = common::raw::read_message(&mut self.sock, &mut self.buf).await;
            tags.push(m[0]);
            match m[0] {
                b'Z' => return (tags, values),
                b'D' => {
                    let len = u32::from_be_bytes([m[7], m[8], m[9], m[10]]) as usize;
                    values.push(String::from_utf8_lossy(&m[11..11 + len]).into_owned());
                }
                b'E' => panic!("{:?}", common::raw::error_fields(&m)),
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.sock.write_all(bytes).await.unwrap();
    }
}

/// The same 1 MiB statement prepared under many names (PGFLEET_PARSE_NAMES, default
/// 1,000): pgfleet keeps its text once, and each name runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_text_under_many_names_is_kept_once() {
    use pgfleet::protocol::frontend as fe;
    let _alone = ONE_AT_A_TIME.lock().await;
    let names: usize = std::env::var("PGFLEET_PARSE_NAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let s = setup(0, "auth_type = \"trust\"", "", TXN).await;
    let mut c = Raw::connect(s.addr("writer"), "trustuser").await;
    let sql = format!("select 1 /* {} */", "x".repeat(1 << 20));
    let sync = [b'S', 0, 0, 0, 4];
    let prepare = |name: &str| {
        let mut m = bytes::BytesMut::new();
        fe::parse_sql(&mut m, name, &sql);
        m.extend_from_slice(&sync);
        m
    };
    // Warm: every buffer on the way has held one such message.
    c.send(&prepare("warm")).await;
    assert_eq!(c.until_ready().await.0, b"1Z");
    let before = rss();
    for i in 0..names {
        c.send(&prepare(&format!("s{i}"))).await;
        assert_eq!(c.until_ready().await.0, b"1Z", "s{i}");
    }
    let grown = rss().saturating_sub(before);
    eprintln!(
        "{names} names of one 1 MiB text: RSS grew {} KiB",
        grown >> 10
    );
    assert!(
        grown < 16 << 20,
        "{names} names grew RSS by {} MiB",
        grown >> 20
    );
    for name in ["s0", &format!("s{}", names - 1), "warm"] {
        let mut m = bytes::BytesMut::new();
        fe::bind(&mut m, b"", name, &[0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&sync);
        c.send(&m).await;
        let (tags, values) = c.until_ready().await;
        assert_eq!(
            (tags.as_slice(), values),
            (&b"2DCZ"[..], vec!["1".to_owned()]),
            "{name}"
        );
    }
}

/// Clients that each sent a 4 MiB query and got its answer, then idle: their buffers
/// (and their server connections') are given back, in session and transaction mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_give_back_the_buffers_a_large_query_took() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let sql = format!("select length('{}')", "x".repeat(4 << 20));
    let mut query = bytes::BytesMut::new();
    pgfleet::protocol::frontend::query(&mut query, &sql);
    for pool in ["default_pool_size = 30", TXN] {
        let s = setup(0, "auth_type = \"trust\"", "", pool).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(Raw::connect(s.addr("writer"), "trustuser").await);
        }
        let before = rss();
        for _ in 0..20 {
            let mut c = Raw::connect(s.addr("writer"), "trustuser").await;
            c.send(&query).await;
            let (tags, values) = c.until_ready().await;
            assert_eq!(
                (tags.as_slice(), values),
                (&b"TDCZ"[..], vec![(4 << 20).to_string()])
            );
            clients.push(c);
        }
        // Idle now: a few KiB each.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let grown = rss().saturating_sub(before);
        eprintln!(
            "{pool:?}: 20 idle clients after a 4 MiB query: RSS grew {} KiB",
            grown >> 10
        );
        assert!(
            grown < 16 << 20,
            "{pool:?}: 20 idle clients hold {} MiB",
            grown >> 20
        );
        drop(clients);
    }
}
