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
        fe::bind_front(&mut m, b"", name, 6);
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
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

/// The size of the large value sent and received: 100 MiB.
const LARGE: usize = 100 << 20;

/// The byte at `i` of the large value: a 16-byte pattern, as the server makes it.
fn pattern(i: usize) -> u8 {
    (i % 16) as u8 * 0x11
}

/// The highest resident size of this process while `work` runs, sampled every few
/// milliseconds (as `rss` does: what the allocator holds free is not pgfleet's), above
/// what it was before.
async fn peak_growth<T>(work: impl std::future::Future<Output = T>) -> (usize, T) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let before = rss();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss());
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        }
    });
    let out = work.await;
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    (peak.saturating_sub(before), out)
}

impl Raw {
    /// Reads one message's header and returns its type and body length.
    async fn header(&mut self) -> (u8, usize) {
        use tokio::io::AsyncReadExt;
        while self.buf.len() < 5 {
            let n = self.sock.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "closed");
        }
        let h = self.buf.split_to(5);
        (
            h[0],
            u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4,
        )
    }

    /// Reads `len` bytes, handing them to `each` in pieces, holding at most one read.
    async fn stream(&mut self, mut len: usize, mut each: impl FnMut(&[u8])) {
        use tokio::io::AsyncReadExt;
        while len > 0 {
            if self.buf.is_empty() {
                self.buf.reserve(64 << 10);
                let n = self.sock.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "closed with {len} bytes to come");
            }
            let n = len.min(self.buf.len());
            each(&self.buf.split_to(n));
            len -= n;
        }
    }
}

/// A 100 MiB `bytea` out (a DataRow, binary) and in (a Bind of a named statement),
/// in session and transaction mode: pgfleet passes them on as they come, its resident
/// size grows by less than 16 MiB, and the bytes arrive whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_value_passes_through_without_being_held() {
    use pgfleet::protocol::frontend as fe;
    let _alone = ONE_AT_A_TIME.lock().await;
    for pool in ["default_pool_size = 2", TXN] {
        let s = setup(0, "auth_type = \"trust\"", "", pool).await;
        let mut c = Raw::connect(s.addr("writer"), "trustuser").await;
        let sync = [b'S', 0, 0, 0, 4];
        // Out: the server makes the value; the client reads it in pieces.
        let sql = format!(
            "select decode(repeat('00112233445566778899aabbccddeeff', {}), 'hex')",
            LARGE / 16
        );
        let mut m = bytes::BytesMut::new();
        fe::parse_sql(&mut m, "", &sql);
        // Bind: unnamed portal and statement, no parameters, the result in binary.
        fe::bind_front(&mut m, b"", "", 8);
        m.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&sync);
        let (grown, ()) = peak_growth(async {
            c.send(&m).await;
            for tag in [b'1', b'2'] {
                assert_eq!(c.header().await, (tag, 0));
            }
            let (tag, body) = c.header().await;
            assert_eq!((tag, body), (b'D', 2 + 4 + LARGE));
            let mut at = 0;
            c.stream(6, |_| {}).await;
            c.stream(LARGE, |piece| {
                for (k, &b) in piece.iter().enumerate() {
                    assert_eq!(b, pattern(at + k), "byte {}", at + k);
                }
                at += piece.len();
            })
            .await;
            assert_eq!(at, LARGE);
            assert_eq!(c.until_ready().await.0, b"CZ");
        })
        .await;
        eprintln!(
            "{pool:?}: 100 MiB out: RSS grew {} KiB at most",
            grown >> 10
        );
        assert!(
            grown < 16 << 20,
            "{pool:?}: out grew RSS by {} MiB",
            grown >> 20
        );

        // In: a named statement, prepared in its own transaction, then a Bind that
        // arrives in 64 KiB pieces; the server checks what it got.
        let mut m = bytes::BytesMut::new();
        fe::parse_sql(
            &mut m,
            "big",
            &format!(
                "select length($1::bytea) = {LARGE} and $1::bytea = decode(repeat('00112233445566778899aabbccddeeff', {}), 'hex')",
                LARGE / 16
            ),
        );
        m.extend_from_slice(&sync);
        c.send(&m).await;
        assert_eq!(c.until_ready().await.0, b"1Z");
        let (grown, ()) = peak_growth(async {
            // Bind "" to "big": one binary parameter, text results.
            let rest = 2 + 2 + 2 + 4 + LARGE + 2;
            let mut front = bytes::BytesMut::new();
            fe::bind_front(&mut front, b"", "big", rest);
            front.extend_from_slice(&[0, 1, 0, 1, 0, 1]);
            front.extend_from_slice(&(LARGE as u32).to_be_bytes());
            c.send(&front).await;
            let piece: Vec<u8> = (0..64 << 10).map(pattern).collect();
            for _ in 0..LARGE / piece.len() {
                c.send(&piece).await;
            }
            let mut tail = vec![0, 0];
            tail.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
            tail.extend_from_slice(&sync);
            c.send(&tail).await;
            let (tags, values) = c.until_ready().await;
            assert_eq!(
                (tags.as_slice(), values),
                (&b"2DCZ"[..], vec!["t".to_owned()])
            );
        })
        .await;
        eprintln!("{pool:?}: 100 MiB in: RSS grew {} KiB at most", grown >> 10);
        assert!(
            grown < 16 << 20,
            "{pool:?}: in grew RSS by {} MiB",
            grown >> 20
        );
    }
}
