//! Named prepared statements in transaction mode. A client's statement lives on
//! whichever server connection runs its next transaction: pgfleet keeps the client's
//! Parse, names the statement on the servers after a keyed hash of its text and
//! parameter types (so clients share it, and no client can guess a name to prepare a
//! statement of its own under it through SQL), prepares it on a connection the first time a Bind or
//! Describe needs it there, and swallows the ParseComplete of the Parse it adds itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth::scram_common::hmac_sha256;

use crate::pool::PreparedSet;

use super::settings::{classify, SqlCommand};
use crate::protocol::frame::{body, read_cstr};

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

/// A response pgfleet must pass on or swallow: one entry per Parse or Close sent to the
/// server, in order, with the Sync epoch it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub epoch: u64,
    /// Added by pgfleet: the client does not expect its answer.
    pub injected: bool,
    /// A Close sent in place of the client's Parse: its CloseComplete goes to the
    /// client as ParseComplete.
    pub as_parse: bool,
}

/// The responses expected for Parse and Close messages, shared by the two directions.
pub type Expected = std::sync::Mutex<VecDeque<Expect>>;

/// A name a Close of a statement that the server must keep is sent for (closing a name
/// that does not exist is not an error, and still answers CloseComplete).
const NO_STATEMENT: &str = "pgfleet_closed";

/// Rewrites the client's messages of one batch for the server connection `server`.
pub struct Rewriter<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut PreparedSet,
    pub expected: &'a Expected,
    /// Statements a server connection keeps before the least recently used is closed.
    pub max_prepared: usize,
    /// Requests (Sync, Query) sent so far: the epoch of the next message.
    pub epoch: u64,
    /// Set when a Bind runs a statement that is a session command.
    pub bound_command: Option<SqlCommand>,
}

fn cstr_at(b: &[u8], pos: &mut usize) -> Option<String> {
    read_cstr(b, pos).map(str::to_owned)
}

impl Rewriter<'_> {
    fn expect(&self, injected: bool) {
        self.push(Expect {
            epoch: self.epoch,
            injected,
            as_parse: false,
        });
    }

    fn push(&self, e: Expect) {
        let mut q = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(e);
    }

    /// Appends to `out` what the server gets for the client message `m`; returns false
    /// when `m` is to be forwarded unchanged (nothing appended).
    pub fn rewrite(&mut self, m: &[u8], out: &mut BytesMut) -> bool {
        let b = body(m);
        let mut pos = 0;
        match m[0] {
            b'P' => {
                let Some(name) = cstr_at(b, &mut pos) else {
                    return false;
                };
                if name.is_empty() {
                    self.expect(false);
                    return false;
                }
                let rest = &b[pos..];
                let stmt = statement(rest);
                self.client.map.insert(name, stmt.clone());
                if self.server.touch(&stmt.internal) {
                    // Already there: a Close of a name that does not exist answers with
                    // a CloseComplete, passed on as the client's ParseComplete; the
                    // client's unnamed statement stays as it is.
                    close_statement(out, NO_STATEMENT);
                    self.push(Expect {
                        epoch: self.epoch,
                        injected: false,
                        as_parse: true,
                    });
                } else {
                    self.prepare(&stmt, out, false);
                }
                true
            }
            b'B' | b'D' => {
                let is_describe = m[0] == b'D';
                if is_describe && b.first() != Some(&b'S') {
                    return false;
                }
                let prefix = if is_describe { 1 } else { 0 };
                pos = prefix;
                let portal = if is_describe {
                    None
                } else {
                    cstr_at(b, &mut pos)
                };
                let Some(name) = cstr_at(b, &mut pos) else {
                    return false;
                };
                let Some(stmt) = self.client.map.get(&name).cloned() else {
                    return false;
                };
                if !is_describe {
                    self.bound_command.clone_from(&stmt.command);
                }
                if !self.server.touch(&stmt.internal) {
                    self.prepare(&stmt, out, true);
                }
                let rest = &b[pos..];
                let start = out.len();
                out.put_u8(m[0]);
                out.put_u32(0);
                if let Some(portal) = portal {
                    put_cstr(out, &portal);
                } else {
                    out.put_u8(b'S');
                }
                put_cstr(out, &stmt.internal);
                out.put_slice(rest);
                fix_len(out, start);
                true
            }
            b'C' => {
                let kind = b.first().copied();
                self.expect(false);
                if kind != Some(b'S') {
                    return false;
                }
                pos = 1;
                let Some(name) = cstr_at(b, &mut pos) else {
                    return false;
                };
                if name.is_empty() {
                    return false;
                }
                self.client.map.remove(&name);
                close_statement(out, NO_STATEMENT);
                true
            }
            _ => false,
        }
    }

    /// Sends the Parse of `stmt`, closing the least recently used statement first when
    /// the connection holds `max_prepared` already.
    fn prepare(&mut self, stmt: &Statement, out: &mut BytesMut, injected: bool) {
        if let Some(evicted) = self.server.insert(&stmt.internal, self.max_prepared) {
            close_statement(out, &evicted);
            self.expect(true);
        }
        out.put_slice(&stmt.parse);
        self.expect(injected);
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL` as a simple query: returns the query text
    /// the server gets instead (with a Parse before it when needed), if any.
    pub fn deallocate(&mut self, sql: &str, out: &mut BytesMut) -> bool {
        match parse_deallocate(sql) {
            Some(None) => {
                self.client.map.clear();
                self.server.clear();
                false
            }
            Some(Some(name)) => {
                let Some(stmt) = self.client.map.remove(&name) else {
                    return false;
                };
                if !self.server.touch(&stmt.internal) {
                    self.prepare(&stmt, out, true);
                }
                self.server.remove(&stmt.internal);
                let start = out.len();
                out.put_u8(b'Q');
                out.put_u32(0);
                put_cstr(out, &format!("DEALLOCATE {}", stmt.internal));
                fix_len(out, start);
                true
            }
            None => false,
        }
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

/// The key of the statement names: random, one per process (server connections do not
/// outlive the process).
fn name_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn statement(rest: &[u8]) -> Arc<Statement> {
    let digest = hmac_sha256(name_key(), &[rest]);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let internal = format!("pgfleet_{hex}");
    let mut parse = BytesMut::with_capacity(rest.len() + internal.len() + 6);
    parse_message(&mut parse, &internal, rest);
    let command = read_cstr(rest, &mut 0).and_then(classify);
    Arc::new(Statement {
        internal,
        parse: parse.freeze(),
        command,
    })
}

/// A Parse message: name, then `rest` (query, parameter count and types) as given.
fn parse_message(out: &mut BytesMut, name: &str, rest: &[u8]) {
    let start = out.len();
    out.put_u8(b'P');
    out.put_u32(0);
    put_cstr(out, name);
    out.put_slice(rest);
    fix_len(out, start);
}

/// A Close message for the statement `name`.
fn close_statement(out: &mut BytesMut, name: &str) {
    let start = out.len();
    out.put_u8(b'C');
    out.put_u32(0);
    out.put_u8(b'S');
    put_cstr(out, name);
    fix_len(out, start);
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

fn fix_len(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
