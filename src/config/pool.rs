//! `[clusters.NAME.pool]`: how server connections are pooled for a cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// When a server connection goes back to the pool.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// When the client disconnects (default).
    #[default]
    Session,
    /// After each transaction.
    Transaction,
}

/// What transaction mode does with a statement that leaves state in the session
/// (`SET ROLE`, a session advisory lock, `LISTEN`, a temporary table...).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// Keep the client on its server connection until it leaves (default); the
    /// connection is reset with `server_reset_query` before another client gets it.
    #[default]
    Auto,
    /// Refuse the statement with an error (SQLSTATE 0A000) that says why.
    Error,
}

/// `[clusters.NAME.pool]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    /// `session` (default) or `transaction`.
    pub pool_mode: PoolMode,
    /// Server connections per (node, database, user). Default 20.
    pub default_pool_size: usize,
    /// Server connections kept open per pool even when idle. Default 0.
    pub min_pool_size: usize,
    /// Server connections per (node, database) over all users; 0 = no limit.
    pub max_db_connections: usize,
    /// A server connection older than this is closed when released. Default 1h.
    #[serde(with = "duration")]
    pub server_lifetime: Duration,
    /// A server connection idle longer than this is closed. Default 10min.
    #[serde(with = "duration")]
    pub server_idle_timeout: Duration,
    /// Validates a connection idle longer than `server_check_delay`; "" disables.
    /// Default `select 1`.
    pub server_check_query: String,
    /// See `server_check_query`. Default 30s.
    #[serde(with = "duration")]
    pub server_check_delay: Duration,
    /// Run when a client releases a server connection; "" disables. Default
    /// `DISCARD ALL`.
    pub server_reset_query: String,
    /// Time to open a server connection and log in. Default 15s.
    #[serde(with = "duration")]
    pub server_connect_timeout: Duration,
    /// How long a client waits for a node and a server connection. Default 120s.
    #[serde(with = "duration")]
    pub query_wait_timeout: Duration,
    /// Transaction mode: named prepared statements each server connection keeps (least
    /// recently used closed first); 0 passes statement names through unchanged, which
    /// only works in session mode. Default 200.
    pub max_prepared_statements: usize,
    /// A client idle (outside a transaction) longer than this is disconnected with
    /// 57P05; "0s" disables (default).
    #[serde(with = "duration")]
    pub client_idle_timeout: Duration,
    /// A client idle inside a transaction longer than this is disconnected with 25P03
    /// and its transaction rolled back; "0s" disables (default).
    #[serde(with = "duration")]
    pub idle_transaction_timeout: Duration,
    /// A query not answered within this ends the client and its server connection with
    /// 57014; "0s" disables (default).
    #[serde(with = "duration")]
    pub query_timeout: Duration,
    /// Transaction mode: `auto` (default) pins a client that creates session state to
    /// its server connection until it leaves; `error` refuses such statements.
    pub pin: PinMode,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            pool_mode: PoolMode::Session,
            default_pool_size: 20,
            min_pool_size: 0,
            max_db_connections: 0,
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
            server_check_query: "select 1".into(),
            server_check_delay: Duration::from_secs(30),
            server_reset_query: "DISCARD ALL".into(),
            server_connect_timeout: Duration::from_secs(15),
            query_wait_timeout: Duration::from_secs(120),
            max_prepared_statements: 200,
            client_idle_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            query_timeout: Duration::ZERO,
            pin: PinMode::Auto,
        }
    }
}
