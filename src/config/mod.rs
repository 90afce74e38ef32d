//! Configuration: the TOML schema, loading from a file or a directory, and validation
//! with errors that name the file, the key and what is wrong.

mod auth_query;
mod duration;
mod pool;
mod schema;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use auth_query::AuthQuery;
pub use duration::format as format_duration;
pub use schema::{
    AuthType, Balance, Cluster, Config, Discovery, Endpoint, Fallback, General, PinMode, Pool,
    PoolMode, Role, DEFAULT_AUTH_QUERY,
};
pub use tls::{ClientTlsMode, ServerTls, ServerTlsMode};

/// The most endpoints a cluster has at once, counting removed ones still draining:
/// each has a session counter on every node.
pub const MAX_ENDPOINTS: usize = 32;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A configuration with the file each cluster came from, for messages.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The path it was loaded from (a file or a directory), read again on reload.
    pub path: PathBuf,
    /// The file `[general]` came from (or the single file).
    pub general_file: PathBuf,
    /// The file each cluster came from.
    pub cluster_files: BTreeMap<String, PathBuf>,
}

/// Loads `path`: one TOML file, or a directory whose `*.toml` files are merged (in name
/// order; at most one may hold `[general]`, a cluster may appear in one file only).
/// Relative `auth_file` and TLS file paths are resolved against the file that sets them.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ConfigError::Parse {
                path: path.into(),
                message: "no *.toml file in this directory".into(),
            });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut merged = Loaded {
        config: Config::default(),
        path: path.to_path_buf(),
        general_file: files[0].clone(),
        cluster_files: BTreeMap::new(),
    };
    let mut general_seen = false;
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        let raw: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: file.clone(),
            message: e.to_string(),
        })?;
        let has_general = raw.contains_key("general");
        let mut part: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: file.clone(),
            message: e.to_string(),
        })?;
        if has_general {
            if general_seen {
                return Err(invalid(file, "general", "[general] is set in two files"));
            }
            general_seen = true;
            let base = file.parent().unwrap_or(Path::new("."));
            if part.general.auth_file.is_relative() {
                part.general.auth_file = base.join(&part.general.auth_file);
            }
            tls::resolve_general(&mut part.general, base);
            merged.config.general = part.general;
            merged.general_file = file.clone();
        }
        for (name, mut cluster) in part.clusters {
            tls::resolve_cluster(&mut cluster, file.parent().unwrap_or(Path::new(".")));
            if let Some(other) = merged.cluster_files.get(&name) {
                let msg = format!("cluster also defined in {}", other.display());
                return Err(invalid(file, &format!("clusters.{name}"), &msg));
            }
            merged.cluster_files.insert(name.clone(), file.clone());
            merged.config.clusters.insert(name, cluster);
        }
    }
    if !general_seen {
        let base = files[0].parent().unwrap_or(Path::new("."));
        merged.config.general.auth_file = base.join(&merged.config.general.auth_file);
    }
    validate(&merged)?;
    tls::validate(&merged)?;
    Ok(merged)
}

/// The longest duration any setting takes (deadlines computed from it must not overflow).
const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// `host:port`, with an IPv6 address in brackets (`[::1]:5432`).
/// Whether `h` is `host:port` (an IPv6 address in brackets).
pub fn check_host(h: &str) -> Result<(), String> {
    let Some((host, port)) = h.rsplit_once(':') else {
        return Err(format!("\"{h}\" is not host:port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("\"{h}\" is not host:port"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "\"{h}\": write an IPv6 address in brackets, as [::1]:5432"
        ));
    }
    Ok(())
}

/// `_service._proto.name`: a DNS SRV name (the records carry the ports).
pub fn is_srv_name(h: &str) -> bool {
    h.starts_with('_') && !h.contains(':') && h.split('.').count() >= 3
}

/// The member keys the discovery source needs: (key, what is wrong).
fn check_members(c: &Cluster) -> Result<(), (&'static str, String)> {
    let needs_hosts = matches!(
        c.discovery,
        Discovery::Static | Discovery::Dns | Discovery::Aurora
    );
    if needs_hosts && c.hosts.is_empty() {
        let msg = format!(
            "needs at least one host:port with discovery = \"{}\"",
            c.discovery.as_str()
        );
        return Err(("hosts", msg));
    }
    if !needs_hosts && !c.hosts.is_empty() {
        let msg = format!("is not used with discovery = \"{}\"", c.discovery.as_str());
        return Err(("hosts", msg));
    }
    for (i, h) in c.hosts.iter().enumerate() {
        if !(c.discovery == Discovery::Dns && is_srv_name(h)) {
            check_host(h).map_err(|m| ("hosts", m))?;
        }
        if c.hosts[..i].contains(h) {
            return Err(("hosts", format!("\"{h}\" is listed twice")));
        }
    }
    if c.discovery_interval.is_zero() {
        return Err(("discovery_interval", "must be longer than 0s".into()));
    }
    let missing = |key, what: &str| {
        let msg = format!("is needed with discovery = \"{what}\"");
        Err((key, msg))
    };
    match c.discovery {
        Discovery::Dir if c.member_dir.is_none() => missing("member_dir", "dir"),
        Discovery::Aurora => match &c.instance_endpoint {
            None => missing("instance_endpoint", "aurora"),
            Some(t) if !t.contains("{server_id}") => {
                Err(("instance_endpoint", "must contain {server_id}".into()))
            }
            Some(t) => {
                check_host(&t.replace("{server_id}", "1")).map_err(|m| ("instance_endpoint", m))
            }
        },
        Discovery::Rds if c.cluster_identifier.is_none() => missing("cluster_identifier", "rds"),
        _ => Ok(()),
    }
}

