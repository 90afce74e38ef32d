//! How a pump ends, and what it leaves behind for the session and the pool.

use crate::pool::Release;
use crate::protocol::ProtocolError;

use crate::frontend::settings::SqlCommand;

/// Why the pump stopped.
#[derive(Debug)]
pub enum PumpEnd {
    /// Transaction mode: the transaction ended; the server connection is free.
    TransactionDone,
    /// Session mode: the client's RESET took effect; its startup settings are to be
    /// applied again before the pump goes on.
    Resync,
    /// The client sent Terminate.
    ClientTerminated,
    /// The client's socket closed or failed.
    ClientClosed,
    /// The client sent bytes that are not the protocol.
    ClientProtocol(ProtocolError),
    /// `client_idle_timeout` passed with nothing from the client.
    ClientIdle,
    /// `idle_transaction_timeout` passed with the client idle in a transaction.
    IdleInTransaction,
    /// `query_timeout` passed before the server answered.
    QueryTimeout,
    /// The server's socket closed or failed.
    ServerClosed,
    /// The server sent bytes that are not the protocol.
    ServerProtocol(ProtocolError),
    /// pgfleet lost track of the server's protocol state and would have to add
    /// messages whose answers it could not tell from the client's.
    OutOfStep(&'static str),
}

/// What the pump leaves behind.
#[derive(Debug)]
pub struct PumpResult {
    pub end: PumpEnd,
    /// What the server connection needs before it is reused.
    pub release: Release,
    /// Session commands (SET, RESET, DISCARD ALL) that took effect, in order.
    pub commands: Vec<SqlCommand>,
    /// The client sent a SET that pgfleet could not follow (extended protocol, several
    /// statements, or inside a transaction block).
    pub untracked_set: bool,
    /// The server ran SET/RESET commands that are not in `commands`: the connection's
    /// settings must be reset before it is reused.
    pub settings_dirty: bool,
    /// pgfleet's list of the connection's prepared statements may be wrong: drop them
    /// all on the server and forget them before reuse.
    pub statements_dirty: bool,
    /// The server answered a RESET or DISCARD ALL (tracked or not).
    pub reset_seen: bool,
    /// The server sent ParameterStatus: a reported parameter changed.
    pub params_changed: bool,
    /// Requests (Query, Sync, FunctionCall) sent and not answered.
    pub unanswered: u32,
    /// The server went away outside a transaction block, with every request it was sent
    /// sent whole: nothing of the client's can have half-run, the client may go on with
    /// another server connection.
    pub recoverable: bool,
    /// Why the protocol state was lost, if it was: the connection is never reused.
    pub lost: Option<&'static str>,
}
