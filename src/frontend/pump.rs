//! The message pump: forwards whole messages both ways between a client and its server
//! connection, one write per batch, straight from the read buffers (no copy, no
//! allocation per message), and keeps track of where the server is in the protocol.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pool::{record_parameter, PooledConn, Release};
use crate::protocol::frame::{announced_size, body};
use crate::protocol::{next_message, ProtocolError};

use super::conn::ClientConn;

/// Why the pump stopped.
#[derive(Debug)]
pub enum PumpEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client's socket closed or failed.
    ClientClosed,
    /// The client sent bytes that are not the protocol.
    ClientProtocol(ProtocolError),
    /// The server's socket closed or failed.
    ServerClosed,
    /// The server sent bytes that are not the protocol.
    ServerProtocol(ProtocolError),
}

/// Where the server is: ReadyForQuery messages still expected, the last status, and
/// whether extended-protocol messages were sent since the last Sync (the server is then
/// inside an implicit transaction, or skipping to the next Sync after an error).
#[derive(Debug)]
struct Track {
    pending: AtomicU32,
    status: AtomicU8,
    unsynced: AtomicBool,
}

/// Pumps until either side ends; returns why, and what the server connection needs.
pub async fn pump(client: &mut ClientConn, server: &mut PooledConn) -> (PumpEnd, Release) {
    let max = client.max_message;
    let pool = server.pool().clone();
    let stats = &pool.stats;
    let track = Track {
        pending: AtomicU32::new(0),
        status: AtomicU8::new(b'I'),
        unsynced: AtomicBool::new(false),
    };
    let sc = &mut **server;
    let (mut sr, mut sw) = sc.stream.split();
    let (sbuf, params) = (&mut sc.buf, &mut sc.params);
    let (mut cr, mut cw) = client.stream.split();
    let cbuf = &mut client.buf;

    let client_to_server = async {
        loop {
            let mut off = 0;
            let mut terminated = false;
            loop {
                match next_message(&cbuf[off..], max) {
                    Ok(Some(h)) => {
                        match h.tag {
                            b'X' => {
                                terminated = true;
                                break;
                            }
                            b'Q' | b'F' => {
                                track.pending.fetch_add(1, Ordering::Relaxed);
                            }
                            b'S' => {
                                track.pending.fetch_add(1, Ordering::Relaxed);
                                track.unsynced.store(false, Ordering::Relaxed);
                            }
                            b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => {
                                track.unsynced.store(true, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        off += h.total;
                    }
                    Ok(None) => break,
                    Err(e) => return PumpEnd::ClientProtocol(e),
                }
            }
            if off > 0 {
                if sw.write_all(&cbuf[..off]).await.is_err() {
                    return PumpEnd::ServerClosed;
                }
                cbuf.advance(off);
                stats
                    .bytes_received
                    .fetch_add(off as u64, Ordering::Relaxed);
            }
            if terminated {
                return PumpEnd::ClientTerminated;
            }
            make_room(cbuf, max);
            match cr.read_buf(cbuf).await {
                Ok(0) | Err(_) => return PumpEnd::ClientClosed,
                Ok(_) => {}
            }
        }
    };

    let server_to_client = async {
        loop {
            match sr.read_buf(sbuf).await {
                Ok(0) | Err(_) => return PumpEnd::ServerClosed,
                Ok(_) => {}
            }
            let mut off = 0;
            let (mut queries, mut xacts) = (0u64, 0u64);
            loop {
                match next_message(&sbuf[off..], max) {
                    Ok(Some(h)) => {
                        let m = &sbuf[off..off + h.total];
                        match h.tag {
                            b'Z' => {
                                let status = body(m).first().copied().unwrap_or(b'I');
                                track.status.store(status, Ordering::Relaxed);
                                let _ = track.pending.fetch_update(
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                    |p| p.checked_sub(1),
                                );
                                queries += 1;
                                xacts += u64::from(status == b'I');
                            }
                            b'S' => record_parameter(params, body(m)),
                            _ => {}
                        }
                        off += h.total;
                    }
                    Ok(None) => break,
                    Err(e) => return PumpEnd::ServerProtocol(e),
                }
            }
            if off > 0 {
                if cw.write_all(&sbuf[..off]).await.is_err() {
                    return PumpEnd::ClientClosed;
                }
                sbuf.advance(off);
                stats.bytes_sent.fetch_add(off as u64, Ordering::Relaxed);
                if queries > 0 {
                    stats.queries.fetch_add(queries, Ordering::Relaxed);
                    stats.xacts.fetch_add(xacts, Ordering::Relaxed);
                }
            }
            make_room(sbuf, max);
        }
    };

    let end = tokio::select! {
        end = client_to_server => end,
        end = server_to_client => end,
    };
    let release = match end {
        PumpEnd::ClientTerminated | PumpEnd::ClientClosed
            if track.pending.load(Ordering::Relaxed) == 0
                && !track.unsynced.load(Ordering::Relaxed)
                && sbuf.is_empty() =>
        {
            match track.status.load(Ordering::Relaxed) {
                b'I' => Release::Clean,
                _ => Release::Rollback,
            }
        }
        _ => Release::Close,
    };
    (end, release)
}

/// Reads go into at least 8 KiB of free space (reclaimed at the front of the buffer when
/// it has been consumed), and a message announced larger than what has arrived gets
/// room for its rest, 1 MiB at a time: a 5-byte header alone never reserves much.
fn make_room(buf: &mut BytesMut, max: usize) {
    const MIN: usize = 8 << 10;
    const STEP: usize = 1 << 20;
    let missing = match announced_size(buf, max) {
        Ok(Some(size)) => size.saturating_sub(buf.len()),
        _ => 0,
    };
    let spare = buf.capacity() - buf.len();
    if spare < MIN / 2 || spare < missing.min(STEP) {
        buf.reserve(missing.clamp(MIN, STEP));
    }
}
