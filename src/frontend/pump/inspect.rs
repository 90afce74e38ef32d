//! What the pump looks into as messages go by: statements to rewrite, the answers
//! pgfleet waits for, and session commands (SET, RESET, DISCARD ALL).

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;

use crate::frontend::prepared::{Expect, Expected, Rewriter};
use crate::frontend::settings::{classify, looks_like_set};
use crate::frontend::track::Track;
use crate::protocol::frame::{body, first_word_is, read_cstr_bytes};

/// Rewrites one client message for the server when it names a prepared statement or
/// deallocates one; appends the replacement to `out` and returns true if so.
pub(in crate::frontend) fn rewrite(rw: &mut Rewriter<'_>, m: &[u8], out: &mut BytesMut) -> bool {
    match m[0] {
        b'P' | b'B' | b'D' | b'C' => rw.rewrite(m, out),
        // The first word is looked at before the statement's end is searched for: the
        // statement is read whole only when it is a DEALLOCATE.
        b'Q' if first_word_is(body(m), &["deallocate"]) => {
            let mut pos = 0;
            match read_cstr_bytes(body(m), &mut pos) {
                Some(sql) => std::str::from_utf8(sql).is_ok_and(|sql| rw.deallocate(sql, out)),
                None => false,
            }
        }
        _ => false,
    }
}

/// What the next ParseComplete/CloseComplete answers.
pub(in crate::frontend) fn pop_expected(expected: &Expected) -> Option<Expect> {
    let mut q = expected.lock().unwrap_or_else(|e| e.into_inner());
    q.pop_front()
}

/// Drops the expectations that `done` says will get no answer any more; true if any.
pub(in crate::frontend) fn settle(expected: &Expected, done: impl Fn(&Expect) -> bool) -> bool {
    let mut q = expected.lock().unwrap_or_else(|e| e.into_inner());
    let mut dropped = false;
    while q.front().is_some_and(&done) {
        q.pop_front();
        dropped = true;
    }
    dropped
}

/// Notes a SET/RESET/DISCARD ALL sent as the only statement of a simple query or an
/// unnamed extended-protocol statement (its ReadyForQuery tells whether it ran outside
/// a transaction block); flags a SET that pgfleet cannot follow (a named statement,
/// several statements in one query).
pub(in crate::frontend) fn watch_session_command(
    track: &Track,
    message: &[u8],
    named: bool,
    untracked: &AtomicBool,
) {
    let mut pos = 0;
    let b = body(message);
    // A simple Query, or the unnamed statement of an extended batch (as pgjdbc sends
    // every statement): its ReadyForQuery is that of the next request (Query or Sync).
    let followed = if message[0] == b'P' {
        match read_cstr_bytes(b, &mut pos) {
            Some(name) => name.is_empty(),
            None => return,
        }
    } else {
        true
    };
    // Only SET, RESET and DISCARD are looked into, and decoded; the first word is
    // looked at before the statement's end is searched for (a NUL ends the word too).
    if !first_word_is(&b[pos..], &["set", "reset", "discard"]) {
        return;
    }
    let Some(sql) = read_cstr_bytes(b, &mut pos) else {
        return;
    };
    let Ok(sql) = std::str::from_utf8(sql) else {
        return;
    };
    match classify(sql) {
        Some(command) if followed => track.session_command(command),
        // A named statement's command counts when a Bind runs it (see `Rewriter`).
        Some(_) if named => {}
        _ if looks_like_set(sql) => untracked.store(true, Ordering::Relaxed),
        _ => {}
    }
}
