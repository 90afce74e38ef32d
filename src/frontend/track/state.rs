//! What the tracker tells of the connection: whether it is idle, quiet, lost, and what
//! is still owed.

use std::time::Instant;

use super::{Mode, Tracker, MAX_IN_FLIGHT};
use crate::protocol::Frontend;

impl Tracker {
    /// Why the tracker no longer knows where the server is, if it does not.
    pub fn lost(&self) -> Option<&'static str> {
        self.lost
    }

    /// Everything sent was answered, no implicit transaction is open, and the server is
    /// outside a transaction block: the connection can serve another client.
    pub fn idle(&self) -> bool {
        self.lost.is_none()
            && self.maybe == 0
            && self.queue.is_empty()
            && self.mode == Mode::Ready
            && !self.unsynced
            && self.status == b'I'
    }

    /// Everything sent was answered (or, lost, the last message was a ReadyForQuery):
    /// the server waits for the client.
    pub fn quiet(&self) -> bool {
        match self.lost {
            Some(_) => self.last_ready,
            None => self.queue.is_empty() && self.mode == Mode::Ready && self.maybe == 0,
        }
    }

    /// Quiet, but inside a transaction block or an implicit (unsynced) transaction.
    pub fn idle_in_transaction(&self) -> bool {
        self.quiet() && (self.unsynced || self.status != b'I')
    }

    /// The transaction status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Whether more messages may be sent before the server answers some.
    pub fn has_room(&self) -> bool {
        self.queue.len() < MAX_IN_FLIGHT
    }

    /// Requests that still owe a ReadyForQuery, when the tracker can tell; `None` when
    /// the server is inside a COPY or an extended batch (or lost).
    pub fn owed(&self) -> Option<u32> {
        if self.lost.is_some() || self.unsynced || self.maybe > 0 {
            return None;
        }
        let running = match self.mode {
            Mode::Ready => 0,
            Mode::Query | Mode::Function => 1,
            _ => return None,
        };
        let mut owed = running;
        for item in &self.queue {
            match item.sent.kind {
                Frontend::Query | Frontend::FunctionCall | Frontend::Sync => owed += item.count,
                Frontend::Flush => {}
                _ => return None,
            }
        }
        Some(owed)
    }

    /// Since when the server has been working on the oldest unanswered message.
    pub fn busy_since(&self) -> Option<Instant> {
        self.busy_since
    }
}
