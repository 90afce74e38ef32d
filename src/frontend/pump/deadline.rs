//! The timeouts the pump waits with.

use std::time::Instant;

use super::{PumpEnd, PumpOptions};
use crate::frontend::track::Tracker;

/// When the pump's current wait times out, and as what: an idle timeout while the
/// server waits for the client, `query_timeout` while the client waits for the server.
pub(super) fn next_deadline(
    track: &Tracker,
    opts: &PumpOptions,
    idle_since: Option<Instant>,
) -> Option<(Instant, PumpEnd)> {
    if track.quiet() {
        let (limit, end) = match track.idle_in_transaction() {
            true => (opts.idle_transaction_timeout?, PumpEnd::IdleInTransaction),
            false => (opts.client_idle_timeout?, PumpEnd::ClientIdle),
        };
        Some((idle_since? + limit, end))
    } else {
        Some((
            track.busy_since()? + opts.query_timeout?,
            PumpEnd::QueryTimeout,
        ))
    }
}
