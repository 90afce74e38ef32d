//! The TOML schema. Every field documents its default; unknown keys are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::tls::{ClientTlsMode, ServerTlsMode};

pub use super::pool::{PinMode, Pool, PoolMode};

/// The whole configuration: `[general]` and one `[clusters.NAME]` table per cluster.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub general: General,
    #[serde(default)]
    pub clusters: BTreeMap<String, Cluster>,
}

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
pub enum AuthType {
    /// SCRAM-SHA-256 (default). Needs a plaintext password or a SCRAM secret.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// md5; users whose `auth_file` entry is a SCRAM secret get SCRAM, as with PgBouncer.
    #[serde(rename = "md5")]
    Md5,
    /// No password asked.
    #[serde(rename = "trust")]
    Trust,
}

/// The default `auth_query` (PgBouncer's since 1.24.1): no password for a role that
/// cannot log in or whose `VALID UNTIL` has passed, which PostgreSQL itself refuses.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

/// `[general]`: process-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Admin console address (database `pgfleet`). Default: none.
    pub admin_listen: Option<SocketAddr>,
    /// HTTP address for /metrics, /healthz, /readyz, /status. Default: none.
    pub http_listen: Option<SocketAddr>,
    /// HTTP connections open at once; one more is closed as soon as it is accepted.
    /// Default 100.
    pub http_max_connections: usize,
    /// How long one HTTP connection may stay open, requests and answers included;
    /// then it is closed (an answer being written gets 1s more). Default 30s.
    #[serde(with = "duration")]
    pub http_connection_timeout: Duration,
    /// PgBouncer-format userlist, relative to the config file. Default: `userlist.txt`.
    pub auth_file: PathBuf,
    /// `scram-sha-256` (default), `md5` or `trust`.
    pub auth_type: AuthType,
    /// The user `auth_query` runs as; its password is its plaintext `auth_file` entry,
    /// or none (trust). Unset (default) or `""`: users not in `auth_file` are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    /// Finds the secret of a user not in `auth_file`: `$1` is the user name, the
    /// second column of the first row its password (md5 hash or SCRAM secret). Default
    /// `DEFAULT_AUTH_QUERY`.
    pub auth_query: String,
    /// Database `auth_query` runs in. Default `postgres`.
    pub auth_dbname: String,
    /// How long a secret `auth_query` found is used before it is looked up again (a
    /// user it did not find: at most 5s). Default 60s; "0s" looks up every login.
    #[serde(with = "duration")]
    pub auth_cache_ttl: Duration,
    /// The secret an unknown user's mock SCRAM salt and md5 secret are derived from, so
    /// that instances sharing it answer an unknown user alike (as they answer a known
    /// one). Default: random per process. Needs a restart. Never printed (`check`,
    /// `SHOW CONFIG`).
    #[serde(skip_serializing)]
    pub auth_mock_secret: Option<String>,
    /// How the admin console authenticates: `scram-sha-256`, `md5` or `trust`. Default:
    /// `auth_type`, except that `auth_type = "trust"` does not open the console (then
    /// `scram-sha-256`): only an explicit `admin_auth = "trust"` does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_auth: Option<AuthType>,
    /// Users allowed every admin command. Default: none.
    pub admin_users: Vec<String>,
    /// Users allowed SHOW commands. Default: none.
    pub stats_users: Vec<String>,
    /// Client connections allowed at once over all endpoints; beyond it clients get
    /// 53300. Default 10000.
    pub max_client_conn: usize,
    /// Connections accepted and not yet authenticated, over all endpoints; one more gets
    /// 53300 at once and is closed. Default 1000. The admin console has a budget of its
    /// own.
    pub max_pending_logins: usize,
    /// Of those, the most from one source address (an IPv6 /64 counts as one); 0: no
    /// limit. Default 100.
    pub max_pending_logins_per_address: usize,
    /// Largest protocol message accepted from a client or server. Default 256 MiB.
    pub max_message_size: usize,
    /// Time a client has to finish startup and authentication. Default 60s.
    #[serde(with = "duration")]
    pub client_login_timeout: Duration,
    /// Time a client has, from its connection, to send its startup packet (TLS
    /// handshake included). Default 5s.
    #[serde(with = "duration")]
    pub client_startup_timeout: Duration,
    /// How often the per-pool statistics line is logged; "0s" disables it. Default 60s.
    #[serde(with = "duration")]
    pub stats_period: Duration,
    /// Log one line per client connect and disconnect. Default true.
    pub log_connections: bool,
    /// Threads that serve clients, each with its own event loop (see `workers`); 0 =
    /// one per core. Default 0. Needs a restart.
    pub workers: usize,
    /// On SIGTERM, or once a successor has taken the listening sockets over, how long
    /// connected clients may go on before they are disconnected (57P01). Default 30s.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// The Unix socket through which a starting pgfleet takes the listening sockets
    /// over from the one running (an absolute path; `""` turns hand-over off). Default:
    /// `.s.PGFLEET.<port>` with the lowest non-zero listen port in the runtime directory
    /// (`takeover::runtime_dir`), none when every port is 0. Needs a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takeover_socket: Option<PathBuf>,
    /// TLS towards clients: `disable` (default), `allow`, `prefer` or `require`.
    pub client_tls_sslmode: ClientTlsMode,
    /// PEM certificate chain shown to clients (relative to the config file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_cert_file: Option<PathBuf>,
    /// PEM private key of `client_tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates, when a client presents one, must
    /// chain to. Default: none (client certificates are not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_ca_file: Option<PathBuf>,
    /// TLS towards PostgreSQL: `disable`, `prefer` (default), `require`, `verify-ca`
    /// or `verify-full`. A cluster may set its own `server_tls_*` keys.
    pub server_tls_sslmode: ServerTlsMode,
    /// PEM CA certificates for `verify-ca` and `verify-full`. Default: the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate shown to servers that ask for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_tls_cert_file: Option<PathBuf>,
    /// PEM private key of `server_tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_tls_key_file: Option<PathBuf>,
}

