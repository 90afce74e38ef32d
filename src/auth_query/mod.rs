//! `auth_query`: the secret of a user who is not in `auth_file`, looked up in
//! PostgreSQL (PgBouncer's `auth_user` / `auth_query` / `auth_cache_ttl`).
//!
//! The query runs as `auth_user` on a serving member of the client's cluster, over one
//! connection per cluster kept between lookups (`conn.rs`). Answers are kept per user
//! for `auth_cache_ttl` (users not found briefly, `cache.rs`), and logins of the same
//! user not in the cache share one query. A lookup that fails is not kept: the client
//! is refused with the reason, and the next login asks again.

mod cache;
mod conn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use cache::{MAX_FOUND, MAX_MISSING, MISSING_TTL};
pub use conn::connect;

use crate::auth::{Secret, Userlist};
use crate::cluster::ClusterState;
use crate::config::{self, AuthQuery};
use crate::protocol::sqlstate;

/// What a lookup found: the user's secret, or `None` when `auth_query` returned no row
/// or a NULL password (the user is then unknown, as one missing from `auth_file`).
pub type Outcome = Result<Option<Secret>, LookupError>;

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No member of the cluster took sessions within the timeout.
    #[error("no member of the cluster is serving (waited {0:?})")]
    NoMember(Duration),
    /// The member could not be reached, or the connection broke.
    #[error("cannot reach {node}: {reason}")]
    Unreachable { node: String, reason: String },
    /// The server refused `auth_user`'s login.
    #[error("{node} refused the login of auth_user: {reason}")]
    Login { node: String, reason: String },
    /// `auth_query` failed or answered something else than (name, password).
    #[error("auth_query failed on {node}: {reason}")]
    Query { node: String, reason: String },
    /// No answer within the cluster's `server_connect_timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// `auth_user`'s `auth_file` entry is not a plaintext password.
    #[error("auth_user \"{0}\" needs a plaintext password in auth_file (it has a {1} secret)")]
    Secret(String, &'static str),
}

impl LookupError {
    /// The SQLSTATE the client gets: `57P03` when no member serves, `08006` when
    /// pgfleet cannot reach or log into the server, `28000` when the lookup itself is
    /// wrong (the query, or `auth_user`'s entry).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            LookupError::NoMember(_) => sqlstate::CANNOT_CONNECT_NOW,
            LookupError::Unreachable { .. } | LookupError::Login { .. } => {
                sqlstate::CONNECTION_FAILURE
            }
            LookupError::Timeout(_) => sqlstate::CONNECTION_FAILURE,
            LookupError::Query { .. } | LookupError::Secret(..) => {
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION
            }
        }
    }

    /// What the client is told (the log line has the details).
    pub fn client_message(&self, user: &str) -> String {
        let why = match self {
            LookupError::NoMember(_) => "no member of the cluster is serving",
            LookupError::Unreachable { .. } => "the server cannot be reached",
            LookupError::Login { .. } => "the server refused auth_user's login",
            LookupError::Query { .. } => "auth_query failed",
            LookupError::Timeout(_) => "the server did not answer in time",
            LookupError::Secret(..) => "auth_user has no plaintext password in auth_file",
        };
        format!("pgfleet cannot look up the password of user \"{user}\" (auth_query): {why}")
    }
}

/// What one cluster's lookups run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub auth: AuthQuery,
    /// `auth_user`'s plaintext password from `auth_file`; none: trust.
    pub password: Option<String>,
    /// A lookup (waiting for a member, connecting, the query) takes at most this long:
    /// the cluster's `server_connect_timeout`.
    pub timeout: Duration,
}

impl Settings {
    /// The settings of a cluster with an `auth_user`, `None` for one without.
    pub fn of(
        general: &config::General,
        cluster: &config::Cluster,
        users: &Userlist,
    ) -> Option<Result<Settings, LookupError>> {
        let auth = AuthQuery::of(general, cluster)?;
        let password = match users.get(&auth.user) {
            None => None,
            Some(Secret::Plain(pw)) => Some(pw.clone()),
            Some(other) => return Some(Err(LookupError::Secret(auth.user, other.kind()))),
        };
        Some(Ok(Settings {
            auth,
            password,
            timeout: cluster.pool.server_connect_timeout,
        }))
    }
}

