//! Authentication, without I/O: the `auth_file` user list, MD5 password
//! authentication, and SCRAM-SHA-256 as a server (towards clients) and as a
//! client (towards PostgreSQL).
//!
//! Everything here is pure functions and state machines fed with message
//! payloads; the protocol layer frames them (`AuthenticationSASL`,
//! `SASLInitialResponse`, `AuthenticationSASLContinue`, ...) and does the I/O.
//!
//! Typical flows:
//! - Client logs in with SCRAM: look the user up in the [`Userlist`]; build a
//!   [`ScramServer`] with [`ScramServer::new`] (or [`ScramServer::mock`] for an
//!   unknown user, so the failure looks like a wrong password); feed it the
//!   client's messages. On success it returns the [`ClientKeys`].
//! - pgfleet logs into PostgreSQL with SCRAM: a [`ScramClient`] with the
//!   cleartext password or, for a user whose `auth_file` entry is a SCRAM
//!   secret, the [`ClientKeys`] recovered from that user's own login.
//! - MD5: [`verify_md5`] towards clients, [`md5_response_for_server`] towards
//!   PostgreSQL.

mod derived;
pub mod md5;
pub mod scram_client;
pub mod scram_common;
pub mod scram_server;
pub mod secret;
pub mod userlist;

pub use derived::DerivedSecrets;
pub use md5::{md5_response, md5_response_for_server, md5_secret, mock_md5_secret, verify_md5};
pub use scram_client::{Binding, ScramClient, ScramCredential, MAX_CLIENT_ITERATIONS};
pub use scram_common::{ClientKeys, ScramError};
pub use scram_server::ScramServer;
pub use secret::{ScramSecret, Secret};
pub use userlist::{LineError, Userlist, UserlistError};

/// Name of the SASL mechanism implemented here, as sent in
/// `AuthenticationSASL` and `SASLInitialResponse`.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The SASL mechanism name of SCRAM-SHA-256 with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

#[cfg(test)]
mod scram_tests;
