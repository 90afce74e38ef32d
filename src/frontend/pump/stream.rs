//! Messages larger than a read buffer, passed on as they arrive instead of held whole:
//! a 100 MiB row or COPY chunk costs the pump a buffer's worth of memory, not 100 MiB.
//!
//! A message is passed on as it comes once its header is in, when pgfleet does not need
//! its body: the server's DataRow and CopyData (the tracker reads neither), and the
//! client's CopyData and Bind (a Bind's statement name, which pgfleet may rewrite, is at
//! its front). In session mode, where pgfleet reads a statement only for its first
//! word, a large Query or Parse is passed on too once its first `STREAM_AT` bytes are
//! in. In transaction mode a Query's or Parse's text is read whole (pgfleet looks for
//! session state it must pin), so those are held up to `max_message_size`.

use super::inspect::{lead, Lead};
use crate::protocol::frame::{announced_size, next_message, read_cstr_bytes, MessageHeader};
use crate::protocol::ProtocolError;

/// Messages up to this size are held whole; a larger one that has not all arrived is
/// passed on as it comes.
pub(in crate::frontend) const STREAM_AT: usize = 64 << 10;

/// Which peer's messages a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::frontend) enum From {
    Client {
        /// Session mode: a Query's or Parse's text may pass before it is all in.
        text: bool,
    },
    Server,
}

/// The message being passed on from one peer: how much of it is still to come.
#[derive(Debug, Clone, Copy)]
pub(in crate::frontend) struct Passing {
    from: From,
    left: usize,
    /// Messages up to this size are held whole (`STREAM_AT` in the pump).
    at: usize,
}

/// When a message of one kind from one peer may go on before all of it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Early {
    /// Never: held whole.
    Never,
    /// As soon as its header is in.
    AtOnce,
    /// A Bind: once its portal and statement names are in.
    AfterNames,
    /// A Query's or Parse's text in session mode: once `at` bytes are in, unless it is
    /// a RESET or DISCARD (followed, so read whole).
    AfterText,
}

impl Passing {
    pub(super) fn new(from: From, at: usize) -> Passing {
        Passing { from, left: 0, at }
    }

    /// Part of a message is still to come: the next bytes read are its, not a header.
    pub(super) fn active(&self) -> bool {
        self.left > 0
    }

    /// Of `available` bytes at the front of the buffer, how many belong to the message
    /// being passed on (now on their way).
    pub(super) fn take(&mut self, available: usize) -> usize {
        let n = self.left.min(available);
        self.left -= n;
        n
    }

    /// A message of `total` bytes of which `available` are in was sent on its way: the
    /// rest follows as it arrives.
    pub(super) fn started(&mut self, total: usize, available: usize) {
        self.left = total.saturating_sub(available);
    }

    /// The header of the next message at the front of `buf`: one all in, or one passed
    /// on as it comes; `None` until one of them is there. `Err` as `next_message`'s.
    #[inline]
    pub(super) fn next(
        &self,
        buf: &[u8],
        max: usize,
    ) -> Result<Option<MessageHeader>, ProtocolError> {
        match next_message(buf, max)? {
            Some(h) => Ok(Some(h)),
            // Most often the buffer ends on a message's end.
            None if buf.len() < 5 => Ok(None),
            None => self.partial(buf, max),
        }
    }

    /// The header of the message at the front of `buf`, not all in, when it passes on
    /// as it comes.
    fn partial(&self, buf: &[u8], max: usize) -> Result<Option<MessageHeader>, ProtocolError> {
        let Some(total) = announced_size(buf, max)? else {
            return Ok(None);
        };
        if total <= self.at {
            return Ok(None);
        }
        let tag = buf[0];
        let passes = match self.early(tag) {
            Early::Never => false,
            Early::AtOnce => true,
            Early::AfterNames => bind_front(buf).is_some(),
            Early::AfterText => {
                buf.len() >= self.at && !matches!(lead(buf), Lead::Reset | Lead::Discard)
            }
        };
        Ok(passes.then_some(MessageHeader { tag, total }))
    }