/// Counts of a cluster's lookups, for `/metrics`.
#[derive(Debug, Default)]
pub struct LookupStats {
    /// Queries that found the user's secret.
    pub found: AtomicU64,
    /// Queries that found no row, or a NULL password.
    pub missing: AtomicU64,
    /// Lookups that failed.
    pub failed: AtomicU64,
    /// Logins answered from the cache.
    pub cache_hits: AtomicU64,
}

impl LookupStats {
    /// Queries run, whatever their result.
    pub fn queries(&self) -> u64 {
        [&self.found, &self.missing, &self.failed]
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

/// One cluster's lookups: the answers kept, the queries running, the connection.
#[derive(Debug, Default)]
pub struct Lookups {
    inner: Mutex<Inner>,
    conn: conn::Kept,
    pub stats: LookupStats,
}

#[derive(Debug, Default)]
struct Inner {
    /// The settings the cache was filled under: answers to another query, or from
    /// another user or database, are not kept.
    auth: Option<AuthQuery>,
    /// Bumped when `auth` changes: a query started before does not fill the cache.
    generation: u64,
    cache: cache::Cache,
    /// The query running for each user, shared by the logins waiting for it.
    running: HashMap<String, Arc<OnceCell<Outcome>>>,
}

impl Lookups {
    /// The secret of `user` for a client of `cluster`: from the cache while fresh
    /// (`ttl`), else from `auth_query`, run once for every login that waits for it.
    pub async fn secret(
        &self,
        cluster: &ClusterState,
        settings: &Settings,
        ttl: Duration,
        user: &str,
    ) -> Outcome {
        let query = async {
            let deadline = Instant::now() + settings.timeout;
            let outcome = self.conn.lookup(cluster, settings, user, deadline).await;
            match &outcome {
                Ok(Some(secret)) => {
                    debug!(cluster = %cluster.name, user, secret = secret.kind(), "auth_query found the user");
                }
                Ok(None) => {
                    debug!(cluster = %cluster.name, user, "auth_query did not find the user")
                }
                Err(e) => {
                    warn!(cluster = %cluster.name, user, auth_user = %settings.auth.user, error = %e, "auth_query lookup failed");
                }
            }
            outcome
        };
        self.get_or_fetch(&settings.auth, ttl, user, query).await
    }

    /// What the cache knows of `user`, else `fetch`'s answer, which logins of the same
    /// user arriving meanwhile share (one of them runs its `fetch`; if it leaves, the
    /// next runs its own).
    async fn get_or_fetch(
        &self,
        auth: &AuthQuery,
        ttl: Duration,
        user: &str,
        fetch: impl std::future::Future<Output = Outcome>,
    ) -> Outcome {
        let (cell, generation) = {
            let mut inner = self.lock();
            if inner.auth.as_ref() != Some(auth) {
                inner.auth = Some(auth.clone());
                inner.generation += 1;
                inner.cache.clear();
            }
            if let Some(known) = inner.cache.get(user, Instant::now(), ttl) {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(known);
            }
            let cell = inner.running.entry(user.to_owned()).or_default().clone();
            (cell, inner.generation)
        };
        let waiting = Waiting {
            lookups: self,
            user,
            cell,
            generation,
            ttl,
        };
        let counted = async {
            let outcome = fetch.await;
            let counter = match &outcome {
                Ok(Some(_)) => &self.stats.found,
                Ok(None) => &self.stats.missing,
                Err(_) => &self.stats.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            outcome
        };
        waiting.cell.get_or_init(|| counted).await.clone()
    }

    /// Secrets and unknown users kept now.
    pub fn cached(&self) -> usize {
        self.lock().cache.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }
}

/// A login waiting for (or running) the query of its user. When the first one leaves
/// after the answer came, it moves the answer from `running` to the cache (a failure
/// is not kept); the last one to leave before an answer removes the query.
struct Waiting<'a> {
    lookups: &'a Lookups,
    user: &'a str,
    cell: Arc<OnceCell<Outcome>>,
    generation: u64,
    ttl: Duration,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut inner = self.lookups.lock();
        let ours = inner
            .running
            .get(self.user)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        if !ours {
            return;
        }
        match self.cell.get() {
            Some(outcome) => {
                inner.running.remove(self.user);
                if let (Ok(secret), true) = (outcome, inner.generation == self.generation) {
                    let now = Instant::now();
                    inner.cache.insert(self.user, secret.clone(), now, self.ttl);
                }
            }
            // Only the map and this login hold it: nobody else waits.
            None if Arc::strong_count(&self.cell) == 2 => {
                inner.running.remove(self.user);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests;
