//! Named prepared statements in transaction mode. A client's statement lives on
//! whichever server connection runs its next transaction: pgfleet keeps the client's
//! Parse, names the statement on the servers after a keyed hash of its text and
//! parameter types (so clients share it, and no client can guess a name to prepare a
//! statement of its own under it through SQL), prepares it on a connection the first time a Bind or
//! Describe needs it there, and swallows the ParseComplete of the Parse it adds itself.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::pool::PreparedSet;
use crate::protocol::frame::{body, read_cstr, read_cstr_bytes};
use crate::protocol::{frontend, Frontend};

use super::settings::SqlCommand;
use super::track::{Answer, Sent, Tracker};

mod shared;

pub use shared::SharedStatements;

/// A statement as the servers know it.
#[derive(Debug)]
pub struct Statement {
    /// The name on the servers: `pgfleet_` and 24 hex digits of the keyed hash.
    pub internal: String,
    /// The Parse message that prepares it under that name.
    pub parse: Bytes,
    /// A session command (SET, RESET, DISCARD ALL) the statement runs, if any.
    pub command: Option<SqlCommand>,
}

/// The named statements a client prepared, by the client's names.
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: HashMap<String, Arc<Statement>>,
}

impl ClientStatements {
    /// DISCARD ALL took effect: the client has no statement left.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// A name a Close of a statement that the server must keep is sent for (closing a name
/// that does not exist is not an error, and still answers CloseComplete).
const NO_STATEMENT: &str = "pgfleet_closed";

/// The rewriting failed: the server connection's protocol state is lost, so the answers
/// to messages pgfleet would add could not be told from the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CannotRewrite;

/// What became of a client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewritten {
    /// It goes as it is (nothing appended, nothing recorded).
    No,
    /// What was appended replaces all of it.
    Whole,
    /// What was appended replaces its first bytes, this many; the rest goes as it is
    /// (a Bind's parameters, perhaps still arriving).
    Front(usize),
}

/// Rewrites the client's messages for the server connection `server`.
pub struct Rewriter<'a> {
    pub client: &'a mut ClientStatements,
    /// Every client's statements, each text kept once.
    pub shared: &'a SharedStatements,
    pub server: &'a mut PreparedSet,
    /// Statements a server connection keeps before the least recently used is closed.
    pub max_prepared: usize,
    /// Statements prepared again since pgfleet's list came in doubt (see `held`).
    pub checked: Vec<String>,
}

fn cstr_at(b: &[u8], pos: &mut usize) -> Option<String> {
    read_cstr(b, pos).map(str::to_owned)
}

/// The tracker's record of a message pgfleet sends.
fn sent(kind: Frontend, answer: Answer, statement: bool) -> Sent {
    Sent {
        kind,
        answer,
        statement,
    }
}

