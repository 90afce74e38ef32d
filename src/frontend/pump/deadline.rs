//! The timeouts the server side of the pump waits with.

use std::time::Instant;

use super::{PumpEnd, PumpOptions};
use crate::frontend::track::Track;

/// When the current wait for the server times out, and as what.
pub(super) fn next_deadline(
    track: &Track,
    opts: &PumpOptions,
    idle_since: Option<Instant>,
) -> Option<(Instant, PumpEnd)> {
    if track.quiet() || track.idle_unsynced() {
        let (limit, end) = match track.status() {
            b'I' if track.quiet() => (opts.client_idle_timeout?, PumpEnd::ClientIdle),
            _ => (opts.idle_transaction_timeout?, PumpEnd::IdleInTransaction),
        };
        Some((idle_since? + limit, end))
    } else {
        Some((
            track.busy_since()? + opts.query_timeout?,
            PumpEnd::QueryTimeout,
        ))
    }
}

pub(super) fn same(a: &PumpEnd, b: &PumpEnd) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}
