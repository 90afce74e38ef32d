//! Statements that leave state in a session: a client in transaction mode that runs one
//! must keep its server connection (be *pinned*) until it leaves, or that state would
//! reach the next client (`SET ROLE`) or be missing from this client's next
//! transaction (a temporary table).
//!
//! Read from the tokens, statement by statement (comments and quoting cannot hide or
//! fake one), including the body of a `DO` block. Not seen: what a function does inside
//! its body (`select my_function()` that takes an advisory lock).

use super::lex::{statements, Token};

mod look;

use look::might_pin;
#[cfg(test)]
use look::{LEADING, NAMED};

/// PL/pgSQL's keywords that a statement can follow.
const CONTROL: [&str; 4] = ["begin", "then", "else", "loop"];

/// Why a client is pinned to its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, `set_config('role', …, false)`.
    Role,
    /// `pg_advisory_lock`, `pg_try_advisory_lock` and their `_shared` forms (session
    /// locks; the `_xact_` ones end with the transaction).
    AdvisoryLock,
    /// `set_config(…, false)` of another setting, or with a name or scope pgfleet
    /// cannot read (a parameter).
    SetConfig,
    /// `LISTEN`.
    Listen,
    /// `CREATE TEMP` tables, views, sequences; `SELECT … INTO TEMP`; objects created in
    /// `pg_temp` (not `ON COMMIT DROP` tables, which end with the transaction).
    TempObject,
    /// SQL `PREPARE`.
    Prepare,
    /// `DECLARE … WITH HOLD`.
    HoldCursor,
    /// `LOAD`: a library stays loaded until the server connection closes.
    Load,
    /// pgfleet lost track of the server connection's protocol state.
    Protocol,
}

impl PinReason {
    pub const ALL: [PinReason; 9] = [
        PinReason::Role,
        PinReason::AdvisoryLock,
        PinReason::SetConfig,
        PinReason::Listen,
        PinReason::TempObject,
        PinReason::Prepare,
        PinReason::HoldCursor,
        PinReason::Load,
        PinReason::Protocol,
    ];

