//! The pump's reading of messages that arrive in pieces.

use bytes::{Buf, BytesMut};

use crate::frontend::pin::{PinMode, Pins};
use crate::frontend::prepared::{ClientStatements, Rewriter, SharedStatements};
use crate::frontend::pump::counts::Counts;
use crate::frontend::pump::messages::{Flow, Pinning};
use crate::frontend::track::Tracker;
use crate::pool::PreparedSet;

/// Messages larger than this are passed on as they come (small, so fuzzed inputs reach
/// it; the pump's is 64 KiB).
const AT: usize = 16;
const MAX: usize = 1 << 16;

/// The pump's reading of the client's and the server's messages, fed `data` cut at
/// arbitrary points: each peer gets exactly the bytes it gets when every message
/// arrives whole, and the same errors end it. `data`: a flags byte (bit 0: transaction
/// mode, named statements rewritten; else session mode, where long query text passes
/// as it comes), a count `n`, `n` piece lengths (cycled), then the client's bytes and
/// the server's (split in the middle).
pub fn pieces(data: &[u8]) {
    let [flags, n, rest @ ..] = data else {
        return;
    };
    let (cuts, bytes) = rest.split_at(usize::from(*n).min(rest.len()));
    let transaction = flags & 1 == 1;
    let (client, server) = bytes.split_at(bytes.len() / 2);
    // Whole: what the peers get of the bytes that make whole messages.
    // One set of statement names (keyed per instance) for both.
    let shared = SharedStatements::default();
    let whole = Run::new(transaction).feed(&shared, client, server, &[]);
    // Where the input ends inside a message, what a peer gets of it differs (pieces may
    // pass on): compared up to the last whole message, unless an error ends it first.
    let (client, server) = match whole.end {
        None => (&client[..whole.client_used], &server[..whole.server_used]),
        Some(_) => (client, server),
    };
    let cut = Run::new(transaction).feed(&shared, client, server, cuts);
    assert_eq!(cut.end, whole.end, "the same end");
    if whole.end.is_none() {
        assert!(
            cut.to_server == whole.to_server,
            "the server gets the same bytes"
        );
        assert!(
            cut.to_client == whole.to_client,
            "the client gets the same bytes"
        );
    }
}

/// What one feeding gave each peer.
#[derive(Debug, Default)]
struct Given {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    /// How the pump would end, if it did.
    end: Option<String>,
    /// How many of the client's and the server's bytes were passed on or dropped.
    client_used: usize,
    server_used: usize,
}

/// The pump's state for one feeding.
struct Run {
    transaction: bool,
    statements: ClientStatements,
    prepared: PreparedSet,
    pins: Pins,
}

impl Run {
    fn new(transaction: bool) -> Run {
        Run {
            transaction,
            statements: ClientStatements::default(),
            prepared: PreparedSet::default(),
            pins: Pins::default(),
        }
    }

    /// Feeds the client's bytes, then the server's, each in pieces of the `cuts`
    /// lengths in turn (all at once when there are none).
    fn feed(
        &mut self,
        shared: &SharedStatements,
        client: &[u8],
        server: &[u8],
        cuts: &[u8],
    ) -> Given {
        let mut track = Tracker::new(false);
        let mut flow = Flow::new(self.transaction, !self.transaction, AT);
        let mut rewriter = self.transaction.then_some(Rewriter {
            client: &mut self.statements,
            shared,
            server: &mut self.prepared,
            max_prepared: 4,
            checked: Vec::new(),
        });
        let on_pin = |_, _| {};
        let mut pinning = self.transaction.then_some(Pinning {
            pins: &mut self.pins,
            mode: PinMode::Auto,
            on_pin: &on_pin,
        });
        let mut given = Given::default();
        let mut buf = BytesMut::new();
        for piece in cut(client, cuts) {
            buf.extend_from_slice(piece);
            let before = buf.len();
            let run = match flow.client(
                &mut buf,
                MAX,
                &mut track,
                rewriter.as_mut(),
                pinning.as_mut(),
            ) {
                Ok(run) => run,
                Err(end) => {
                    given.end = Some(format!("{end:?}"));
                    return given;
                }
            };
            given.to_server.extend_from_slice(&flow.to_server);
            flow.to_server.clear();
            given.to_server.extend_from_slice(&buf[..run]);
            buf.advance(run);
            given.client_used += before - buf.len();
            if flow.terminated {
                break;
            }
        }
        let mut params = Vec::new();
        let mut counts = Counts::default();
        let mut buf = BytesMut::new();
        for piece in cut(server, cuts) {
            buf.extend_from_slice(piece);
            let before = buf.len();
            let (run, _) = match flow.server(&mut buf, MAX, &mut track, &mut params, &mut counts) {
                Ok(done) => done,
                Err(end) => {
                    given.end = Some(format!("{end:?}"));
                    return given;
                }
            };
            given.to_client.extend_from_slice(&flow.to_client);
            flow.to_client.clear();
            given.to_client.extend_from_slice(&buf[..run]);
            buf.advance(run);
            given.server_used += before - buf.len();
        }
        given
    }
}

