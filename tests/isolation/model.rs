//! What PostgreSQL answers to each frontend message, for the statements the generator
//! uses: a small model of one backend's session (transaction status, skip-to-Sync after
//! an extended-protocol error, COPY FROM STDIN in progress, prepared statements). Each
//! client runs one beside its connection; the self-check against PostgreSQL itself
//! keeps it honest.
//!
//! The rules it encodes (PostgreSQL 15, `postgres.c` and `copyfromparse.c`):
//! - An error in an extended-protocol message (Parse, Bind, Describe, Execute, Close)
//!   makes the backend skip every message until Sync; the Sync answers ReadyForQuery.
//!   An error in a simple Query (or FunctionCall) skips nothing: ReadyForQuery follows it.
//! - Inside COPY FROM STDIN the backend reads CopyData, CopyDone and CopyFail, and
//!   swallows Sync and Flush without answering. It reads one message at a time, so a
//!   bad row fails before the messages after it are read: those are then read at top
//!   level, where CopyData/CopyDone/CopyFail are ignored and every Sync answers
//!   ReadyForQuery.
//! - A COPY started by a simple Query ends with ReadyForQuery (after CopyDone, or after
//!   the error). One started by Execute ends with CommandComplete or the error, and
//!   then the backend waits for (or skips to) a Sync; the Sync a client pipelined right
//!   after the Execute was swallowed by the COPY, so it needs another one.
//! - In an aborted transaction block everything but COMMIT/ROLLBACK fails with 25P02,
//!   except Close, Sync and the empty query (and stray COPY messages, which are ignored
//!   everywhere).
//! - An error inside a transaction block aborts it (status E); outside one, the
//!   implicit transaction rolls back and the status stays I.

use std::collections::HashMap;

use super::wire::{Event, Marker, Msg, Row, Stmt};

/// The transaction status ReadyForQuery reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Idle,
    Block,
    Failed,
}

impl Status {
    pub fn byte(self) -> u8 {
        match self {
            Status::Idle => b'I',
            Status::Block => b'T',
            Status::Failed => b'E',
        }
    }
}

/// A COPY FROM STDIN the backend is in.
#[derive(Clone, Copy, Debug)]
struct Copy {
    /// Started by Execute (extended protocol) rather than by a simple Query.
    extended: bool,
    rows: u64,
}

/// One backend session as PostgreSQL would run it.
#[derive(Clone, Debug)]
pub struct Server {
    pub status: Status,
    /// Skipping messages until Sync after an extended-protocol error.
    skipping: bool,
    copy: Option<Copy>,
    /// Named prepared statements (they outlive transactions, even rolled-back ones).
    pub named: HashMap<String, Stmt>,
    unnamed: Option<Stmt>,
    portal: Option<(Stmt, Option<Marker>)>,
}

impl Server {
    pub fn new() -> Server {
        Server {
            status: Status::Idle,
            skipping: false,
            copy: None,
            named: HashMap::new(),
            unnamed: None,
            portal: None,
        }
    }

    pub fn in_copy(&self) -> bool {
        self.copy.is_some()
    }

    /// The events PostgreSQL answers `msgs` with, in order.
    pub fn answer(&mut self, msgs: &[Msg]) -> Vec<Event> {
        let mut out = Vec::new();
        for m in msgs {
            self.apply(m, &mut out);
        }
        out
    }

    fn apply(&mut self, msg: &Msg, out: &mut Vec<Event>) {
        if self.copy.is_some() {
            return self.in_copy_message(msg, out);
        }
        if let Msg::Sync = msg {
            self.skipping = false;
            self.unnamed_portal_done();
            out.push(Event::Ready(self.status.byte()));
            return;
        }
        if self.skipping {
            return;
        }
        match msg {
            Msg::Query(stmts) => self.simple(stmts, out),
            Msg::Parse(name, stmt) => {
                if self.status == Status::Failed && !stmt.ends_block() {
                    return self.fail_extended("25P02", None, out);
                }
                // Parse analysis comes before storing the statement.
                if let Stmt::Cast(m) = stmt {
                    return self.fail_extended("22P02", Some(*m), out);
                }
                if !name.is_empty() && self.named.contains_key(name) {
                    return self.fail_extended("42P05", None, out);
                }
                if name.is_empty() {
                    self.unnamed = Some(*stmt);
                } else {
                    self.named.insert(name.clone(), *stmt);
                }
            }
            Msg::Bind(name, param) => {
                let stmt = if name.is_empty() {
                    self.unnamed
                } else {
                    self.named.get(name).copied()
                };
                let Some(stmt) = stmt else {
                    return self.fail_extended("26000", None, out);
                };
                if self.status == Status::Failed && !stmt.ends_block() {
                    return self.fail_extended("25P02", None, out);
                }
                match stmt {
                    Stmt::CastParam => self.fail_extended("22P02", *param, out),
                    // Planned at Bind: the constant folds to the error.
                    Stmt::DivZero => self.fail_extended("22012", None, out),
                    _ => self.portal = Some((stmt, *param)),
                }
            }
            Msg::DescribePortal => {}
            Msg::DescribeStatement(name) => {
                let exists =
                    name.is_empty() && self.unnamed.is_some() || self.named.contains_key(name);
                if !exists {
                    self.fail_extended("26000", None, out);
                } else if self.status == Status::Failed {
                    self.fail_extended("25P02", None, out);
                }
            }
            Msg::Execute => {
                let (stmt, param) = self.portal.take().expect("Execute without a portal");
                match stmt {
                    Stmt::Select(m) => out.push(Event::Row(Ok(m))),
                    Stmt::SelectParam => out.push(Event::Row(Ok(param.expect("a bound marker")))),
                    Stmt::CopyIn => {
                        out.push(Event::CopyIn);
                        self.copy = Some(Copy {
                            extended: true,
                            rows: 0,
                        });
                    }
                    other => self.run(other, out),
                }
            }
            Msg::Close(name) => {
                self.named.remove(name);
            }
            Msg::Flush | Msg::Terminate | Msg::Partial => {}
            // Outside a COPY these are accepted and ignored.
            Msg::CopyData(_) | Msg::CopyDone | Msg::CopyFail(_) => {}
            Msg::Function(m) => {
                if self.status == Status::Failed {
                    out.push(Event::Error("25P02".into(), None));
                } else {
                    out.push(Event::Function(Ok(*m)));
                }
                out.push(Event::Ready(self.status.byte()));
            }
            Msg::Sync => unreachable!(),
        }
    }

