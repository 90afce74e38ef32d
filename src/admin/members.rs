//! `DISABLE <member>` and `ENABLE <member>`: take a member out for maintenance (as
//! HAProxy's drain state): it takes no new session or transaction, the running ones
//! finish. `ENABLE` brings it back. The member is `host:port` as `SHOW BACKENDS` shows
//! it, in every cluster that has it.

use crate::protocol::sqlstate;
use crate::state::Topology;

/// Sets `disabled` on the member `addr`; the error names what was not found.
pub fn set_disabled(
    topology: &Topology,
    addr: &str,
    disabled: bool,
) -> Result<(), (&'static str, String)> {
    let addr = addr.trim_matches(|c| c == '\'' || c == '"');
    let mut found = false;
    for cluster in &topology.clusters {
        for node in cluster.nodes().iter().filter(|n| n.addr == addr) {
            found = true;
            if node.set_disabled(disabled) {
                let what = if disabled { "disabled" } else { "enabled" };
                tracing::info!(cluster = %cluster.name, node = %node.addr, "member {what} from the admin console");
            }
        }
        cluster.changed.notify_waiters();
    }
    if found {
        Ok(())
    } else {
        Err((
            sqlstate::UNDEFINED_OBJECT,
            format!("no member \"{addr}\"; SHOW BACKENDS lists them"),
        ))
    }
}
