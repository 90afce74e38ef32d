//! `discovery = "aurora"`: the instances Aurora PostgreSQL lists in
//! `aurora_replica_status()`, asked through whichever member answers first.
//!
//! As the AWS drivers do, each poll asks one member: the `hosts` (seeds) in order, then
//! the members found by the last poll, so discovery keeps working once the seeds are
//! gone. One connection is kept between polls and replaced when it fails. Every attempt
//! (connect, log in, query) has [`ATTEMPT_TIMEOUT`], so a poll takes at most that times
//! the number of addresses it tries, plus one for the kept connection.

mod status;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{Member, Poll, Source};
use crate::config;
use crate::tls::ServerTls;

/// Time one member has to accept the connection, log in and answer the query.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// `now()` and `localtimestamp` let the 300 s rule use the server's clock, whichever
/// timestamp type the column has.
const QUERY: &str = "select server_id, session_id, replica_lag_in_msec, last_update_timestamp, \
                     now(), localtimestamp from aurora_replica_status()";

/// The Aurora source of one cluster.
pub struct Aurora {
    seeds: Vec<String>,
    /// `instance_endpoint`, holding `{server_id}`.
    template: String,
    user: String,
    database: String,
    password: Option<String>,
    tls: Arc<ArcSwap<ServerTls>>,
    state: Mutex<State>,
}

/// What one poll leaves for the next.
#[derive(Default)]
struct State {
    conn: Option<Conn>,
    /// Addresses of the members the last successful poll returned.
    found: Vec<String>,
}

/// A connection to one member.
struct Conn {
    addr: String,
    client: Client,
    /// Drives the connection; aborted on drop, so a member that stopped answering does
    /// not keep a task and a socket forever.
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why asking one member failed.
enum Failure {
    /// This member could not answer; another may.
    Next(anyhow::Error),
    /// The answer itself is wrong; asking another member of the same cluster would not help.
    Stop(anyhow::Error),
}

impl Aurora {
    /// The source for `config`; `password` is the health user's; `tls` the cluster's
    /// TLS settings towards its servers.
    pub fn new(
        config: &config::Cluster,
        password: Option<String>,
        tls: Arc<ArcSwap<ServerTls>>,
    ) -> Aurora {
        Aurora {
            seeds: config.hosts.clone(),
            template: config.instance_endpoint.clone().unwrap_or_default(),
            user: config.health_user.clone(),
            database: config.health_database.clone(),
            password,
            tls,
            state: Mutex::new(State::default()),
        }
    }

    async fn poll(&self) -> anyhow::Result<Vec<Member>> {
        let mut state = self.state.lock().await;
        let mut tried: Vec<(String, anyhow::Error)> = Vec::new();
        if let Some(conn) = state.conn.take() {
            // A connection the server closed while idle is no sign of trouble.
            if !conn.client.is_closed() {
                match tokio::time::timeout(ATTEMPT_TIMEOUT, self.ask(&conn)).await {
                    Ok(Ok(members)) => return Ok(state.keep(conn, members)),
                    Ok(Err(Failure::Stop(e))) => return Err(e),
                    Ok(Err(Failure::Next(e))) => tried.push((conn.addr.clone(), e)),
                    Err(_) => tried.push((conn.addr.clone(), silent())),
                }
            }
        }
        for addr in candidates(&self.seeds, &state.found) {
            if tried.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(&addr)).await {
                Ok(Ok((conn, members))) => return Ok(state.keep(conn, members)),
                Ok(Err(Failure::Stop(e))) => return Err(e),
                Ok(Err(Failure::Next(e))) => tried.push((addr, e)),
                Err(_) => tried.push((addr, silent())),
            }
        }
        let tried: Vec<String> = tried
            .iter()
            .map(|(addr, e)| format!("{addr} ({e:#})"))
            .collect();
        Err(anyhow!(
            "no usable answer to aurora_replica_status() from any member; tried {}",
            tried.join(", ")
        ))
    }

    /// Connects to `addr` and asks it.
    async fn attempt(&self, addr: &str) -> Result<(Conn, Vec<Member>), Failure> {
        let conn = self.connect(addr).await.map_err(Failure::Next)?;
        let members = self.ask(&conn).await?;
        Ok((conn, members))
    }

    async fn connect(&self, addr: &str) -> anyhow::Result<Conn> {
        let (host, port) =
            status::split_addr(addr).ok_or_else(|| anyhow!("\"{addr}\" is not host:port"))?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(host.trim_start_matches('[').trim_end_matches(']'))
            .port(port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name("pgfleet aurora discovery")
            .connect_timeout(ATTEMPT_TIMEOUT);
        if let Some(pw) = &self.password {
            pg.password(pw);
        }
        let tls = self.tls.load();
        pg.ssl_mode(tls.ssl_mode());
        let (client, connection) = pg.connect(tls.for_postgres()).await?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            addr: addr.to_owned(),
            client,
            task,
        })
    }

    /// Runs the query on `conn` and turns the rows into members.
    async fn ask(&self, conn: &Conn) -> Result<Vec<Member>, Failure> {
        let addr = &conn.addr;
        let rows = match conn.client.query(QUERY, &[]).await {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
                let msg = format!(
                    "aurora_replica_status() is not available on {addr}: \
                     is this an Aurora PostgreSQL cluster?"
                );
                return Err(Failure::Stop(anyhow::Error::new(e).context(msg)));
            }
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                let msg = format!(
                    "health_user \"{}\" may not run aurora_replica_status() on {addr}",
                    self.user
                );
                return Err(Failure::Stop(anyhow::Error::new(e).context(msg)));
            }
            Err(e) => return Err(Failure::Next(e.into())),
        };
        let statuses = status::decode(&rows)
            .map_err(|e| Failure::Stop(e.context(format!("aurora_replica_status() on {addr}"))))?;
        // Another member may see the whole cluster.
        status::members(statuses, &self.template).map_err(Failure::Next)
    }
}

impl State {
    /// Remembers the connection and the members' addresses for the next poll.
    fn keep(&mut self, conn: Conn, members: Vec<Member>) -> Vec<Member> {
        self.conn = Some(conn);
        self.found = members.iter().map(|m| m.addr.clone()).collect();
        members
    }
}

/// The seeds in order, then the members found last time that are not seeds.
fn candidates(seeds: &[String], found: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(seeds.len() + found.len());
    for addr in seeds.iter().chain(found) {
        if !out.contains(addr) {
            out.push(addr.clone());
        }
    }
    out
}

fn silent() -> anyhow::Error {
    anyhow!("no answer within {ATTEMPT_TIMEOUT:?}")
}

impl Source for Aurora {
    fn name(&self) -> &'static str {
        "aurora"
    }

    fn members(&self) -> Poll<'_> {
        Box::pin(self.poll())
    }
}

impl fmt::Debug for Aurora {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aurora")
            .field("seeds", &self.seeds)
            .field("template", &self.template)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn seeds_first_then_members_found_last_time() {
        let seeds = ["a:1".to_owned(), "b:1".to_owned()];
        let found = ["c:1".to_owned(), "a:1".to_owned(), "d:1".to_owned()];
        assert_eq!(
            candidates(&seeds, &found),
            ["a:1", "b:1", "c:1", "d:1"].map(String::from)
        );
    }
}
