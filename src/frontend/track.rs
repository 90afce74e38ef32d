//! Where the server is in the protocol: a model of how PostgreSQL consumes the messages
//! a client sent, driven by the messages the server answers with.
//!
//! PostgreSQL answers strictly in order. The tracker keeps every message sent to the
//! server and not consumed yet, and matches each server message to the one it answers:
//! Parse, Bind and Close get one answer, Describe and Execute end with one, Query and
//! FunctionCall end with ReadyForQuery, Sync gets ReadyForQuery, Flush nothing. It
//! follows the server's modes as `postgres.c` and `copyfromparse.c` do: after an error
//! in an extended batch the server skips every message up to the next Sync; during
//! COPY FROM STDIN it takes CopyData and ignores Sync and Flush; outside COPY it ignores
//! CopyData, CopyDone and CopyFail.
//!
//! It fails closed: a server message that is not the answer the model expects, or a
//! case where the model cannot know what the server will answer (a COPY the server
//! aborts while the client had sent a Sync after its data: whether that Sync was read
//! inside the COPY, and so ignored, depends on how far the server had read), makes it
//! *lost*. A lost connection is never given to another client.

use std::collections::VecDeque;
use std::time::Instant;

use crate::protocol::{Backend, Frontend};

use super::settings::SqlCommand;

/// What the pump does with the answer to one message it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// The client's: pass it on.
    #[default]
    Forward,
    /// pgfleet added the message: its answer is not the client's.
    Swallow,
    /// A Close pgfleet sent in place of the client's Parse: its CloseComplete goes to
    /// the client as ParseComplete.
    AsParse,
    /// A statement pgfleet refused, sent as one that fails: its ErrorResponse is
    /// replaced by pgfleet's.
    Refused,
}

/// One message as sent to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub kind: Frontend,
    /// What becomes of a successful answer.
    pub answer: Answer,
    /// A Parse or Close of a statement under pgfleet's name: if the server skips it or
    /// it fails, pgfleet's list of the connection's statements is wrong.
    pub statement: bool,
}

impl Sent {
    /// A client message sent as it is.
    pub fn client(kind: Frontend) -> Sent {
        Sent {
            kind,
            answer: Answer::Forward,
            statement: false,
        }
    }
}

/// A message sent and not consumed by the server yet; runs of CopyData or Flush are
/// kept as one entry.
#[derive(Debug, Clone, Copy)]
struct Item {
    sent: Sent,
    count: u32,
    /// Its place among the messages sent, for the session commands attached to it.
    seq: u64,
}

/// What the server is doing, as far as the messages it sent tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading the next message (extended protocol answers come in this mode).
    Ready,
    /// Running a simple Query, up to its ReadyForQuery.
    Query,
    /// Running a FunctionCall, up to its ReadyForQuery.
    Function,
    /// COPY FROM STDIN, started by a Query or (`extended`) an Execute.
    CopyIn { extended: bool },
    /// COPY TO STDOUT.
    CopyOut { extended: bool },
    /// After an error in the extended protocol: skipping to the next Sync.
    Skip,
}

/// The most messages kept in flight: the pump stops reading the client beyond it.
pub const MAX_IN_FLIGHT: usize = 16 * 1024;

/// The most queued messages whose room `restart` keeps.
const KEEP: usize = 64;

