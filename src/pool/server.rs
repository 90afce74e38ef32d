//! One server connection: connect, log in as the client's user, track the server's
//! parameters, run simple queries for checks and resets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::auth::{ClientKeys, Secret};
use crate::cancel::{CancelGate, CancelTarget, Listed};
use crate::cluster::sockets::SocketEntry;
use crate::cluster::Node;
use crate::protocol::backend::{parse_error_fields, parse_parameter_status, ErrorFields};

use super::login::{self, Channel, LoginError};
use crate::protocol::frame::{body, next_message};
use crate::tls::{connect_server, Stream, TlsError};

/// A server connection's read buffer as it starts.
const READ_CAPACITY: usize = 8192;

/// What pgfleet logs into PostgreSQL with, for one user.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    /// The user's `auth_file` entry, or the secret `auth_query` found, if any.
    pub secret: Option<Secret>,
    /// Keys recovered from the client's SCRAM exchange (for SCRAM secrets).
    pub scram_keys: Option<ClientKeys>,
}

/// Why a server connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The node could not be reached or the connection broke: try another node.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// PostgreSQL refused (wrong password, unknown database, too many connections...):
    /// the client gets this error as it is.
    #[error("server error {}: {}", .0.code, .0.message)]
    Refused(ErrorFields),
    /// pgfleet cannot log in with what it has for this user, or will not.
    #[error("cannot log in to the server: {0}")]
    Login(#[from] LoginError),
    /// The server sent what PostgreSQL does not: the connection is closed.
    #[error("server protocol error: {0}")]
    Protocol(#[from] ServerProtocolError),
    /// TLS as `server_tls_sslmode` asks could not be set up.
    #[error("TLS to the server: {0}")]
    Tls(TlsError),
}

/// How a server broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ServerProtocolError {
    /// A message's length is invalid or over `max_message_size`.
    #[error("{0}")]
    Frame(#[from] crate::protocol::ProtocolError),
    #[error("short md5 request")]
    ShortMd5Request,
    #[error("SASLContinue before SASL")]
    SaslContinueFirst,
    #[error("SASLFinal before SASL")]
    SaslFinalFirst,
    #[error("malformed ErrorResponse")]
    MalformedError,
    #[error("unexpected message '{0}' at login")]
    UnexpectedAtLogin(char),
    #[error("the server connection is not idle after a simple query")]
    NotIdle,
}

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: Stream,
    /// Bytes read from the server and not consumed yet.
    pub buf: BytesMut,
    /// The server's ParameterStatus values, kept current.
    pub params: Vec<(String, String)>,
    /// The fingerprint of client settings `params` were last found in step with; reset
    /// whenever `params` change (see `ClientSettings::sync_sql`).
    pub in_step_with: Option<u64>,
    /// The server's BackendKeyData, for cancel requests.
    pub backend_pid: u32,
    pub backend_key: u32,
    pub created: Instant,
    pub last_used: Instant,
    /// The node generation this connection was made in.
    pub generation: u64,
    /// Settings the server does not report that pgfleet applied for the current or last
    /// client, as (name, statement); see `frontend::settings`.
    pub applied: Vec<(String, String)>,
    /// Named statements prepared on this connection by pgfleet (transaction mode).
    pub prepared: super::PreparedSet,
    /// Cancel requests on their way to this connection.
    pub cancel_gate: Arc<CancelGate>,
    /// Where a client's cancel request goes while it uses this connection (made and
    /// listed once, set in its cancel slot for each transaction).
    pub cancel_target: Listed,
    /// The socket in its node's registry (see `cluster::sockets`).
    pub(super) socket: Option<SocketEntry>,
    /// Counts the connection in its pool; knows its home (see `pool::idle`).
    pub(super) open: super::OpenGuard,
}

