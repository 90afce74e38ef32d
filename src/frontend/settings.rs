//! A client's session settings in transaction mode, and bringing a server connection to
//! them: the reported parameters as the client last saw them, plus settings PostgreSQL
//! does not report (startup `options`, `SET search_path`, ...), replayed by statement.

use crate::pool::{ServerConn, Spellings};

/// Reported parameters that describe the server rather than the session.
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "in_hot_standby",
    "is_superuser",
    "session_authorization",
];

/// A session-level command outside a transaction block, to replay on the next server
/// connections once it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlCommand {
    /// `SET [SESSION] name ...`: replayed as the client wrote it.
    Set { name: String, sql: String },
    /// `RESET name`.
    Reset { name: String },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`: RESET ALL, and every prepared statement is gone too.
    DiscardAll,
}

/// Recognises a single `SET`, `RESET` or `DISCARD ALL` statement. `SET LOCAL` and
/// `SET TRANSACTION` are not session state; several statements in one query string are
/// not looked into (the caller warns).
pub fn classify(sql: &str) -> Option<SqlCommand> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    if text.contains(';') {
        return None;
    }
    let mut words = text.split_whitespace();
    let first = words.next()?.to_ascii_lowercase();
    match first.as_str() {
        "set" => {
            let mut word = words.next()?.to_ascii_lowercase();
            if word == "session" {
                word = words.next()?.to_ascii_lowercase();
                if word == "characteristics" {
                    return None;
                }
                if word == "authorization" {
                    word = "session_authorization".into();
                }
            }
            let name = match word.as_str() {
                "local" | "transaction" | "constraints" | "seed" => return None,
                "time" => "timezone".to_owned(),
                "names" => "client_encoding".to_owned(),
                "schema" => "search_path".to_owned(),
                "xml" => "xmloption".to_owned(),
                w => {
                    let w = w.split('=').next().unwrap_or(w);
                    match w.strip_prefix('"') {
                        // A quoted name keeps its case; only simple ones are followed.
                        Some(q) => q.strip_suffix('"').filter(|n| !n.contains('"'))?.to_owned(),
                        None => w.to_owned(),
                    }
                }
            };
            if text.contains("--") || text.contains("/*") {
                return None;
            }
            Some(SqlCommand::Set {
                name,
                sql: text.to_owned(),
            })
        }
        "reset" => match words.next()?.to_ascii_lowercase().as_str() {
            "all" => Some(SqlCommand::ResetAll),
            "session" => Some(SqlCommand::Reset {
                name: "session_authorization".into(),
            }),
            "time" => Some(SqlCommand::Reset {
                name: "timezone".into(),
            }),
            name => Some(SqlCommand::Reset { name: name.into() }),
        },
        "discard" if words.next()?.eq_ignore_ascii_case("all") => Some(SqlCommand::DiscardAll),
        _ => None,
    }
}

/// Whether a query string starts with SET (for the warning on what is not tracked).
pub fn looks_like_set(sql: &str) -> bool {
    sql.trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("set "))
}

/// What a client's session should look like on any server connection.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// Reported parameters as the client last saw them.
    reported: Vec<(String, String)>,
    /// A keyed hash of `reported`, kept up to date by every method that changes it: a
    /// server connection found in step with these values remembers it (see `sync_sql`).
    fingerprint: u64,
    /// Settings not reported by the server: (name, statement that sets it).
    pub unreported: Vec<(String, String)>,
    /// The startup settings: what RESET brings a setting back to, as on PostgreSQL.
    startup: Vec<(String, String)>,
}

impl ClientSettings {
    /// At login: a fresh connection's parameters (`baseline`) with the client's startup
    /// settings on top, in the servers' spelling where it is known; those the server does
    /// not report stay as statements.
    pub fn for_login(
        baseline: &[(String, String)],
        startup: &[(String, String)],
        spellings: &Spellings,
    ) -> ClientSettings {
        let mut s = ClientSettings::default();
        for (name, value) in baseline {
            if !READ_ONLY.contains(&name.as_str()) {
                s.reported.push((name.clone(), value.clone()));
            }
        }
        for (name, value) in startup {
            if let Some(slot) = s
                .reported
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                let spelt = spellings.get(&slot.0, value, &slot.1);
                slot.1 = spelt.unwrap_or_else(|| value.clone());
                s.startup.push((slot.0.clone(), slot.1.clone()));
            } else {
                s.startup.push((name.clone(), value.clone()));
                s.upsert(name, format!("SELECT {}", set_config(name, value)));
            }
        }
        s.refingerprint();
        s
    }

    fn refingerprint(&mut self) {
        use std::hash::BuildHasher;
        static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        self.fingerprint = KEYS.get_or_init(Default::default).hash_one(&self.reported);
    }

    /// After the startup settings were applied on `server` (whose parameters were
    /// `before`): learns how the server spells the values it had not seen yet, from a
    /// connection that was in its fresh state (`baseline`), and takes its spelling.
    /// Returns the reported parameters whose spelling changed, for the client.
    pub fn learn_spellings(
        &mut self,
        before: &[(String, String)],
        server: &ServerConn,
        baseline: &[(String, String)],
        spellings: &Spellings,
    ) -> Vec<(String, String)> {
        let mut changed = Vec::new();
        let value = |list: &[(String, String)], name: &str| {
            list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        };
        for (name, sent) in self.startup.iter_mut() {
            let (Some(now), Some(was), Some(fresh)) = (
                server.param(name),
                value(before, name),
                value(baseline, name),
            ) else {
                continue;
            };
            // Only what was just applied is the startup value as the client sent it.
            let Some(slot) = self
                .reported
                .iter_mut()
                .find(|(n, v)| n == name && v == sent)
            else {
                continue;
            };
            if now == sent.as_str() || was != fresh {
                continue;
            }
            spellings.learn(name, sent, &fresh, now);
            now.clone_into(&mut slot.1);
            changed.push(slot.clone());
            now.clone_into(sent);
        }
        self.refingerprint();
        changed
    }

    /// The value the client is greeted with for `fresh`, one of the baseline's
    /// (name, value) pairs: its own where it has one.
    pub fn told<'a>(&'a self, fresh: &'a (String, String)) -> &'a str {
        match self.reported.iter().find(|(r, _)| *r == fresh.0) {
            Some((_, mine)) => mine,
            None => &fresh.1,
        }
    }

    /// Takes the reported parameters from the server connection the client just used.
    /// Runs after every transaction: in the common case nothing changed, and nothing is
    /// copied.
    pub fn snapshot(&mut self, server: &ServerConn) {
        for (name, value) in &server.params {
            if READ_ONLY.contains(&name.as_str()) {
                continue;
            }
            match self.reported.iter_mut().find(|(n, _)| n == name) {
                Some(slot) if slot.1 == *value => {}
                Some(slot) => slot.1.clone_from(value),
                None => self.reported.push((name.clone(), value.clone())),
            }
        }
        self.refingerprint();
    }

    /// Records a session command that took effect on `server`, and what it did to the
    /// settings pgfleet had applied there. Returns true for a RESET of any kind: the
    /// client's startup settings must then be applied again on `server`.
    pub fn apply(&mut self, command: SqlCommand, server: &mut ServerConn) -> bool {
        match command {
            SqlCommand::Set { name, sql } => {
                if server.param(&name).is_none() {
                    upsert(&mut server.applied, &name, sql.clone());
                    upsert(&mut self.unreported, &name, sql);
                }
                false
            }
            SqlCommand::Reset { name } => {
                server.applied.retain(|(n, _)| *n != name);
                self.unreported.retain(|(n, _)| *n != name);
                self.restore_startup(Some(&name));
                true
            }
            SqlCommand::ResetAll | SqlCommand::DiscardAll => {
                server.applied.clear();
                self.unreported.clear();
                self.restore_startup(None);
                true
            }
        }
    }

    /// Brings startup settings (all, or `only`) back, as RESET does on PostgreSQL.
    fn restore_startup(&mut self, only: Option<&str>) {
        for (name, value) in self.startup.clone() {
            if only.is_some_and(|o| !o.eq_ignore_ascii_case(&name)) {
                continue;
            }
            match self
                .reported
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                Some(slot) => slot.1 = value,
                None => {
                    let sql = format!("SELECT {}", set_config(&name, &value));
                    self.upsert(&name, sql);
                }
            }
        }
        self.refingerprint();
    }

    fn upsert(&mut self, name: &str, sql: String) {
        upsert(&mut self.unreported, name, sql);
    }

    /// Whether `server` has exactly the reported values, in the same order: the usual
    /// case, since both lists come from the servers' login messages. Checked first on
    /// every transaction, so it compares in one pass.
    fn in_step(&self, server: &ServerConn) -> bool {
        let mut ours = self.reported.iter();
        let mut next = ours.next();
        for (name, value) in &server.params {
            match next {
                Some((n, v)) if n == name => {
                    if v != value {
                        return false;
                    }
                    next = ours.next();
                }
                _ if READ_ONLY.contains(&name.as_str()) => {}
                _ => return false,
            }
        }
        next.is_none()
    }

    /// The statements that bring `server` to these settings, if any are needed. A
    /// connection found in step remembers these values' fingerprint until its
    /// parameters change, so the next client with the same settings compares nothing.
    pub fn sync_sql(&self, server: &mut ServerConn) -> Option<String> {
        if self.unreported.is_empty() && server.applied.is_empty() {
            if server.in_step_with == Some(self.fingerprint) {
                return None;
            }
            if self.in_step(server) {
                server.in_step_with = Some(self.fingerprint);
                return None;
            }
        }
        let mut statements = Vec::new();
        let calls: Vec<String> = self
            .reported
            .iter()
            .filter(|(n, v)| server.param(n).is_some_and(|cur| cur != v))
            .map(|(n, v)| set_config(n, v))
            .collect();
        if !calls.is_empty() {
            statements.push(format!("SELECT {}", calls.join(", ")));
        }
        for (name, _) in &server.applied {
            if !self.unreported.iter().any(|(n, _)| n == name) {
                statements.push(reset_statement(name));
            }
        }
        for (name, sql) in &self.unreported {
            if !server.applied.iter().any(|(n, s)| n == name && s == sql) {
                statements.push(sql.clone());
            }
        }
        (!statements.is_empty()).then(|| statements.join(";\n"))
    }
}

fn upsert(list: &mut Vec<(String, String)>, name: &str, sql: String) {
    match list.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = sql,
        None => list.push((name.to_owned(), sql)),
    }
}

fn reset_statement(name: &str) -> String {
    match name {
        "session_authorization" => "RESET SESSION AUTHORIZATION".into(),
        "role" => "RESET ROLE".into(),
        n => format!("RESET {}", quote_ident(n)),
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The call that sets `name` to `value` for the session, as a startup packet would:
/// `pg_catalog.set_config('name', 'value', false)` (a list stays a list).
pub fn set_config(name: &str, value: &str) -> String {
    format!(
        "pg_catalog.set_config({}, {}, false)",
        quote_literal(name),
        quote_literal(value)
    )
}

/// A string literal for any value (backslashes escaped with `E''`).
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, sql: &str) -> Option<SqlCommand> {
        Some(SqlCommand::Set {
            name: name.into(),
            sql: sql.into(),
        })
    }

    #[test]
    fn classifies_session_commands() {
        assert_eq!(
            classify("SET search_path TO a, b;"),
            set("search_path", "SET search_path TO a, b")
        );
        assert_eq!(
            classify("set session work_mem='1MB'"),
            set("work_mem", "set session work_mem='1MB'")
        );
        assert_eq!(
            classify("SET statement_timeout=5"),
            set("statement_timeout", "SET statement_timeout=5")
        );
        assert_eq!(
            classify("SET TIME ZONE 'UTC'"),
            set("timezone", "SET TIME ZONE 'UTC'")
        );
        assert_eq!(classify("set role reader"), set("role", "set role reader"));
        assert_eq!(classify("SET LOCAL work_mem = 1"), None);
        assert_eq!(
            classify("SET SCHEMA 'x'"),
            set("search_path", "SET SCHEMA 'x'")
        );
        assert_eq!(
            classify("set \"work_mem\" = 1"),
            set("work_mem", "set \"work_mem\" = 1")
        );
        assert_eq!(classify("SET work_mem = 1 -- tuned"), None);
        assert_eq!(classify("SET TRANSACTION READ ONLY"), None);
        assert_eq!(
            classify("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            None
        );
        assert_eq!(classify("set a = 1; set b = 2"), None);
        assert_eq!(
            classify("RESET work_mem"),
            Some(SqlCommand::Reset {
                name: "work_mem".into()
            })
        );
        assert_eq!(classify("reset all"), Some(SqlCommand::ResetAll));
        assert_eq!(classify("DISCARD ALL"), Some(SqlCommand::DiscardAll));
        assert_eq!(classify("DISCARD PLANS"), None);
        assert_eq!(classify("select 1"), None);
        assert_eq!(classify(""), None);
        assert!(looks_like_set("  SET x = 1; select 1"));
        assert!(!looks_like_set("select 'set '"));
    }

    #[test]
    fn the_greeting_has_the_clients_startup_values_over_the_servers() {
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let baseline = vec![pair("TimeZone", "UTC"), pair("application_name", "")];
        let startup = vec![pair("application_name", "app")];
        let s = ClientSettings::for_login(&baseline, &startup, &Default::default());
        assert_eq!(s.told(&baseline[0]), "UTC");
        assert_eq!(s.told(&baseline[1]), "app");
    }

    #[test]
    fn literals() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
    }
}
