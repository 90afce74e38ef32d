//! `SHOW VERSION`.

use super::Table;

/// What the console reports as `server_version`: PostgreSQL clients parse the leading
/// number, so it is a PostgreSQL-like version with pgfleet's own after it.
pub const SERVER_VERSION: &str = concat!("15.0 (pgfleet ", env!("CARGO_PKG_VERSION"), ")");

pub fn table() -> Table {
    Table {
        columns: vec!["version"],
        rows: vec![vec![Some(format!("pgfleet {}", env!("CARGO_PKG_VERSION")))]],
        notices: Vec::new(),
    }
}
