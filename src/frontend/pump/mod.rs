//! The message pump: forwards whole messages both ways between a client and its server
//! connection, straight from the read buffers (no copy, no allocation per message), and
//! follows where the server is in the protocol (`Tracker`).
//!
//! One future owns all of it: it waits at once for either socket to be readable and
//! for either to take what is waiting for it, so neither direction can stall the other
//! (a client pipelining a long batch while the server answers it), and the protocol
//! state is a plain value only this loop touches.
//!
//! In transaction mode it returns as soon as the tracker can prove the server idle and
//! in step outside a transaction, with nothing left to send either way, so the
//! connection can go back to the pool.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::pool::{PoolStats, PooledConn, Release};

use super::conn::ClientConn;
use super::pin::{PinMode, Pins};
use super::prepared::{ClientStatements, Rewriter, SharedStatements};
use super::track::Tracker;
use crate::sql::{PinReason, PinSet};

/// Also used by `frontend::fuzzing`.
pub(super) mod counts;
mod deadline;
/// Also driven by `frontend::fuzzing`.
pub(super) mod inspect;
mod io;
/// Also driven by `frontend::fuzzing`.
pub(super) mod messages;
mod outbox;
mod outcome;
pub(super) mod stream;

use counts::Counts;
use deadline::next_deadline;
use io::{make_room, send, shrink_idle, sleep_until};
use messages::{Flow, Pinning};
pub use outcome::{PumpEnd, PumpResult};
use stream::STREAM_AT;

/// How the pump runs for one client.
#[derive(Debug, Clone, Copy, Default)]
pub struct PumpOptions {
    /// Return at the end of each transaction, and track session commands.
    pub transaction: bool,
    pub client_idle_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub query_timeout: Option<Duration>,
}

/// What a transaction-mode client carries from one server connection to the next.
pub struct Carried<'a> {
    /// The client's named prepared statements.
    pub statements: &'a mut ClientStatements,
    /// Every client's, each text kept once.
    pub shared: &'a SharedStatements,
    /// The most statements a server connection keeps.
    pub max_prepared: usize,
    /// Session state that ties the client to its server connection.
    pub pins: &'a mut Pins,
    pub pin_mode: PinMode,
    /// Told of reasons that newly pin the client (with the lost state's cause for
    /// `PinReason::Protocol`).
    pub on_pin: &'a (dyn Fn(PinSet, Option<&'static str>) + Sync),
}

/// The most bytes waiting for a peer before the pump stops reading from the other.
const BACKLOG: usize = 256 << 10;

