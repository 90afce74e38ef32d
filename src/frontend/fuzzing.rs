//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz`): each feeds arbitrary
//! bytes to the code that parses what a peer sends, the way the connection code does,
//! without sockets, and checks what must hold whatever the bytes. Not part of pgfleet's
//! interface.

use std::sync::OnceLock;

use bytes::BytesMut;

use crate::auth::{
    Binding, ClientKeys, ScramClient, ScramCredential, ScramSecret, ScramServer, Secret,
};
use crate::pool::{record_parameter, PreparedSet, Spellings};
use crate::protocol::backend::{parse_error_fields, parse_parameter_status};
use crate::protocol::frame::body;
use crate::protocol::frontend::{parse_password, parse_sasl_initial, parse_sasl_response};
use crate::protocol::startup::{parse_options, MAX_STARTUP_PACKET, MAX_STARTUP_PARAMS};
use crate::protocol::{next_message, parse_startup, Backend, Frontend, StartupPacket};

use super::conn::LOGIN_MAX_MESSAGE;
use super::pin::message_state;
use super::prepared::{ClientStatements, Rewriter, Rewritten, SharedStatements};
use super::pump::inspect::{lead, rewrite, session_command};
use super::settings::ClientSettings;
use super::startup::startup_params;
use super::track::{Sent, Tracker};

mod pieces;

pub use pieces::pieces;

/// A client's first bytes: the startup packet parser, then what the login makes of its
/// parameters (user, database, `options`, the settings applied to servers).
pub fn startup(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_options(text);
    }
    let Ok(Some((packet, len))) = parse_startup(data) else {
        return;
    };
    assert!((8..=MAX_STARTUP_PACKET).contains(&len) && len <= data.len());
    let StartupPacket::Startup { minor, params } = packet else {
        return;
    };
    assert!(params.len() <= MAX_STARTUP_PARAMS);
    let mut out = BytesMut::new();
    let Ok(p) = startup_params(&mut out, minor, params) else {
        return;
    };
    assert!(!p.user.is_empty() && !p.database.is_empty());
    assert!(p.settings.len() <= MAX_STARTUP_PARAMS);
    if !out.is_empty() {
        let h = next_message(&out, usize::MAX).ok().flatten();
        assert_eq!(h.map(|h| (h.tag, h.total)), Some((b'v', out.len())));
    }
    let baseline = [
        ("application_name".to_owned(), String::new()),
        ("DateStyle".to_owned(), "ISO, MDY".to_owned()),
        ("TimeZone".to_owned(), "UTC".to_owned()),
    ];
    let settings = ClientSettings::for_login(&baseline, &p.settings, &Spellings::default());
    // The client is greeted with the server's value or one it sent.
    for fresh in &baseline {
        let told = settings.told(fresh);
        assert!(told == fresh.1 || p.settings.iter().any(|(_, v)| v == told));
    }
    // Settings the servers do not report become statements: every value is quoted.
    for (_, sql) in &settings.unreported {
        assert!(sql.starts_with("SELECT pg_catalog.set_config(") && sql.ends_with(", false)"));
    }
}

/// A stream of regular messages: the login parsers on each message a client may send
/// before it is authenticated, then the pump's inspection of the same bytes as client
/// messages (the first byte's low bit picks transaction mode, with named statements
/// rewritten) and as server messages.
pub fn messages(data: &[u8]) {
    let mut off = 0;
    while let Ok(Some(h)) = next_message(&data[off..], LOGIN_MAX_MESSAGE) {
        assert!(h.total >= 5 && h.total <= LOGIN_MAX_MESSAGE + 1);
        let m = &data[off..off + h.total];
        if let Ok(password) = parse_password(m) {
            assert_eq!(password.len() + 6, m.len());
        }
        if let Ok((mechanism, first)) = parse_sasl_initial(m) {
            assert_eq!(mechanism.len() + first.len() + 10, m.len());
        }
        if let Ok(last) = parse_sasl_response(m) {
            assert_eq!(last.len() + 5, m.len());
        }
        off += h.total;
    }
    let transaction = data.first().is_some_and(|b| b & 1 == 1);
    pump_inspection(data, data, transaction, usize::MAX);
}

