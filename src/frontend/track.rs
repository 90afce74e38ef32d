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
    epoch: Instant,
    /// A session command (SET, RESET, DISCARD ALL) sent as a single simple query outside
    /// a transaction block, and whether an error came back for it.
    command: Mutex<Option<(SqlCommand, bool)>>,
    has_command: AtomicBool,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            pending: AtomicU32::new(0),
            status: AtomicU8::new(b'I'),
            unsynced: AtomicBool::new(false),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
            command: Mutex::new(None),
            has_command: AtomicBool::new(false),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Track {
    /// A client message about to be forwarded.
    pub fn client_message(&self, tag: u8) {
        match tag {
            b'Q' | b'F' | b'S' => {
                if self.pending.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.mark_busy();
                }
                if tag == b'S' {
                    self.unsynced.store(false, Ordering::Relaxed);
                }
            }
            b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => {
                self.unsynced.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Remembers a session command the client sent, to replay it on other server
    /// connections once it succeeded.
    pub fn session_command(&self, command: SqlCommand) {
        *lock(&self.command) = Some((command, false));
        self.has_command.store(true, Ordering::Relaxed);
    }

    /// An ErrorResponse from the server: a pending session command failed.
    pub fn server_error(&self) {
        if self.has_command.load(Ordering::Relaxed) {
            if let Some((_, failed)) = lock(&self.command).as_mut() {
                *failed = true;
            }
        }
    }

    /// A ReadyForQuery from the server with `status`.
    pub fn ready_for_query(&self, status: u8) {
        self.status.store(status, Ordering::Relaxed);
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
        let ns = self.epoch.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
        self.busy_since.store(ns + 1, Ordering::Relaxed);
    }

    /// The session command that completed without error, once the server is idle.
    pub fn take_command(&self) -> Option<SqlCommand> {
        if !self.has_command.swap(false, Ordering::Relaxed) {
            return None;
        }
        match lock(&self.command).take() {
            Some((command, false)) => Some(command),
            _ => None,
        }
    }

    /// No request in flight and no unsynced extended-protocol messages.
    pub fn quiet(&self) -> bool {
        self.pending.load(Ordering::Relaxed) == 0 && !self.unsynced.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Relaxed)
    }

    /// Since when the server has been working on the oldest unanswered request.
    pub fn busy_since(&self) -> Option<Instant> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.epoch + std::time::Duration::from_nanos(ns - 1)),
        }
    }
}
