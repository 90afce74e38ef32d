//! A real name server for the tests: dnsmasq on 127.0.0.1, with A/AAAA records from a
//! hosts directory (re-read on change) and SRV records from its configuration (changed
//! by a restart on the same port). Records live 1s (`local-ttl`).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dnsmasq process serving `fleet.test` on 127.0.0.1, killed by pid on drop.
pub struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// dnsmasq on a free port, with `hosts` (hosts file lines) and `srv`
    /// (`srv-host=` values).
    pub fn start(hosts: &str, srv: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("hosts")).unwrap();
        let mut d = Dnsmasq {
            child: None,
            port: free_port(),
            dir,
        };
        d.set_hosts(hosts);
        d.run(srv);
        d
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Replaces the A/AAAA records; dnsmasq sees the new file through inotify.
    pub fn set_hosts(&self, lines: &str) {
        // Written aside, then renamed in, so dnsmasq never reads half a file.
        let tmp = self.dir.path().join("fleet.tmp");
        std::fs::write(&tmp, lines).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("hosts/fleet")).unwrap();
    }

    /// Stops dnsmasq and starts it again on the same port with other SRV records.
    pub fn restart(&mut self, srv: &[&str]) {
        self.stop();
        self.run(srv);
    }

    fn run(&mut self, srv: &[&str]) {
        let dir = self.dir.path();
        let mut conf = format!(
            "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
             local=/fleet.test/\nlocal-ttl=1\nhostsdir={hosts}\nlog-facility={log}\n\
             log-queries\npid-file=\n",
            port = self.port,
            hosts = dir.join("hosts").display(),
            log = log_path(dir).display(),
        );
        // As root dnsmasq would switch to a user that may not exist here.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user=root\ngroup=root\n");
        }
        for s in srv {
            conf.push_str(&format!("srv-host={s}\n"));
        }
        let conf_path = dir.join("dnsmasq.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new(dnsmasq_binary())
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf_path.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("dnsmasq runs (apt-get install dnsmasq-base)");
        let limit = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("dnsmasq exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < limit,
                "dnsmasq not listening: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(self.dir.path())).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("dnsmasq.log")
}

fn dnsmasq_binary() -> PathBuf {
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("dnsmasq"))
            .find(|p| p.exists())
    });
    // Debian puts it in /usr/sbin, which a user's PATH may lack.
    in_path.unwrap_or_else(|| "/usr/sbin/dnsmasq".into())
}

/// A port free for both UDP and TCP on 127.0.0.1, outside the ephemeral range (so
/// no resolver's outgoing datagram takes it before dnsmasq binds it).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = pgfleet::harness::free_port().unwrap();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP in 100 tries");
}
