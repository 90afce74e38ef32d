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
use std::path::{Path, PathBuf};

use tokio::task::JoinHandle;

use crate::config::{Config, Loaded};
use crate::Fleet;

pub use server::ControlSocket;
pub use successor::Predecessor;

/// The greeting a successor opens with (its pid follows).
const HELLO: &str = "HELLO pgfleet-takeover 1";

/// The control socket's path: `takeover_socket`, or `.s.PGFLEET.<port>` in the runtime
/// directory (`runtime_dir`) with the lowest non-zero port pgfleet listens on (unique
/// per instance, since no two can listen there). `None` when hand-over is off (`""`)
/// or every port is 0.
pub fn control_path(config: &Config) -> Option<PathBuf> {
    control_path_in(config, &runtime_dir())
}

fn control_path_in(config: &Config, runtime_dir: &Path) -> Option<PathBuf> {
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
    Some(runtime_dir.join(format!(".s.PGFLEET.{port}")))
}

/// Where the default control socket lives: a directory only pgfleet's user writes,
/// not `/tmp`, where any local user could take the name first. systemd's
/// `RuntimeDirectory` (`$RUNTIME_DIRECTORY`), else the user's (`$XDG_RUNTIME_DIR`), each
/// when it names a directory that exists, else `/run/pgfleet` (made, mode 0700, when
/// missing).
pub fn runtime_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
    };
    // systemd lists several directories separated by ':' when a unit asks for several.
    let systemd = std::env::var("RUNTIME_DIRECTORY")
        .ok()
        .and_then(|v| v.split(':').next().map(PathBuf::from))
        .filter(|p| p.is_absolute() && p.is_dir());
    systemd
        .or_else(|| var("XDG_RUNTIME_DIR"))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR))
}

/// The runtime directory when the environment names none.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/pgfleet";

/// Starts pgfleet on `loaded`, taking the listening sockets over from the pgfleet
/// running on the control socket, if one answers; then serves the control socket. The
/// task returned ends once pgfleet stops or stops accepting, having removed the
/// socket's file unless a successor owns it.
pub async fn start(loaded: Loaded) -> anyhow::Result<(Fleet, Option<JoinHandle<()>>)> {
    let path = control_path(&loaded.config);
    let mut predecessor = match &path {
        Some(path) => Predecessor::find(path).await?,
        None => None,
    };
    let listeners = match predecessor.as_mut() {
        Some(p) => p.take_listeners()?,
        None => Default::default(),
    };
    // On an error from here on, `predecessor` is dropped unanswered and goes on serving.
    let fleet = Fleet::start_with(loaded, listeners).await?;
    release_unused(&fleet);
    if let Some(p) = predecessor {
        let pid = p.pid;
        match p.hand_over().await? {
            true => tracing::info!(pid, "took the listening sockets over"),
            false => tracing::warn!(
                pid,
                "took the listening sockets over; the predecessor did not confirm it stopped accepting"
            ),
        }
    }
    if let Some(dir) = path.as_deref().and_then(Path::parent) {
        if dir == Path::new(DEFAULT_RUNTIME_DIR) && !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot make the runtime directory");
            }
        }
    }
    let control = match path.map(|path| ControlSocket::bind(&path)) {
        Some(Ok(socket)) => {
            tracing::info!(path = %socket.path().display(), "control socket listening");
            Some(tokio::spawn(socket.serve(fleet.state.clone())))
        }
        Some(Err(e)) => {
            let error = format!("{e:#}");
            tracing::warn!(error, "no control socket: a successor cannot take over");
            None
        }
        None => None,
    };
    Ok((fleet, control))
}

/// Closes the handed-over sockets the new configuration does not listen on.
fn release_unused(fleet: &Fleet) {
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
        let run = Path::new("/run/user/1000");
        let c = config(ENDPOINTS);
        assert_eq!(
            control_path_in(&c, run).unwrap(),
            PathBuf::from("/run/user/1000/.s.PGFLEET.6432")
        );
        let c = config(&format!(
            "[general]\nadmin_listen = \"127.0.0.1:6000\"\n{ENDPOINTS}"
        ));
        assert_eq!(
            control_path_in(&c, run).unwrap(),
            PathBuf::from("/run/user/1000/.s.PGFLEET.6000")
        );
        let c = config(&format!(
            "[general]\ntakeover_socket = \"/run/p.sock\"\n{ENDPOINTS}"
        ));
        assert_eq!(
            control_path_in(&c, run).unwrap(),
            PathBuf::from("/run/p.sock")
        );
        let c = config(&format!("[general]\ntakeover_socket = \"\"\n{ENDPOINTS}"));
        assert_eq!(control_path_in(&c, run), None);
        let c = config(&ENDPOINTS.replace(":6433", ":0").replace(":6432", ":0"));
        assert_eq!(control_path_in(&c, run), None);
    }
}
