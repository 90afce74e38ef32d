//! The server configuration files written into each data directory.
//!
//! `postgresql.conf` (from initdb) gets one `include` line appended, pointing
//! at `pgfleet.conf`, which holds all harness settings including the node's
//! port. A base backup copies both files from the primary, so each replica
//! only needs `pgfleet.conf` rewritten with its own port and name.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::command::Runner;

/// Name of the harness settings file inside the data directory.
const NODE_CONF: &str = "pgfleet.conf";

/// Appends the `include` of [`NODE_CONF`] to a fresh `postgresql.conf`.
pub(super) fn include_node_conf(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("postgresql.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(
        f,
        "\n# settings of the pgfleet test harness\ninclude '{NODE_CONF}'"
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes the harness settings for node `index` listening on `port`.
pub(super) fn write_node_conf(
    runner: &Runner,
    data_dir: &Path,
    index: usize,
    port: u16,
    socket_dir: &Path,
) -> Result<()> {
    let socket_dir = quote(&socket_dir.to_string_lossy());
    let text = format!(
        "# written by the pgfleet test harness; rewritten for every node\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = {socket_dir}\n\
         cluster_name = 'node{index}'\n\
         max_connections = 300\n\
         shared_buffers = 64MB\n\
         fsync = off\n\
         full_page_writes = off\n\
         synchronous_commit = off\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         wal_keep_size = 256MB\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         logging_collector = off\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n"
    );
    runner.write_file(&data_dir.join(NODE_CONF), &text)
}

/// Replaces `pg_hba.conf` with the harness's rules (see module docs of
/// `harness` for the roles they are meant for).
pub(super) fn write_hba(runner: &Runner, data_dir: &Path) -> Result<()> {
    let mut text = String::from(
        "# written by the pgfleet test harness\n\
         local all         all                 trust\n\
         local replication all                 trust\n",
    );
    for net in ["127.0.0.1/32", "::1/128"] {
        text.push_str(&format!(
            "host  replication all       {net:<13} trust\n\
             host  all         trustuser {net:<13} trust\n\
             host  all         all       {net:<13} md5\n"
        ));
    }
    runner.write_file(&data_dir.join("pg_hba.conf"), &text)
}

/// Quotes `s` as a configuration-file string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_conf_strings() {
        assert_eq!(quote("/tmp/a'b"), "'/tmp/a''b'");
    }
}
