//! TLS towards PostgreSQL: `server_tls_sslmode` and its files, the SSLRequest
//! negotiation for pgfleet's own connections, and the same settings for tokio-postgres
//! (health checks, discovery queries).

use std::sync::Arc;

use anyhow::Context;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode;

use super::verify::{AnyCertificate, ChainOnly};
use super::{certs, key, provider, roots, Stream, ALPN_POSTGRESQL};
use crate::config::{self, ServerTlsMode};

/// SSLRequest: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// One cluster's TLS settings towards its servers.
#[derive(Debug)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    config: Arc<ClientConfig>,
}

impl Default for ServerTls {
    /// Plaintext, until the configured settings are set.
    fn default() -> ServerTls {
        let verifier = Arc::new(AnyCertificate(provider()));
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.dangerous().with_custom_certificate_verifier(verifier))
            .map(|b| b.with_no_client_auth());
        ServerTls {
            mode: ServerTlsMode::Disable,
            config: Arc::new(config.expect("ring supports TLS 1.2 and 1.3")),
        }
    }
}

impl ServerTls {
    /// Reads the settings' files.
    pub fn load(s: &config::ServerTls) -> anyhow::Result<ServerTls> {
        if s.mode == ServerTlsMode::Disable {
            return Ok(ServerTls::default());
        }
        let provider = provider();
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match s.mode {
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => {
                let roots = match &s.ca_file {
                    Some(path) => roots(path).context("server_tls_ca_file")?,
                    None => system_roots()?,
                };
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?;
                match s.mode {
                    ServerTlsMode::VerifyFull => webpki,
                    _ => Arc::new(ChainOnly(webpki)),
                }
            }
            _ => Arc::new(AnyCertificate(provider.clone())),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&s.cert_file, &s.key_file) {
            (Some(cert), Some(k)) => builder
                .with_client_auth_cert(
                    certs(cert).context("server_tls_cert_file")?,
                    key(k).context("server_tls_key_file")?,
                )
                .context("server_tls_cert_file and server_tls_key_file")?,
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ServerTls {
            mode: s.mode,
            config: Arc::new(config),
        })
    }

    /// tokio-postgres's `sslmode` for these settings.
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            ServerTlsMode::Disable => SslMode::Disable,
            ServerTlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }

    /// The TLS side of a tokio-postgres connection (use with `ssl_mode`).
    pub fn for_postgres(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        tokio_postgres_rustls::MakeRustlsConnect::new(self.config.as_ref().clone())
    }
}

/// The host of `host:port` (an IPv6 address without its brackets).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host_of(addr);
    ServerName::try_from(host.to_owned()).map_err(|error| TlsError::ServerName {
        host: host.to_owned(),
        error,
    })
}

/// Why TLS to a server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The connection failed before TLS was in place: as any other connection failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The member's host is no name a certificate can be checked against.
    #[error("{host}: {error}")]
    ServerName {
        host: String,
        error: rustls::pki_types::InvalidDnsNameError,
    },
    /// The server answered the SSLRequest with no, and the mode requires TLS.
    #[error("the server does not support TLS (server_tls_sslmode = {})", mode_name(*.0))]
    NotSupported(ServerTlsMode),
    #[error("unexpected answer {0:#04x} to SSLRequest")]
    UnexpectedAnswer(u8),
    /// The handshake failed: a certificate that does not verify, among others.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
}

/// Asks the server at `addr` for TLS as `tls` says, on a fresh connection; returns the
/// connection, encrypted or (`disable`, or `prefer` with a server without TLS) not.
pub async fn connect_server(
    mut tcp: TcpStream,
    addr: &str,
    tls: &ServerTls,
) -> Result<Stream, TlsError> {
    if tls.mode == ServerTlsMode::Disable {
        return Ok(Stream::Plain(tcp));
    }
    let name = server_name(addr)?;
    tcp.write_all(&SSL_REQUEST).await?;
    // One byte only: anything the server sent after it must come encrypted.
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {}
        b'N' if tls.mode == ServerTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
        b'N' => return Err(TlsError::NotSupported(tls.mode)),
        other => return Err(TlsError::UnexpectedAnswer(other)),
    }
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(TlsError::Handshake)?;
    Ok(Stream::Tls(Box::new(stream.into())))
}

fn mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Disable => "disable",
        ServerTlsMode::Prefer => "prefer",
        ServerTlsMode::Require => "require",
        ServerTlsMode::VerifyCa => "verify-ca",
        ServerTlsMode::VerifyFull => "verify-full",
    }
}

fn system_roots() -> anyhow::Result<Arc<rustls::RootCertStore>> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        anyhow::bail!("server_tls_ca_file is not set and the system has no CA certificates");
    }
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("db.example.com:5432"), "db.example.com");
        assert_eq!(host_of("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5432"), "::1");
    }
}