/// What the pump looks at as messages go by, in its order: the client's messages
/// (session state, session commands, statement rewriting), then the server's through
/// the protocol tracker (ReadyForQuery, the answers to Parse and Close, errors,
/// CommandComplete tags, ParameterStatus).
fn pump_inspection(client: &[u8], server: &[u8], transaction: bool, max: usize) {
    let mut track = Tracker::new(false);
    let mut untracked = false;
    let mut statements = ClientStatements::default();
    let mut prepared = PreparedSet::default();
    let shared = SharedStatements::default();
    let mut rewriter = transaction.then_some(Rewriter {
        client: &mut statements,
        shared: &shared,
        server: &mut prepared,
        max_prepared: 4,
        checked: Vec::new(),
    });
    let mut out = BytesMut::new();
    let mut off = 0;
    while let Ok(Some(h)) = next_message(&client[off..], max) {
        let m = &client[off..off + h.total];
        off += h.total;
        let kind = Frontend::from_tag(h.tag);
        if matches!(kind, Frontend::Terminate | Frontend::Other(_)) {
            continue;
        }
        let _ = message_state(m);
        let lead = lead(m);
        let command = match kind {
            Frontend::Query | Frontend::Parse => {
                session_command(m, lead, rewriter.is_some(), &mut untracked)
            }
            _ => None,
        };
        let rewritten = match rewriter.as_mut() {
            Some(rw) => rewrite(rw, m, h.total, lead, &mut out, &mut track, command.clone())
                .unwrap_or(Rewritten::Whole),
            None => Rewritten::No,
        };
        match rewritten {
            Rewritten::No => track.sent(Sent::client(kind), command),
            Rewritten::Whole => {}
            Rewritten::Front(front) => out.extend_from_slice(&m[front..]),
        }
    }
    // What pgfleet writes in place of the client's messages is whole messages.
    let mut pos = 0;
    while pos < out.len() {
        match next_message(&out[pos..], usize::MAX) {
            Ok(Some(h)) => pos += h.total,
            other => panic!("rewritten messages do not frame: {other:?}"),
        }
    }
    let mut params = Vec::new();
    let mut off = 0;
    while let Ok(Some(h)) = next_message(&server[off..], max) {
        let m = &server[off..off + h.total];
        match h.tag {
            b'E' => {
                let _ = parse_error_fields(body(m));
            }
            b'S' => {
                let _ = parse_parameter_status(body(m));
                record_parameter(&mut params, body(m));
            }
            _ => {}
        }
        let _ = track.server(Backend::from_tag(h.tag), body(m));
        off += h.total;
    }
    // Idle means proven idle: not lost, and nothing owed.
    if track.idle() {
        assert!(track.lost().is_none() && track.owed() == Some(0) && track.quiet());
    }
    let commands = track.take_commands();
    let _ = track.settings_need_reset(commands.len());
    let _ = (
        track.reset_done(),
        track.idle_in_transaction(),
        track.busy_since(),
    );
}

/// How far a SCRAM exchange got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramOutcome {
    /// The first message was refused.
    Refused,
    /// The first message was answered; the final one was refused.
    Answered,
    /// The whole exchange succeeded.
    Authenticated,
}

/// The password, salt and iteration count of the SCRAM secret the fuzzed server holds.
pub const SCRAM_PASSWORD: &str = "pencil";
const SCRAM_SALT: &[u8] = b"pgfleet fuzzing!";
const SCRAM_ITERATIONS: u32 = 4096;
/// The nonces the fuzzed server and client use, so an input can hold a whole exchange.
pub const SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";
pub const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
/// Above this iteration count the client proves itself with the keys rather than the
/// password: the parsing is the same, and PBKDF2 would only slow the fuzzer down.
const PASSWORD_CLIENT_MAX_ITERATIONS: u32 = 64;

/// The `tls-server-end-point` data of the channel in the TLS cases.
const END_POINT: [u8; 32] = [0x5a; 32];

