//! Locating the PostgreSQL programs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

/// Where the server programs live, plus the client programs to use.
#[derive(Debug, Clone)]
pub(super) struct PgBins {
    /// Directory holding `initdb`, `pg_ctl`, `pg_basebackup`, `postgres`.
    pub bindir: PathBuf,
    /// `psql` of the same version when present in `bindir`, else from PATH.
    pub psql: PathBuf,
    /// `pgbench` of the same version when present in `bindir`, else from PATH.
    pub pgbench: PathBuf,
}

impl PgBins {
    /// Finds the binaries: `$PG_BINDIR`, else `pg_config --bindir`, else the
    /// highest-versioned `/usr/lib/postgresql/*/bin`. The directory chosen
    /// must contain `initdb`.
    pub fn discover() -> Result<PgBins> {
        let bindir = find_bindir()?;
        tracing::debug!(bindir = %bindir.display(), "using PostgreSQL binaries");
        let client = |name: &str| {
            let p = bindir.join(name);
            if p.is_file() {
                p
            } else {
                PathBuf::from(name)
            }
        };
        Ok(PgBins {
            psql: client("psql"),
            pgbench: client("pgbench"),
            bindir,
        })
    }

    /// Path of the server-side program `name` (e.g. `pg_ctl`).
    pub fn server(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// True if `dir` contains an `initdb` file.
fn has_initdb(dir: &Path) -> bool {
    dir.join("initdb").is_file()
}

/// Applies the search order described on [`PgBins::discover`].
fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_initdb(&dir) {
            return Ok(dir);
        }
        bail!("PG_BINDIR={} does not contain initdb", dir.display());
    }
    if let Some(dir) = pg_config_bindir().filter(|d| has_initdb(d)) {
        return Ok(dir);
    }
    if let Some(dir) = highest_debian_bindir().filter(|d| has_initdb(d)) {
        return Ok(dir);
    }
    bail!(
        "no PostgreSQL server binaries found: set PG_BINDIR, put pg_config on PATH, \
         or install them under /usr/lib/postgresql/<version>/bin"
    )
}

/// `pg_config --bindir`, if pg_config runs.
fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The `/usr/lib/postgresql/<version>/bin` with the highest numeric version
/// that contains `initdb`.
fn highest_debian_bindir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = version_key(&e.file_name().to_string_lossy())?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// Parses `"15"` or `"9.6"` into a sortable key.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::version_key;

    #[test]
    fn versions_sort_numerically() {
        assert!(version_key("15") > version_key("9.6"));
        assert!(version_key("16") > version_key("15"));
        assert_eq!(version_key("abc"), None);
    }
}
