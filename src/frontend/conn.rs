//! A client socket with its framing buffers, for the startup and login phases.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::ClientError;
use crate::protocol::{next_message, parse_startup, StartupPacket};

/// The largest message accepted before the client is authenticated (PostgreSQL's
/// limit for authentication messages).
pub const LOGIN_MAX_MESSAGE: usize = 65_535;

/// A client connection: the socket, bytes read but not consumed, bytes to send.
#[derive(Debug)]
pub struct ClientConn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub out: BytesMut,
    pub max_message: usize,
}

impl ClientConn {
    /// A connection in its login phase: messages are limited to `LOGIN_MAX_MESSAGE`
    /// until `max_message` is raised after authentication.
    pub fn new(stream: TcpStream) -> ClientConn {
        ClientConn {
            stream,
            buf: BytesMut::with_capacity(8192),
            out: BytesMut::with_capacity(1024),
            max_message: LOGIN_MAX_MESSAGE,
        }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
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
            self.stream.write_all(&self.out).await?;
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
