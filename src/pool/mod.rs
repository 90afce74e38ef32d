//! Server connections per (node, database, user). `Pool::checkout` hands out a guard
//! whose Drop resets the connection and returns it (or closes it).

mod counter;
mod guard;
mod idle;
pub mod janitor;
mod login;
mod opens;
mod prepared;
mod server;
mod spellings;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

pub use guard::{PooledConn, Release};
pub use login::LoginError;
pub use opens::OpenGuard;
pub use prepared::PreparedSet;
pub use server::{record_parameter, Credentials, ServerConn, ServerError, ServerProtocolError};
pub use spellings::Spellings;
pub use stats::{PoolStats, StatsSnapshot, WAIT_BUCKETS};

use crate::capacity::{Capacity, Permit};
use crate::cluster::Node;
use crate::config;
use crate::sync::lock;

/// ParameterStatus values (name, value) as a server sent them, shared.
pub type Params = Arc<Vec<(String, String)>>;

/// Server connections out of use. Boxed, so handing one out and back moves a pointer,
/// not the whole connection.
#[allow(clippy::vec_box)]
type Conns = Vec<Box<ServerConn>>;

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub node: usize,
    pub database: String,
    pub user: String,
    /// Session and transaction connections never mix (a reload may change the mode
    /// while sessions of the old one run).
    pub mode: config::PoolMode,
}

/// Why no server connection could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("no server connection became free within query_wait_timeout")]
    Timeout,
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The server connections of one (node, database, user).
#[derive(Debug)]
pub struct Pool {
    pub key: PoolKey,
    pub node: Arc<Node>,
    /// The cluster's `pool` settings, replaced on reload.
    config: ArcSwap<config::Pool>,
    pub max_message: usize,
    idle: idle::Idle,
    /// `default_pool_size` permits: one per connection in use or being reset.
    slots: Capacity,
    opens: Arc<opens::Opens>,
    credentials: Mutex<Credentials>,
    /// The ParameterStatus values of a fresh connection (before any client setting).
    baseline: Mutex<Option<Params>>,
    /// Clients waiting for a slot.
    waiting: AtomicUsize,
    pub stats: PoolStats,
}

impl Pool {
    /// Server connections open (idle, in use, or being reset).
    pub fn open(&self) -> usize {
        self.opens.total()
    }

    /// Server connections registered with worker `worker`'s event loop (see
    /// `workers`).
    pub fn open_on_worker(&self, worker: usize) -> usize {
        self.opens.at(crate::workers::list_of(worker))
    }

    /// Server connections idle in the pool.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// The backend pids of the idle connections.
    pub fn idle_pids(&self) -> Vec<u32> {
        self.idle.pids()
    }

    /// Clients waiting for a free server connection of this pool.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Server connections handed out (in use or being reset).
    pub fn active(&self) -> usize {
        self.slots.in_use()
    }

    /// The pool's settings now.
    pub fn config(&self) -> Guard<Arc<config::Pool>> {
        self.config.load()
    }

    /// Applies reloaded settings: the size changes at once for new checkouts (a
    /// shrink waits for connections in use to come back), timeouts at their next use.
    fn reconfigure(&self, config: &config::Pool) {
        self.slots.resize(config.default_pool_size);
        self.config.store(Arc::new(config.clone()));
    }

    /// This pool's fresh-connection parameters, or `params` if it has none yet.
    pub fn baseline_or(&self, params: Vec<(String, String)>) -> Params {
        lock(&self.baseline)
            .get_or_insert_with(|| Arc::new(params))
            .clone()
    }

    fn credentials(&self) -> Credentials {
        lock(&self.credentials).clone()
    }