/// The protocol state of one server connection while a client uses it.
#[derive(Debug)]
pub struct Tracker {
    queue: VecDeque<Item>,
    /// Messages queued so far (the next one's `seq`).
    seq: u64,
    mode: Mode,
    /// The transaction status of the last ReadyForQuery.
    status: u8,
    /// Extended-protocol messages ran since the last ReadyForQuery: the server holds an
    /// implicit transaction open until a Sync.
    unsynced: bool,
    /// What becomes of an error of the Query or FunctionCall running now.
    running: Answer,
    /// ReadyForQuery messages that may come, or not, before the answer to the head:
    /// Syncs a client sent after data inside a COPY the server aborted (see
    /// `copy_in_failed`). Any other answer settles them.
    maybe: u32,
    /// ReadyForQuery messages taken as answers to `maybe` Syncs: if a Sync sent after
    /// them is still waiting when another answer comes, those were its answers.
    credit: u32,
    /// Why the model no longer knows where the server is.
    lost: Option<&'static str>,
    /// The last server message was a ReadyForQuery (what a lost tracker still knows).
    last_ready: bool,
    /// Session commands attached to queued messages, by `seq`, in order.
    attached: VecDeque<(u64, SqlCommand)>,
    /// Session commands of the request running now (with their `seq`), and whether
    /// it failed.
    batch: Vec<(u64, SqlCommand)>,
    failed: bool,
    /// Session commands that took effect (outside a transaction block, without error).
    done: Vec<SqlCommand>,
    /// The `seq` of the last DISCARD ALL that took effect.
    discarded: Option<u64>,
    /// A SET ran inside a transaction block: it outlives it on this connection only.
    untracked_set: bool,
    /// CommandComplete tags SET/RESET seen.
    set_tags: usize,
    /// The server answered a RESET or DISCARD ALL, however it was sent.
    reset_seen: bool,
    /// pgfleet's list of the connection's prepared statements may be wrong.
    statements_unsure: bool,
    /// When the oldest message still waiting for an answer was sent (`timed` only).
    busy_since: Option<Instant>,
    timed: bool,
}

impl Tracker {
    /// A connection at rest (idle, outside a transaction); `timed` when the time since
    /// the oldest unanswered message is needed (`busy_since`).
    pub fn new(timed: bool) -> Tracker {
        Tracker {
            queue: VecDeque::new(),
            seq: 0,
            mode: Mode::Ready,
            status: b'I',
            unsynced: false,
            running: Answer::Forward,
            maybe: 0,
            credit: 0,
            lost: None,
            last_ready: true,
            attached: VecDeque::new(),
            batch: Vec::new(),
            failed: false,
            done: Vec::new(),
            discarded: None,
            untracked_set: false,
            set_tags: 0,
            reset_seen: false,
            statements_unsure: false,
            busy_since: None,
            timed,
        }
    }

    /// Starts again on a connection at rest, as `new` does, keeping the allocations:
    /// a transaction-mode client's tracker serves each of its transactions in turn.
    pub fn restart(&mut self, timed: bool) {
        // Every field, so that a new one cannot be forgotten here.
        let Tracker {
            queue,
            seq,
            mode,
            status,
            unsynced,
            running,
            maybe,
            credit,
            lost,
            last_ready,
            attached,
            batch,
            failed,
            done,
            discarded,
            untracked_set,
            set_tags,
            reset_seen,
            statements_unsure,
            busy_since,
            timed: was_timed,
        } = self;
        // A burst's queue is not kept for the rest of the client's life.
        if queue.capacity() > KEEP {
            *queue = VecDeque::new();
        }
        queue.clear();
        attached.clear();
        batch.clear();
        done.clear();
        (*seq, *mode, *status, *unsynced, *running) =
            (0, Mode::Ready, b'I', false, Answer::Forward);
        (*maybe, *credit, *lost, *last_ready) = (0, 0, None, true);
        (*failed, *discarded, *untracked_set, *set_tags) = (false, None, false, 0);
        (*reset_seen, *statements_unsure, *busy_since) = (false, false, None);
        *was_timed = timed;
    }

    /// A message about to be sent to the server, with the session command it runs.
    pub fn sent(&mut self, sent: Sent, command: Option<SqlCommand>) {
        if matches!(sent.kind, Frontend::Terminate | Frontend::Other(_)) {
            self.lose("a message the tracker does not know was sent to the server");
            return;
        }
        if self.lost.is_some() {
            return;
        }
        if self.queue.is_empty() && self.mode == Mode::Ready && ignored(sent.kind) {
            // The server reads it between requests and answers nothing.
            return;
        }
        if self.queue.is_empty() && self.timed {
            self.busy_since = Some(Instant::now());
        }
        let seq = self.seq;
        self.seq += 1;
        if let Some(command) = command {
            self.attached.push_back((seq, command));
        }
        if let Some(last) = self.queue.back_mut() {
            let runs = matches!(sent.kind, Frontend::CopyData | Frontend::Flush);
            if runs && last.sent == sent && last.count < u32::MAX {
                last.count += 1;
                return;
            }
        }
        self.queue.push_back(Item {
            sent,
            count: 1,
            seq,
        });
    }

