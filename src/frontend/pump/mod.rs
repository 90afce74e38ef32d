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

use crate::pool::{record_parameter, PoolStats, PooledConn, Release};
use crate::protocol::frame::body;
use crate::protocol::{next_message, Backend, Frontend, ProtocolError};

use super::conn::ClientConn;
use super::pin::{self, PinMode, Pins};
use super::prepared::{ClientStatements, Rewriter, SharedStatements};
use super::settings::SqlCommand;
use super::track::{Answer, Sent, Tracker};
use crate::sql::{PinReason, PinSet};

mod counts;
mod deadline;
/// Also driven by `frontend::fuzzing`.
pub(super) mod inspect;
mod io;
mod outbox;
mod outcome;

use counts::Counts;
use deadline::next_deadline;
use inspect::{lead, rewrite, session_command, Lead};
use io::{make_room, send, shrink_idle, sleep_until};
pub use outcome::{PumpEnd, PumpResult};

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
            (rewriter, Some((c.pins, c.pin_mode, c.on_pin)))
        }
        None => (None, None),
    };
    let (mut cr, mut cw) = client.stream.split();
    let cbuf = &mut client.buf;
    // What waits to be written to each side.
    let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
    let mut changed = BytesMut::new();
    // Why each refused statement was refused, in the order the server answers them.
    let mut refusals = std::collections::VecDeque::new();
    let mut terminated = false;
    let mut untracked_set = false;
    let mut params_changed = false;
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

    let end = 'pump: loop {
        // The client's whole messages: recorded, rewritten where needed, queued.
        let mut run = 0;
        while !terminated && track.has_room() {
            let h = match next_message(&cbuf[run..], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => break 'pump PumpEnd::ClientProtocol(e),
            };
            let kind = Frontend::from_tag(h.tag);
            match kind {
                Frontend::Terminate => {
                    terminated = true;
                    break;
                }
                Frontend::Other(tag) => {
                    let e = ProtocolError::Unexpected {
                        expected: "a query, extended-protocol or COPY message",
                        got: tag,
                    };
                    break 'pump PumpEnd::ClientProtocol(e);
                }
                _ => {}
            }
            let m = &cbuf[run..run + h.total];
            if let Some((pins, pin_mode, on_pin)) = pinning.as_mut() {
                let state = match kind {
                    Frontend::Query | Frontend::Parse | Frontend::FunctionCall => {
                        pin::message_state(m)
                    }
                    _ => PinSet::default(),
                };
                match (state.iter().next(), *pin_mode) {
                    (None, _) => {}
                    (Some(_), PinMode::Auto) => {
                        let new = pins.add(state, track.next_seq());
                        if !new.is_empty() {
                            on_pin(new, None);
                        }
                    }
                    (Some(reason), PinMode::Error) => {
                        let sent = pin::refused_message(m, &mut changed);
                        track.sent(
                            Sent {
                                kind: sent,
                                answer: Answer::Refused,
                                statement: false,
                            },
                            None,
                        );
                        refusals.push_back(reason);
                        outbox::take(&mut to_server, cbuf, run);
                        outbox::replace(&mut to_server, cbuf, h.total, &changed);
                        changed.clear();
                        run = 0;
                        continue;
                    }
                }
            }
            // Session mode follows only the RESETs (its settings are applied again).
            let lead = match kind {
                Frontend::Query | Frontend::Parse => lead(m),
                _ => Lead::Other,
            };
            let command = match kind {
                Frontend::Query | Frontend::Parse => {
                    session_command(m, lead, rewriter.is_some(), &mut untracked_set)
                        .filter(|c| opts.transaction || !matches!(c, SqlCommand::Set { .. }))
                }
                _ => None,
            };
            let rewritten = match rewriter.as_mut() {
                Some(rw) => match rewrite(rw, m, lead, &mut changed, track, command.clone()) {
                    Ok(done) => done,
                    Err(_) => break 'pump PumpEnd::OutOfStep(track.lost().unwrap_or("lost")),
                },
                None => false,
            };
            if rewritten {
                outbox::take(&mut to_server, cbuf, run);
                outbox::replace(&mut to_server, cbuf, h.total, &changed);
                changed.clear();
                run = 0;
            } else {
                track.sent(Sent::client(kind), command);
                run += h.total;
            }
        }
        // Straight from the read buffer when the socket takes it all now (the common
        // case): the buffer is not shared with the outbox, nor its allocation.
        if to_server.is_empty() && run > 0 {
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
        outbox::take(&mut to_server, cbuf, run);

        // The server's whole messages: followed, passed on, swallowed or converted.
        let mut run = 0;
        let mut answered = false;
        loop {
            let h = match next_message(&sbuf[run..], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => break 'pump PumpEnd::ServerProtocol(e),
            };
            let msg = Backend::from_tag(h.tag);
            let b = body(&sbuf[run..run + h.total]);
            match msg {
                Backend::ParameterStatus => {
                    record_parameter(params, b);
                    params_changed = true;
                }
                Backend::ReadyForQuery => {
                    answered = true;
                    counts.answered(b.first() == Some(&b'I'));
                }
                _ => {}
            }
            match track.server(msg, b) {
                Answer::Forward => run += h.total,
                Answer::AsParse => {
                    sbuf[run] = b'1';
                    run += h.total;
                }
                Answer::Swallow => {
                    outbox::take(&mut to_client, sbuf, run);
                    outbox::replace(&mut to_client, sbuf, h.total, &[]);
                    run = 0;
                }
                Answer::Refused => {
                    if let Some(reason) = refusals.pop_front() {
                        pin::refusal(&mut changed, reason);
                    }
                    outbox::take(&mut to_client, sbuf, run);
                    outbox::replace(&mut to_client, sbuf, h.total, &changed);
                    changed.clear();
                    run = 0;
                }
            }
        }
        if let (Some(why), Some((pins, _, on_pin))) = (track.lost(), pinning.as_mut()) {
            if !pins.reasons().contains(PinReason::Protocol) {
                let mut protocol = PinSet::default();
                protocol.add(PinReason::Protocol);
                pins.add(protocol, track.next_seq());
                on_pin(protocol, Some(why));
            }
        }
        if to_client.is_empty() && run > 0 {
            match cw.write_now(&sbuf[..run]) {
                Ok(n) => {
                    counts.sent(n, &stats);
                    sbuf.advance(n);
                    run -= n;
                }
                Err(_) => break PumpEnd::ClientClosed,
            }
        }
        outbox::take(&mut to_client, sbuf, run);
        if answered {
            idle_since = now();
        }

        // What the sockets take now is written now, without a round through the wait
        // below (plain TCP; TLS writes there).
        if !to_server.is_empty() {
            match sw.write_now(&to_server) {
                Ok(n) => {
                    counts.received(n);
                    outbox::written(&mut to_server, n);
                }
                Err(_) => {
                    broken_write = true;
                    break PumpEnd::ServerClosed;
                }
            }
        }
        if !to_client.is_empty() {
            match cw.write_now(&to_client) {
                Ok(n) => {
                    counts.sent(n, &stats);
                    outbox::written(&mut to_client, n);
                }
                Err(_) => break PumpEnd::ClientClosed,
            }
        }

        // Where to stop.
        let settled = to_server.is_empty()
            && to_client.is_empty()
            && !flush_server
            && !flush_client
            && sbuf.is_empty();
        if terminated && to_server.is_empty() && !flush_server {
            break PumpEnd::ClientTerminated;
        }
        if settled && track.idle() {
            match pinning.as_mut() {
                Some((pins, _, _)) => {
                    if pins.any() && track.discarded_after(pins.since()) {
                        pins.clear();
                    }
                    if !pins.any() {
                        break PumpEnd::TransactionDone;
                    }
                }
                None if track.reset_done() => break PumpEnd::Resync,
                None => {}
            }
        }

        // Wait for the next thing either side can do.
        let deadline = next_deadline(track, &opts, idle_since);
        let read_client = !terminated && track.has_room() && to_server.len() < BACKLOG;
        let read_server = to_client.len() < BACKLOG;
        make_room(cbuf, max, &mut grew.0);
        make_room(sbuf, max, &mut grew.1);
        if track.quiet() && to_client.is_empty() && to_server.is_empty() {
            shrink_idle(cbuf, &mut grew.0);
            shrink_idle(sbuf, &mut grew.1);
        }
        tokio::select! {
            biased;
            w = send(&mut sw, &to_server), if !to_server.is_empty() || flush_server => match w {
                Ok(Some(n)) => {
                    counts.received(n);
                    outbox::written(&mut to_server, n);
                    flush_server = sw.buffers();
                }
                Ok(None) => flush_server = false,
                Err(_) => {
                    broken_write = true;
                    break PumpEnd::ServerClosed;
                }
            },
            w = send(&mut cw, &to_client), if !to_client.is_empty() || flush_client => match w {
                Ok(Some(n)) => {
                    counts.sent(n, &stats);
                    outbox::written(&mut to_client, n);
                    flush_client = cw.buffers();
                }
                Ok(None) => flush_client = false,
                Err(_) => break PumpEnd::ClientClosed,
            },
            r = sr.read_buf(sbuf), if read_server => match r {
                Ok(n) if n > 0 => make_room(sbuf, max, &mut grew.1),
                _ => break PumpEnd::ServerClosed,
            },
            r = cr.read_buf(cbuf), if read_client => match r {
                Ok(n) if n > 0 => make_room(cbuf, max, &mut grew.0),
                _ => break PumpEnd::ClientClosed,
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
    if params_changed {
        server.in_step_with = None;
    }
    let lost = track.lost();
    let clean = lost.is_none()
        && track.quiet()
        && !track.unsynced()
        && to_server.is_empty()
        && !broken_write
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
        && !broken_write;
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
        untracked_set: untracked_set || track.untracked_set(),
        lost,
    }
}
