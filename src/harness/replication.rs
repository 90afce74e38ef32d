//! Waiting for replication: a replica streaming from the primary, and every
//! replica having replayed the primary's WAL.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::TestCluster;

/// How long the replication waits may take.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between polls.
const POLL: Duration = Duration::from_millis(20);

/// Parses an LSN such as `0/3000148` into a comparable number; `None` for
/// empty output (SQL NULL).
fn parse_lsn(s: &str) -> Result<Option<u64>> {
    if s.is_empty() {
        return Ok(None);
    }
    let (hi, lo) = s
        .split_once('/')
        .with_context(|| format!("bad LSN {s:?}"))?;
    let hi = u64::from_str_radix(hi, 16).with_context(|| format!("bad LSN {s:?}"))?;
    let lo = u64::from_str_radix(lo, 16).with_context(|| format!("bad LSN {s:?}"))?;
    Ok(Some((hi << 32) | lo))
}

/// The `port=` value in a libpq connection string such as the
/// `primary_conninfo` written by `pg_basebackup -R`.
fn conninfo_port(conninfo: &str) -> Option<u16> {
    conninfo.split_whitespace().find_map(|kv| {
        let v = kv.strip_prefix("port=")?;
        v.trim_matches('\'').parse().ok()
    })
}

impl TestCluster {
    /// Waits (30 s at most) until every running replica of the current
    /// primary has replayed the primary's current WAL position.
    ///
    /// The target is the primary's WAL flush position right after a
    /// synchronous commit of a transaction that writes a (transactional
    /// logical message) WAL record, so transactions committed asynchronously
    /// before the call (the harness sets `synchronous_commit=off`) are
    /// included. "Replicas" are nodes the harness started and has not
    /// stopped, killed or paused, that are in recovery and whose
    /// `primary_conninfo` points at the current primary's port; replicas still
    /// following an old primary after [`TestCluster::promote`] are skipped.
    pub fn wait_caught_up(&self) -> anyhow::Result<()> {
        let primary = self.primary();
        let primary_port = self.node(primary)?.port;
        let target = self.psql(
            primary,
            "set synchronous_commit = on;\n\
             select pg_logical_emit_message(true, 'pgfleet-harness', 'wait_caught_up');\n\
             select pg_current_wal_flush_lsn();",
        )?;
        let target_text = target.lines().last().unwrap_or_default().to_string();
        let target = parse_lsn(&target_text)?.context("primary returned no WAL position")?;
        let deadline = Instant::now() + WAIT_TIMEOUT;
        for node in 0..self.len() {
            let st = self.node_state(node);
            if node == primary || !st.running || st.paused {
                continue;
            }
            let info = self.psql(
                node,
                "select pg_is_in_recovery(), current_setting('primary_conninfo')",
            )?;
            let (recovering, conninfo) = info.split_once('|').unwrap_or((&info, ""));
            if recovering != "t" || conninfo_port(conninfo) != Some(primary_port) {
                tracing::debug!(node, "not a replica of the primary; not waited for");
                continue;
            }
            loop {
                let replayed = self.psql(node, "select pg_last_wal_replay_lsn()")?;
                if parse_lsn(&replayed)?.is_some_and(|lsn| lsn >= target) {
                    tracing::debug!(node, replayed, target = target_text, "replica caught up");
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "node {node} replayed only {replayed:?}, primary (node {primary}) is at \
                         {target_text} after {WAIT_TIMEOUT:?}"
                    );
                }
                std::thread::sleep(POLL);
            }
        }
        Ok(())
    }

    /// Waits (30 s at most) until `replica` shows up as `streaming` in the
    /// current primary's `pg_stat_replication` (matched by the
    /// `cluster_name` the harness gives it, `node<i>`).
    pub(super) fn wait_streaming(&self, replica: usize) -> Result<()> {
        let primary = self.primary();
        let sql = format!(
            "select count(*) from pg_stat_replication \
             where application_name = 'node{replica}' and state = 'streaming'"
        );
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            if self.psql(primary, &sql)? != "0" {
                tracing::debug!(replica, primary, "replica is streaming");
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {replica} is not streaming from node {primary} after {WAIT_TIMEOUT:?}; \
                     its log:\n{}",
                    self.node(replica)?.log_since(0)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (30 s at most) until `node` answers `pg_is_in_recovery() = f`.
    pub(super) fn wait_writable(&self, node: usize) -> Result<()> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            if !self.is_in_recovery(node)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {node} still in recovery after {WAIT_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lsns() {
        assert_eq!(parse_lsn("0/3000148").unwrap(), Some(0x3000148));
        assert_eq!(parse_lsn("1/0").unwrap(), Some(1 << 32));
        assert_eq!(parse_lsn("").unwrap(), None);
        assert!(parse_lsn("junk").is_err());
    }

    #[test]
    fn finds_conninfo_port() {
        let ci = "user=postgres passfile='/x/.pgpass' host=127.0.0.1 port=23456 sslmode=prefer";
        assert_eq!(conninfo_port(ci), Some(23456));
        assert_eq!(conninfo_port("port='25000'"), Some(25000));
        assert_eq!(conninfo_port("host=x"), None);
    }
}
