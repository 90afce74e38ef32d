//! The `client_tls_*` and `server_tls_*` keys: file paths resolved against the file
//! that sets them, and the checks the schema cannot make.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::schema::{Cluster, General};
use super::{invalid, ConfigError, Loaded};

/// TLS modes towards clients, as PgBouncer's `client_tls_sslmode`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// SSLRequest is answered `N`; direct TLS is refused.
    #[default]
    Disable,
    /// TLS when the client asks for it.
    Allow,
    /// The same as `allow` (the client decides).
    Prefer,
    /// A client that starts without TLS is refused (28000).
    Require,
    /// `require`, and the client must present a certificate that chains to
    /// `client_tls_ca_file` (PgBouncer's `verify-ca`). With the other modes a client
    /// certificate is optional: checked when presented.
    VerifyCa,
}

/// TLS modes towards PostgreSQL, as PgBouncer's `server_tls_sslmode` and libpq's
/// `sslmode`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Plaintext.
    Disable,
    /// TLS when the server supports it, plaintext otherwise; the certificate is not
    /// checked (default, as PgBouncer).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS with a certificate that chains to `server_tls_ca_file` (or the system's
    /// roots when it is not set); the host name is not checked.
    VerifyCa,
    /// `verify-ca`, and the certificate must name the host pgfleet connected to.
    VerifyFull,
}

/// The `server_tls_*` settings one cluster's connections use: the cluster's own keys,
/// else `[general]`'s.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Cluster {
    /// This cluster's `server_tls_*` settings, `general`'s where it sets none.
    pub fn server_tls(&self, general: &General) -> ServerTls {
        ServerTls {
            mode: self
                .server_tls_sslmode
                .unwrap_or(general.server_tls_sslmode),
            ca_file: self
                .server_tls_ca_file
                .clone()
                .or(general.server_tls_ca_file.clone()),
            cert_file: self
                .server_tls_cert_file
                .clone()
                .or(general.server_tls_cert_file.clone()),
            key_file: self
                .server_tls_key_file
                .clone()
                .or(general.server_tls_key_file.clone()),
        }
    }
}

fn resolve(path: &mut Option<PathBuf>, base: &Path) {
    if let Some(p) = path.as_mut().filter(|p| p.is_relative()) {
        *p = base.join(&*p);
    }
}

/// Resolves `[general]`'s TLS file paths against `base`, the directory of its file.
pub(super) fn resolve_general(g: &mut General, base: &Path) {
    for p in [
        &mut g.client_tls_cert_file,
        &mut g.client_tls_key_file,
        &mut g.client_tls_ca_file,
        &mut g.server_tls_ca_file,
        &mut g.server_tls_cert_file,
        &mut g.server_tls_key_file,
    ] {
        resolve(p, base);
    }
}

/// Resolves a cluster's own TLS file paths against `base`, the directory of its file.
pub(super) fn resolve_cluster(c: &mut Cluster, base: &Path) {
    for p in [
        &mut c.server_tls_ca_file,
        &mut c.server_tls_cert_file,
        &mut c.server_tls_key_file,
    ] {
        resolve(p, base);
    }
}

/// A certificate needs its key and the reverse; client TLS needs both.
pub(super) fn validate(loaded: &Loaded) -> Result<(), ConfigError> {
    let g = &loaded.config.general;
    let gfile = &loaded.general_file;
    let pair = (&g.client_tls_cert_file, &g.client_tls_key_file);
    match pair {
        (Some(_), None) | (None, Some(_)) => {
            let msg = "client_tls_cert_file and client_tls_key_file go together";
            return Err(invalid(gfile, "general.client_tls_key_file", msg));
        }
        (None, None) if g.client_tls_sslmode != ClientTlsMode::Disable => {
            let msg = "needs client_tls_cert_file and client_tls_key_file";
            return Err(invalid(gfile, "general.client_tls_sslmode", msg));
        }
        _ => {}
    }
    if g.client_tls_sslmode == ClientTlsMode::VerifyCa && g.client_tls_ca_file.is_none() {
        let msg = "verify-ca needs client_tls_ca_file, the CA client certificates chain to";
        return Err(invalid(gfile, "general.client_tls_sslmode", msg));
    }
    for (name, c) in &loaded.config.clusters {
        let file = loaded.cluster_files.get(name).unwrap_or(gfile);
        let tls = c.server_tls(g);
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let key = format!("clusters.{name}.server_tls_key_file");
            let msg = "server_tls_cert_file and server_tls_key_file go together";
            return Err(invalid(file, &key, msg));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{load, ServerTlsMode};

    const CLUSTERS: &str = r#"
[clusters.a]
hosts = ["127.0.0.1:5432"]
[clusters.a.endpoints.r]
listen = "127.0.0.1:6432"
role = "replica"

[clusters.b]
hosts = ["127.0.0.1:5433"]
server_tls_sslmode = "verify-full"
server_tls_ca_file = "b-ca.pem"
[clusters.b.endpoints.r]
listen = "127.0.0.1:6433"
role = "replica"
"#;

    fn load_text(dir: &Path, text: &str) -> Result<super::super::Loaded, String> {
        let path = dir.join("pgfleet.toml");
        std::fs::write(&path, text).unwrap();
        load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn paths_resolve_and_clusters_override_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[general]\nserver_tls_sslmode = \"require\"\nserver_tls_cert_file = \"c.pem\"\n\
             server_tls_key_file = \"/abs/k.pem\"\n{CLUSTERS}"
        );
        let l = load_text(dir.path(), &text).unwrap();
        let g = &l.config.general;
        let a = l.config.clusters["a"].server_tls(g);
        assert_eq!(a.mode, ServerTlsMode::Require);
        assert_eq!(a.cert_file, Some(dir.path().join("c.pem")));
        assert_eq!(a.key_file.as_deref(), Some(Path::new("/abs/k.pem")));
        assert_eq!(a.ca_file, None);
        let b = l.config.clusters["b"].server_tls(g);
        assert_eq!(b.mode, ServerTlsMode::VerifyFull);
        assert_eq!(b.ca_file, Some(dir.path().join("b-ca.pem")));
        assert_eq!(b.cert_file, a.cert_file);
    }

    #[test]
    fn defaults_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let l = load_text(dir.path(), CLUSTERS).unwrap();
        let a = l.config.clusters["a"].server_tls(&l.config.general);
        assert_eq!(a.mode, ServerTlsMode::Prefer);
        for (general, key) in [
            ("client_tls_sslmode = \"require\"", "client_tls_sslmode"),
            ("client_tls_cert_file = \"c.pem\"", "client_tls_key_file"),
            ("server_tls_key_file = \"k.pem\"", "server_tls_key_file"),
            ("client_tls_sslmode = \"verify-full\"", "client_tls_sslmode"),
            ("server_tls_sslmode = \"always\"", "server_tls_sslmode"),
        ] {
            let e = load_text(dir.path(), &format!("[general]\n{general}\n{CLUSTERS}"));
            let e = e.err().unwrap_or_default();
            assert!(e.contains(key), "{general}: {e}");
        }
    }
}