/// `bytes` in pieces of the `cuts` lengths (1 to 256), cycled; all at once without cuts.
fn cut<'a>(bytes: &'a [u8], cuts: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut at = 0;
    let mut next = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let len = match cuts.get(next % cuts.len().max(1)) {
            Some(&c) => usize::from(c) + 1,
            None => bytes.len(),
        };
        next += 1;
        let piece = &bytes[at..(at + len).min(bytes.len())];
        at += piece.len();
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend as fe;

    /// A client's batch with a Bind whose parameter is larger than `AT` (its statement
    /// renamed in transaction mode) and a long query, and the server's answers with a
    /// large row.
    fn session() -> (Vec<u8>, Vec<u8>) {
        let mut client = BytesMut::new();
        fe::parse_sql(&mut client, "s1", "select $1::text");
        fe::bind_front(&mut client, b"", "s1", 2 + 2 + 4 + 40 + 2);
        client.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 40]);
        client.extend_from_slice(&[b'v'; 40]);
        client.extend_from_slice(&[0, 0]);
        client.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0, b'S', 0, 0, 0, 4]);
        fe::query(&mut client, &format!("select '{}'", "q".repeat(50)));
        let mut server = Vec::new();
        server.extend_from_slice(b"1\0\0\0\x042\0\0\0\x04");
        server.extend_from_slice(b"D\0\0\0\x32\0\x01\0\0\0\x28");
        server.extend_from_slice(&[b'v'; 40]);
        server.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I");
        (client.to_vec(), server)
    }

    /// `session` in the fuzz target's layout: the two sides made the same length (Flush
    /// messages after the client's, a notice after the server's).
    fn seed(transaction: u8) -> Vec<u8> {
        let (mut client, mut server) = session();
        while client.len() < server.len() + 8 {
            client.extend_from_slice(&[b'H', 0, 0, 0, 4]);
        }
        let text = client.len() - server.len() - 8;
        server.extend_from_slice(b"N");
        server.extend_from_slice(&((text + 7) as u32).to_be_bytes());
        server.push(b'M');
        server.extend(std::iter::repeat_n(b'n', text));
        server.extend_from_slice(&[0, 0]);
        let mut data = vec![transaction, 3, 0, 6, 17];
        data.extend_from_slice(&client);
        data.extend_from_slice(&server);
        data
    }

    #[test]
    fn pieces_give_what_whole_messages_give() {
        let (client, server) = session();
        let shared = SharedStatements::default();
        for transaction in [false, true] {
            let whole = Run::new(transaction).feed(&shared, &client, &server, &[]);
            assert_eq!(whole.end, None);
            assert_eq!(whole.client_used, client.len());
            assert_eq!(whole.server_used, server.len());
            for cuts in [&[0u8][..], &[1, 6], &[4, 11, 2]] {
                let cut = Run::new(transaction).feed(&shared, &client, &server, cuts);
                assert_eq!(cut.end, None);
                assert!(
                    cut.to_server == whole.to_server,
                    "{transaction} {cuts:?}\n{:?}\n{:?}",
                    String::from_utf8_lossy(&cut.to_server),
                    String::from_utf8_lossy(&whole.to_server)
                );
                assert!(cut.to_client == whole.to_client, "{transaction} {cuts:?}");
            }
        }
    }

    /// An input that ends with an error before any whole message: both feedings end
    /// with it (found by the fuzzer in the harness, which compared nothing).
    #[test]
    fn an_error_ends_both() {
        let mut data = vec![0, 3, 0, 6, 17, b'v', 0x76, 0x76, 0x76, 0x76];
        data.extend_from_slice(&[b'v'; 20]);
        pieces(&data);
    }

    #[test]
    fn seeds_are_committed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pieces");
        for (name, transaction) in [("seed-session-mode", 0), ("seed-transaction-mode", 1)] {
            let data = seed(transaction);
            pieces(&data);
            let committed = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(committed == data, "fuzz/corpus/pieces/{name} is {data:?}");
        }
    }
}