fn scram_secret() -> &'static ScramSecret {
    static SECRET: OnceLock<ScramSecret> = OnceLock::new();
    SECRET.get_or_init(|| ScramSecret::from_password(SCRAM_PASSWORD, SCRAM_SALT, SCRAM_ITERATIONS))
}

/// The keys a client recovers from a successful exchange against [`scram_secret`].
fn scram_keys() -> &'static ClientKeys {
    static KEYS: OnceLock<ClientKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let salted = crate::auth::scram_common::salted_password(
            SCRAM_PASSWORD.as_bytes(),
            SCRAM_SALT,
            SCRAM_ITERATIONS,
        );
        ClientKeys {
            client_key: crate::auth::scram_common::hmac_sha256(&salted, &[b"Client Key"]),
            server_key: scram_secret().server_key,
        }
    })
}

/// A SCRAM exchange with one side played by the input: the first byte picks the side
/// (0: pgfleet's server with a user's secret, 1: its mock server for an unknown user,
/// 2: pgfleet's client with recovered keys, 3: its client with a password), and
/// `first / 4 % 3` the channel (0: plaintext; 1: TLS, SCRAM-SHA-256-PLUS offered and
/// the client selected SCRAM-SHA-256, or a client told no PLUS is offered; 2: TLS with
/// channel binding, selected or used); the rest is the peer's first message, a NUL
/// byte, and the peer's final message.
pub fn scram(data: &[u8]) -> ScramOutcome {
    let Some((&side, rest)) = data.split_first() else {
        return ScramOutcome::Refused;
    };
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    match side % 4 {
        0 | 1 => {
            let server = match side % 4 {
                0 => ScramServer::new(&Secret::Scram(scram_secret().clone())),
                _ => Some(ScramServer::mock("fuzz", b"mock key")),
            };
            let Some(server) = server else {
                return ScramOutcome::Refused;
            };
            let mut server = server.with_server_nonce(SERVER_NONCE);
            match side / 4 % 3 {
                0 => {}
                channel => server = server.on_tls(Some(END_POINT.to_vec()), channel == 2),
            }
            let Ok(server_first) = server.handle_client_first(first) else {
                return ScramOutcome::Refused;
            };
            assert!(server_first.starts_with(b"r="));
            let outcome = match server.handle_client_final(last) {
                Ok((server_final, _)) => {
                    assert!(server_final.starts_with(b"v=") && side % 4 == 0);
                    ScramOutcome::Authenticated
                }
                Err(_) => ScramOutcome::Answered,
            };
            // The exchange is over either way.
            assert!(server.handle_client_final(last).is_err());
            outcome
        }
        _ => {
            let password = side % 4 == 3 && iterations(first) <= PASSWORD_CLIENT_MAX_ITERATIONS;
            let credential = match password {
                true => ScramCredential::Password(SCRAM_PASSWORD.to_owned()),
                false => ScramCredential::Keys(scram_keys().clone()),
            };
            let binding = match side / 4 % 3 {
                0 => Binding::No,
                1 => Binding::NotOffered,
                _ => Binding::EndPoint(END_POINT.to_vec()),
            };
            let mut client =
                ScramClient::with_fixed_nonce(credential, "", CLIENT_NONCE).with_binding(binding);
            client.client_first();
            let Ok(client_final) = client.handle_server_first(first) else {
                return ScramOutcome::Refused;
            };
            assert!(client_final.starts_with(b"c="));
            if side / 4 % 3 == 0 {
                assert!(client_final.starts_with(b"c=biws,r="));
            }
            let outcome = match client.handle_server_final(last) {
                Ok(()) => ScramOutcome::Authenticated,
                Err(_) => ScramOutcome::Answered,
            };
            assert!(client.handle_server_final(last).is_err());
            outcome
        }
    }
}