/// Pumps until either side ends (or, in transaction mode, the transaction ends and
/// nothing pins the client to the connection). `carried` is given in transaction mode.
/// Traffic is counted on the pool's statistics and on `endpoint`'s. `track` starts
/// again (a client's tracker serves each of its transactions).
pub async fn pump(
    client: &mut ClientConn,
    server: &mut PooledConn,
    track: &mut Tracker,
    opts: PumpOptions,
    carried: Option<Carried<'_>>,
    endpoint: &PoolStats,
) -> PumpResult {
    let max = client.max_message;
    let (pool, sc) = server.with_pool();
    let stats = [&pool.stats, endpoint];
    track.restart(opts.query_timeout.is_some());
    let mut counts = Counts::default();
    let (mut sr, mut sw) = sc.stream.split();
    let (sbuf, params) = (&mut sc.buf, &mut sc.params);
    let (mut rewriter, mut pinning) = match carried {
        Some(c) => {
            let rewriter = (c.max_prepared > 0).then_some(Rewriter {
                client: c.statements,
                shared: c.shared,
                server: &mut sc.prepared,
                max_prepared: c.max_prepared,
                checked: Vec::new(),
            });
            let pinning = Pinning {
                pins: c.pins,
                mode: c.pin_mode,
                on_pin: c.on_pin,
            };
            (rewriter, Some(pinning))
        }
        None => (None, None),
    };
    let (mut cr, mut cw) = client.stream.split();
    let cbuf = &mut client.buf;
    // Session mode reads only a statement's first word: its text may pass as it comes.
    let mut flow = Flow::new(opts.transaction, pinning.is_none(), STREAM_AT);
    // A write to the server failed part-way: the server may hold half a message.
    let mut broken_write = false;
    // TLS keeps what was written until flushed.
    let (mut flush_server, mut flush_client) = (false, false);
    let idle_timed = opts.client_idle_timeout.is_some() || opts.idle_transaction_timeout.is_some();
    let now = || idle_timed.then(Instant::now);
    let mut idle_since = now();
    // The client's and the server's read buffers made room for a large message (here,
    // or before: the client's first message may have been read ahead).
    let large = |b: &BytesMut| b.capacity() > 64 << 10;
    let mut grew = (large(cbuf), large(sbuf));

    let end = loop {
        let mut run = match flow.client(cbuf, max, track, rewriter.as_mut(), pinning.as_mut()) {
            Ok(run) => run,
            Err(end) => break end,
        };
        // Straight from the read buffer when the socket takes it all now (the common
        // case): the buffer is not shared with the outbox, nor its allocation.
        if flow.to_server.is_empty() && run > 0 {
            match sw.write_now(&cbuf[..run]) {
                Ok(n) => {
                    counts.received(n);
                    cbuf.advance(n);
                    run -= n;
                }
                Err(_) => {
                    broken_write = true;
                    break PumpEnd::ServerClosed;
                }
            }
        }
        outbox::take(&mut flow.to_server, cbuf, run);

        let (mut run, answered) = match flow.server(sbuf, max, track, params, &mut counts) {
            Ok(done) => done,
            Err(end) => break end,
        };
        if let (Some(why), Some(p)) = (track.lost(), pinning.as_mut()) {
            if !p.pins.reasons().contains(PinReason::Protocol) {
                let mut protocol = PinSet::default();
                protocol.add(PinReason::Protocol);
                p.pins.add(protocol, track.next_seq());
                (p.on_pin)(protocol, Some(why));
            }
        }
        if flow.to_client.is_empty() && run > 0 {
            match cw.write_now(&sbuf[..run]) {
                Ok(n) => {
                    counts.sent(n, &stats);
                    sbuf.advance(n);
                    run -= n;
                }
                Err(_) => break PumpEnd::ClientClosed,
            }
        }
        outbox::take(&mut flow.to_client, sbuf, run);
        if answered {
            idle_since = now();
        }

        // What the sockets take now is written now, without a round through the wait
        // below (plain TCP; TLS writes there).
        if !flow.to_server.is_empty() {
            match sw.write_now(&flow.to_server) {
                Ok(n) => {
                    counts.received(n);
                    outbox::written(&mut flow.to_server, n);
                }
                Err(_) => {
                    broken_write = true;
                    break PumpEnd::ServerClosed;
                }
            }
        }
        if !flow.to_client.is_empty() {
            match cw.write_now(&flow.to_client) {
                Ok(n) => {
                    counts.sent(n, &stats);
                    outbox::written(&mut flow.to_client, n);
                }
                Err(_) => break PumpEnd::ClientClosed,
            }
        }

        // Where to stop.
        let settled = flow.to_server.is_empty()
            && flow.to_client.is_empty()
            && !flush_server
            && !flush_client
            && sbuf.is_empty()
            && flow.between_messages();
        if flow.terminated && flow.to_server.is_empty() && !flush_server {
            break PumpEnd::ClientTerminated;
        }
        if settled && track.idle() {
            match pinning.as_mut() {
                Some(p) => {
                    if p.pins.any() && track.discarded_after(p.pins.since()) {
                        p.pins.clear();
                    }
                    if !p.pins.any() {
                        break PumpEnd::TransactionDone;
                    }
                }
                None if track.reset_done() => break PumpEnd::Resync,
                None => {}
            }
        }

        // Wait for the next thing either side can do.
        let deadline = next_deadline(track, &opts, idle_since);
        let read_client = !flow.terminated && track.has_room() && flow.to_server.len() < BACKLOG;
        let read_server = flow.to_client.len() < BACKLOG;
        // Room is made once what was read has been passed on (made before, it would
        // grow a buffer still full of it).
        make_room(cbuf, flow.from_client.wanted(cbuf, max), &mut grew.0);
        make_room(sbuf, flow.from_server.wanted(sbuf, max), &mut grew.1);
        if track.quiet() && flow.to_client.is_empty() && flow.to_server.is_empty() {
            shrink_idle(cbuf, &mut grew.0);
            shrink_idle(sbuf, &mut grew.1);
        }
        tokio::select! {
            biased;
            w = send(&mut sw, &flow.to_server), if !flow.to_server.is_empty() || flush_server => match w {
                Ok(Some(n)) => {
                    counts.received(n);
                    outbox::written(&mut flow.to_server, n);
                    flush_server = sw.buffers();
                }
                Ok(None) => flush_server = false,
                Err(_) => {
                    broken_write = true;
                    break PumpEnd::ServerClosed;
                }
            },
            w = send(&mut cw, &flow.to_client), if !flow.to_client.is_empty() || flush_client => match w {
                Ok(Some(n)) => {
                    counts.sent(n, &stats);
                    outbox::written(&mut flow.to_client, n);
                    flush_client = cw.buffers();
                }
                Ok(None) => flush_client = false,
                Err(_) => break PumpEnd::ClientClosed,
            },
            r = sr.read_buf(sbuf), if read_server => match r {
                Ok(0) | Err(_) => break PumpEnd::ServerClosed,
                Ok(_) => {}
            },
            r = cr.read_buf(cbuf), if read_client => match r {
                Ok(0) | Err(_) => break PumpEnd::ClientClosed,
                Ok(_) => {}
            },
            _ = sleep_until(deadline.as_ref().map(|d| d.0)), if deadline.is_some() => {
                // The state may have moved on meanwhile: only end if it still holds.
                if let Some((at, end)) = next_deadline(track, &opts, idle_since) {
                    if at <= Instant::now() {
                        break end;
                    }
                }
            }
        }
    };
    counts.flush(&stats);
    shrink_idle(cbuf, &mut grew.0);
    shrink_idle(sbuf, &mut grew.1);
    let params_changed = flow.params_changed;
    if params_changed {
        server.in_step_with = None;
    }
    let lost = track.lost();
    let clean = lost.is_none()
        && track.quiet()
        && !track.unsynced()
        && flow.to_server.is_empty()
        && !broken_write
        && flow.between_messages()
        && server.buf.is_empty();
    let release = match end {
        PumpEnd::TransactionDone | PumpEnd::Resync => Release::Reuse,
        PumpEnd::ClientTerminated
        | PumpEnd::ClientClosed
        | PumpEnd::ClientIdle
        | PumpEnd::IdleInTransaction
            if clean =>
        {
            match track.status() {
                b'I' => Release::Clean {
                    session_state: false,
                },
                _ => Release::Rollback {
                    session_state: false,
                },
            }
        }
        _ => Release::Close,
    };
    let commands = track.take_commands();
    let owed = track.owed();
    let recoverable = matches!(end, PumpEnd::ServerClosed)
        && opts.transaction
        && track.status() == b'I'
        && owed.is_some()
        && !broken_write
        && !flow.from_client.active();
    PumpResult {
        unanswered: owed.unwrap_or(0),
        recoverable,
        end,
        release,
        settings_dirty: track.settings_need_reset(commands.len()),
        statements_dirty: track.statements_need_reset(),
        reset_seen: track.reset_seen(),
        params_changed,
        commands,
        untracked_set: flow.untracked_set || track.untracked_set(),
        lost,
    }
}
