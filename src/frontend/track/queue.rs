//! The tracker's queue of messages sent and not consumed: taking them off as the
//! server consumes them.

use super::Tracker;
use crate::protocol::Frontend;

impl Tracker {
    /// Drops the messages at the head that the server, reading them between requests,
    /// answers with nothing: Flush, and copy messages outside COPY.
    pub(super) fn pop_ignored(&mut self) {
        while self
            .queue
            .front()
            .is_some_and(|head| ignored(head.sent.kind))
        {
            self.consume(false);
        }
    }

    /// The server consumed one message at the head; `ran` if it acted on it (its
    /// session commands join the running request's).
    pub(super) fn consume(&mut self, ran: bool) {
        let Some(head) = self.queue.front_mut() else {
            return;
        };
        let seq = head.seq;
        if head.count > 1 {
            head.count -= 1;
        } else {
            self.queue.pop_front();
        }
        while self.attached.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((s, command)) = self.attached.pop_front() {
                if ran && s == seq {
                    self.batch.push((s, command));
                }
            }
        }
    }
}

/// Whether the server, reading `kind` between requests, answers it with nothing.
pub(super) fn ignored(kind: Frontend) -> bool {
    matches!(
        kind,
        Frontend::Flush | Frontend::CopyData | Frontend::CopyDone | Frontend::CopyFail
    )
}
