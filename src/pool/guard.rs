//! The checkout guard: a server connection lent to one client. Dropping it resets the
//! connection and returns it to its pool in the background, or closes it.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Pool, ServerConn};

/// What the connection needs when the client lets it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Transaction mode, between transactions: back to the pool as it is, at once.
    Reuse,
    /// Idle, no transaction open: reset (in session mode, or when the client left
    /// `session_state` behind: `server_reset_query`) and reuse.
    Clean { session_state: bool },
    /// Idle inside a transaction block: roll back, then as `Clean`.
    Rollback { session_state: bool },
    /// In the middle of something (a query, COPY), out of step, or broken: close it.
    Close,
}

impl Release {
    /// The same, for a client that left session state behind (pinned): the connection
    /// must be reset with `server_reset_query` whatever the pool mode.
    pub fn with_session_state(self) -> Release {
        match self {
            Release::Clean { .. } => Release::Clean {
                session_state: true,
            },
            Release::Rollback { .. } => Release::Rollback {
                session_state: true,
            },
            // A pinned client's connection is never handed on as it is.
            Release::Reuse => Release::Clean {
                session_state: true,
            },
            Release::Close => Release::Close,
        }
    }
}

/// A server connection checked out of a pool.
#[derive(Debug)]
pub struct PooledConn {
    conn: Option<Box<ServerConn>>,
    slot: Option<Slot>,
    /// When the connection reaches `server_lifetime` (`None`: beyond any clock), as the
    /// settings were at checkout: read when it comes back, without loading them again.
    expires: Option<Instant>,
    /// How `finish` lets it go; a guard dropped without `finish` closes the connection
    /// (a client task ended mid-transaction: nothing proves it idle).
    release: Release,
}

impl PooledConn {
    pub(super) fn new(conn: Box<ServerConn>, slot: Slot, expires: Option<Instant>) -> Self {
        PooledConn {
            conn: Some(conn),
            slot: Some(slot),
            expires,
            release: Release::Close,
        }
    }

    /// Gives the connection back as `release` says: the one way a connection goes back
    /// to its pool.
    pub fn finish(mut self, release: Release) {
        self.release = release;
    }

    /// The pool this connection belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self
            .slot
            .as_ref()
            .expect("a PooledConn holds its slot until dropped")
            .pool
    }

    /// The pool and the connection at once (the connection mutable).
    pub fn with_pool(&mut self) -> (&Arc<Pool>, &mut ServerConn) {
        let (Some(conn), Some(slot)) = (self.conn.as_mut(), self.slot.as_ref()) else {
            unreachable!("a PooledConn holds its connection and slot until dropped");
        };
        (&slot.pool, conn)
    }
}

/// One of a pool's `default_pool_size` slots, taken by a checkout: given back to the
/// pool when dropped. It holds the pool, so a slot costs no other reference count.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) pool: Arc<Pool>,
    /// The worker list (`workers::list`) whose waiters the slot goes to first: that
    /// of the connection put back idle with it, else this thread's.
    to: Option<usize>,
}

impl Slot {
    pub(super) fn new(pool: Arc<Pool>) -> Slot {
        Slot { pool, to: None }
    }

    /// Puts `conn` back idle and gives the slot to a waiter of its home worker first:
    /// that waiter takes this connection from its own worker's idle list.
    fn put_back(mut self, conn: Box<ServerConn>, now: Instant) {
        self.to = Some(conn.open.home());
        self.pool.put_idle(conn, now);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.to {
            Some(list) => self.pool.slots.give_to(list),
            None => self.pool.slots.give(),
        }
    }
}

impl Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("a PooledConn holds its connection until dropped")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("a PooledConn holds its connection until dropped")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let (Some(conn), Some(slot)) = (self.conn.take(), self.slot.take()) else {
            return;
        };
        let cancels_done = !conn.cancel_gate.busy() && !conn.cancel_gate.unsure();
        let now = Instant::now();
        let pool = &slot.pool;
        let young = self.expires.is_none_or(|at| now < at);
        if self.release == Release::Reuse
            && cancels_done
            && young
            && conn.generation == pool.node.generation()
        {
            slot.put_back(conn, now);
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(give_back(conn, slot, self.release));
    }
}

/// Resets `conn` as `release` says and returns it to its pool, then frees the slot.
async fn give_back(mut conn: Box<ServerConn>, slot: Slot, release: Release) {
    let pool = &slot.pool;
    // A cancel on its way must land before anyone else's query can run here.
    let settled = conn.cancel_gate.settle().await;
    let reusable = match release {
        _ if !settled => false,
        Release::Close => false,
        Release::Reuse => true,
        Release::Rollback { session_state } => {
            run(pool, &mut conn, "ROLLBACK").await && reset(pool, &mut conn, session_state).await
        }
        Release::Clean { session_state } => reset(pool, &mut conn, session_state).await,
    };
    let now = Instant::now();
    if reusable && pool.still_good(&conn, &pool.config(), now) {
        slot.put_back(conn, now);
    } else {
        drop(slot);
        conn.terminate().await;
    }
}

/// Runs `server_reset_query` in session mode, or after a client that left
/// `session_state` (a connection that then cannot be reset is not reused). In
/// transaction mode the next client's settings are synced onto the connection instead
/// (and its prepared statements kept).
async fn reset(pool: &Pool, conn: &mut ServerConn, session_state: bool) -> bool {
    let config = pool.config();
    let q = &config.server_reset_query;
    let transaction = pool.key.mode == crate::config::PoolMode::Transaction;
    if !session_state && (transaction || q.is_empty()) {
        return true;
    }
    if q.is_empty() {
        tracing::info!(node = %pool.node.addr, "server connection closed: its client left session state and server_reset_query is empty");
        return false;
    }
    if !run(pool, conn, q).await {
        return false;
    }
    conn.applied.clear();
    conn.prepared.clear();
    true
}

async fn run(pool: &Pool, conn: &mut ServerConn, sql: &str) -> bool {
    let limit = pool
        .config()
        .server_connect_timeout
        .max(Duration::from_secs(1));
    match tokio::time::timeout(limit, conn.simple_query(sql, pool.max_message)).await {
        Ok(Ok(None)) => true,
        Ok(Ok(Some(e))) => {
            tracing::warn!(node = %pool.node.addr, query = sql, code = %e.code, error = %e.message, "server reset failed; connection closed");
            false
        }
        _ => false,
    }
}
