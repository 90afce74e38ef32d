//! The message pump: forwards whole messages both ways between a client and its server
//! connection, one write per batch, straight from the read buffers (no copy, no
//! allocation per message), and keeps track of where the server is in the protocol.
//!
//! In transaction mode it returns as soon as the server is idle outside a transaction,
//! so the connection can go back to the pool. The idle and query timeouts are watched on
//! the server side of the pump: while the server has nothing to send, that read waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::pool::{record_parameter, PoolStats, PooledConn, Release};
use crate::protocol::frame::{announced_size, body};
use crate::protocol::{next_message, ProtocolError};

use super::conn::ClientConn;
use super::prepared::{ClientStatements, Expect, Expected, Rewriter};
use super::settings::SqlCommand;
use super::track::Track;

mod counts;
mod deadline;
/// Also driven by `frontend::fuzzing`.
pub(super) mod inspect;

use counts::Counts;
use deadline::{next_deadline, same};
use inspect::{pop_expected, rewrite, settle, watch_session_command};

/// Why the pump stopped.
#[derive(Debug)]
pub enum PumpEnd {
    /// Transaction mode: the transaction ended; the server connection is free.
    TransactionDone,
    /// Session mode: the client's RESET took effect; its startup settings are to be
    /// applied again before the pump goes on.
    Resync,
    /// The client sent Terminate.
    ClientTerminated,
    /// The client's socket closed or failed.
    ClientClosed,
    /// The client sent bytes that are not the protocol.
    ClientProtocol(ProtocolError),
    /// `client_idle_timeout` passed with nothing from the client.
    ClientIdle,
    /// `idle_transaction_timeout` passed with the client idle in a transaction.
    IdleInTransaction,
    /// `query_timeout` passed before the server answered.
    QueryTimeout,
    /// The server's socket closed or failed.
    ServerClosed,
    /// The server sent bytes that are not the protocol.
    ServerProtocol(ProtocolError),
}

/// How the pump runs for one client.
#[derive(Debug, Clone, Copy, Default)]
pub struct PumpOptions {
    /// Return at the end of each transaction, and track session commands.
    pub transaction: bool,
    pub client_idle_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub query_timeout: Option<Duration>,
}

/// What the pump leaves behind.
#[derive(Debug)]
pub struct PumpResult {
    pub end: PumpEnd,
    /// What the server connection needs before it is reused.
    pub release: Release,
    /// Session commands (SET, RESET, DISCARD ALL) that took effect, in order.
    pub commands: Vec<SqlCommand>,
    /// The client sent a SET that pgfleet could not follow (extended protocol, several
    /// statements, or inside a transaction block).
    pub untracked_set: bool,
    /// The server ran SET/RESET commands that are not in `commands`: the connection's
    /// settings must be reset before it is reused.
    pub settings_dirty: bool,
    /// pgfleet's list of the connection's prepared statements may be wrong: drop them
    /// all on the server and forget them before reuse.
    pub statements_dirty: bool,
    /// The server answered a RESET or DISCARD ALL (tracked or not).
    pub reset_seen: bool,
    /// The server sent ParameterStatus: a reported parameter changed.
    pub params_changed: bool,
    /// Requests (Query, Sync, FunctionCall) sent and not answered.
    pub unanswered: u32,
    /// The server went away outside a transaction block, with every request it was sent
    /// sent whole: nothing of the client's can have half-run, the client may go on with
    /// another server connection.
    pub recoverable: bool,
}