    /// Hands out a server connection, waiting until `deadline` for a free slot, under
    /// the cluster's `config` (the pool's settings as the caller last saw them).
    /// `started` is when the client began to wait (the clock is not read again when a
    /// slot and an idle connection are free at once).
    pub async fn checkout(
        self: &Arc<Self>,
        set: &PoolSet,
        config: &config::Pool,
        started: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<PooledConn, CheckoutError> {
        let mut waited = false;
        if !self.slots.try_take() {
            // Counted only on this slow path, for SHOW POOLS' cl_waiting.
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let taken = self.slots.take_until(deadline).await;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            if !taken {
                return Err(CheckoutError::Timeout);
            }
            waited = true;
        }
        // From here the slot goes back to the pool however the checkout ends.
        let slot = guard::Slot::new(self.clone());
        let conn = loop {
            let candidate = self.idle.pop(&self.opens);
            let Some(mut conn) = candidate else {
                waited = true;
                break self.connect(set, deadline).await?;
            };
            if !self.still_good(&conn, config, started) || !conn.quiet() {
                tokio::spawn(conn.terminate());
                continue;
            }
            let q = &config.server_check_query;
            let unused = started.saturating_duration_since(conn.last_used);
            if !q.is_empty() && unused >= config.server_check_delay {
                waited = true;
                let limit = config.server_connect_timeout;
                let check = tokio::time::timeout(limit, conn.simple_query(q, self.max_message));
                if !matches!(check.await, Ok(Ok(None))) {
                    tracing::debug!(node = %self.node.addr, "server connection failed server_check_query; closed");
                    continue;
                }
            }
            break conn;
        };
        self.stats.record_wait(match waited {
            true => started.elapsed(),
            false => Duration::ZERO,
        });
        let expires = conn.created.checked_add(config.server_lifetime);
        Ok(PooledConn::new(conn, slot, expires))
    }

    /// Whether an idle connection may still be used at `now` under the pool's `config`.
    fn still_good(&self, conn: &ServerConn, config: &config::Pool, now: Instant) -> bool {
        conn.generation == self.node.generation()
            && now.saturating_duration_since(conn.created) < config.server_lifetime
    }

    async fn connect(
        &self,
        set: &PoolSet,
        deadline: tokio::time::Instant,
    ) -> Result<Box<ServerConn>, CheckoutError> {
        let config = self.config();
        let db_slot = match set.db_limit(&self.key, config.max_db_connections) {
            None => None,
            Some(limit) => Some(db_slot(&limit, set, &self.key, deadline).await?),
        };
        let open = OpenGuard::new(&self.opens, crate::workers::list(), db_slot);
        let cred = self.credentials();
        let generation = self.node.generation();
        let limit = config.server_connect_timeout;
        let connect = ServerConn::connect(
            &self.node,
            set,
            &self.key.database,
            &cred,
            self.max_message,
            open,
            generation,
        );
        let mut conn = Box::new(
            tokio::time::timeout(limit, connect)
                .await
                .map_err(|_| ServerError::Timeout(limit))??,
        );
        let info = crate::cluster::sockets::ServerInfo {
            pid: conn.backend_pid,
            database: self.key.database.clone(),
            user: self.key.user.clone(),
            connected_at: std::time::SystemTime::now(),
            tls: conn.stream.tls_text(),
        };
        conn.socket = (conn.stream.fd()).and_then(|fd| self.node.sockets.register(&fd, info));
        tracing::debug!(node = %self.node.addr, db = %self.key.database, user = %self.key.user, pid = conn.backend_pid, "server connection opened");
        lock(&self.baseline).get_or_insert_with(|| Arc::new(conn.params.clone()));
        Ok(conn)
    }

    /// Puts a clean connection back, last used `now`.
    fn put_idle(&self, mut conn: Box<ServerConn>, now: Instant) {
        conn.last_used = now;
        self.idle.push(conn);
    }

    /// Removes the idle connections `keep` says no to; returns them for closing.
    fn take_idle_where(&self, remove: impl FnMut(&ServerConn) -> bool) -> Conns {
        self.idle.take_where(remove)
    }
}

/// The pools of one cluster.
#[derive(Debug, Default)]
pub struct PoolSet {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// `max_db_connections` per (node, database), made on first use.
    db_limits: Mutex<HashMap<(usize, String), Capacity>>,
    /// How the cluster's servers spell clients' startup values.
    pub spellings: Spellings,
    /// TLS towards the cluster's servers (`server_tls_*`), replaced on reload.
    server_tls: Arc<arc_swap::ArcSwap<crate::tls::ServerTls>>,
    /// The cancel targets of the connections logged in, where the cluster's clients'
    /// cancel requests find them.
    pub cancel_targets: Arc<crate::cancel::Targets>,
}

impl PoolSet {
    /// The cluster's TLS settings towards its servers now.
    pub fn server_tls(&self) -> Arc<crate::tls::ServerTls> {
        self.server_tls.load_full()
    }

    /// Where the TLS settings are kept, for tasks that connect on their own.
    pub fn server_tls_slot(&self) -> Arc<arc_swap::ArcSwap<crate::tls::ServerTls>> {
        self.server_tls.clone()
    }

    /// Replaces the TLS settings; connections made from now on use them.
    pub fn set_server_tls(&self, tls: Arc<crate::tls::ServerTls>) {
        self.server_tls.store(tls);
    }

    /// The pool for (node, database, user), created on first use. `cred` replaces the
    /// pool's credentials when it brings SCRAM keys the pool lacks, or another secret
    /// (the password changed: the old one would no longer log in).
    pub fn get(
        &self,
        node: &Arc<Node>,
        database: &str,
        cred: &Credentials,
        config: &config::Pool,
        max_message: usize,
    ) -> Arc<Pool> {
        let key = PoolKey {
            node: node.index,
            database: database.to_owned(),
            user: cred.user.clone(),
            mode: config.pool_mode,
        };
        let mut pools = lock(&self.pools);
        if let Some(p) = pools.get(&key) {
            let mut c = lock(&p.credentials);
            if c.secret != cred.secret || (c.scram_keys.is_none() && cred.scram_keys.is_some()) {
                *c = cred.clone();
            }
            drop(c);
            return p.clone();
        }
        let pool = Arc::new(Pool {
            key: key.clone(),
            node: node.clone(),
            config: ArcSwap::from_pointee(config.clone()),
            max_message,
            idle: idle::Idle::default(),
            slots: Capacity::new(config.default_pool_size),
            opens: Arc::default(),
            credentials: Mutex::new(cred.clone()),
            baseline: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            stats: PoolStats::default(),
        });
        pools.insert(key, pool.clone());
        pool
    }