impl Rewriter<'_> {
    /// Appends to `out` what the server gets for the client message `m` of `total`
    /// bytes and records it in `track` (with `command`, the session command `m` runs, if
    /// any). `m` is whole, or a Bind's front and as much of the rest as arrived.
    pub fn rewrite(
        &mut self,
        m: &[u8],
        total: usize,
        out: &mut BytesMut,
        track: &mut Tracker,
        command: Option<SqlCommand>,
    ) -> Result<Rewritten, CannotRewrite> {
        let b = body(m);
        let mut pos = 0;
        match m[0] {
            b'P' => {
                let Some(name) = cstr_at(b, &mut pos) else {
                    return Ok(Rewritten::No);
                };
                if name.is_empty() {
                    return Ok(Rewritten::No);
                }
                let rest = &b[pos..];
                let stmt = self.shared.statement(rest);
                self.client.map.insert(name, stmt.clone());
                if self.held(&stmt, out, track) {
                    // Already there: a Close of a name that does not exist answers with
                    // a CloseComplete, passed on as the client's ParseComplete; the
                    // client's unnamed statement stays as it is.
                    lost_check(track)?;
                    frontend::close_statement(out, NO_STATEMENT);
                    track.sent(sent(Frontend::Close, Answer::AsParse, false), None);
                } else {
                    self.prepare(&stmt, out, track, false)?;
                }
                Ok(Rewritten::Whole)
            }
            b'B' | b'D' => {
                let is_describe = m[0] == b'D';
                if is_describe && b.first() != Some(&b'S') {
                    return Ok(Rewritten::No);
                }
                pos = usize::from(is_describe);
                let portal = match is_describe {
                    true => None,
                    false => read_cstr_bytes(b, &mut pos),
                };
                let Some(name) = cstr_at(b, &mut pos) else {
                    return Ok(Rewritten::No);
                };
                let Some(stmt) = self.client.map.get(&name).cloned() else {
                    return Ok(Rewritten::No);
                };
                if !self.held(&stmt, out, track) {
                    self.prepare(&stmt, out, track, true)?;
                }
                match portal {
                    Some(portal) => {
                        let front = 5 + pos;
                        let rest = total.saturating_sub(front);
                        frontend::bind_front(out, portal, &stmt.internal, rest);
                        let command = stmt.command.clone();
                        track.sent(Sent::client(Frontend::Bind), command);
                        Ok(Rewritten::Front(front))
                    }
                    None => {
                        frontend::describe_statement(out, &stmt.internal);
                        track.sent(Sent::client(Frontend::Describe), None);
                        Ok(Rewritten::Whole)
                    }
                }
            }
            b'C' => {
                if b.first() != Some(&b'S') {
                    return Ok(Rewritten::No);
                }
                pos = 1;
                let Some(name) = cstr_at(b, &mut pos) else {
                    return Ok(Rewritten::No);
                };
                if name.is_empty() {
                    return Ok(Rewritten::No);
                }
                // The server keeps the statement for other clients.
                self.client.map.remove(&name);
                frontend::close_statement(out, NO_STATEMENT);
                track.sent(Sent::client(Frontend::Close), command);
                Ok(Rewritten::Whole)
            }
            _ => Ok(Rewritten::No),
        }
    }

    /// Whether the server connection holds `stmt`, as far as pgfleet's list can tell.
    /// Once the list is in doubt (a Parse or Close of pgfleet's failed or was skipped
    /// in this exchange), a statement it names is closed (a Close of a name that does
    /// not exist is no error) and prepared again before its first use, so neither a
    /// missing statement nor a duplicate Parse reaches the client.
    fn held(&mut self, stmt: &Statement, out: &mut BytesMut, track: &mut Tracker) -> bool {
        let listed = self.server.touch(&stmt.internal);
        if !listed || !track.statements_need_reset() || self.checked.contains(&stmt.internal) {
            return listed;
        }
        self.server.remove(&stmt.internal);
        frontend::close_statement(out, &stmt.internal);
        track.sent(sent(Frontend::Close, Answer::Swallow, true), None);
        self.checked.push(stmt.internal.clone());
        false
    }

    /// Sends the Parse of `stmt`, closing the least recently used statement first when
    /// the connection holds `max_prepared` already. `injected`: the client did not send
    /// this Parse, and must not see its answer.
    fn prepare(
        &mut self,
        stmt: &Statement,
        out: &mut BytesMut,
        track: &mut Tracker,
        injected: bool,
    ) -> Result<(), CannotRewrite> {
        lost_check(track)?;
        if let Some(evicted) = self.server.insert(&stmt.internal, self.max_prepared) {
            frontend::close_statement(out, &evicted);
            track.sent(sent(Frontend::Close, Answer::Swallow, true), None);
        }
        out.put_slice(&stmt.parse);
        let answer = match injected {
            true => Answer::Swallow,
            false => Answer::Forward,
        };
        track.sent(sent(Frontend::Parse, answer, true), None);
        Ok(())
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL` as a simple query: appends the query the
    /// server gets instead (with a Parse before it when needed) and records it; false
    /// when the query goes as it is.
    pub fn deallocate(
        &mut self,
        sql: &str,
        out: &mut BytesMut,
        track: &mut Tracker,
    ) -> Result<bool, CannotRewrite> {
        match parse_deallocate(sql) {
            Some(None) => {
                self.client.map.clear();
                self.server.clear();
                Ok(false)
            }
            Some(Some(name)) => {
                let Some(stmt) = self.client.map.remove(&name) else {
                    return Ok(false);
                };
                if !self.server.touch(&stmt.internal) {
                    self.prepare(&stmt, out, track, true)?;
                }
                self.server.remove(&stmt.internal);
                frontend::query(out, &format!("DEALLOCATE {}", stmt.internal));
                track.sent(Sent::client(Frontend::Query), None);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Answers pgfleet adds cannot be told apart once the protocol state is lost.
fn lost_check(track: &Tracker) -> Result<(), CannotRewrite> {
    match track.lost() {
        Some(_) => Err(CannotRewrite),
        None => Ok(()),
    }
}

/// `Some(None)` for DEALLOCATE ALL, `Some(Some(name))` for one statement.
fn parse_deallocate(sql: &str) -> Option<Option<String>> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("deallocate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("prepare") {
        name = words.next()?;
    }
    if words.next().is_some() {
        return None;
    }
    if name.eq_ignore_ascii_case("all") {
        return Some(None);
    }
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_ascii_lowercase(),
    };
    Some(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(rest: &[u8]) -> Arc<Statement> {
        SHARED_FOR_TESTS.with(|s| s.statement(rest))
    }

    thread_local! {
        static SHARED_FOR_TESTS: SharedStatements = SharedStatements::default();
    }

    #[test]
    fn deallocate_forms() {
        assert_eq!(parse_deallocate("DEALLOCATE ALL"), Some(None));
        assert_eq!(
            parse_deallocate("deallocate prepare S1;"),
            Some(Some("s1".into()))
        );
        assert_eq!(
            parse_deallocate("DEALLOCATE \"MyStmt\""),
            Some(Some("MyStmt".into()))
        );
        assert_eq!(parse_deallocate("select 1"), None);
    }

    #[test]
    fn same_text_same_internal_name() {
        let a = statement(b"select $1\0\0\x01\0\0\0\x17");
        let b = statement(b"select $1\0\0\x01\0\0\0\x17");
        let c = statement(b"select $1\0\0\0");
        assert_eq!(a.internal, b.internal);
        assert_ne!(a.internal, c.internal);
        assert_eq!(&a.parse[..1], b"P");
        // One copy of a text, however many names prepare it, while anyone holds it.
        assert!(Arc::ptr_eq(&a, &b));
        let internal = a.internal.clone();
        drop((a, b));
        let again = statement(b"select $1\0\0\x01\0\0\0\x17");
        assert_eq!(again.internal, internal);
        assert_eq!(
            Arc::strong_count(&again),
            1,
            "made anew once nobody held it"
        );
    }
}
