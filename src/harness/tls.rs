//! Turning TLS on in the test servers, for tests of pgfleet's TLS towards them.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::TestCluster;

impl TestCluster {
    /// Turns TLS on in every running node with `cert_pem` and `key_pem` (written into
    /// each data directory as `server.crt` and `server.key`), and waits until each
    /// node serves with it. With `client_ca_pem`, password logins over TCP must also
    /// come over TLS with a client certificate signed by that CA (`hostssl ... md5
    /// clientcert=verify-ca`); `trustuser` and replication are left as they are.
    pub fn enable_tls(
        &self,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> Result<()> {
        for node in 0..self.len() {
            let dir = self.node(node)?.data_dir();
            self.runner.write_file(&dir.join("server.crt"), cert_pem)?;
            let key = dir.join("server.key");
            self.runner.write_file(&key, key_pem)?;
            // PostgreSQL refuses a key file others may read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod {}", key.display()))?;
            if let Some(ca) = client_ca_pem {
                self.runner.write_file(&dir.join("client_ca.crt"), ca)?;
                self.psql(node, "alter system set ssl_ca_file = 'client_ca.crt'")?;
                let hba = dir.join("pg_hba.conf");
                let text = std::fs::read_to_string(&hba)
                    .with_context(|| format!("reading {}", hba.display()))?;
                let text: Vec<String> = text
                    .lines()
                    .map(|l| match l.strip_prefix("host  all         all ") {
                        Some(rest) => format!("hostssl all all {rest} clientcert=verify-ca"),
                        None => l.to_owned(),
                    })
                    .collect();
                self.runner.write_file(&hba, &(text.join("\n") + "\n"))?;
            }
            self.psql(node, "alter system set ssl = on")?;
            self.psql(node, "select pg_reload_conf()")?;
        }
        for node in 0..self.len() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.psql(node, "show ssl")? != "on" {
                if Instant::now() > deadline {
                    bail!("node {node} did not turn TLS on (see its log)");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}
