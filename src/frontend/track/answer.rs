//! Matching each server message to the client message it answers: in `Ready` mode (the
//! extended protocol, or the start of a request), while a Query or FunctionCall runs,
//! and at the ReadyForQuery that ends a skip after an error.

use super::{Answer, Mode, Tracker};
use crate::protocol::{Backend, Frontend};

impl Tracker {
    /// A server message in `Ready` mode: the answer to the message at the head.
    pub(super) fn answer(&mut self, msg: Backend, status: u8) -> Answer {
        use Backend as B;
        use Frontend as F;
        self.pop_ignored();
        if self.maybe > 0 && msg == B::ReadyForQuery {
            self.maybe -= 1;
            self.credit += 1;
            self.status = status;
            return Answer::Forward;
        }
        if msg != B::ReadyForQuery && (self.maybe > 0 || self.credit > 0) {
            // Settled: the Syncs that may have been answered and got no ReadyForQuery
            // were ignored inside the COPY, and those counted as answered stood for the
            // Syncs sent after them.
            self.maybe = 0;
            while self.credit > 0 && self.queue.front().is_some_and(|i| i.sent.kind == F::Sync) {
                self.consume(true);
                self.credit -= 1;
            }
            self.credit = 0;
        }
        let Some(head) = self.queue.front().map(|i| i.sent) else {
            self.unexpected(msg);
            return Answer::Forward;
        };
        match (head.kind, msg) {
            (F::Query, _) => {
                self.consume(true);
                self.running = head.answer;
                self.mode = Mode::Query;
                self.in_request(msg, status)
            }
            (F::FunctionCall, _) => {
                self.consume(true);
                self.running = head.answer;
                self.mode = Mode::Function;
                self.in_request(msg, status)
            }
            (F::Sync, B::ReadyForQuery) => {
                self.consume(true);
                self.ready(status);
                Answer::Forward
            }
            // A COMMIT at the Sync can fail (deferred constraints): ReadyForQuery follows.
            (F::Sync, B::ErrorResponse) => {
                self.failed = true;
                Answer::Forward
            }
            (F::Parse, B::ParseComplete)
            | (F::Bind, B::BindComplete)
            | (F::Close, B::CloseComplete)
            | (F::Describe, B::RowDescription | B::NoData)
            | (F::Execute, B::CommandComplete | B::EmptyQueryResponse | B::PortalSuspended) => {
                self.consume(true);
                self.unsynced = true;
                head.answer
            }
            (F::Describe, B::ParameterDescription) | (F::Execute, B::DataRow) => Answer::Forward,
            (F::Execute, B::CopyInResponse) => {
                self.consume(true);
                self.unsynced = true;
                self.mode = Mode::CopyIn { extended: true };
                Answer::Forward
            }
            (F::Execute, B::CopyOutResponse) => {
                self.consume(true);
                self.unsynced = true;
                self.mode = Mode::CopyOut { extended: true };
                Answer::Forward
            }
            (F::Parse | F::Bind | F::Close | F::Describe | F::Execute, B::ErrorResponse) => {
                if head.statement {
                    self.statements_unsure = true;
                }
                self.consume(true);
                self.unsynced = true;
                self.failed = true;
                self.mode = Mode::Skip;
                match head.answer {
                    Answer::Refused => Answer::Refused,
                    _ => Answer::Forward,
                }
            }
            _ => {
                self.unexpected(msg);
                Answer::Forward
            }
        }
    }

    /// A server message while a Query or FunctionCall runs (up to its ReadyForQuery).
    pub(super) fn in_request(&mut self, msg: Backend, status: u8) -> Answer {
        debug_assert!(matches!(self.mode, Mode::Query | Mode::Function));
        match msg {
            Backend::ReadyForQuery => self.ready(status),
            Backend::ErrorResponse => {
                self.failed = true;
                return self.running;
            }
            Backend::FunctionCallResponse if self.mode == Mode::Function => {}
            Backend::RowDescription
            | Backend::DataRow
            | Backend::CommandComplete
            | Backend::EmptyQueryResponse
                if self.mode == Mode::Query => {}
            Backend::CopyInResponse if self.mode == Mode::Query => {
                self.mode = Mode::CopyIn { extended: false }
            }
            Backend::CopyOutResponse if self.mode == Mode::Query => {
                self.mode = Mode::CopyOut { extended: false }
            }
            _ => self.unexpected(msg),
        }
        Answer::Forward
    }

    /// The ReadyForQuery that ends a skip: every message up to the Sync was skipped.
    pub(super) fn skip_to_sync(&mut self, status: u8) {
        loop {
            let Some(head) = self.queue.front().map(|i| i.sent) else {
                self.lose("a ReadyForQuery after an error with no Sync sent");
                return;
            };
            if head.kind == Frontend::Sync {
                self.consume(true);
                self.ready(status);
                return;
            }
            if head.statement {
                self.statements_unsure = true;
            }
            self.consume(false);
        }
    }
}
