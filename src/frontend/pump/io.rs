//! The pump's socket and buffer helpers.

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::tls::WriteHalf;

/// Writes some of `bytes` (`Some(n)`: how many), or flushes what TLS kept when there
/// are none (`None`). A write of nothing is a closed connection.
pub(super) async fn send(w: &mut WriteHalf<'_>, bytes: &[u8]) -> std::io::Result<Option<usize>> {
    if bytes.is_empty() {
        return w.flush().await.map(|()| None);
    }
    match w.write(bytes).await? {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(Some(n)),
    }
}

/// Sleeps until `at`; `None` never comes (the branch is disabled then).
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads go into at least 8 KiB of free space (reclaimed at the front of the buffer when
/// it has been consumed), and `wanted` more bytes (the rest of a message held whole,
/// or a large one's next part) get room, 1 MiB at a time: a 5-byte header alone never
/// reserves much. Sets `grew` when it made room for a large message.
pub(super) fn make_room(buf: &mut BytesMut, wanted: usize, grew: &mut bool) {
    let spare = buf.capacity() - buf.len();
    if spare < MIN / 2 || spare < wanted.min(STEP) {
        buf.reserve(wanted.clamp(MIN, STEP));
        *grew |= wanted > MIN;
    }
}

const MIN: usize = 8 << 10;
const STEP: usize = 1 << 20;

/// Gives back a read buffer that grew for a large message (`grew`) once it is empty:
/// called while the connection is quiet, so a client that sent one large query or got
/// one large result keeps 8 KiB while it idles, not its largest message. (Its
/// capacity cannot tell: part of a buffer that was split still holds all of it.)
pub(super) fn shrink_idle(buf: &mut BytesMut, grew: &mut bool) {
    if *grew && buf.is_empty() {
        *buf = BytesMut::with_capacity(MIN);
        *grew = false;
    }
}
