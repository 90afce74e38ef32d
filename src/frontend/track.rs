//! Where the server is in the protocol, as the pump sees the messages go by: shared by
//! the pump's two directions (one task, so the atomics are never contended).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::settings::SqlCommand;

/// ReadyForQuery messages still expected, the last transaction status, and whether
/// extended-protocol messages were sent since the last Sync (the server is then inside
/// an implicit transaction, or skipping to the next Sync after an error).
#[derive(Debug)]
pub struct Track {
    pending: AtomicU32,
    status: AtomicU8,
    unsynced: AtomicBool,
    /// When the oldest request still waiting for ReadyForQuery was sent, in
    /// nanoseconds after `epoch` plus one (0: nothing in flight).
    busy_since: AtomicU64,
    /// Set when requests are timed (a `query_timeout`): without one, no clock is read.
    epoch: Option<Instant>,
    /// Requests (Query, Sync, FunctionCall) sent and answered (ReadyForQuery): the
    /// n-th request is answered by the n-th ReadyForQuery.
    sent: AtomicU64,
    answered: AtomicU64,
    /// Session commands (SET, RESET, DISCARD ALL) sent as single-statement queries,
    /// until their ReadyForQuery says whether they took effect outside a transaction.
    commands: Mutex<Vec<Pending>>,
    has_commands: AtomicBool,
    /// A SET that ran inside a transaction block: it outlives the transaction on that
    /// server connection only.
    untracked: AtomicBool,
    /// CommandComplete tags SET/RESET seen, against the session commands that took
    /// effect: more tags than commands means settings pgfleet does not know of.
    set_tags: AtomicU32,
    /// The server's prepared statements may differ from pgfleet's list (a Parse that
    /// got no answer, DEALLOCATE or DISCARD sent in a way pgfleet does not rewrite).
    statements_unsure: AtomicBool,
    /// In COPY FROM STDIN: the server ignores Sync and Flush until CopyDone/CopyFail.
    copy_in: AtomicBool,
    /// Syncs sent since the last Execute or Query (swallowed if that starts a COPY).
    syncs_since_execute: AtomicU32,
    /// The client side is writing to the server: the connection cannot be released.
    writing: AtomicBool,
    /// The server answered a RESET or DISCARD ALL, however it was sent.
    reset_seen: AtomicBool,
}

#[derive(Debug)]
struct Pending {
    command: SqlCommand,
    /// The request number of its Query.
    request: u64,
    failed: bool,
    /// Answered: true if it ran outside a transaction block without error.
    done: Option<bool>,
}

impl Track {
    /// A connection at rest; `timed` when the time since the oldest unanswered request
    /// is needed (`busy_since`).
    pub fn new(timed: bool) -> Self {
        Track {
            pending: AtomicU32::new(0),
            status: AtomicU8::new(b'I'),
            unsynced: AtomicBool::new(false),
            busy_since: AtomicU64::new(0),
            epoch: timed.then(Instant::now),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            commands: Mutex::new(Vec::new()),
            has_commands: AtomicBool::new(false),
            untracked: AtomicBool::new(false),
            set_tags: AtomicU32::new(0),
            statements_unsure: AtomicBool::new(false),
            copy_in: AtomicBool::new(false),
            syncs_since_execute: AtomicU32::new(0),
            writing: AtomicBool::new(false),
            reset_seen: AtomicBool::new(false),
        }
    }