impl General {
    /// How the admin console authenticates (`admin_auth`).
    pub fn console_auth(&self) -> AuthType {
        match (self.admin_auth, self.auth_type) {
            (Some(a), _) => a,
            (None, AuthType::Trust) => AuthType::ScramSha256,
            (None, a) => a,
        }
    }
}

impl Default for General {
    fn default() -> Self {
        General {
            admin_listen: None,
            http_listen: None,
            auth_file: PathBuf::from("userlist.txt"),
            auth_type: AuthType::default(),
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_dbname: "postgres".into(),
            auth_cache_ttl: Duration::from_secs(60),
            auth_mock_secret: None,
            admin_auth: None,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            max_client_conn: 10_000,
            max_pending_logins: 1_000,
            max_pending_logins_per_address: 100,
            http_max_connections: 100,
            http_connection_timeout: Duration::from_secs(30),
            max_message_size: 256 << 20,
            client_login_timeout: Duration::from_secs(60),
            client_startup_timeout: Duration::from_secs(5),
            stats_period: Duration::from_secs(60),
            log_connections: true,
            workers: 0,
            shutdown_timeout: Duration::from_secs(30),
            takeover_socket: None,
            client_tls_sslmode: ClientTlsMode::default(),
            client_tls_cert_file: None,
            client_tls_key_file: None,
            client_tls_ca_file: None,
            server_tls_sslmode: ServerTlsMode::default(),
            server_tls_ca_file: None,
            server_tls_cert_file: None,
            server_tls_key_file: None,
        }
    }
}

