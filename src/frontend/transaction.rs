//! Transaction pooling: the client holds a server connection from the first message of a
//! transaction to the ReadyForQuery that ends it, and each transaction goes to the node
//! that fits the endpoint with the fewest transactions in flight.

use tracing::{info, warn};

use crate::clients::ClientState;
use crate::cluster::{ClusterState, EndpointState, View};
use crate::pool::{PooledConn, Release};
use crate::protocol::backend as msg;
use crate::protocol::sqlstate;

use super::acquire::PoolCache;
use super::conn::ClientConn;
use super::error::ClientError;
use super::pin::Pins;
use super::prepared::ClientStatements;
use super::pump::{pump, Carried, PumpEnd};
use super::session::{
    checkout, greet_from_pool, lookup, options, pump_end, report_changes, run_on_server,
    set_cancel_target, wait_for_client, Client, Next,
};
use super::settings::{ClientSettings, SqlCommand};
use super::track::Tracker;
use crate::sql::{PinReason, PinSet};

/// Runs a transaction-mode session to its end.
pub async fn run(
    cluster: &ClusterState,
    endpoint: &EndpointState,
    conn: &mut ClientConn,
    client: &Client<'_>,
) -> Result<PumpEnd, ClientError> {
    let mut pools = PoolCache::default();
    let mut greeted = greet_from_pool(cluster, endpoint, conn, client, &mut pools).await?;
    // Back to the pool before the client is waited for.
    if let Some((_slot, server)) = greeted.held.take() {
        server.finish(Release::Reuse);
    }
    let (mut settings, baseline) = (greeted.settings, greeted.baseline);
    let spellings = &cluster.pools.spellings;
    let mut warned = false;
    let mut statements = ClientStatements::default();
    let mut pins = Pins::default();
    let mut track = Tracker::new(false);
    let on_pin = |new: PinSet, lost: Option<&'static str>| pinned(cluster, client, new, lost);
    let mut view = View::new(cluster, endpoint);
    loop {
        // Brought up to date each time: a reload changes the timeouts of running
        // clients too. One atomic load when nothing changed.
        view.refresh(cluster, endpoint);
        let opts = options(&view.config.pool, true);
        match wait_for_client(conn, opts.client_idle_timeout).await? {
            Next::Message => {}
            Next::Terminate => return Ok(PumpEnd::ClientTerminated),
            Next::Closed => return Ok(PumpEnd::ClientClosed),
        }
        // Again: the client may have been idle across a reload or a membership change.
        view.refresh(cluster, endpoint);
        let (_slot, mut server) =
            checkout(cluster, endpoint, &mut view, conn, client, &mut pools).await?;
        let synced = settings.sync_sql(&mut server);
        let resynced = synced.is_some();
        if let Some(sql) = synced {
            let before = server.params.clone();
            run_on_server(conn, &mut server, &sql).await?;
            server.applied = settings.unreported.clone();
            let spelt = settings.learn_spellings(&before, &server, &baseline, spellings);
            if !spelt.is_empty() {
                for (name, value) in spelt {
                    msg::parameter_status(&mut conn.out, &name, &value);
                }
                conn.flush().await?;
            }
        }
        let target = set_cancel_target(client.cancel, &server);
        let carried = Carried {
            statements: &mut statements,
            shared: client.statements,
            max_prepared: view.config.pool.max_prepared_statements,
            pins: &mut pins,
            pin_mode: view.config.pool.pin,
            on_pin: &on_pin,
        };
        let result = pump(
            conn,
            &mut server,
            &mut track,
            opts,
            Some(carried),
            &endpoint.stats,
        )
        .await;
        client.info.set(ClientState::Idle, None);
        client.info.set_pins(pins.reasons());
        let mut release = result.release;
        drop(target);
        if server.cancel_gate.busy() && !server.cancel_gate.settle().await {
            release = Release::Close;
        }
        if result.untracked_set && !warned {
            warned = true;
            warn!("SET outside a single simple-protocol statement is not carried to other server connections in transaction mode");
        }
        let dirty = result.settings_dirty || result.statements_dirty;
        match result.end {
            PumpEnd::TransactionDone => {
                // Parameters move only with a sync or a ParameterStatus from the server.
                if resynced || result.params_changed {
                    settings.snapshot(&server);
                }
                let mut reset = false;
                for command in result.commands {
                    if command == SqlCommand::DiscardAll {
                        statements.clear();
                        server.prepared.clear();
                    }
                    reset |= settings.apply(command, &mut server);
                }
                if result.reset_seen && !reset {
                    // A RESET inside a larger query string: as RESET ALL.
                    reset = settings.apply(SqlCommand::ResetAll, &mut server);
                }
                // Settings the server just reset need no second reset.
                let settings_dirty = result.settings_dirty && !reset;
                if settings_dirty || result.statements_dirty {
                    let max = conn.max_message;
                    if !clean_up(&mut server, settings_dirty, result.statements_dirty, max).await {
                        release = Release::Close;
                    }
                }
                if reset {
                    // RESET brings startup settings back on PostgreSQL; here they were
                    // set after login, so set them again, and tell the client.
                    resync(conn, &mut server, &mut settings).await?;
                }
                server.finish(release);
            }
            PumpEnd::ServerClosed if result.recoverable => {
                // Failover or a server crash between statements of no transaction
                // block: the client's requests fail, the client stays.
                let addr = server.pool().node.addr.clone();
                server.finish(Release::Close);
                let text = format!(
                    "server connection to {addr} lost; the statement did not complete, retry it"
                );
                msg::error_response(
                    &mut conn.out,
                    msg::Severity::Error,
                    sqlstate::CONNECTION_FAILURE,
                    &text,
                );
                cluster.count_error(sqlstate::CONNECTION_FAILURE);
                for _ in 0..result.unanswered {
                    msg::ready_for_query(&mut conn.out, b'I');
                }
                conn.flush().await?;
                warn!(node = %addr, "server connection lost; the client goes on");
            }
            end => {
                // Leaving: a connection with state pgfleet cannot undo is not reused;
                // one with state `server_reset_query` undoes is reset first.
                if pins.reasons().contains(PinReason::Load) {
                    release = Release::Close;
                } else if pins.any() {
                    release = release.with_session_state();
                } else if dirty {
                    release = Release::Close;
                }
                if let Some(why) = result.lost {
                    info!(why, "server connection closed: its protocol state was lost");
                }
                let end = pump_end(end, &server);
                server.finish(release);
                return end;
            }
        }
    }
}

