//! What the pump looks into as client messages go by: statements to rewrite, and
//! session commands (SET, RESET, DISCARD ALL).

use bytes::BytesMut;

use crate::frontend::prepared::{CannotRewrite, Rewriter};
use crate::frontend::settings::{classify, looks_like_set, SqlCommand};
use crate::frontend::track::Tracker;
use crate::protocol::frame::{body, first_word_is, read_cstr_bytes};

/// Rewrites one client message for the server when it names a prepared statement or
/// deallocates one: appends the replacement to `out`, records what was sent in `track`
/// and returns true; false when the message goes as it is (nothing recorded).
pub(in crate::frontend) fn rewrite(
    rw: &mut Rewriter<'_>,
    m: &[u8],
    out: &mut BytesMut,
    track: &mut Tracker,
    command: Option<SqlCommand>,
) -> Result<bool, CannotRewrite> {
    match m[0] {
        b'P' | b'B' | b'D' | b'C' => rw.rewrite(m, out, track, command),
        // The first word is looked at before the statement's end is searched for: the
        // statement is read whole only when it is a DEALLOCATE.
        b'Q' if first_word_is(body(m), &["deallocate"]) => {
            let mut pos = 0;
            match read_cstr_bytes(body(m), &mut pos).map(std::str::from_utf8) {
                Some(Ok(sql)) => rw.deallocate(sql, out, track),
                _ => Ok(false),
            }
        }
        _ => Ok(false),
    }
}

/// The SET/RESET/DISCARD ALL a Query or an unnamed Parse runs as its only statement
/// (its ReadyForQuery tells whether it ran outside a transaction block); flags in
/// `untracked` a SET that pgfleet cannot follow (several statements in one query). A
/// named statement's command is attached when a Bind runs it (see `Rewriter`); without
/// statement rewriting (`named` false) a named one is not followed either.
pub(in crate::frontend) fn session_command(
    message: &[u8],
    named: bool,
    untracked: &mut bool,
) -> Option<SqlCommand> {
    let mut pos = 0;
    let b = body(message);
    let unnamed = match message[0] {
        b'P' => read_cstr_bytes(b, &mut pos)?.is_empty(),
        _ => true,
    };
    // Only SET, RESET and DISCARD are looked into, and decoded; the first word is
    // looked at before the statement's end is searched for (a NUL ends the word too).
    if !first_word_is(&b[pos..], &["set", "reset", "discard"]) {
        return None;
    }
    let sql = std::str::from_utf8(read_cstr_bytes(b, &mut pos)?).ok()?;
    match classify(sql) {
        Some(command) if unnamed => Some(command),
        Some(_) if named => None,
        _ => {
            if looks_like_set(sql) {
                *untracked = true;
            }
            None
        }
    }
}
