//! COPY FROM STDIN as the tracker follows it: how it ends, and which of the client's
//! messages inside it the server answered.

use crate::protocol::Frontend;

use super::{Mode, Tracker};

impl Tracker {
    /// The COPY FROM STDIN completed: the server took the client's messages up to its
    /// CopyDone, ignoring Sync and Flush among them.
    pub(super) fn copy_in_done(&mut self, extended: bool) {
        loop {
            let Some(head) = self.queue.front().map(|i| i.sent.kind) else {
                self.lose("the server completed a COPY FROM STDIN the client did not end");
                return;
            };
            match head {
                Frontend::CopyData | Frontend::Flush | Frontend::Sync => self.consume(false),
                Frontend::CopyDone => {
                    self.consume(false);
                    self.mode = after_copy(extended);
                    return;
                }
                _ => {
                    self.lose("the server completed a COPY FROM STDIN past a message that ends it with an error");
                    return;
                }
            }
        }
    }

    /// The server ended a COPY FROM STDIN with an error (bad data, the client's
    /// CopyFail, a message that does not belong in COPY). Outside COPY the server
    /// ignores CopyData, CopyDone and CopyFail, and inside it Sync and Flush, so the
    /// client's messages up to its CopyDone or CopyFail are answered by nothing,
    /// wherever the error came: except a Sync sent after some of the data, which the
    /// server ignored if it read it before the error and answers if after, depending on
    /// how far it had read. After a Query's COPY each such Sync *may* get a
    /// ReadyForQuery (`maybe`), which the next other answer settles. After an Execute's
    /// (the server then skips to a Sync) or with anything else sent inside: lost.
    pub(super) fn copy_in_failed(&mut self, extended: bool) {
        let mut data = false;
        let mut end = 0;
        let mut maybe = 0;
        for item in &self.queue {
            end += 1;
            match item.sent.kind {
                Frontend::CopyDone | Frontend::CopyFail => break,
                Frontend::CopyData => data = true,
                Frontend::Flush => {}
                Frontend::Sync if !data => {}
                Frontend::Sync if !extended => maybe += item.count,
                _ => {
                    self.lose("the server aborted a COPY FROM STDIN while the client had sent a Sync or another request after data inside it: whether the server answers it cannot be known");
                    return;
                }
            }
        }
        for _ in 0..end {
            while self.queue.front().is_some_and(|i| i.count > 1) {
                self.consume(false);
            }
            self.consume(false);
        }
        self.maybe += maybe;
        self.fail_copy(extended);
    }

    /// An error ended a COPY: a Query goes on to its ReadyForQuery, an Execute's batch
    /// skips to its Sync.
    pub(super) fn fail_copy(&mut self, extended: bool) {
        self.failed = true;
        self.mode = match extended {
            true => Mode::Skip,
            false => Mode::Query,
        };
    }
}

/// The mode after a COPY completes: a Query goes on; an Execute is answered.
pub(super) fn after_copy(extended: bool) -> Mode {
    match extended {
        true => Mode::Ready,
        false => Mode::Query,
    }
}