/// The `i=` value of a server-first-message, if it has one that parses (else 0).
fn iterations(server_first: &[u8]) -> u32 {
    server_first
        .split(|&b| b == b',')
        .find_map(|a| a.strip_prefix(b"i="))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds of a target's corpus (`fuzz/corpus/<target>/seed-*`).
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
            })
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    /// A whole channel-bound exchange between pgfleet's client and server, as a seed
    /// for each side: (server seed, client seed).
    fn bound_exchange() -> (Vec<u8>, Vec<u8>) {
        let credential = ScramCredential::Password(SCRAM_PASSWORD.to_owned());
        let mut client = ScramClient::with_fixed_nonce(credential, "", CLIENT_NONCE)
            .with_binding(Binding::EndPoint(END_POINT.to_vec()));
        let server = ScramServer::new(&Secret::Scram(scram_secret().clone())).unwrap();
        let mut server = server
            .with_server_nonce(SERVER_NONCE)
            .on_tls(Some(END_POINT.to_vec()), true);
        let client_first = client.client_first();
        let server_first = server.handle_client_first(&client_first).unwrap();
        let client_final = client.handle_server_first(&server_first).unwrap();
        let (server_final, _) = server.handle_client_final(&client_final).unwrap();
        let seed = |side: u8, first: &[u8], last: &[u8]| {
            let mut seed = vec![side];
            seed.extend_from_slice(first);
            seed.push(0);
            seed.extend_from_slice(last);
            seed
        };
        // Side 8: the server with channel binding; 11: the password client with it.
        (
            seed(8, &client_first, &client_final),
            seed(11, &server_first, &server_final),
        )
    }

    #[test]
    fn channel_bound_seeds_are_committed_and_authenticate() {
        let (server, client) = bound_exchange();
        let committed = seeds("scram");
        for (name, data) in [
            ("seed-bound-server", &server),
            ("seed-bound-client", &client),
        ] {
            assert_eq!(scram(data), ScramOutcome::Authenticated, "{name}");
            let seed = committed.iter().find(|(n, _)| n == name);
            assert_eq!(
                seed.map(|(_, d)| d),
                Some(data),
                "{name} in fuzz/corpus/scram"
            );
        }
        // The same messages without TLS, or with PLUS not selected, are refused.
        for side in [0u8, 4] {
            let mut plain = server.clone();
            plain[0] = side;
            assert_ne!(scram(&plain), ScramOutcome::Authenticated, "side {side}");
        }
    }

    #[test]
    fn seeds_run_whole_exchanges() {
        // psql's own exchange (captured against the fuzzed secret and nonce) succeeds.
        for (name, data) in seeds("scram") {
            let want = match name.as_str() {
                "seed-psql-client-unknown-user" | "seed-server-error" => ScramOutcome::Answered,
                _ => ScramOutcome::Authenticated,
            };
            assert_eq!(scram(&data), want, "{name}");
        }
        assert_eq!(scram(b""), ScramOutcome::Refused);
        assert_eq!(scram(b"\0n,,n=,r=abc"), ScramOutcome::Answered);
        for (_, data) in seeds("startup") {
            startup(&data);
        }
        for (_, data) in seeds("messages") {
            messages(&data);
        }
    }

    #[test]
    fn startup_and_messages_take_anything() {
        let mut psql = BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [("user", "app"), ("database", "app"), ("options", "-c a=b")],
            &mut psql,
        )
        .unwrap();
        startup(&psql);
        startup(&[0, 0, 0, 8, 4, 210, 22, 47]);
        let mut batch = BytesMut::new();
        let fe = postgres_protocol::message::frontend::parse;
        fe("s1", "SET search_path = a", [], &mut batch).unwrap();
        postgres_protocol::message::frontend::sync(&mut batch);
        postgres_protocol::message::frontend::query("DEALLOCATE s1", &mut batch).unwrap();
        messages(&batch);
        // A Query first: an odd first byte, transaction mode.
        let mut query_first = BytesMut::new();
        postgres_protocol::message::frontend::query("select 1", &mut query_first).unwrap();
        query_first.extend_from_slice(&batch);
        messages(&query_first);
        messages(b"");
        messages(&[b'p', 0, 0, 0, 4]);
    }
}