impl ServerConn {
    /// Connects to `node`, with TLS as `set`'s settings say, logs in to `database` as
    /// `cred.user`, and lists its cancel target in `set`'s.
    pub(super) async fn connect(
        node: &Arc<Node>,
        set: &super::PoolSet,
        database: &str,
        cred: &Credentials,
        max_message: usize,
        open: super::OpenGuard,
        generation: u64,
    ) -> Result<ServerConn, ServerError> {
        let addr = node.addr.as_str();
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = set.server_tls();
        let stream = match connect_server(tcp, addr, &tls).await {
            Ok(s) => s,
            Err(TlsError::Io(e)) => return Err(ServerError::Io(e)),
            Err(e) => return Err(ServerError::Tls(e)),
        };
        let now = Instant::now();
        let gate = Arc::<CancelGate>::default();
        let target = |pid, key| CancelTarget {
            node: node.clone(),
            pid,
            key,
            gate: gate.clone(),
        };
        let mut conn = ServerConn {
            stream,
            buf: BytesMut::with_capacity(READ_CAPACITY),
            params: Vec::new(),
            in_step_with: None,
            backend_pid: 0,
            backend_key: 0,
            created: now,
            last_used: now,
            generation,
            applied: Vec::new(),
            prepared: super::PreparedSet::default(),
            cancel_gate: gate.clone(),
            cancel_target: Listed::unlisted(target(0, 0)),
            socket: None,
            open,
        };
        let channel = Channel::of(&conn.stream, tls.mode);
        let session = login::login(
            &mut conn.stream,
            &mut conn.buf,
            database,
            cred,
            channel,
            max_message,
        )
        .await?;
        (conn.params, conn.backend_pid, conn.backend_key) =
            (session.params, session.pid, session.key);
        conn.cancel_target = Listed::new(
            &set.cancel_targets,
            target(conn.backend_pid, conn.backend_key),
        );
        Ok(conn)
    }

    /// Reads one whole message from the server into an owned buffer.
    pub async fn read_message(&mut self, max: usize) -> Result<BytesMut, ServerError> {
        read_message(&mut self.stream, &mut self.buf, max).await
    }

    /// Records a ParameterStatus body.
    pub fn record_parameter(&mut self, body: &[u8]) {
        self.in_step_with = None;
        record_parameter(&mut self.params, body);
    }

    /// The server's current value of a reported parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Runs `sql` with the simple protocol and waits for ReadyForQuery. Returns the
    /// first error the server reported, if any; the connection stays usable either way
    /// unless the result is `Err`, which it also is when the server is not idle (outside
    /// any transaction, nothing more to read) afterwards.
    pub async fn simple_query(
        &mut self,
        sql: &str,
        max: usize,
    ) -> Result<Option<ErrorFields>, ServerError> {
        let mut out = BytesMut::new();
        fe::query(sql, &mut out)?;
        self.stream.send(&out).await?;
        let mut error = None;
        loop {
            let msg = self.read_message(max).await?;
            match msg[0] {
                b'Z' if body(&msg) == b"I" && self.buf.is_empty() => return Ok(error),
                b'Z' => return Err(ServerProtocolError::NotIdle.into()),
                b'E' if error.is_none() => error = parse_error_fields(body(&msg)),
                b'S' => self.record_parameter(body(&msg)),
                _ => {}
            }
        }
    }

    /// Whether an idle connection has nothing to say: a server that ended it
    /// (`pg_terminate_backend`, a restart, `idle_session_timeout`) has sent an error
    /// and closed it, and a connection with unread bytes is out of step.
    pub fn quiet(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.nothing_to_read()
    }

    /// Sends Terminate; best effort (a server that does not read gets one second), the
    /// connection is closed right after.
    pub async fn terminate(mut self) {
        let bye = self.stream.send(&[b'X', 0, 0, 0, 4]);
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }
}

/// Records a ParameterStatus body in a list of (name, value).
pub fn record_parameter(params: &mut Vec<(String, String)>, body: &[u8]) {
    if let Some((name, value)) = parse_parameter_status(body) {
        match params.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => params.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// Reads one whole message from `stream` (after what `buf` holds) into an owned buffer.
pub(super) async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<BytesMut, ServerError> {
    loop {
        match next_message(buf, max) {
            Ok(Some(h)) => return Ok(buf.split_to(h.total)),
            Ok(None) => {}
            Err(e) => return Err(ServerProtocolError::Frame(e).into()),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
