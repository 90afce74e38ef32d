//! A client socket with its framing buffers, for the startup and login phases.

use std::cell::RefCell;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::error::ClientError;
use crate::protocol::{next_message, parse_startup, sqlstate, StartupPacket};
use crate::tls::{ClientTls, Stream, ALPN_POSTGRESQL, TLS_HANDSHAKE};

/// The largest message accepted before the client is authenticated (PostgreSQL's
/// limit for authentication messages).
pub const LOGIN_MAX_MESSAGE: usize = 65_535;

/// A client connection: the socket, bytes read but not consumed, bytes to send.
#[derive(Debug)]
pub struct ClientConn {
    pub stream: Stream,
    pub buf: BytesMut,
    pub out: BytesMut,
    pub max_message: usize,
    /// On TLS: pgfleet's certificate's `tls-server-end-point` data, with which
    /// SCRAM-SHA-256-PLUS is offered.
    pub end_point: Option<Vec<u8>>,
}

/// Capacity of a client's read buffer as it starts (it grows for larger messages).
const READ_CAPACITY: usize = 8192;
/// Capacity of a client's write buffer as it starts.
const WRITE_CAPACITY: usize = 1024;
/// Buffers kept per thread for the next clients.
const SPARE_MAX: usize = 64;
/// A buffer that grew beyond this is freed rather than kept.
const SPARE_LARGEST: usize = 64 * 1024;

impl Drop for ClientConn {
    /// Keeps the buffers for the next client of this thread, unless they grew large
    /// or enough are kept already.
    fn drop(&mut self) {
        let (mut buf, mut out) = (std::mem::take(&mut self.buf), std::mem::take(&mut self.out));
        buf.clear();
        out.clear();
        if buf.capacity() > SPARE_LARGEST || out.capacity() > SPARE_LARGEST {
            return;
        }
        // Not while the thread is ending (its spare list may be gone already).
        let _ = SPARE.try_with(|s| {
            if let Ok(mut spare) = s.try_borrow_mut() {
                if spare.len() < SPARE_MAX {
                    spare.push((buf, out));
                }
            }
        });
    }
}

thread_local! {
    /// The read and write buffers of clients gone, for the next ones of this thread.
    /// Buffers of a few KiB are beyond the allocator's per-thread cache: each one cost
    /// a search of its free lists (and a merge of its small free chunks), a good part
    /// of a login's work where clients connect for one transaction each.
    static SPARE: RefCell<Vec<(BytesMut, BytesMut)>> = const { RefCell::new(Vec::new()) };
}

impl ClientConn {
    /// A connection in its login phase: messages are limited to `LOGIN_MAX_MESSAGE`
    /// until `max_message` is raised after authentication.
    pub fn new(stream: TcpStream) -> ClientConn {
        let spare = SPARE
            .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten();
        let (buf, out) = match spare {
            Some((mut buf, mut out)) => {
                // Empty: reserving takes their whole allocation back, or makes a new
                // one where a message forwarded from it still holds part of it.
                buf.reserve(READ_CAPACITY);
                out.reserve(WRITE_CAPACITY);
                (buf, out)
            }
            None => (
                BytesMut::with_capacity(READ_CAPACITY),
                BytesMut::with_capacity(WRITE_CAPACITY),
            ),
        };
        ClientConn {
            stream: Stream::Plain(stream),
            buf,
            out,
            max_message: LOGIN_MAX_MESSAGE,
            end_point: None,
        }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// Whether the client opened with a TLS handshake (direct TLS, PostgreSQL 17)
    /// rather than a startup packet. Reads nothing.
    pub async fn opens_with_tls(&mut self) -> Result<bool, ClientError> {
        let Stream::Plain(tcp) = &self.stream else {
            return Ok(false);
        };
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(first[0] == TLS_HANDSHAKE)
    }

    /// Runs the TLS handshake as the server. `direct`: the client started with TLS, so
    /// it must have asked for PostgreSQL by ALPN (as PostgreSQL 17 requires).
    pub async fn start_tls(&mut self, tls: &ClientTls, direct: bool) -> Result<(), ClientError> {
        if !self.buf.is_empty() {
            // Bytes sent before the handshake would be taken as if they came encrypted.
            return Err(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "received unencrypted data after SSL request",
            ));
        }
        let Some(tcp) = self.stream.take_plain() else {
            return Err(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "SSL request on an encrypted connection",
            ));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let stream = acceptor.accept(tcp).await.map_err(|e| {
            ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("TLS handshake failed: {e}"),
            )
        })?;
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        self.stream = Stream::Tls(Box::new(stream.into()));
        self.end_point = tls.end_point.clone();
        if direct && alpn.as_deref() != Some(ALPN_POSTGRESQL) {
            return Err(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "direct TLS connection without ALPN protocol \"postgresql\"",
            ));
        }
        Ok(())
    }

    /// Reads one startup-phase packet.
    pub async fn read_startup(&mut self) -> Result<StartupPacket, ClientError> {
        loop {
            if let Some((packet, len)) = parse_startup(&self.buf)? {
                let _ = self.buf.split_to(len);
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    /// Reads one whole regular message.
    pub async fn read_message(&mut self) -> Result<BytesMut, ClientError> {
        loop {
            if let Some(h) = next_message(&self.buf, self.max_message)? {
                return Ok(self.buf.split_to(h.total));
            }
            self.fill().await?;
        }
    }

    /// Sends what `out` holds.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            self.stream.send(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends `err` to the client (when it can be sent); best effort.
    pub async fn send_error(&mut self, err: &ClientError) {
        if err.write_to(&mut self.out) {
            let _ = self.flush().await;
        }
    }
}