    /// The name in metrics, `SHOW CLIENTS` and logs.
    pub fn name(self) -> &'static str {
        match self {
            PinReason::Role => "role",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::SetConfig => "set_config",
            PinReason::Listen => "listen",
            PinReason::TempObject => "temp_object",
            PinReason::Prepare => "prepare",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::Load => "load",
            PinReason::Protocol => "protocol",
        }
    }

    /// What the client did, for a log line or an error message.
    pub fn what(self) -> &'static str {
        match self {
            PinReason::Role => "changes the session's role",
            PinReason::AdvisoryLock => "takes a session advisory lock",
            PinReason::SetConfig => "changes a setting for the session with set_config",
            PinReason::Listen => "listens for notifications",
            PinReason::TempObject => "creates a temporary object",
            PinReason::Prepare => "prepares a statement with SQL PREPARE",
            PinReason::HoldCursor => "declares a cursor WITH HOLD",
            PinReason::Load => "loads a library",
            PinReason::Protocol => "sent messages whose answers pgfleet cannot follow",
        }
    }

    /// How to avoid pinning, for the error `pin = "error"` answers with.
    pub fn instead(self) -> &'static str {
        match self {
            PinReason::Role => "use SET LOCAL ROLE inside a transaction block",
            PinReason::AdvisoryLock => "use pg_advisory_xact_lock inside a transaction block",
            PinReason::SetConfig => "use set_config(name, value, true) inside a transaction block",
            PinReason::Listen => "listen on a session-mode endpoint",
            PinReason::TempObject => "create it ON COMMIT DROP inside a transaction block",
            PinReason::Prepare => "use protocol-level prepared statements, which pgfleet carries",
            PinReason::HoldCursor => "use a cursor inside a transaction block",
            PinReason::Load => "use a session-mode endpoint",
            PinReason::Protocol => "use a session-mode endpoint",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of pin reasons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinSet(u16);

impl PinSet {
    /// The set as stored in an integer (`bits`).
    pub fn from_bits(bits: u16) -> PinSet {
        PinSet(bits)
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn add(&mut self, reason: PinReason) {
        self.0 |= reason.bit();
    }

    pub fn union(self, other: PinSet) -> PinSet {
        PinSet(self.0 | other.0)
    }

    /// The reasons of `self` that are not in `other`.
    pub fn without(self, other: PinSet) -> PinSet {
        PinSet(self.0 & !other.0)
    }

    pub fn contains(self, reason: PinReason) -> bool {
        self.0 & reason.bit() != 0
    }

    /// The reasons in the set, in `PinReason::ALL` order.
    pub fn iter(self) -> impl Iterator<Item = PinReason> {
        PinReason::ALL
            .into_iter()
            .filter(move |r| self.contains(*r))
    }

    /// The reasons' names, comma-separated.
    pub fn names(self) -> String {
        self.iter()
            .map(PinReason::name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The session state the statements of `sql` leave.
pub fn session_state(sql: &[u8]) -> PinSet {
    if !might_pin(sql) {
        return PinSet::default();
    }
    read(sql)
}

/// `session_state`, read in full.
fn read(sql: &[u8]) -> PinSet {
    let mut pins = PinSet::default();
    for statement in statements(sql) {
        statement_state(&statement, &mut pins);
    }
    pins
}

fn statement_state(t: &[Token<'_>], pins: &mut PinSet) {
    let word = |i: usize, k: &str| t.get(i).is_some_and(|t| t.is(k));
    let has = |k: &str| t.iter().any(|t| t.is(k));
    // Parenthesized queries start with `(`.
    let first = t.iter().position(|t| !matches!(t, Token::Punct(b'(')));
    let Some(first) = first else {
        return;
    };
    let f = |k: &str| word(first, k);
    // PL/pgSQL (a DO block's body): a statement can follow a block or control keyword.
    if CONTROL.iter().any(|k| f(k))
        && matches!(t.get(first + 1), Some(Token::Word(_)))
        && ![
            "transaction",
            "work",
            "isolation",
            "read",
            "not",
            "deferrable",
        ]
        .iter()
        .any(|k| word(first + 1, k))
    {
        statement_state(&t[first + 1..], pins);
        return;
    }
    if f("set") {
        let mut i = first + 1;
        let local = word(i, "local");
        if local || (word(i, "session") && !word(i + 1, "authorization")) {
            i += 1;
        }
        let role = word(i, "role") || (word(i, "session") && word(i + 1, "authorization"));
        if role && !local {
            pins.add(PinReason::Role);
        }
    } else if f("listen") {
        pins.add(PinReason::Listen);
    } else if f("prepare") && !word(first + 1, "transaction") {
        pins.add(PinReason::Prepare);
    } else if f("declare") {
        let body = t.iter().position(|t| t.is("for")).unwrap_or(t.len());
        if t[..body]
            .windows(2)
            .any(|w| w[0].is("with") && w[1].is("hold"))
        {
            pins.add(PinReason::HoldCursor);
        }
    } else if f("load") {
        pins.add(PinReason::Load);
    } else if f("create") {
        let object = t.iter().position(|t| {
            [
                "table",
                "view",
                "sequence",
                "function",
                "procedure",
                "type",
                "index",
            ]
            .iter()
            .any(|k| t.is(k))
        });
        let temp = t[..object.unwrap_or(t.len())]
            .iter()
            .any(|t| t.is("temp") || t.is("temporary"));
        let in_pg_temp = t.iter().any(|t| t.names("pg_temp"));
        let on_commit_drop = t
            .windows(3)
            .any(|w| w[0].is("on") && w[1].is("commit") && w[2].is("drop"));
        if (temp || in_pg_temp) && !on_commit_drop {
            pins.add(PinReason::TempObject);
        }
    } else if f("do") {
        // The block's body is SQL too (PL/pgSQL): read its statements.
        for token in &t[first..] {
            if let Token::Str(body) = token {
                *pins = pins.union(read(body));
            }
        }
    }
    if (f("select") || f("with") || f("table") || f("values"))
        && t.windows(2)
            .any(|w| w[0].is("into") && (w[1].is("temp") || w[1].is("temporary")))
    {
        pins.add(PinReason::TempObject);
    }
    if has("pg_temp") && (f("select") || f("with")) && has("into") {
        pins.add(PinReason::TempObject);
    }
    calls(t, pins);
}

/// Function calls anywhere in a statement: session advisory locks and `set_config`.
fn calls(t: &[Token<'_>], pins: &mut PinSet) {
    const LOCKS: [&str; 4] = [
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    ];
    for (i, w) in t.windows(2).enumerate() {
        if w[1] != Token::Punct(b'(') {
            continue;
        }
        if LOCKS.iter().any(|n| w[0].names(n)) {
            pins.add(PinReason::AdvisoryLock);
        } else if w[0].names("set_config") {
            if let Some(reason) = set_config(&t[i + 2..]) {
                pins.add(reason);
            }
        }
    }
}

/// What `set_config(…)` does, from its arguments (the tokens after its `(`): a setting
/// for the session unless its third argument is a literal true.
fn set_config(args: &[Token<'_>]) -> Option<PinReason> {
    let mut arguments: Vec<&[Token<'_>]> = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, t) in args.iter().enumerate() {
        match t {
            Token::Punct(b'(' | b'[') => depth += 1,
            Token::Punct(b')' | b']') if depth == 0 => {
                arguments.push(&args[start..i]);
                break;
            }
            Token::Punct(b')' | b']') => depth -= 1,
            Token::Punct(b',') if depth == 0 => {
                arguments.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    let local = match arguments.get(2) {
        Some([t]) => t.is("true") || matches!(t, Token::Str(s) if truthy(s)),
        Some([t, Token::Operator, ty]) => {
            (t.is("true") || matches!(t, Token::Str(s) if truthy(s)))
                && (ty.is("bool") || ty.is("boolean"))
        }
        _ => false,
    };
    if local {
        return None;
    }
    let name = match arguments.first() {
        Some([Token::Str(name)]) => Some(*name),
        Some([Token::Str(name), Token::Operator, ty]) if ty.is("text") => Some(*name),
        _ => None,
    };
    match name {
        Some(n) if is_role(n) => Some(PinReason::Role),
        _ => Some(PinReason::SetConfig),
    }
}

fn truthy(s: &[u8]) -> bool {
    ["t", "true", "on", "yes", "1"]
        .iter()
        .any(|v| s.trim_ascii().eq_ignore_ascii_case(v.as_bytes()))
}

fn is_role(name: &[u8]) -> bool {
    let name = name.trim_ascii();
    name.eq_ignore_ascii_case(b"role") || name.eq_ignore_ascii_case(b"session_authorization")
}

/// The session state a FunctionCall (by OID) leaves: the session advisory lock
/// functions and `set_config` (whose arguments are not looked into).
pub fn function_call_state(oid: u32) -> PinSet {
    let mut pins = PinSet::default();
    match oid {
        // pg_[try_]advisory_lock[_shared](int8) and (int4, int4).
        2880..=2883 | 2886..=2889 => pins.add(PinReason::AdvisoryLock),
        2078 => pins.add(PinReason::SetConfig),
        _ => {}
    }
    pins
}

#[cfg(test)]
mod tests;
