//! The pump's reading of each side's messages as they arrive: the client's recorded,
//! checked for session state and rewritten where needed; the server's followed and
//! passed on, swallowed or converted. Each returns how many bytes at the front of its
//! read buffer go on unchanged, after what waits in the outbox for that peer.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::pool::record_parameter;
use crate::protocol::frame::body;
use crate::protocol::{Backend, Frontend, ProtocolError};
use crate::sql::{PinReason, PinSet};

use super::counts::Counts;
use super::inspect::{lead, rewrite, session_command, Lead};
use super::outbox;
use super::stream::{self, Passing};
use super::PumpEnd;
use crate::frontend::pin::{self, PinMode, Pins};
use crate::frontend::prepared::{Rewriter, Rewritten};
use crate::frontend::settings::SqlCommand;
use crate::frontend::track::{Answer, Sent, Tracker};

/// Session state that ties a transaction-mode client to its server connection.
pub(in crate::frontend) struct Pinning<'a> {
    pub pins: &'a mut Pins,
    pub mode: PinMode,
    /// Told of reasons that newly pin the client (with the lost state's cause for
    /// `PinReason::Protocol`).
    pub on_pin: &'a (dyn Fn(PinSet, Option<&'static str>) + Sync),
}

/// What the pump keeps between rounds: the bytes waiting for each peer, and where each
/// side's message stream stands.
pub(in crate::frontend) struct Flow {
    /// Bytes waiting to be written to the server.
    pub to_server: BytesMut,
    /// Bytes waiting to be written to the client.
    pub to_client: BytesMut,
    /// What pgfleet writes in place of a message, being built.
    changed: BytesMut,
    /// Why each refused statement was refused, in the order the server answers them.
    refusals: VecDeque<PinReason>,
    /// What is left of a large message passed on as it arrives, from each side.
    pub from_client: Passing,
    pub from_server: Passing,
    /// The client sent Terminate.
    pub terminated: bool,
    /// The client sent a SET pgfleet cannot follow.
    pub untracked_set: bool,
    /// The server sent ParameterStatus.
    pub params_changed: bool,
    /// Transaction mode: SETs are followed.
    transaction: bool,
}

impl Flow {
    /// A pump's state at its start. `session_text`: a Query's or Parse's text may pass
    /// on before all of it is in (session mode, where pgfleet reads only its first
    /// word). Messages over `stream_at` bytes may be passed on as they come.
    #[inline]
    pub(in crate::frontend) fn new(
        transaction: bool,
        session_text: bool,
        stream_at: usize,
    ) -> Flow {
        Flow {
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            changed: BytesMut::new(),
            refusals: VecDeque::new(),
            from_client: Passing::new(stream::From::Client { text: session_text }, stream_at),
            from_server: Passing::new(stream::From::Server, stream_at),
            terminated: false,
            untracked_set: false,
            params_changed: false,
            transaction,
        }
    }

