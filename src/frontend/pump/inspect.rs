//! What the pump looks into as client messages go by: statements to rewrite, and
//! session commands (SET, RESET, DISCARD ALL).

use bytes::BytesMut;

use crate::frontend::prepared::{CannotRewrite, Rewriter, Rewritten};
use crate::frontend::settings::{classify, looks_like_set, SqlCommand};
use crate::frontend::track::Tracker;
use crate::protocol::frame::{body, read_cstr_bytes};

/// The first word of a Query's or Parse's statement, where it is one the pump acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::frontend) enum Lead {
    Set,
    Reset,
    Discard,
    Deallocate,
    Other,
}

/// The first word of the statement text of `m` (a Query, or a Parse after its name),
/// read once per message: no other message's is needed. Leading whitespace is skipped;
/// a word is letters.
pub(in crate::frontend) fn lead(m: &[u8]) -> Lead {
    let b = body(m);
    let text = match m[0] {
        b'Q' => b,
        b'P' => {
            let name = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            b.get(name + 1..).unwrap_or_default()
        }
        _ => return Lead::Other,
    };
    let mut start = 0;
    while start < text.len() && text[start].is_ascii_whitespace() {
        start += 1;
    }
    let rest = &text[start..];
    // The keyword, then not a letter.
    let is = |k: &str| {
        rest.get(..k.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(k.as_bytes()))
            && rest.get(k.len()).is_none_or(|c| !c.is_ascii_alphabetic())
    };
    match rest.first().map(|c| c | 0x20) {
        Some(b's') if is("set") => Lead::Set,
        Some(b'r') if is("reset") => Lead::Reset,
        Some(b'd') if is("discard") => Lead::Discard,
        Some(b'd') if is("deallocate") => Lead::Deallocate,
        _ => Lead::Other,
    }
}

/// Rewrites one client message of `total` bytes for the server when it names a
/// prepared statement or deallocates one: appends the replacement to `out` and records
/// what was sent in `track`. `m` is whole, or the front of a Bind passed on as it comes.
pub(in crate::frontend) fn rewrite(
    rw: &mut Rewriter<'_>,
    m: &[u8],
    total: usize,
    lead: Lead,
    out: &mut BytesMut,
    track: &mut Tracker,
    command: Option<SqlCommand>,
) -> Result<Rewritten, CannotRewrite> {
    match m[0] {
        b'P' | b'B' | b'D' | b'C' => rw.rewrite(m, total, out, track, command),
        // The statement is read whole only when it is a DEALLOCATE.
        b'Q' if lead == Lead::Deallocate => {
            let mut pos = 0;
            let done = match read_cstr_bytes(body(m), &mut pos).map(std::str::from_utf8) {
                Some(Ok(sql)) => rw.deallocate(sql, out, track)?,
                _ => false,
            };
            Ok(match done {
                true => Rewritten::Whole,
                false => Rewritten::No,
            })
        }
        _ => Ok(Rewritten::No),
    }
}

/// The SET/RESET/DISCARD ALL a Query or an unnamed Parse runs as its only statement
/// (its ReadyForQuery tells whether it ran outside a transaction block); flags in
/// `untracked` a SET that pgfleet cannot follow (several statements in one query). A
/// named statement's command is attached when a Bind runs it (see `Rewriter`); without
/// statement rewriting (`named` false) a named one is not followed either.
pub(in crate::frontend) fn session_command(
    message: &[u8],
    lead: Lead,
    named: bool,
    untracked: &mut bool,
) -> Option<SqlCommand> {
    // Only SET, RESET and DISCARD are looked into, and decoded.
    if !matches!(lead, Lead::Set | Lead::Reset | Lead::Discard) {
        return None;
    }
    let mut pos = 0;
    let b = body(message);
    let unnamed = match message[0] {
        b'P' => read_cstr_bytes(b, &mut pos)?.is_empty(),
        _ => true,
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend::{parse_sql, query};

    fn q(sql: &str) -> Lead {
        let mut m = BytesMut::new();
        query(&mut m, sql);
        lead(&m)
    }

    #[test]
    fn first_words() {
        assert_eq!(q("  \n\tSet x = 1"), Lead::Set);
        assert_eq!(q("RESET ALL"), Lead::Reset);
        assert_eq!(q("discard all;"), Lead::Discard);
        assert_eq!(q("DEALLOCATE s1"), Lead::Deallocate);
        assert_eq!(q("deallocate"), Lead::Deallocate);
        assert_eq!(q("SELECT 1"), Lead::Other);
        assert_eq!(q("settle"), Lead::Other);
        assert_eq!(q("deallocatex"), Lead::Other);
        assert_eq!(q(""), Lead::Other);
        let mut m = BytesMut::new();
        parse_sql(&mut m, "s1", "set x = 1");
        assert_eq!(lead(&m), Lead::Set);
        assert_eq!(lead(b"X\0\0\0\x04"), Lead::Other);
    }
}