    /// Applies reloaded `pool` settings to every pool of the set in place.
    pub fn reconfigure(&self, config: &config::Pool) {
        for pool in self.all() {
            pool.reconfigure(config);
        }
        for limit in lock(&self.db_limits).values() {
            if config.max_db_connections > 0 {
                limit.resize(config.max_db_connections);
            }
        }
    }

    /// The `max_db_connections` limit of `key`'s (node, database), if `max` sets one.
    fn db_limit(&self, key: &PoolKey, max: usize) -> Option<Capacity> {
        if max == 0 {
            return None;
        }
        let limit = lock(&self.db_limits)
            .entry((key.node, key.database.clone()))
            .or_insert_with(|| Capacity::new(max))
            .clone();
        Some(limit)
    }

    /// Drops a pool that has no connection (the server refused its first login), so
    /// names of databases or users that do not exist do not pile up.
    pub fn forget_if_unused(&self, pool: &Arc<Pool>) {
        let mut pools = lock(&self.pools);
        if pool.open() == 0 && pool.active() == 0 {
            pools.remove(&pool.key);
        }
    }

    /// The parameters of a fresh server connection for (database, user), from any node's
    /// pool that has made one.
    pub fn baseline(&self, database: &str, user: &str) -> Option<Params> {
        lock(&self.pools)
            .values()
            .filter(|p| p.key.database == database && p.key.user == user)
            .find_map(|p| lock(&p.baseline).clone())
    }

    /// Every pool, in key order.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<Arc<Pool>> = lock(&self.pools).values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The (database, credentials) pairs in use, one per (database, user).
    pub fn identities(&self) -> Vec<(String, Credentials)> {
        let mut seen = HashMap::new();
        for p in lock(&self.pools).values() {
            let c = p.credentials();
            seen.entry((p.key.database.clone(), c.user.clone()))
                .and_modify(|old: &mut Credentials| {
                    if old.scram_keys.is_none() {
                        *old = c.clone();
                    }
                })
                .or_insert(c);
        }
        seen.into_iter().map(|((db, _), c)| (db, c)).collect()
    }

    /// Closes every idle connection to a node (it went down or changed role).
    pub fn close_idle(&self, node: usize) {
        for p in self.all().into_iter().filter(|p| p.key.node == node) {
            close_all(p.take_idle_where(|_| true));
        }
    }

    /// Forgets the pools of a node removed from the cluster (their connections close
    /// as they are released).
    pub fn forget_node(&self, node: usize) {
        self.close_idle(node);
        lock(&self.pools).retain(|k, _| k.node != node);
        lock(&self.db_limits).retain(|(n, _), _| *n != node);
    }

    /// Closes one idle connection to (node, database) of any user, to free a
    /// `max_db_connections` slot for another pool.
    fn evict_one_idle(&self, node: usize, database: &str) {
        for p in self.all() {
            if p.key.node == node && p.key.database == database {
                let mut first = true;
                let taken = p.take_idle_where(|_| std::mem::take(&mut first));
                if !taken.is_empty() {
                    close_all(taken);
                    return;
                }
            }
        }
    }
}

/// A `max_db_connections` slot for a new connection of `key`'s pool: free, or made free
/// by closing an idle connection of another user of the same (node, database), or
/// waited for until `deadline`. Idle connections of other pools are looked for again
/// every 100 ms while waiting, since they become idle without notice.
async fn db_slot(
    limit: &Capacity,
    set: &PoolSet,
    key: &PoolKey,
    deadline: tokio::time::Instant,
) -> Result<Permit, CheckoutError> {
    loop {
        if let Some(p) = limit.try_acquire() {
            return Ok(p);
        }
        set.evict_one_idle(key.node, &key.database);
        let retry = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        if let Some(p) = limit.acquire_until(retry).await {
            return Ok(p);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CheckoutError::Timeout);
        }
    }
}

/// Sends Terminate to each connection in the background.
fn close_all(conns: Conns) {
    if conns.is_empty() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            for c in conns {
                c.terminate().await;
            }
        });
    }
}

/// How long an idle connection may stay, given the pool's settings.
fn idle_expired(conn: &ServerConn, config: &config::Pool) -> bool {
    conn.last_used.elapsed() >= config.server_idle_timeout
        || conn.created.elapsed() >= config.server_lifetime
}
