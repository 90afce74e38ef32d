//! The startup phase: TLS negotiation (SSLRequest or direct TLS, as
//! `client_tls_sslmode` says; GSS encryption declined), cancel requests, protocol
//! version, and the client's parameters.

use bytes::BytesMut;

use crate::config::ClientTlsMode;
use crate::protocol::backend::negotiate_protocol_version;
use crate::protocol::sqlstate;
use crate::protocol::startup::{parse_options, MAX_STARTUP_PARAMS};
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
                let required = tls.is_some_and(|t| {
                    matches!(t.mode, ClientTlsMode::Require | ClientTlsMode::VerifyCa)
                });
                if required && !conn.stream.is_tls() {
                    return Err(ClientError::fatal(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        "SSL required: this pgfleet refuses unencrypted connections (client_tls_sslmode = require)",
                    ));
                }
                return startup_params(&mut conn.out, minor, params).map(Hello::Startup);
            }
        }
    }
    Err(ClientError::fatal(
        sqlstate::PROTOCOL_VIOLATION,
        "too many encryption requests",
    ))
}

/// The parameters of a StartupMessage for protocol 3.`minor`; a NegotiateProtocolVersion
/// for a newer minor version or `_pq_.` options is queued in `out`.
pub(crate) fn startup_params(
    out: &mut BytesMut,
    minor: u16,
    params: Vec<(String, String)>,
) -> Result<StartupParams, ClientError> {
    let unrecognized: Vec<&str> = params
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unrecognized.is_empty() {
        negotiate_protocol_version(out, &unrecognized);
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
    if settings.len() > MAX_STARTUP_PARAMS {
        return Err(ClientError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "too many startup parameters: at most {MAX_STARTUP_PARAMS}, counting each setting in options"
            ),
        ));
    }
    Ok(StartupParams {
        user,
        database,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn user_database_and_settings() {
        let mut out = BytesMut::new();
        let p = startup_params(
            &mut out,
            0,
            params(&[
                ("user", "app"),
                ("application_name", "psql"),
                ("options", "-c work_mem=1MB"),
            ]),
        )
        .unwrap();
        assert_eq!((p.user.as_str(), p.database.as_str()), ("app", "app"));
        assert_eq!(
            p.settings,
            params(&[("application_name", "psql"), ("work_mem", "1MB")])
        );
        assert!(out.is_empty());
        startup_params(&mut out, 2, params(&[("user", "app"), ("_pq_.x", "1")])).unwrap();
        assert_eq!(out.first(), Some(&b'v'));
    }

    #[test]
    fn settings_in_options_count_towards_the_bound() {
        let many: String = (0..MAX_STARTUP_PARAMS)
            .map(|i| format!("-c s{i}=1 "))
            .collect();
        let mut out = BytesMut::new();
        let ok = startup_params(&mut out, 0, params(&[("user", "u"), ("options", &many)]));
        assert_eq!(ok.unwrap().settings.len(), MAX_STARTUP_PARAMS);
        let over = params(&[("user", "u"), ("application_name", "x"), ("options", &many)]);
        let err = startup_params(&mut out, 0, over).unwrap_err();
        assert_eq!(err.code(), sqlstate::PROTOCOL_VIOLATION);
        assert!(
            err.to_string().contains("too many startup parameters"),
            "{err}"
        );
    }
}
