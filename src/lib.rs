//! pgfleet: a PostgreSQL pooler and read balancer that knows each node's role.
//!
//! Data flows one way: `frontend` (a client's life) asks `balance` for a node of a
//! `cluster`, checks a server connection out of `pool`, and pumps `protocol` messages.

pub mod admin;
pub mod auth;
pub mod auth_query;
pub mod balance;
pub mod cancel;
pub mod capacity;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod dormant;
pub mod fleet;
pub mod frontend;
pub mod harness;
pub mod http;
pub mod limits;
pub mod listen;
pub mod pool;
pub mod protocol;
pub mod sql;
pub mod state;
pub mod stats;
mod sync;
pub mod systemd;
pub mod takeover;
pub mod tls;
pub mod workers;

pub use fleet::Fleet;

/// Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature); not an
/// interface, and not in the release build.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub use frontend::fuzzing;

pub mod demo;

/// The runtime pgfleet starts on: health checks, discovery, janitors, the admin
/// console, HTTP, reloads and the hand-over run on it; clients are accepted and served
/// on the `workers` threads (`workers::Workers`).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