/// `[clusters.NAME]`: a set of PostgreSQL nodes and the endpoints in front of them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Where the members come from: `static` (default), `dns`, `dir`, `aurora` or `rds`.
    #[serde(default)]
    pub discovery: Discovery,
    /// Time between two polls of the discovery source. Default 10s.
    #[serde(default = "secs::<10>", with = "duration")]
    pub discovery_interval: Duration,
    /// `static`: the members, `host:port`. `dns`: names re-resolved every
    /// `discovery_interval`, `name:port` (A/AAAA) or `_service._proto.name` (SRV).
    /// `aurora`: members to query `aurora_replica_status()` through (any will do).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `dns`: the name server to ask, `ip:port`; default: the system's resolver.
    #[serde(default)]
    pub dns_server: Option<SocketAddr>,
    /// `dir`: a directory of member files, each with one `host:port` per line (`#`
    /// starts a comment).
    #[serde(default)]
    pub member_dir: Option<std::path::PathBuf>,
    /// `aurora`: turns a `server_id` into an address, e.g.
    /// `{server_id}.abcdefghij.eu-west-1.rds.amazonaws.com:5432`.
    #[serde(default)]
    pub instance_endpoint: Option<String>,
    /// `rds`: the DB cluster identifier.
    #[serde(default)]
    pub cluster_identifier: Option<String>,
    /// `rds`: the RDS API address; default: AWS's for the region.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// `rds`: the AWS region; default: from the AWS configuration chain.
    #[serde(default)]
    pub region: Option<String>,
    /// A member removed from the cluster keeps its running sessions this long, then
    /// they are closed. Default 30s.
    #[serde(default = "secs::<30>", with = "duration")]
    pub drain_timeout: Duration,
    /// While no writer is known, a writer transaction waits this long for one (then
    /// fails with 57P03). Default 30s.
    #[serde(default = "secs::<30>", with = "duration")]
    pub failover_timeout: Duration,
    /// User of the health check; its password comes from `auth_file` (plaintext) or
    /// none (trust). Default `pgcheck`.
    #[serde(default = "default_health_user")]
    pub health_user: String,
    /// Database the health check connects to. Default `postgres`.
    #[serde(default = "default_health_database")]
    pub health_database: String,
    /// `auth_user` for this cluster instead of `[general]`'s; `""` turns `auth_query`
    /// off for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    /// `auth_query` for this cluster instead of `[general]`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query: Option<String>,
    /// `auth_dbname` for this cluster instead of `[general]`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_dbname: Option<String>,
    /// Time between two checks of a node. Default 1s.
    #[serde(default = "secs::<1>", with = "duration")]
    pub health_interval: Duration,
    /// Time a check may take (connect + query). Default 1s.
    #[serde(default = "secs::<1>", with = "duration")]
    pub health_timeout: Duration,
    /// Consecutive passed checks before a down node serves again. Default 2.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failed checks before a node is taken out; a refused or timed-out
    /// connect takes it out at once. Default 2.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// A replica further behind than this leaves the reader set. Default 10s.
    #[serde(default = "secs::<10>", with = "duration")]
    pub max_lag: Duration,
    /// A replica further behind than this many bytes of WAL leaves the reader set too;
    /// 0 (default) does not look at bytes.
    #[serde(default)]
    pub max_lag_bytes: u64,
    /// Pool settings shared by the cluster's endpoints.
    #[serde(default)]
    pub pool: Pool,
    /// The cluster's own `server_tls_sslmode`; default: `[general]`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tls_sslmode: Option<ServerTlsMode>,
    /// The cluster's own `server_tls_ca_file` (relative to its config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tls_ca_file: Option<PathBuf>,
    /// The cluster's own `server_tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tls_cert_file: Option<PathBuf>,
    /// The cluster's own `server_tls_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tls_key_file: Option<PathBuf>,
    /// Listen addresses with a role.
    pub endpoints: BTreeMap<String, Endpoint>,
}

fn default_health_user() -> String {
    "pgcheck".into()
}
fn default_health_database() -> String {
    "postgres".into()
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}
const fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// Where a cluster's members come from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// The `hosts` list (default).
    #[default]
    Static,
    /// The `hosts` names, re-resolved.
    Dns,
    /// The files of `member_dir`.
    Dir,
    /// `aurora_replica_status()` through any member.
    Aurora,
    /// The AWS RDS API (DescribeDBClusters, DescribeDBInstances).
    Rds,
}

impl Discovery {
    pub fn as_str(self) -> &'static str {
        match self {
            Discovery::Static => "static",
            Discovery::Dns => "dns",
            Discovery::Dir => "dir",
            Discovery::Aurora => "aurora",
            Discovery::Rds => "rds",
        }
    }
}

/// Which nodes an endpoint may use.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Healthy nodes in recovery (readers).
    Replica,
    /// The healthy node not in recovery (the writer).
    Primary,
    /// Every healthy node.
    Any,
}

/// How an endpoint picks among the nodes that fit its role.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Fewest sessions in use on this endpoint; round-robin among equals (default).
    #[default]
    Leastconn,
    /// Each in turn.
    Roundrobin,
    /// Uniformly at random.
    Random,
}

/// `[clusters.NAME.endpoints.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// `replica`, `primary` or `any`.
    pub role: Role,
    /// `leastconn` (default), `roundrobin` or `random`.
    #[serde(default)]
    pub balance: Balance,
    /// A `replica` endpoint with no replica that fits: `error` (default; clients wait
    /// `query_wait_timeout`, then get 57P03) or `primary` (reads go to the writer).
    #[serde(default)]
    pub fallback: Fallback,
}

/// What a `replica` endpoint does when no replica fits.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Wait for a replica, then fail (default).
    #[default]
    Error,
    /// Serve reads from the writer.
    Primary,
}
