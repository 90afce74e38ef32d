//! What pgfleet reads in SQL text: PostgreSQL's tokens (`lex`), and the statements
//! that leave state in a session (`pin`), which transaction pooling cannot carry from
//! one server connection to another.

pub mod lex;
pub mod pin;

pub use pin::{session_state, PinReason, PinSet};
