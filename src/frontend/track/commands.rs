//! Session commands as the tracker follows them: which took effect (outside a
//! transaction block, without error), and what the server's CommandComplete tags say
//! pgfleet did not follow.

use super::Tracker;
use crate::frontend::settings::SqlCommand;

impl Tracker {
    /// A CommandComplete tag from the server.
    pub(super) fn command_complete(&mut self, tag: &[u8]) {
        if tag.starts_with(b"SET") || tag.starts_with(b"RESET") {
            self.set_tags += 1;
            if tag.starts_with(b"RESET") {
                self.reset_seen = true;
            }
        } else if tag.starts_with(b"DEALLOCATE") || tag.starts_with(b"DISCARD") {
            self.statements_unsure = true;
            if tag.starts_with(b"DISCARD ALL") {
                self.reset_seen = true;
            }
        }
    }

    /// The session commands that took effect, in order; forgets them.
    pub fn take_commands(&mut self) -> Vec<SqlCommand> {
        std::mem::take(&mut self.done)
    }

    /// Whether the server ran SET/RESET commands pgfleet does not replay: the
    /// connection's settings must be reset before another client gets it.
    pub fn settings_need_reset(&self, took_effect: usize) -> bool {
        self.set_tags > took_effect
    }

    /// Whether the server connection's prepared statements must be dropped and
    /// forgotten before it is reused.
    pub fn statements_need_reset(&self) -> bool {
        self.statements_unsure
    }

    /// Whether the server answered a RESET or DISCARD ALL, however it was sent.
    pub fn reset_seen(&self) -> bool {
        self.reset_seen
    }

    /// Whether a SET ran inside a transaction block.
    pub fn untracked_set(&self) -> bool {
        self.untracked_set
    }

    /// Whether extended-protocol messages ran since the last ReadyForQuery (an implicit
    /// transaction is open until a Sync).
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Whether a RESET of any kind ran: the server answered one, or a session command
    /// that resets took effect.
    pub fn reset_done(&self) -> bool {
        self.reset_seen
            || self
                .done
                .iter()
                .any(|c| !matches!(c, SqlCommand::Set { .. }))
    }

    /// The `seq` the next message sent gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Whether a DISCARD ALL sent at or after `seq` took effect.
    pub fn discarded_after(&self, seq: u64) -> bool {
        self.discarded.is_some_and(|d| d >= seq)
    }
}