    /// The client's messages at the front of `cbuf`, as far as they go now: recorded in
    /// `track`, checked for session state (`pinning`), rewritten where needed
    /// (`rewriter`). Returns how many bytes at `cbuf`'s front go to the server as they
    /// are, after `to_server`.
    #[inline(always)]
    pub(in crate::frontend) fn client(
        &mut self,
        cbuf: &mut BytesMut,
        max: usize,
        track: &mut Tracker,
        mut rewriter: Option<&mut Rewriter<'_>>,
        mut pinning: Option<&mut Pinning<'_>>,
    ) -> Result<usize, PumpEnd> {
        let mut run = 0;
        if self.from_client.active() {
            run = self.from_client.take(cbuf.len());
            if self.from_client.active() {
                return Ok(run);
            }
        }
        while !self.terminated && track.has_room() {
            let h = match self.from_client.next(&cbuf[run..], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(PumpEnd::ClientProtocol(e)),
            };
            // All of it, or (passed on as it comes) what has arrived.
            let avail = h.total.min(cbuf.len() - run);
            let kind = Frontend::from_tag(h.tag);
            match kind {
                Frontend::Terminate => {
                    self.terminated = true;
                    break;
                }
                Frontend::Other(tag) => {
                    let e = ProtocolError::Unexpected {
                        expected: "a query, extended-protocol or COPY message",
                        got: tag,
                    };
                    return Err(PumpEnd::ClientProtocol(e));
                }
                _ => {}
            }
            let m = &cbuf[run..run + avail];
            if let Some(p) = pinning.as_mut() {
                let state = match kind {
                    Frontend::Query | Frontend::Parse | Frontend::FunctionCall => {
                        pin::message_state(m)
                    }
                    _ => PinSet::default(),
                };
                match (state.iter().next(), p.mode) {
                    (None, _) => {}
                    (Some(_), PinMode::Auto) => {
                        let new = p.pins.add(state, track.next_seq());
                        if !new.is_empty() {
                            (p.on_pin)(new, None);
                        }
                    }
                    (Some(reason), PinMode::Error) => {
                        let sent = pin::refused_message(m, &mut self.changed);
                        track.sent(
                            Sent {
                                kind: sent,
                                answer: Answer::Refused,
                                statement: false,
                            },
                            None,
                        );
                        self.refusals.push_back(reason);
                        outbox::take(&mut self.to_server, cbuf, run);
                        outbox::replace(&mut self.to_server, cbuf, h.total, &self.changed);
                        self.changed.clear();
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
                    session_command(m, lead, rewriter.is_some(), &mut self.untracked_set)
                        .filter(|c| self.transaction || !matches!(c, SqlCommand::Set { .. }))
                }
                _ => None,
            };
            let rewritten = match rewriter.as_mut() {
                Some(rw) => rewrite(
                    rw,
                    m,
                    h.total,
                    lead,
                    &mut self.changed,
                    track,
                    command.clone(),
                )
                .map_err(|_| PumpEnd::OutOfStep(track.lost().unwrap_or("lost")))?,
                None => Rewritten::No,
            };
            // How many of its first bytes pgfleet replaced.
            let front = match rewritten {
                Rewritten::No => {
                    track.sent(Sent::client(kind), command);
                    0
                }
                Rewritten::Whole if avail == h.total => avail,
                Rewritten::Front(front) if front <= avail => front,
                Rewritten::Whole | Rewritten::Front(_) => {
                    let why = "a message rewritten before all of it arrived";
                    return Err(PumpEnd::OutOfStep(why));
                }
            };
            if front > 0 {
                outbox::take(&mut self.to_server, cbuf, run);
                outbox::replace(&mut self.to_server, cbuf, front, &self.changed);
                self.changed.clear();
                run = 0;
            }
            run += avail - front;
            if avail < h.total {
                // The rest follows as it arrives: nothing after it is here yet.
                self.from_client.started(h.total, avail);
                break;
            }
        }
        Ok(run)
    }

    /// The server's messages at the front of `sbuf`, as far as they go now: followed in
    /// `track`, reported parameters recorded in `params`, ReadyForQuery counted. Returns
    /// how many bytes at `sbuf`'s front go to the client as they are, after
    /// `to_client`, and whether a ReadyForQuery came.
    #[inline(always)]
    pub(in crate::frontend) fn server(
        &mut self,
        sbuf: &mut BytesMut,
        max: usize,
        track: &mut Tracker,
        params: &mut Vec<(String, String)>,
        counts: &mut Counts,
    ) -> Result<(usize, bool), PumpEnd> {
        let mut run = 0;
        let mut answered = false;
        if self.from_server.active() {
            run = self.from_server.take(sbuf.len());
            if self.from_server.active() {
                return Ok((run, answered));
            }
        }
        loop {
            let h = match self.from_server.next(&sbuf[run..], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(PumpEnd::ServerProtocol(e)),
            };
            // All of it, or (a row or COPY data passed on as it comes) what has arrived:
            // the tracker does not read those.
            let avail = h.total.min(sbuf.len() - run);
            let msg = Backend::from_tag(h.tag);
            let b = body(&sbuf[run..run + avail]);
            match msg {
                Backend::ParameterStatus => {
                    record_parameter(params, b);
                    self.params_changed = true;
                }
                Backend::ReadyForQuery => {
                    answered = true;
                    counts.answered(b.first() == Some(&b'I'));
                }
                _ => {}
            }
            let answer = track.server(msg, b);
            if avail < h.total {
                if answer != Answer::Forward {
                    return Err(PumpEnd::OutOfStep("a large message pgfleet must change"));
                }
                // The rest follows as it arrives: nothing after it is here yet.
                self.from_server.started(h.total, avail);
                run += avail;
                break;
            }
            match answer {
                Answer::Forward => run += avail,
                Answer::AsParse => {
                    sbuf[run] = b'1';
                    run += h.total;
                }
                Answer::Swallow => {
                    outbox::take(&mut self.to_client, sbuf, run);
                    outbox::replace(&mut self.to_client, sbuf, h.total, &[]);
                    run = 0;
                }
                Answer::Refused => {
                    if let Some(reason) = self.refusals.pop_front() {
                        pin::refusal(&mut self.changed, reason);
                    }
                    outbox::take(&mut self.to_client, sbuf, run);
                    outbox::replace(&mut self.to_client, sbuf, h.total, &self.changed);
                    self.changed.clear();
                    run = 0;
                }
            }
        }
        Ok((run, answered))
    }

    /// Neither side is in the middle of a message passed on as it comes.
    pub(in crate::frontend) fn between_messages(&self) -> bool {
        !self.from_client.active() && !self.from_server.active()
    }
}