    /// A server message: what to do with it. A message the model did not expect makes
    /// the tracker lost (and is passed on).
    #[inline]
    pub fn server(&mut self, msg: Backend, body: &[u8]) -> Answer {
        // The rows of a running query or Execute, the most frequent messages, and a
        // query's CommandComplete take the short way; `answer_to` gives them the same
        // answer.
        let short = match msg {
            Backend::DataRow | Backend::RowDescription if self.mode == Mode::Query => true,
            Backend::CommandComplete if self.mode == Mode::Query && self.lost.is_none() => {
                self.command_complete(body);
                true
            }
            Backend::DataRow if self.mode == Mode::Ready => {
                self.maybe == 0
                    && self.credit == 0
                    && self
                        .queue
                        .front()
                        .is_some_and(|i| i.sent.kind == Frontend::Execute)
            }
            _ => false,
        };
        if short && self.lost.is_none() {
            self.last_ready = false;
            return Answer::Forward;
        }
        self.answer_to(msg, body)
    }

    fn answer_to(&mut self, msg: Backend, body: &[u8]) -> Answer {
        use Backend as B;
        if matches!(
            msg,
            B::NoticeResponse | B::ParameterStatus | B::NotificationResponse
        ) {
            return Answer::Forward;
        }
        self.last_ready = msg == B::ReadyForQuery;
        let status = match msg {
            B::ReadyForQuery => match body.first() {
                Some(&s @ (b'I' | b'T' | b'E')) => s,
                _ => {
                    self.lose("a ReadyForQuery without a valid transaction status");
                    return Answer::Forward;
                }
            },
            _ => 0,
        };
        if self.lost.is_some() {
            if status != 0 {
                self.status = status;
            }
            return Answer::Forward;
        }
        if msg == B::CommandComplete {
            self.command_complete(body);
        }
        match self.mode {
            Mode::Ready => {
                let answer = self.answer(msg, status);
                if self.mode == Mode::Ready {
                    self.pop_ignored();
                }
                answer
            }
            Mode::Query | Mode::Function => self.in_request(msg, status),
            Mode::CopyOut { extended } => {
                match msg {
                    B::CopyData | B::CopyDone => {}
                    B::CommandComplete => self.mode = after_copy(extended),
                    B::ErrorResponse => self.fail_copy(extended),
                    _ => self.unexpected(msg),
                }
                Answer::Forward
            }
            Mode::CopyIn { extended } => {
                match msg {
                    B::CommandComplete => self.copy_in_done(extended),
                    B::ErrorResponse => self.copy_in_failed(extended),
                    _ => self.unexpected(msg),
                }
                Answer::Forward
            }
            Mode::Skip => {
                match msg {
                    B::ReadyForQuery => self.skip_to_sync(status),
                    _ => self.unexpected(msg),
                }
                Answer::Forward
            }
        }
    }

    /// A ReadyForQuery: the request is answered; its session commands took effect if
    /// it ran outside a transaction block without error.
    fn ready(&mut self, status: u8) {
        self.status = status;
        self.running = Answer::Forward;
        self.mode = Mode::Ready;
        self.unsynced = false;
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            if status == b'I' && !self.failed {
                for (seq, command) in batch {
                    if command == SqlCommand::DiscardAll {
                        self.discarded = Some(seq);
                    }
                    self.done.push(command);
                }
            } else if status != b'I'
                && batch
                    .iter()
                    .any(|(_, c)| matches!(c, SqlCommand::Set { .. }))
            {
                self.untracked_set = true;
            }
        }
        self.failed = false;
        self.pop_ignored();
        if self.queue.is_empty() {
            self.busy_since = None;
        } else if self.timed {
            self.busy_since = Some(Instant::now());
        }
    }

    fn unexpected(&mut self, msg: Backend) {
        let why = match msg {
            Backend::ReadyForQuery => "a ReadyForQuery no request was waiting for",
            Backend::ErrorResponse => "an ErrorResponse no request was waiting for",
            Backend::CopyBothResponse => "a COPY in both directions (replication)",
            _ => "a server message the protocol state did not expect",
        };
        self.lose(why);
    }

    fn lose(&mut self, why: &'static str) {
        if self.lost.is_none() {
            self.lost = Some(why);
            self.queue.clear();
            self.attached.clear();
        }
    }
}

mod answer;
mod commands;
mod copy;
mod queue;
mod state;
#[cfg(test)]
mod tests;

use copy::after_copy;
use queue::ignored;
