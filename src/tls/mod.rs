//! TLS with clients (`client_tls_*`) and with PostgreSQL (`server_tls_*`), on rustls
//! with ring.
//!
//! Both are built from files when pgfleet starts and again on every reload, so a
//! renewed certificate is served to the next client without dropping anyone.

mod server;
mod stream;
mod verify;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use sha2::Digest;

use crate::config::{self, ClientTlsMode, General};

pub use server::{connect_server, host_of, ServerTls, TlsError};
pub use stream::{ReadHalf, Stream, WriteHalf};

/// The protocol name PostgreSQL 17 asks for in ALPN.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The first byte of a TLS handshake record: how a direct-TLS client starts.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// TLS towards clients, as configured now.
#[derive(Debug)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    pub config: Arc<rustls::ServerConfig>,
    /// `tls-server-end-point` channel-binding data for pgfleet's certificate; `None`
    /// when its signature algorithm has no defined hash (SCRAM-SHA-256-PLUS is then not
    /// offered).
    pub end_point: Option<Vec<u8>>,
}

impl ClientTls {
    /// Reads `client_tls_*`'s files; `None` when `client_tls_sslmode` is `disable`.
    pub fn load(g: &General) -> anyhow::Result<Option<Arc<ClientTls>>> {
        if g.client_tls_sslmode == ClientTlsMode::Disable {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = (&g.client_tls_cert_file, &g.client_tls_key_file)
        else {
            return Err(anyhow!(
                "client_tls_sslmode needs client_tls_cert_file and client_tls_key_file"
            ));
        };
        let certs = certs(cert_file).context("client_tls_cert_file")?;
        let key = key(key_file).context("client_tls_key_file")?;
        let end_point = certs.first().and_then(|c| end_point_hash(c));
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &g.client_tls_ca_file {
            Some(ca) => {
                let roots = roots(ca).context("client_tls_ca_file")?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = match g.client_tls_sslmode {
                    ClientTlsMode::VerifyCa => verifier.build()?,
                    _ => verifier.allow_unauthenticated().build()?,
                };
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("client_tls_cert_file and client_tls_key_file")?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Some(Arc::new(ClientTls {
            mode: g.client_tls_sslmode,
            config: Arc::new(config),
            end_point,
        })))
    }
}

/// Loads each cluster's `server_tls_*` settings, by cluster name.
pub fn load_server_tls(
    config: &config::Config,
) -> anyhow::Result<BTreeMap<String, Arc<ServerTls>>> {
    config
        .clusters
        .iter()
        .map(|(name, c)| {
            let tls = ServerTls::load(&c.server_tls(&config.general))
                .with_context(|| format!("clusters.{name}: server TLS"))?;
            Ok((name.clone(), Arc::new(tls)))
        })
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("{}", path.display()))
}

fn roots(path: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store
            .add(cert)
            .with_context(|| format!("{}: not a CA certificate", path.display()))?;
    }
    Ok(Arc::new(store))
}

/// The `tls-server-end-point` channel-binding data of a certificate (RFC 5929): its
/// hash with its signature's hash function, SHA-256 for MD5 and SHA-1. `None` for
/// signature algorithms without one (RSA-PSS, Ed25519), as PostgreSQL.
pub fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let hash = match cert.signature_algorithm.oid.to_string().as_str() {
        // md5WithRSA, sha1WithRSA, sha256WithRSA, ecdsa-with-SHA1, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => sha2::Sha256::digest(cert_der).to_vec(),
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(cert_der).to_vec(),
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(cert_der).to_vec(),
        _ => return None,
    };
    Some(hash)
}