/// Logs and counts the reasons that newly pin `client` (and why the protocol state was
/// lost, for `PinReason::Protocol`), and shows them in `SHOW CLIENTS`.
fn pinned(cluster: &ClusterState, client: &Client<'_>, new: PinSet, lost: Option<&'static str>) {
    for reason in new.iter() {
        cluster.count_pin(reason);
        match lost {
            Some(why) => warn!(
                reason = reason.name(),
                why, "client pinned to its server connection: pgfleet lost track of the protocol; the connection is closed when the client leaves"
            ),
            None => info!(
                reason = reason.name(),
                "client pinned to its server connection: it {}", reason.what()
            ),
        }
    }
    client.info.set_pins(client.info.pins().union(new));
}

/// Applies the client's settings on `server` after a RESET, and sends the client the
/// reported parameters that changed.
async fn resync(
    conn: &mut ClientConn,
    server: &mut PooledConn,
    settings: &mut ClientSettings,
) -> Result<(), ClientError> {
    let Some(sql) = settings.sync_sql(server) else {
        return Ok(());
    };
    let before = server.params.clone();
    run_on_server(conn, server, &sql).await?;
    server.applied = settings.unreported.clone();
    report_changes(conn, lookup(&before), &server.params).await?;
    settings.snapshot(server);
    Ok(())
}

/// Undoes on a server connection what the client did that pgfleet cannot carry over:
/// settings it does not know of (RESET ALL), prepared statements it lost track of
/// (DEALLOCATE ALL). False if that failed: the connection is to be closed.
async fn clean_up(server: &mut PooledConn, settings: bool, statements: bool, max: usize) -> bool {
    let mut sql = Vec::new();
    if settings {
        sql.push("RESET ALL");
    }
    if statements {
        sql.push("DEALLOCATE ALL");
    }
    match server.simple_query(&sql.join("; "), max).await {
        Ok(None) => {
            if settings {
                server.applied.clear();
            }
            if statements {
                server.prepared.clear();
            }
            true
        }
        _ => false,
    }
}
