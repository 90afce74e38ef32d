//! The admin console: database `pgfleet` on `admin_listen`, for the users of
//! `admin_users` (every command) and `stats_users` (SHOW commands), as PgBouncer's
//! console is. It speaks the simple query protocol; each command is a file here.

mod backends;
mod clients;
mod config;
mod databases;
mod lists;
mod members;
mod pause;
mod pools;
mod servers;
mod stats;
mod version;

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, Instrument};

use crate::frontend::{self, ClientConn, ClientError, StartupParams};
use crate::protocol::backend as msg;
use crate::protocol::frame::{body, read_cstr};
use crate::protocol::sqlstate;
use crate::state::{State, Topology};

/// The console's database name (`pgbouncer` is accepted too, for tools that expect it).
pub const DATABASE: &str = "pgfleet";

/// A time as the console shows it: RFC 3339, UTC, to the second.
pub fn time_text(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A result set: column names and text rows.
#[derive(Debug, Default)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Sent as NoticeResponses before the result.
    pub notices: Vec<String>,
}

impl Table {
    /// A table with these columns and no rows.
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Adds a row of non-NULL values.
    pub fn push<const N: usize>(&mut self, values: [String; N]) {
        self.rows.push(values.into_iter().map(Some).collect());
    }

    fn write(&self, conn: &mut ClientConn, tag: &str) {
        for notice in &self.notices {
            msg::notice_response(&mut conn.out, notice);
        }
        if self.columns.is_empty() {
            // A command with no result set: CommandComplete alone.
            msg::command_complete(&mut conn.out, tag);
            return;
        }
        msg::row_description(&mut conn.out, &self.columns);
        for row in &self.rows {
            let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            msg::data_row(&mut conn.out, &values);
        }
        msg::command_complete(&mut conn.out, tag);
    }
}

/// Accepts console clients until pgfleet stops.
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    frontend::accept_loop(&state, &listener, |stream, peer| {
        let id = state.next_client_id();
        let span = tracing::info_span!("admin", id, %peer);
        tokio::spawn(handle(state.clone(), stream, peer.ip()).instrument(span));
    })
    .await;
}

/// What a console user may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Every command.
    Admin,
    /// SHOW commands only.
    Stats,
}

fn access(topology: &Topology, user: &str) -> Option<Access> {
    let g = &topology.config.general;
    if g.admin_users.iter().any(|u| u == user) {
        Some(Access::Admin)
    } else if g.stats_users.iter().any(|u| u == user) {
        Some(Access::Stats)
    } else {
        None
    }
}

async fn handle(state: Arc<State>, stream: TcpStream, peer: std::net::IpAddr) {
    let _ = stream.set_nodelay(true);
    let topology = state.current.load_full();
    let mut conn = ClientConn::new(stream);
    let admit = |p: &StartupParams| {
        if p.database != DATABASE && p.database != "pgbouncer" {
            let text = format!("the admin console's database is \"{DATABASE}\"");
            return Err(ClientError::fatal(sqlstate::INVALID_CATALOG_NAME, text));
        }
        Ok(())
    };
    let gate = frontend::Gate {
        budget: &state.console_logins,
        peer,
        auth_type: topology.config.general.console_auth(),
    };
    let login = Box::pin(frontend::login(
        &state, &mut conn, &topology, gate, None, admit,
    ));
    let Some((params, _)) = login.await else {
        return;
    };
    // Checked after authentication, so the console tells nobody which users exist.
    let Some(access) = access(&topology, &params.user) else {
        let text = format!(
            "user \"{}\" is not in admin_users or stats_users",
            params.user
        );
        info!(user = %params.user, "admin console refused");
        conn.send_error(&ClientError::fatal(sqlstate::INSUFFICIENT_PRIVILEGE, text))
            .await;
        return;
    };
    info!(user = %params.user, ?access, "admin console connected");
    for (name, value) in [
        ("server_version", version::SERVER_VERSION),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        msg::parameter_status(&mut conn.out, name, value);
    }
    msg::backend_key_data(&mut conn.out, 0, 0);
    msg::ready_for_query(&mut conn.out, b'I');
    if conn.flush().await.is_err() {
        return;
    }
    if let Err(e) = commands(&state, &mut conn, &params.user).await {
        if !matches!(e, ClientError::Io(_)) {
            conn.send_error(&e).await;
        }
    }
}

