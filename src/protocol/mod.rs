//! The PostgreSQL v3 wire protocol: parsing and building messages, without I/O.
//!
//! Everything here works on byte buffers so it can be unit-tested byte for byte; the
//! sockets live in `frontend/` and `pool/`.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;
pub mod tags;

pub use frame::{next_message, MessageHeader};
pub use startup::{parse_startup, StartupPacket};
pub use tags::{Backend, Frontend};

/// Why bytes from a peer could not be understood.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A message announced a length outside what the protocol allows.
    #[error("invalid message length {0}")]
    InvalidLength(usize),
    /// A message is larger than `max_message_size`.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A message's body does not have the shape its type requires.
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    /// A StartupMessage with more parameters than `MAX_STARTUP_PARAMS`.
    #[error("startup packet has more than {max} parameters")]
    TooManyParameters { max: usize },
    /// A message arrived where another was expected.
    #[error("expected {expected} message, got '{}'", char::from(*.got))]
    Unexpected { expected: &'static str, got: u8 },
}

impl ProtocolError {
    /// The SQLSTATE a client sees for this error: always `08P01` (protocol violation).
    pub fn sqlstate(&self) -> &'static str {
        sqlstate::PROTOCOL_VIOLATION
    }
}
