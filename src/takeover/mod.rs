//! Handing the listening sockets from a running pgfleet to one starting on the same
//! configuration, so that a restart or an upgrade refuses no client.
//!
//! Every `pgfleet run` serves a control socket (`general.takeover_socket`). A starting
//! pgfleet connects to it; the one running (the predecessor) sends a duplicate of each
//! listening socket with its address (`SCM_RIGHTS`). The successor starts on them,
//! then says `GO`; the predecessor stops accepting (`State::closing`), lets its clients
//! finish for at most `shutdown_timeout`, and exits. The sockets never close in
//! between, so connections waiting in the kernel's accept queue are kept. A successor
//! that fails before `GO` just closes the connection and the predecessor goes on.
//!
//! The conversation, one `SOCK_SEQPACKET` message each:
//! successor `HELLO pgfleet-takeover 1 <pid>`; predecessor `LISTEN <addr>` (with the
//! socket) per listener, then `END <pid>`; successor `GO`; predecessor `BYE`.

mod server;
mod successor;
mod wire;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::Config;
use crate::Fleet;

pub use server::ControlSocket;
pub use successor::Predecessor;

/// The greeting a successor opens with (its pid follows).
const HELLO: &str = "HELLO pgfleet-takeover 1";

/// The control socket's path: `takeover_socket`, or `/tmp/.s.PGFLEET.<port>` with the
/// lowest non-zero port pgfleet listens on (unique per instance, since no two can
/// listen there). `None` when hand-over is off (`""`) or every port is 0.
pub fn control_path(config: &Config) -> Option<PathBuf> {
    if let Some(path) = &config.general.takeover_socket {
        return (!path.as_os_str().is_empty()).then(|| path.clone());
    }
    let g = &config.general;
    let endpoints = config
        .clusters
        .values()
        .flat_map(|c| c.endpoints.values().map(|e| e.listen));
    let port = g
        .admin_listen
        .into_iter()
        .chain(g.http_listen)
        .chain(endpoints)
        .map(|a| a.port())
        .filter(|p| *p != 0)
        .min()?;
    Some(PathBuf::from(format!("/tmp/.s.PGFLEET.{port}")))
}

/// Closes the handed-over sockets the new configuration does not listen on.
pub fn release_unused(fleet: &Fleet) {
    let used: HashSet<SocketAddr> = fleet
        .endpoints
        .values()
        .chain(&fleet.admin)
        .chain(&fleet.http)
        .copied()
        .collect();
    for addr in fleet.state.listeners.addrs() {
        if !used.contains(&addr) {
            tracing::info!(%addr, "closing a handed-over socket the configuration no longer uses");
            fleet.state.listeners.release(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    const ENDPOINTS: &str = r#"
[clusters.main]
hosts = ["127.0.0.1:5432"]
[clusters.main.endpoints.a]
listen = "127.0.0.1:6433"
role = "replica"
[clusters.main.endpoints.b]
listen = "0.0.0.0:6432"
role = "primary"
"#;

    #[test]
    fn the_path_comes_from_the_lowest_port_unless_set() {
        let c = config(ENDPOINTS);
        assert_eq!(
            control_path(&c).unwrap(),
            PathBuf::from("/tmp/.s.PGFLEET.6432")
        );
        let c = config(&format!(
            "[general]\nadmin_listen = \"127.0.0.1:6000\"\n{ENDPOINTS}"
        ));
        assert_eq!(
            control_path(&c).unwrap(),
            PathBuf::from("/tmp/.s.PGFLEET.6000")
        );
        let c = config(&format!(
            "[general]\ntakeover_socket = \"/run/p.sock\"\n{ENDPOINTS}"
        ));
        assert_eq!(control_path(&c).unwrap(), PathBuf::from("/run/p.sock"));
        let c = config(&format!("[general]\ntakeover_socket = \"\"\n{ENDPOINTS}"));
        assert_eq!(control_path(&c), None);
        let c = config(&ENDPOINTS.replace(":6433", ":0").replace(":6432", ":0"));
        assert_eq!(control_path(&c), None);
    }
}
