//! Pinning in transaction mode: a client whose statements leave state in its session
//! keeps its server connection until it leaves (`pin = "auto"`), or has them refused
//! (`pin = "error"`). A pinned connection is reset with `server_reset_query` before
//! another client gets it (closed if that fails, or if a library was loaded).

use bytes::BytesMut;

use crate::protocol::backend as msg;
use crate::protocol::frame::{body, read_cstr_bytes};
use crate::protocol::{frontend, sqlstate};
use crate::sql::pin::function_call_state;
use crate::sql::{session_state, PinReason, PinSet};

pub use crate::config::PinMode;

/// The session state that ties a transaction-mode client to its server connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pins {
    set: PinSet,
    /// The tracker `seq` of the first pinning message on this connection: a DISCARD
    /// ALL sent after it undoes the state.
    since: u64,
}

impl Pins {
    pub fn any(&self) -> bool {
        !self.set.is_empty()
    }

    pub fn reasons(&self) -> PinSet {
        self.set
    }

    /// Adds `more`, sent as message `seq`; returns the reasons that are new.
    pub fn add(&mut self, more: PinSet, seq: u64) -> PinSet {
        if self.set.is_empty() {
            self.since = seq;
        }
        let new = more.without(self.set);
        self.set = self.set.union(more);
        new
    }

    pub fn since(&self) -> u64 {
        self.since
    }

    pub fn clear(&mut self) {
        self.set = PinSet::default();
    }
}

/// The session state a client message creates: the statements of a Query or Parse, the
/// function a FunctionCall runs.
pub fn message_state(m: &[u8]) -> PinSet {
    let b = body(m);
    match m[0] {
        // A Query's text ends its body (with a NUL).
        b'Q' => session_state(b.strip_suffix(&[0]).unwrap_or(b)),
        b'P' => {
            let mut pos = 0;
            match read_cstr_bytes(b, &mut pos) {
                Some(_) => session_state(text(b, pos)),
                None => PinSet::default(),
            }
        }
        b'F' => match b.get(..4) {
            Some(oid) => function_call_state(u32::from_be_bytes([oid[0], oid[1], oid[2], oid[3]])),
            None => PinSet::default(),
        },
        _ => PinSet::default(),
    }
}

/// The NUL-terminated text at `pos` (the rest of the body if it has no NUL).
fn text(b: &[u8], pos: usize) -> &[u8] {
    let rest = b.get(pos..).unwrap_or_default();
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    &rest[..end]
}

/// What the server runs in place of a refused message: a statement that fails to
/// parse, so that the server answers it as any failing statement (aborting the
/// transaction block, skipping the rest of an extended batch). Its error is replaced
/// by `refusal`'s. Returns the kind of message written.
pub fn refused_message(m: &[u8], out: &mut BytesMut) -> crate::protocol::Frontend {
    const NOT_SQL: &str = "pgfleet refused this statement";
    match m[0] {
        b'P' => {
            let b = body(m);
            let mut pos = 0;
            let name = read_cstr_bytes(b, &mut pos).unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            frontend::parse_sql(out, &name, NOT_SQL);
            crate::protocol::Frontend::Parse
        }
        // A Query; a FunctionCall is answered the same way when it fails.
        _ => {
            frontend::query(out, NOT_SQL);
            crate::protocol::Frontend::Query
        }
    }
}

/// The error a refused statement gets.
pub fn refusal(out: &mut BytesMut, reason: PinReason) {
    let text = format!(
        "pgfleet: this statement {}, state that transaction pooling cannot keep for the session (pin = \"error\"); {}",
        reason.what(),
        reason.instead()
    );
    msg::error_response(
        out,
        msg::Severity::Error,
        sqlstate::FEATURE_NOT_SUPPORTED,
        &text,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> BytesMut {
        let mut m = BytesMut::new();
        frontend::query(&mut m, sql);
        m
    }

    #[test]
    fn messages_and_their_state() {
        assert_eq!(message_state(&query("set role r")).names(), "role");
        let mut parse = BytesMut::new();
        frontend::parse_sql(&mut parse, "s1", "select pg_advisory_lock($1)");
        assert_eq!(message_state(&parse).names(), "advisory_lock");
        let call = [b'F', 0, 0, 0, 14, 0, 0, 0x0b, 0x40, 0, 0, 0, 0, 0, 1];
        assert_eq!(message_state(&call).names(), "advisory_lock");
        assert!(message_state(&query("select 1")).is_empty());
    }

    #[test]
    fn pins_since_the_first() {
        let mut pins = Pins::default();
        let mut role = PinSet::default();
        role.add(PinReason::Role);
        assert_eq!(pins.add(role, 7).names(), "role");
        assert!(pins.add(role, 9).is_empty());
        assert_eq!(pins.since(), 7);
        pins.clear();
        assert!(!pins.any());
    }
}
