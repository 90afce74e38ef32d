//! What can end a client's connection, and what the client is told.

use bytes::BytesMut;

use crate::protocol::backend::{error_response, ErrorFields, Severity};
use crate::protocol::{sqlstate, ProtocolError};

/// Why a client connection ends before or outside the pump.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client went away or its socket failed: nothing can be sent.
    #[error("client connection: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// pgfleet refuses the client (FATAL with this SQLSTATE).
    #[error("{message} ({code})")]
    Fatal { code: &'static str, message: String },
    /// PostgreSQL refused (forwarded as it came, as FATAL).
    #[error("server refused: {} ({})", .0.message, .0.code)]
    Server(ErrorFields),
}

impl ClientError {
    pub fn fatal(code: &'static str, message: impl Into<String>) -> ClientError {
        ClientError::Fatal {
            code,
            message: message.into(),
        }
    }

    /// Appends the ErrorResponse the client should see, if it can see one.
    pub fn write_to(&self, out: &mut BytesMut) -> bool {
        match self {
            ClientError::Io(_) => return false,
            ClientError::Protocol(e) => error_response(
                out,
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION,
                &e.to_string(),
            ),
            ClientError::Fatal { code, message } => {
                error_response(out, Severity::Fatal, code, message)
            }
            ClientError::Server(f) => error_response(out, Severity::Fatal, &f.code, &f.message),
        }
        true
    }

    /// The SQLSTATE for logs.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Io(_) => "",
            ClientError::Protocol(_) => sqlstate::PROTOCOL_VIOLATION,
            ClientError::Fatal { code, .. } => code,
            ClientError::Server(f) => &f.code,
        }
    }
}