/// Answers simple queries until the client leaves. `user`'s rights are looked up for
/// each query: a reload that takes the user out of `admin_users` and `stats_users`
/// ends the session, and one that moves it between them changes what it may run.
async fn commands(
    state: &Arc<State>,
    conn: &mut ClientConn,
    user: &str,
) -> Result<(), ClientError> {
    loop {
        let message = conn.read_message().await?;
        match message[0] {
            b'X' => return Ok(()),
            b'Q' => {
                let Some(access) = access(&state.current.load(), user) else {
                    info!(
                        user,
                        "admin console session ended: no longer in admin_users or stats_users"
                    );
                    let text =
                        format!("user \"{user}\" is no longer in admin_users or stats_users");
                    return Err(ClientError::fatal(sqlstate::INSUFFICIENT_PRIVILEGE, text));
                };
                let mut pos = 0;
                let sql = read_cstr(body(&message), &mut pos).unwrap_or("");
                run(state, conn, access, sql).await;
            }
            b'S' => {}
            _ => {
                let text = "the admin console speaks the simple query protocol only";
                return Err(ClientError::fatal(sqlstate::FEATURE_NOT_SUPPORTED, text));
            }
        }
        msg::ready_for_query(&mut conn.out, b'I');
        conn.flush().await?;
    }
}

/// Runs one query (it may hold several commands, separated by `;`); stops at the first
/// that fails, as PostgreSQL does.
async fn run(state: &Arc<State>, conn: &mut ClientConn, access: Access, sql: &str) {
    let statements: Vec<&str> = sql
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if statements.is_empty() {
        msg::empty_query_response(&mut conn.out);
        return;
    }
    for statement in statements {
        match command(state, access, statement).await {
            Ok((table, tag)) => table.write(conn, tag),
            Err((code, text)) => {
                msg::error_response(&mut conn.out, msg::Severity::Error, code, &text);
                info!(command = statement, code, error = %text, "admin command failed");
                return;
            }
        }
    }
}

/// The answer to one command, or (SQLSTATE, message).
async fn command(
    state: &Arc<State>,
    access: Access,
    statement: &str,
) -> Result<(Table, &'static str), (&'static str, String)> {
    // Command words are matched without case; arguments (member addresses) as written.
    let raw: Vec<&str> = statement.split_whitespace().collect();
    let words: Vec<String> = raw.iter().map(|w| w.to_ascii_uppercase()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let topology = state.current.load_full();
    let show = |table: Table| Ok((table, "SHOW"));
    match words.as_slice() {
        ["SHOW", "BACKENDS"] => show(backends::table(&topology)),
        ["SHOW", "POOLS"] => show(pools::table(&topology)),
        ["SHOW", "STATS"] => show(stats::table(&topology)),
        ["SHOW", "DATABASES"] => show(databases::table(&topology)),
        ["SHOW", "LISTS"] => show(lists::table(state)),
        ["SHOW", "CONFIG"] => show(config::table(&topology)),
        ["SHOW", "CLIENTS"] => show(clients::table(state)),
        ["SHOW", "SERVERS"] => show(servers::table(&topology)),
        ["SHOW", "VERSION"] => show(version::table()),
        [first, ..] if *first != "SHOW" && access != Access::Admin => Err((
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "stats_users may only run SHOW commands".into(),
        )),
        ["KILL_CLIENT", _] => {
            let id = raw[1].parse::<u32>().map_err(|_| {
                let text = format!("KILL_CLIENT takes a client id from SHOW CLIENTS, not \"{}\"", raw[1]);
                (sqlstate::SYNTAX_ERROR, text)
            })?;
            if !state.clients.kill(id) {
                return Err((sqlstate::UNDEFINED_OBJECT, format!("no client {id}")));
            }
            info!(client = id, "client killed from the admin console");
            Ok((Table::default(), "KILL_CLIENT"))
        }
        ["PAUSE"] | ["PAUSE", _] => {
            pause::pause(&topology, raw.get(1).copied()).await?;
            Ok((Table::default(), "PAUSE"))
        }
        ["RESUME"] | ["RESUME", _] => {
            pause::resume(&topology, raw.get(1).copied())?;
            Ok((Table::default(), "RESUME"))
        }
        ["RELOAD"] => match crate::fleet::reload(state).await {
            Ok(reloaded) => {
                let mut notices = reloaded.changes;
                notices.extend(reloaded.warnings);
                let table = Table {
                    notices,
                    ..Table::default()
                };
                Ok((table, "RELOAD"))
            }
            Err(e) => Err((
                sqlstate::CONFIG_FILE_ERROR,
                format!("configuration not reloaded, the running one stays: {e:#}"),
            )),
        },
        ["SHUTDOWN"] => {
            info!("SHUTDOWN from the admin console: stopping");
            state.stop.send_replace(true);
            Ok((Table::default(), "SHUTDOWN"))
        }
        [verb @ ("DISABLE" | "ENABLE"), _] => {
            let disable = *verb == "DISABLE";
            members::set_disabled(&topology, raw[1], disable)?;
            Ok((Table::default(), if disable { "DISABLE" } else { "ENABLE" }))
        }
        _ => Err((
            sqlstate::SYNTAX_ERROR,
            format!("unknown command \"{statement}\"; the commands are SHOW BACKENDS|POOLS|STATS|SERVERS|CLIENTS|DATABASES|LISTS|CONFIG|VERSION, DISABLE <member>, ENABLE <member>, PAUSE [cluster], RESUME [cluster], KILL_CLIENT <id>, RELOAD, SHUTDOWN"),
        )),
    }
}