    /// A simple Query: its statements in turn, up to the first error, then
    /// ReadyForQuery (unless a COPY FROM STDIN has begun).
    fn simple(&mut self, stmts: &[Stmt], out: &mut Vec<Event>) {
        for stmt in stmts {
            // The empty query has no statement to refuse.
            let refused = !stmt.ends_block() && *stmt != Stmt::Empty;
            if self.status == Status::Failed && refused {
                out.push(Event::Error("25P02".into(), None));
                break;
            }
            match stmt {
                Stmt::Select(m) => out.push(Event::Row(Ok(*m))),
                Stmt::Cast(m) => {
                    out.push(Event::Error("22P02".into(), Some(*m)));
                    self.abort();
                    break;
                }
                Stmt::DivZero => {
                    out.push(Event::Error("22012".into(), None));
                    self.abort();
                    break;
                }
                Stmt::CopyIn => {
                    assert_eq!(stmts.len(), 1, "COPY FROM STDIN goes alone in its Query");
                    out.push(Event::CopyIn);
                    self.copy = Some(Copy {
                        extended: false,
                        rows: 0,
                    });
                    return;
                }
                Stmt::SelectParam | Stmt::CastParam => panic!("{stmt:?} takes a parameter"),
                other => self.run(*other, out),
            }
        }
        out.push(Event::Ready(self.status.byte()));
    }

    /// The statements that behave alike in both protocols.
    fn run(&mut self, stmt: Stmt, out: &mut Vec<Event>) {
        match stmt {
            Stmt::Begin => {
                if self.status == Status::Idle {
                    self.status = Status::Block;
                }
            }
            Stmt::Commit | Stmt::Rollback => self.status = Status::Idle,
            Stmt::CopyOut(m) => {
                out.extend([Event::CopyOut, Event::Data(Ok(m)), Event::Copied(1)]);
            }
            Stmt::Empty => {}
            other => panic!("{other:?} is handled by its protocol"),
        }
    }

    fn in_copy_message(&mut self, msg: &Msg, out: &mut Vec<Event>) {
        let copy = self.copy.as_mut().unwrap();
        match msg {
            Msg::CopyData(rows) => {
                for row in rows {
                    match row {
                        Row::Good(_) => copy.rows += 1,
                        Row::Bad(m) => return self.copy_failed("22P02", *m, out),
                    }
                }
            }
            Msg::CopyDone => {
                out.push(Event::Copied(copy.rows));
                let extended = copy.extended;
                self.copy = None;
                if !extended {
                    out.push(Event::Ready(self.status.byte()));
                }
            }
            Msg::CopyFail(m) => self.copy_failed("57014", *m, out),
            // Swallowed: no answer, no end of the COPY.
            Msg::Sync | Msg::Flush => {}
            other => panic!("the generator sent {other:?} inside a COPY"),
        }
    }

    fn copy_failed(&mut self, code: &str, m: Marker, out: &mut Vec<Event>) {
        let extended = self.copy.take().unwrap().extended;
        out.push(Event::Error(code.into(), Some(m)));
        self.abort();
        if extended {
            self.skipping = true;
        } else {
            out.push(Event::Ready(self.status.byte()));
        }
    }

    fn fail_extended(&mut self, code: &str, m: Option<Marker>, out: &mut Vec<Event>) {
        out.push(Event::Error(code.into(), m));
        self.abort();
        self.skipping = true;
        self.portal = None;
    }

    fn abort(&mut self) {
        if self.status == Status::Block {
            self.status = Status::Failed;
        }
    }

    fn unnamed_portal_done(&mut self) {
        self.portal = None;
    }
}