fn invalid(path: &Path, key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        key: key.into(),
        message: message.into(),
    }
}

/// Checks what the schema alone cannot: ranges, addresses, unique listeners.
pub fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
    let config = &loaded.config;
    let gfile = &loaded.general_file;
    let g = &config.general;
    if g.max_client_conn == 0 {
        return Err(invalid(
            gfile,
            "general.max_client_conn",
            "must be at least 1",
        ));
    }
    if g.max_pending_logins == 0 {
        return Err(invalid(
            gfile,
            "general.max_pending_logins",
            "must be at least 1",
        ));
    }
    if g.max_message_size < 1024 {
        return Err(invalid(
            gfile,
            "general.max_message_size",
            "must be at least 1024",
        ));
    }
    if g.http_max_connections == 0 {
        return Err(invalid(
            gfile,
            "general.http_max_connections",
            "must be at least 1",
        ));
    }
    if g.http_connection_timeout.is_zero() {
        return Err(invalid(
            gfile,
            "general.http_connection_timeout",
            "must be more than 0s",
        ));
    }
    if g.client_startup_timeout.is_zero() {
        return Err(invalid(
            gfile,
            "general.client_startup_timeout",
            "must be more than 0s",
        ));
    }
    for (k, d) in [
        ("general.client_login_timeout", g.client_login_timeout),
        ("general.client_startup_timeout", g.client_startup_timeout),
        ("general.http_connection_timeout", g.http_connection_timeout),
        ("general.stats_period", g.stats_period),
        ("general.shutdown_timeout", g.shutdown_timeout),
        ("general.auth_cache_ttl", g.auth_cache_ttl),
    ] {
        if d > MAX_DURATION {
            return Err(invalid(gfile, k, "must be at most 365 days"));
        }
    }
    if let Some(path) = g
        .takeover_socket
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        // Room for the temporary name a successor binds before moving it into place.
        if !path.is_absolute() || path.as_os_str().len() > 80 {
            let msg = "must be an absolute path of at most 80 bytes, or \"\"";
            return Err(invalid(gfile, "general.takeover_socket", msg));
        }
    }
    if config.clusters.is_empty() {
        return Err(invalid(gfile, "clusters", "no cluster is defined"));
    }
    let mut listeners: HashMap<SocketAddr, String> = HashMap::new();
    for (key, addr) in [
        ("general.admin_listen", g.admin_listen),
        ("general.http_listen", g.http_listen),
    ] {
        if let Some(addr) = addr {
            listeners.insert(addr, key.into());
        }
    }
    for (name, c) in &config.clusters {
        let file = loaded.cluster_files.get(name).unwrap_or(gfile);
        let key = |k: &str| format!("clusters.{name}.{k}");
        if let Err((k, msg)) = check_members(c) {
            return Err(invalid(file, &key(k), &msg));
        }
        if let Err((in_cluster, k, msg)) = auth_query::check(g, c) {
            let (file, k) = match in_cluster {
                true => (file, key(k)),
                false => (gfile, format!("general.{k}")),
            };
            return Err(invalid(file, &k, msg));
        }
        let p = &c.pool;
        for (k, d) in [
            ("discovery_interval", c.discovery_interval),
            ("drain_timeout", c.drain_timeout),
            ("failover_timeout", c.failover_timeout),
            ("health_interval", c.health_interval),
            ("health_timeout", c.health_timeout),
            ("max_lag", c.max_lag),
            ("pool.server_lifetime", p.server_lifetime),
            ("pool.server_idle_timeout", p.server_idle_timeout),
            ("pool.server_check_delay", p.server_check_delay),
            ("pool.server_connect_timeout", p.server_connect_timeout),
            ("pool.query_wait_timeout", p.query_wait_timeout),
            ("pool.client_idle_timeout", p.client_idle_timeout),
            ("pool.idle_transaction_timeout", p.idle_transaction_timeout),
            ("pool.query_timeout", p.query_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(invalid(file, &key(k), "must be at most 365 days"));
            }
        }
        if c.rise == 0 || c.fall == 0 {
            return Err(invalid(file, &key("rise/fall"), "must be at least 1"));
        }
        if c.health_interval.is_zero() || c.health_timeout.is_zero() {
            let msg = "must be longer than 0s";
            return Err(invalid(file, &key("health_interval/health_timeout"), msg));
        }
        if p.default_pool_size == 0 {
            return Err(invalid(
                file,
                &key("pool.default_pool_size"),
                "must be at least 1",
            ));
        }
        if p.min_pool_size > p.default_pool_size {
            let msg = "must not exceed default_pool_size";
            return Err(invalid(file, &key("pool.min_pool_size"), msg));
        }
        if c.endpoints.is_empty() {
            return Err(invalid(
                file,
                &key("endpoints"),
                "needs at least one endpoint",
            ));
        }
        if c.endpoints.len() > MAX_ENDPOINTS {
            let msg = format!("at most {} endpoints per cluster", MAX_ENDPOINTS);
            return Err(invalid(file, &key("endpoints"), &msg));
        }
        for (ename, e) in &c.endpoints {
            let k = key(&format!("endpoints.{ename}.listen"));
            if e.listen.port() == 0 {
                continue; // any free port: never a clash
            }
            if let Some(other) = listeners.insert(e.listen, k.clone()) {
                let msg = format!("{} is also used by {other}", e.listen);
                return Err(invalid(file, &k, &msg));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