    /// A client message about to be forwarded.
    pub fn client_message(&self, tag: u8) {
        match tag {
            b'S' | b'H' if self.copy_in.load(Ordering::Relaxed) => {}
            b'Q' | b'F' | b'S' => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                if self.pending.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.mark_busy();
                }
                // A Query or FunctionCall also ends an implicit extended-protocol block.
                self.unsynced.store(false, Ordering::Relaxed);
                if tag == b'S' {
                    self.syncs_since_execute.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.syncs_since_execute.store(0, Ordering::Relaxed);
                }
            }
            b'E' => {
                self.unsynced.store(true, Ordering::Relaxed);
                self.syncs_since_execute.store(0, Ordering::Relaxed);
            }
            b'P' | b'B' | b'D' | b'C' | b'H' => {
                self.unsynced.store(true, Ordering::Relaxed);
            }
            b'c' | b'f' => self.copy_in.store(false, Ordering::Relaxed),
            _ => {}
        }
    }

    /// CopyInResponse: the Syncs the client already sent after the Execute that started
    /// the COPY are ignored by the server and get no ReadyForQuery.
    pub fn copy_in_started(&self) {
        self.copy_in.store(true, Ordering::Relaxed);
        let swallowed = self.syncs_since_execute.swap(0, Ordering::Relaxed);
        if swallowed > 0 {
            let _ = self
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                    Some(p.saturating_sub(swallowed))
                });
            self.sent.fetch_sub(u64::from(swallowed), Ordering::Relaxed);
        }
    }

    /// A CommandComplete tag from the server.
    pub fn command_complete(&self, tag: &[u8]) {
        if tag.starts_with(b"SET") || tag.starts_with(b"RESET") {
            self.set_tags.fetch_add(1, Ordering::Relaxed);
            if tag.starts_with(b"RESET") {
                self.reset_seen.store(true, Ordering::Relaxed);
            }
        } else if tag.starts_with(b"DEALLOCATE") || tag.starts_with(b"DISCARD") {
            self.statements_unsure.store(true, Ordering::Relaxed);
            if tag.starts_with(b"DISCARD ALL") {
                self.reset_seen.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Parse/Close answers pgfleet waited for will not come (the batch failed).
    pub fn statements_unsure(&self) {
        self.statements_unsure.store(true, Ordering::Relaxed);
    }

    /// Whether the server connection's prepared statements must be dropped and
    /// forgotten before it is reused.
    pub fn statements_need_reset(&self) -> bool {
        self.statements_unsure.load(Ordering::Relaxed)
    }

    /// Whether the server ran SET/RESET commands pgfleet does not replay: the
    /// connection's settings must be reset before another client gets it.
    pub fn settings_need_reset(&self, took_effect: usize) -> bool {
        self.set_tags.load(Ordering::Relaxed) as usize > took_effect
    }

    /// Around the client side's write to the server.
    pub fn set_writing(&self, writing: bool) {
        self.writing.store(writing, Ordering::Relaxed);
    }

    /// Requests sent and not answered yet.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn writing(&self) -> bool {
        self.writing.load(Ordering::Relaxed)
    }

    /// Sent but unsynced extended-protocol messages and nothing else in flight: the
    /// server holds an implicit transaction open for an idle client.
    pub fn idle_unsynced(&self) -> bool {
        self.pending.load(Ordering::Relaxed) == 0 && self.unsynced.load(Ordering::Relaxed)
    }

    /// Remembers a session command in the Query about to be sent, to replay it on
    /// other server connections if it takes effect.
    pub fn session_command(&self, command: SqlCommand) {
        let request = self.sent.load(Ordering::Relaxed);
        let mut commands = lock(&self.commands);
        // A long session-mode pump only needs the RESETs; keep the list bounded.
        if commands.len() >= 256 {
            commands.retain(|p| p.done.is_none() || !matches!(p.command, SqlCommand::Set { .. }));
        }
        commands.push(Pending {
            command,
            request,
            failed: false,
            done: None,
        });
        self.has_commands.store(true, Ordering::Relaxed);
    }

    /// An ErrorResponse from the server: the request being answered failed.
    pub fn server_error(&self) {
        if self.has_commands.load(Ordering::Relaxed) {
            let request = self.answered.load(Ordering::Relaxed);
            for p in lock(&self.commands)
                .iter_mut()
                .filter(|p| p.request == request)
            {
                p.failed = true;
            }
        }
    }

    /// A ReadyForQuery from the server with `status`.
    pub fn ready_for_query(&self, status: u8) {
        self.status.store(status, Ordering::Relaxed);
        // The server is out of COPY (it ended it, or the client did).
        self.copy_in.store(false, Ordering::Relaxed);
        let request = self.answered.fetch_add(1, Ordering::Relaxed);
        if self.has_commands.load(Ordering::Relaxed) {
            for p in lock(&self.commands)
                .iter_mut()
                .filter(|p| p.request == request)
            {
                let outside = status == b'I';
                if !outside && matches!(p.command, SqlCommand::Set { .. }) {
                    self.untracked.store(true, Ordering::Relaxed);
                }
                p.done = Some(outside && !p.failed);
            }
        }
        let left = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1))
            .map_or(0, |p| p - 1);
        if left > 0 {
            self.mark_busy();
        } else {
            self.busy_since.store(0, Ordering::Relaxed);
        }
    }

    fn mark_busy(&self) {
        let Some(epoch) = self.epoch else {
            return;
        };
        let ns = epoch.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
        self.busy_since.store(ns + 1, Ordering::Relaxed);
    }

    /// The session commands that took effect, in order; forgets all answered ones.
    pub fn take_commands(&self) -> Vec<SqlCommand> {
        if !self.has_commands.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut commands = lock(&self.commands);
        let mut taken = Vec::new();
        commands.retain_mut(|p| match p.done {
            Some(ok) => {
                if ok {
                    taken.push(std::mem::replace(&mut p.command, SqlCommand::ResetAll));
                }
                false
            }
            None => true,
        });
        taken
    }

    /// Whether the server answered a RESET or DISCARD ALL, however it was sent.
    pub fn reset_seen(&self) -> bool {
        self.reset_seen.load(Ordering::Relaxed)
    }

    /// Whether a RESET of any kind ran (the server answered one, or a tracked one took
    /// effect outside a transaction).
    pub fn reset_done(&self) -> bool {
        self.reset_seen.load(Ordering::Relaxed)
            || self.has_commands.load(Ordering::Relaxed)
                && lock(&self.commands)
                    .iter()
                    .any(|p| p.done == Some(true) && !matches!(p.command, SqlCommand::Set { .. }))
    }

    /// Whether a SET ran inside a transaction block.
    pub fn untracked_set(&self) -> bool {
        self.untracked.load(Ordering::Relaxed)
    }

    /// No request in flight, no unsynced extended-protocol messages, not in COPY.
    pub fn quiet(&self) -> bool {
        self.pending.load(Ordering::Relaxed) == 0
            && !self.unsynced.load(Ordering::Relaxed)
            && !self.copy_in.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Relaxed)
    }

    /// Since when the server has been working on the oldest unanswered request.
    pub fn busy_since(&self) -> Option<Instant> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.epoch? + std::time::Duration::from_nanos(ns - 1)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