    /// How many more bytes the read buffer `buf` should make room for: the next part of
    /// a message being passed on, the front of one that will be, or the rest of one held
    /// whole.
    pub(super) fn wanted(&self, buf: &[u8], max: usize) -> usize {
        if self.active() {
            return self.left.min(self.at);
        }
        let Ok(Some(total)) = announced_size(buf, max) else {
            return 0;
        };
        let missing = total.saturating_sub(buf.len());
        let front_only = total > self.at
            && match self.early(buf[0]) {
                Early::Never => false,
                Early::AtOnce => true,
                Early::AfterNames | Early::AfterText => buf.len() < self.at,
            };
        match front_only {
            true => missing.min(self.at.saturating_sub(buf.len())),
            false => missing,
        }
    }

    /// When a message of type `tag` from this peer may go on before all of it is in.
    fn early(&self, tag: u8) -> Early {
        match (self.from, tag) {
            (From::Server, b'D' | b'd') | (From::Client { .. }, b'd') => Early::AtOnce,
            (From::Client { .. }, b'B') => Early::AfterNames,
            (From::Client { text: true }, b'Q' | b'P') => Early::AfterText,
            _ => Early::Never,
        }
    }
}

/// The length of a Bind's front (type, length, portal and statement names) when all of
/// it is in `m`.
pub(in crate::frontend) fn bind_front(m: &[u8]) -> Option<usize> {
    let b = m.get(5..)?;
    let mut pos = 0;
    read_cstr_bytes(b, &mut pos)?;
    read_cstr_bytes(b, &mut pos)?;
    Some(5 + pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tag: u8, total: usize) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((total - 1) as u32).to_be_bytes());
        m
    }

    #[test]
    fn large_rows_and_copy_pass_as_they_come() {
        let server = Passing::new(From::Server, STREAM_AT);
        let big = STREAM_AT + 1;
        let mut row = header(b'D', big);
        row.extend_from_slice(&[0; 100]);
        assert_eq!(
            server.partial(&row, usize::MAX),
            Ok(Some(MessageHeader {
                tag: b'D',
                total: big
            }))
        );
        assert_eq!(server.wanted(&row, usize::MAX), STREAM_AT - row.len());
        // Small ones, and what pgfleet reads, are held whole.
        assert_eq!(server.partial(&header(b'D', 100), 1 << 30), Ok(None));
        let error = header(b'E', big);
        assert_eq!(server.partial(&error, 1 << 30), Ok(None));
        assert_eq!(server.wanted(&error, 1 << 30), big - 5);
    }

    #[test]
    fn a_bind_passes_once_its_names_are_in() {
        let client = Passing::new(From::Client { text: false }, STREAM_AT);
        let total = STREAM_AT * 4;
        let mut bind = header(b'B', total);
        bind.extend_from_slice(b"portal\0stm");
        assert_eq!(client.partial(&bind, 1 << 30), Ok(None));
        bind.extend_from_slice(b"t\0\0\0");
        assert_eq!(bind_front(&bind), Some(5 + 12));
        assert!(matches!(client.partial(&bind, 1 << 30), Ok(Some(_))));
        let query = header(b'Q', total);
        assert_eq!(client.partial(&query, 1 << 30), Ok(None));
        assert_eq!(client.wanted(&query, 1 << 30), total - 5);
    }

    #[test]
    fn session_mode_passes_long_text_after_its_front() {
        let client = Passing::new(From::Client { text: true }, STREAM_AT);
        let total = STREAM_AT * 4;
        let mut query = header(b'Q', total);
        query.resize(STREAM_AT - 1, b' ');
        assert_eq!(client.partial(&query, 1 << 30), Ok(None));
        assert_eq!(client.wanted(&query, 1 << 30), 1);
        query.push(b'x');
        assert!(matches!(client.partial(&query, 1 << 30), Ok(Some(_))));
    }

    #[test]
    fn the_rest_is_counted_down() {
        let mut p = Passing::new(From::Server, STREAM_AT);
        p.started(1000, 300);
        assert!(p.active());
        assert_eq!(p.wanted(b"Dxxxx", 1 << 30), 700);
        assert_eq!(p.take(500), 500);
        assert_eq!(p.take(500), 200);
        assert!(!p.active());
        assert_eq!(p.take(10), 0);
    }
}
