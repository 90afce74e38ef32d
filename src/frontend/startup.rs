//! The startup phase: TLS negotiation (SSLRequest or direct TLS, as
//! `client_tls_sslmode` says; GSS encryption declined), cancel requests, protocol
//! version, and the client's parameters.

use crate::config::ClientTlsMode;
use crate::protocol::backend::negotiate_protocol_version;
use crate::protocol::sqlstate;
use crate::protocol::startup::parse_options;
use crate::protocol::StartupPacket;
use crate::tls::ClientTls;

use super::conn::ClientConn;
use super::error::ClientError;

/// What a client opened its connection for.
#[derive(Debug)]
pub enum Hello {
    /// A session.
    Startup(StartupParams),
    /// A CancelRequest: no session, just cancel (pid, key).
    Cancel { pid: u32, key: u32 },
}

/// A client's startup parameters.
#[derive(Debug, Clone)]
pub struct StartupParams {
    pub user: String,
    pub database: String,
    /// Settings to apply on the server connection: the startup parameters other than
    /// user/database/options, then the `options` settings, in order.
    pub settings: Vec<(String, String)>,
}

/// Reads the client's first packets until a StartupMessage or CancelRequest, setting
/// TLS up on the way when `tls` is configured and the client asks for it.
pub async fn read_hello(
    conn: &mut ClientConn,
    tls: Option<&ClientTls>,
) -> Result<Hello, ClientError> {
    if let Some(tls) = tls {
        if conn.opens_with_tls().await? {
            conn.start_tls(tls, true).await?;
        }
    }
    // A client may ask for TLS and then GSS encryption (or the reverse) before it starts.
    for _ in 0..3 {
        match conn.read_startup().await? {
            StartupPacket::SslRequest if !conn.stream.is_tls() && tls.is_some() => {
                conn.out.extend_from_slice(b"S");
                conn.flush().await?;
                if let Some(tls) = tls {
                    conn.start_tls(tls, false).await?;
                }
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                conn.out.extend_from_slice(b"N");
                conn.flush().await?;
            }
            StartupPacket::Cancel { pid, key } => return Ok(Hello::Cancel { pid, key }),
            StartupPacket::Unsupported { major, minor } => {
                return Err(ClientError::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
                    ),
                ))
            }
            StartupPacket::Startup { minor, params } => {
                let required = tls.is_some_and(|t| t.mode == ClientTlsMode::Require);
                if required && !conn.stream.is_tls() {
                    return Err(ClientError::fatal(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        "SSL required: this pgfleet refuses unencrypted connections (client_tls_sslmode = require)",
                    ));
                }
                return startup_params(conn, minor, params).map(Hello::Startup);
            }
        }
    }
    Err(ClientError::fatal(
        sqlstate::PROTOCOL_VIOLATION,
        "too many encryption requests",
    ))
}

fn startup_params(
    conn: &mut ClientConn,
    minor: u16,
    params: Vec<(String, String)>,
) -> Result<StartupParams, ClientError> {
    let unrecognized: Vec<&str> = params
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unrecognized.is_empty() {
        negotiate_protocol_version(&mut conn.out, &unrecognized);
    }
    let mut user = None;
    let mut database = None;
    let mut settings = Vec::new();
    let mut options = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "user" => user = Some(value),
            "database" => database = Some(value),
            "options" => {
                options = parse_options(&value).map_err(|e| {
                    ClientError::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("invalid options: {e}"),
                    )
                })?
            }
            "replication" => {
                if !matches!(value.as_str(), "false" | "off" | "no" | "0") {
                    return Err(ClientError::fatal(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "replication connections are not supported through pgfleet",
                    ));
                }
            }
            n if n.starts_with("_pq_.") => {}
            _ => settings.push((name, value)),
        }
    }
    let user = user.filter(|u| !u.is_empty()).ok_or_else(|| {
        ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    settings.extend(options);
    Ok(StartupParams {
        user,
        database,
        settings,
    })
}