/// Pumps until either side ends (or, in transaction mode, the transaction ends).
/// `statements` (transaction mode) are the client's named prepared statements and the
/// most a server connection keeps. Traffic is counted on the pool's statistics and on
/// `endpoint`'s.
pub async fn pump(
    client: &mut ClientConn,
    server: &mut PooledConn,
    opts: PumpOptions,
    statements: Option<(&mut ClientStatements, usize)>,
    endpoint: &PoolStats,
) -> PumpResult {
    let max = client.max_message;
    let (pool, sc) = server.with_pool();
    let stats = [&pool.stats, endpoint];
    let track = Track::new(opts.query_timeout.is_some());
    let counts = Counts::default();
    let wake = tokio::sync::Notify::new();
    let done_wanted = AtomicBool::new(false);
    let expected = Expected::default();
    let untracked_set = AtomicBool::new(false);
    let params_seen = AtomicBool::new(false);
    let (mut sr, mut sw) = sc.stream.split();
    let (sbuf, params) = (&mut sc.buf, &mut sc.params);
    let mut rewriter = statements.map(|(client, max_prepared)| Rewriter {
        client,
        server: &mut sc.prepared,
        expected: &expected,
        max_prepared,
        epoch: 0,
        bound_command: None,
    });
    let (mut cr, mut cw) = client.stream.split();
    let cbuf = &mut client.buf;

    let client_to_server = async {
        // Rewritten batches are built here; untouched ones go straight from `cbuf`.
        let (mut out, mut tmp) = (BytesMut::new(), BytesMut::new());
        loop {
            let mut off = 0;
            let mut copied = 0;
            let mut terminated = false;
            loop {
                match next_message(&cbuf[off..], max) {
                    Ok(Some(h)) => {
                        if h.tag == b'X' {
                            terminated = true;
                            break;
                        }
                        let m = &cbuf[off..off + h.total];
                        if matches!(h.tag, b'Q' | b'P') {
                            let named = rewriter.is_some();
                            watch_session_command(&track, m, named, &untracked_set);
                        }
                        if let Some(rw) = rewriter.as_mut() {
                            if rewrite(rw, m, &mut tmp) {
                                out.extend_from_slice(&cbuf[copied..off]);
                                out.extend_from_slice(&tmp);
                                tmp.clear();
                                copied = off + h.total;
                            }
                            if let Some(command) = rw.bound_command.take() {
                                track.session_command(command);
                            }
                            if matches!(h.tag, b'Q' | b'S' | b'F') {
                                rw.epoch += 1;
                            }
                        }
                        let was_quiet = track.quiet();
                        track.client_message(h.tag);
                        if was_quiet && !track.quiet() && opts.query_timeout.is_some() {
                            wake.notify_one();
                        }
                        off += h.total;
                    }
                    Ok(None) => break,
                    Err(e) => return PumpEnd::ClientProtocol(e),
                }
            }
            if off > 0 {
                track.set_writing(true);
                let sent = if out.is_empty() {
                    sw.send(&cbuf[..off]).await
                } else {
                    out.extend_from_slice(&cbuf[copied..off]);
                    let r = sw.send(&out).await;
                    out.clear();
                    r
                };
                if sent.is_err() {
                    // `writing` stays set: part of this batch may have reached the server.
                    return PumpEnd::ServerClosed;
                }
                track.set_writing(false);
                cbuf.advance(off);
                counts.received.fetch_add(off as u64, Ordering::Relaxed);
                // The server finished the transaction while this side was writing.
                if done_wanted.load(Ordering::Relaxed) && track.quiet() && track.status() == b'I' {
                    return PumpEnd::TransactionDone;
                }
            }
            if terminated {
                return PumpEnd::ClientTerminated;
            }
            make_room(cbuf, max);
            match cr.read_buf(cbuf).await {
                Ok(0) | Err(_) => return PumpEnd::ClientClosed,
                Ok(_) => {}
            }
        }
    };

    let server_to_client = async {
        // Read only when an idle timeout needs it.
        let idle_timed =
            opts.client_idle_timeout.is_some() || opts.idle_transaction_timeout.is_some();
        let now = || idle_timed.then(Instant::now);
        let mut idle_since = now();
        let mut answered: u64 = 0;
        let mut out = BytesMut::new();
        loop {
            loop {
                let deadline = next_deadline(&track, &opts, idle_since);
                if deadline.is_none() && opts.query_timeout.is_none() {
                    match sr.read_buf(sbuf).await {
                        Ok(0) | Err(_) => return PumpEnd::ServerClosed,
                        Ok(_) => break,
                    }
                }
                // With a query_timeout, a request the client sends while this side
                // waits with no (or an idle) deadline wakes it to take the new one.
                let wait = async {
                    match &deadline {
                        Some((at, _)) => tokio::time::sleep_until((*at).into()).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    read = sr.read_buf(sbuf) => match read {
                        Ok(0) | Err(_) => return PumpEnd::ServerClosed,
                        Ok(_) => break,
                    },
                    _ = wake.notified(), if opts.query_timeout.is_some() => {}
                    // The state may have moved on meanwhile: only end if it still holds.
                    _ = wait => match (deadline, next_deadline(&track, &opts, idle_since)) {
                        (Some((_, end)), Some((at2, end2))) if at2 <= Instant::now() && same(&end, &end2) => {
                            return end
                        }
                        _ => {}
                    },
                }
            }
            let mut off = 0;
            let mut copied = 0;
            let (mut queries, mut xacts) = (0u64, 0u64);
            loop {
                match next_message(&sbuf[off..], max) {
                    Ok(Some(h)) => {
                        let m = &sbuf[off..off + h.total];
                        let (mut swallow, mut convert) = (false, false);
                        match h.tag {
                            b'Z' => {
                                let status = body(m).first().copied().unwrap_or(b'I');
                                track.ready_for_query(status);
                                if settle(&expected, |e| e.epoch <= answered) {
                                    track.statements_unsure();
                                }
                                answered += 1;
                                queries += 1;
                                xacts += u64::from(status == b'I');
                            }
                            b'1' | b'3' => match pop_expected(&expected) {
                                Some(Expect { injected: true, .. }) => swallow = true,
                                Some(Expect { as_parse: true, .. }) => convert = true,
                                _ => {}
                            },
                            b'E' => {
                                track.server_error();
                                // The server skips to the next Sync: nothing more comes
                                // for this batch's Parse and Close messages.
                                if settle(&expected, |e| e.epoch <= answered) {
                                    track.statements_unsure();
                                }
                            }
                            b'G' => track.copy_in_started(),
                            b'C' => track.command_complete(body(m)),
                            b'S' => {
                                record_parameter(params, body(m));
                                params_seen.store(true, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        if swallow {
                            out.extend_from_slice(&sbuf[copied..off]);
                            copied = off + h.total;
                        }
                        if convert {
                            // CloseComplete standing in for the client's ParseComplete.
                            sbuf[off] = b'1';
                        }
                        off += h.total;
                    }
                    Ok(None) => break,
                    Err(e) => return PumpEnd::ServerProtocol(e),
                }
            }
            if off > 0 {
                let sent = if copied == 0 {
                    cw.send(&sbuf[..off]).await
                } else {
                    out.extend_from_slice(&sbuf[copied..off]);
                    let r = if out.is_empty() {
                        Ok(())
                    } else {
                        cw.send(&out).await
                    };
                    out.clear();
                    r
                };
                if sent.is_err() {
                    return PumpEnd::ClientClosed;
                }
                sbuf.advance(off);
                counts.sent(off, queries, xacts, &stats);
                if queries > 0 {
                    idle_since = now();
                }
            }
            let idle = track.quiet() && track.status() == b'I' && sbuf.is_empty();
            if !opts.transaction && idle && !track.writing() && track.reset_done() {
                return PumpEnd::Resync;
            }
            if opts.transaction && idle {
                // Never release the connection in the middle of a client write (a COPY
                // the server aborted while data was still going in): the client side
                // returns once its write is complete.
                if !track.writing() {
                    return PumpEnd::TransactionDone;
                }
                done_wanted.store(true, Ordering::Relaxed);
            }
            make_room(sbuf, max);
        }
    };

    let end = tokio::select! {
        end = client_to_server => end,
        end = server_to_client => end,
    };
    counts.flush(&stats);
    let params_changed = params_seen.into_inner();
    if params_changed {
        server.in_step_with = None;
    }
    let clean = track.quiet() && server.buf.is_empty();
    let release = match end {
        PumpEnd::TransactionDone | PumpEnd::Resync => Release::Reuse,
        PumpEnd::ClientTerminated
        | PumpEnd::ClientClosed
        | PumpEnd::ClientIdle
        | PumpEnd::IdleInTransaction
            if clean =>
        {
            match track.status() {
                b'I' => Release::Clean,
                _ => Release::Rollback,
            }
        }
        _ => Release::Close,
    };
    let commands = track.take_commands();
    let recoverable = matches!(end, PumpEnd::ServerClosed)
        && opts.transaction
        && track.status() == b'I'
        && !track.writing();
    PumpResult {
        unanswered: track.pending(),
        recoverable,
        end,
        release,
        settings_dirty: track.settings_need_reset(commands.len()),
        statements_dirty: track.statements_need_reset(),
        reset_seen: track.reset_seen(),
        params_changed,
        commands,
        untracked_set: untracked_set.into_inner() || track.untracked_set(),
    }
}

/// Reads go into at least 8 KiB of free space (reclaimed at the front of the buffer when
/// it has been consumed), and a message announced larger than what has arrived gets
/// room for its rest, 1 MiB at a time: a 5-byte header alone never reserves much.
fn make_room(buf: &mut BytesMut, max: usize) {
    const MIN: usize = 8 << 10;
    const STEP: usize = 1 << 20;
    let missing = match announced_size(buf, max) {
        Ok(Some(size)) => size.saturating_sub(buf.len()),
        _ => 0,
    };
    let spare = buf.capacity() - buf.len();
    if spare < MIN / 2 || spare < missing.min(STEP) {
        buf.reserve(missing.clamp(MIN, STEP));
    }
}
