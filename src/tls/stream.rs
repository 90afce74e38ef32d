//! A connection to a client or a server: plain TCP, or TLS over TCP.
//!
//! Plain connections split with `TcpStream::split` (no lock); TLS ones with
//! `tokio::io::split`, which serializes the two halves' polls on one small lock.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp;
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// A client or server connection.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Left behind for the moment a plain connection is handed to a TLS handshake; a
    /// connection whose handshake failed stays so. Every read and write fails.
    Closed,
}

/// The reading half of a split `Stream`.
pub enum ReadHalf<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
    Closed,
}

/// The writing half of a split `Stream`.
pub enum WriteHalf<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl Stream {
    /// Moves a plain connection to the event loop of the runtime this runs on (a worker
    /// taking an idle server connection opened on another thread); returns whether it
    /// moved. A TLS connection stays where it is. A failure leaves it `Closed`.
    pub fn rehome(&mut self) -> io::Result<bool> {
        match std::mem::replace(self, Stream::Closed) {
            Stream::Plain(tcp) => {
                let std = tcp.into_std()?;
                *self = Stream::Plain(TcpStream::from_std(std)?);
                Ok(true)
            }
            other => {
                *self = other;
                Ok(false)
            }
        }
    }

    /// Borrows the connection as a reading and a writing half, usable at once.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
            Stream::Closed => (ReadHalf::Closed, WriteHalf::Closed),
        }
    }

    /// Writes all of `bytes` and, on TLS, flushes the records out (TLS buffers what is
    /// written until flushed).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if let Stream::Tls(_) = self {
            self.flush().await?;
        }
        Ok(())
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            Stream::Closed => None,
        }
    }

    /// The socket's descriptor (`None` when closed).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.tcp().map(|s| s.as_fd())
    }

    /// Takes the plain TCP connection out (for a TLS handshake), leaving `Closed`.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Closed) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The TLS session, when encrypted.
    pub fn tls(&self) -> Option<&rustls::CommonState> {
        match self {
            Stream::Tls(s) => Some(s.get_ref().1),
            _ => None,
        }
    }

    /// The TLS version and cipher suite, as `SHOW CLIENTS` and `SHOW SERVERS` show
    /// them (`TLSv1.3/TLS13_AES_256_GCM_SHA384`); empty in plaintext.
    pub fn tls_text(&self) -> String {
        let Some(tls) = self.tls() else {
            return String::new();
        };
        let version = match tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_owned(),
        };
        match tls.negotiated_cipher_suite() {
            Some(suite) => format!("{version}/{:?}", suite.suite()),
            None => version,
        }
    }

    /// Whether nothing can be read right now without waiting: no bytes and no end of
    /// stream. Consumes at most one byte, which callers treat as out of step anyway.
    pub fn nothing_to_read(&mut self) -> bool {
        let mut byte = [0u8; 1];
        if let Stream::Plain(tcp) = self {
            // No system call (nor waker) while the socket is known not readable.
            return matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(Pin::new(self).poll_read(&mut cx, &mut buf), Poll::Pending)
    }
}

impl WriteHalf<'_> {
    /// Writes what the socket takes now without waiting (plain TCP only): `Ok(0)` when
    /// it takes nothing now, or when the connection is TLS (use the async write).
    pub fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(w) => match w.try_write(bytes) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Ok(0) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
                other => other,
            },
            _ => Ok(0),
        }
    }

    /// Whether written bytes wait in a buffer until flushed (TLS records).
    pub fn buffers(&self) -> bool {
        matches!(self, WriteHalf::Tls(_))
    }

    /// `Stream::send` for one half.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if let WriteHalf::Tls(_) = self {
            self.flush().await?;
        }
        Ok(())
    }
}

macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Closed => Poll::Ready(Err(closed())),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Closed => Poll::Ready(Err(closed())),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                    Self::Closed => Poll::Ready(Err(closed())),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Closed => Poll::Ready(Err(closed())),
                }
            }
        }
    };
}

delegate_read!(Stream);
delegate_read!(ReadHalf<'_>);
delegate_write!(Stream);
delegate_write!(WriteHalf<'_>);
