//! Running SQL on nodes with `psql` (as superuser `postgres` over the unix
//! socket), and the role and pgbench helpers built on it.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::command::run;
use super::{PasswordEncryption, TestCluster};

/// Timeout for one harness `psql` run.
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);

/// Timeout for `pgbench -i`.
const PGBENCH_INIT_TIMEOUT: Duration = Duration::from_secs(600);

/// The pgbench tables, granted to `public` after initialisation.
const PGBENCH_TABLES: &str = "pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history";

/// Quotes `s` as an SQL identifier.
pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes `s` as an SQL string literal (standard_conforming_strings on).
pub(super) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl TestCluster {
    /// Runs `sql` (one or more statements) on `node` in database `postgres`
    /// as superuser `postgres` over the unix socket with `psql -X -A -t -q
    /// -v ON_ERROR_STOP=1`, returning the trimmed output (rows on separate
    /// lines, columns separated by `|`). The error includes psql's stderr.
    ///
    /// `sql` is fed to psql as a script on stdin, so statements run one by one
    /// in autocommit mode (`create database` works after other statements)
    /// and psql meta-commands and variables (`\gset`, `:VAR` outside quotes)
    /// work as in a psql script.
    pub fn psql(&self, node: usize, sql: &str) -> anyhow::Result<String> {
        self.psql_db(node, "postgres", sql)
    }

    /// Like [`TestCluster::psql`] but in database `db`.
    pub fn psql_db(&self, node: usize, db: &str, sql: &str) -> anyhow::Result<String> {
        let port = self.node(node)?.port;
        let mut cmd = self.runner.client(&self.bins.psql);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-w"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-f",
                "-",
            ])
            .env("PGCONNECT_TIMEOUT", "10");
        let out = run(cmd, Some(sql), PSQL_TIMEOUT)
            .with_context(|| format!("psql on node {node} (port {port}, db {db})"))?;
        Ok(out.trim().to_string())
    }

    /// `select pg_is_in_recovery()` on `node`.
    pub fn is_in_recovery(&self, node: usize) -> anyhow::Result<bool> {
        match self.psql(node, "select pg_is_in_recovery()")?.as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => bail!("unexpected pg_is_in_recovery() output {other:?}"),
        }
    }

    /// Creates login role `name` with `password` on the current primary,
    /// stored with the given encryption.
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        enc: PasswordEncryption,
    ) -> anyhow::Result<()> {
        self.psql(self.primary(), &create_user_sql(name, password, enc))?;
        Ok(())
    }

    /// The stored password (`rolpassword` from `pg_authid`) of `user` on the
    /// current primary: `SCRAM-SHA-256$...` or `md5...`. Fails if the role
    /// does not exist or has no password.
    pub fn stored_secret(&self, user: &str) -> anyhow::Result<String> {
        let sql = format!(
            "select rolpassword from pg_authid where rolname = {}",
            quote_literal(user)
        );
        let secret = self.psql(self.primary(), &sql)?;
        if secret.is_empty() {
            bail!("role {user:?} does not exist or has no password");
        }
        Ok(secret)
    }

    /// `pgbench -i -q -s <scale>` in database `app` on the current primary
    /// (as `postgres` over the unix socket), grants all on the pgbench
    /// tables to `public`, then waits until the replicas caught up.
    pub fn pgbench_init(&self, scale: u32) -> anyhow::Result<()> {
        let primary = self.primary();
        let port = self.node(primary)?.port;
        let mut cmd = self.runner.client(&self.bins.pgbench);
        cmd.args(["-i", "-q", "-s", &scale.to_string()])
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &port.to_string(), "-U", "postgres", "app"]);
        run(cmd, None, PGBENCH_INIT_TIMEOUT)
            .with_context(|| format!("pgbench -i on node {primary} (port {port})"))?;
        self.psql_db(
            primary,
            "app",
            &format!("grant all on {PGBENCH_TABLES} to public;"),
        )?;
        self.wait_caught_up()
    }

    /// Creates the standard roles and the `app` database on a fresh primary.
    pub(super) fn setup_roles(&self, primary: usize) -> Result<()> {
        let mut sql = String::new();
        for (name, password, enc) in [
            ("app", "app", PasswordEncryption::Scram),
            ("app_md5", "app_md5", PasswordEncryption::Md5),
            ("pgcheck", "pgcheck", PasswordEncryption::Scram),
        ] {
            sql.push_str(&create_user_sql(name, password, enc));
        }
        sql.push_str(
            "grant pg_monitor to pgcheck;\n\
             create role trustuser login;\n\
             create database app owner app;\n\
             grant all on database app to public;\n",
        );
        self.psql(primary, &sql)?;
        self.psql_db(primary, "app", "grant all on schema public to public;")?;
        Ok(())
    }
}

/// SQL creating login role `name` whose password is stored per `enc`.
fn create_user_sql(name: &str, password: &str, enc: PasswordEncryption) -> String {
    format!(
        "set password_encryption = '{}';\ncreate role {} login password {};\n",
        enc.setting(),
        quote_ident(name),
        quote_literal(password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn md5_user_sql_sets_encryption_first() {
        let sql = create_user_sql("u", "p", PasswordEncryption::Md5);
        assert!(sql.starts_with("set password_encryption = 'md5';"));
        assert!(sql.contains("create role \"u\" login password 'p';"));
    }
}
