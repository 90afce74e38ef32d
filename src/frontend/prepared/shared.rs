//! Every client's named statements, each text kept once: a client's Parse finds the
//! statement another client (or another name) already made of the same text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::BytesMut;

use crate::auth::scram_common::hmac_sha256;
use crate::frontend::settings::classify;
use crate::protocol::frame::read_cstr;
use crate::protocol::frontend;

use super::Statement;

/// The statements clients hold, by their name on the servers. One per process
/// (`State::statements`), as the servers' names are.
#[derive(Debug)]
pub struct SharedStatements {
    /// The key of the names on the servers: random (server connections do not outlive
    /// the process), so no client can guess a name to prepare a statement of its own
    /// under it through SQL.
    key: [u8; 32],
    held: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    map: HashMap<String, Weak<Statement>>,
    /// The size at which statements no client holds any more are swept out.
    sweep_at: usize,
}

impl Default for SharedStatements {
    fn default() -> Self {
        SharedStatements {
            key: rand::random(),
            held: Mutex::new(Held {
                map: HashMap::new(),
                sweep_at: 1024,
            }),
        }
    }
}

impl SharedStatements {
    /// The statement that `rest` (a Parse's body after the name: text and parameter
    /// types) prepares: the one already made for the same text if any client still
    /// holds it, so that a text is kept once however many clients and names prepare it.
    pub fn statement(&self, rest: &[u8]) -> Arc<Statement> {
        let digest = hmac_sha256(&self.key, &[rest]);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let internal = format!("pgfleet_{hex}");
        let mut held = crate::sync::lock(&self.held);
        if let Some(stmt) = held.map.get(&internal).and_then(Weak::upgrade) {
            return stmt;
        }
        let mut parse = BytesMut::with_capacity(rest.len() + internal.len() + 6);
        frontend::parse(&mut parse, &internal, rest);
        let command = read_cstr(rest, &mut 0).and_then(classify);
        let stmt = Arc::new(Statement {
            internal: internal.clone(),
            parse: parse.freeze(),
            command,
        });
        if held.map.len() >= held.sweep_at {
            held.map.retain(|_, s| s.strong_count() > 0);
            held.sweep_at = (held.map.len() * 2).max(1024);
        }
        held.map.insert(internal, Arc::downgrade(&stmt));
        stmt
    }
}
