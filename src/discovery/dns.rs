//! `discovery = "dns"`: the `hosts` names, resolved again on every poll.
//!
//! Each `hosts` entry is one of:
//! - `ip:port` (`[::1]:5432` for IPv6): a member as it is;
//! - `name:port`: one member per A and AAAA record of `name`;
//! - `_service._proto.name`: one member per SRV record, at the record's port, on each
//!   A and AAAA address of the record's target. Priority and weight are not used: the
//!   health checks decide which member serves what.
//!
//! The members are the union of all entries, each address once, sorted.
//!
//! The name server is `dns_server` alone (UDP, then TCP for truncated answers) when it is
//! set, otherwise the system's (`/etc/resolv.conf`, with `/etc/hosts` read on every poll).
//! One resolver lives as long as the source; its cache keeps an answer no longer than the
//! answer's TTL, so a record changed in DNS is seen on the first poll after its TTL.
//!
//! A poll fails as a whole when any name does not resolve (NXDOMAIN, no address, no
//! answer in time): the error names that name, and the cluster keeps the members it has
//! until a later poll succeeds, as HAProxy keeps its servers when resolution fails. A
//! partial answer would take members out during a DNS outage, while the health checks
//! already take out members that are really gone. A poll gives up after
//! [`POLL_TIMEOUT`], even if the name server never answers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Hosts, TokioResolver};
use tokio::time::Instant;

use super::{Member, Poll, Source};
use crate::config;

/// The longest a poll waits for all its answers.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest one query waits before it is sent again (twice at most), well within
/// [`POLL_TIMEOUT`] so that one lost datagram does not fail the poll.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The `hosts` entries and the resolver that answers for them.
pub struct Dns {
    entries: Vec<Entry>,
    resolver: TokioResolver,
    /// `dns_server`; `None` is the system's configuration.
    server: Option<SocketAddr>,
}

/// One `hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Addr(SocketAddr),
    Name { text: String, name: Name, port: u16 },
    Srv { text: String, name: Name },
}

impl Entry {
    fn parse(h: &str) -> anyhow::Result<Entry> {
        if let Ok(addr) = h.parse::<SocketAddr>() {
            return Ok(Entry::Addr(addr));
        }
        let name = |n: &str| Name::from_utf8(n).with_context(|| format!("\"{h}\": bad DNS name"));
        if config::is_srv_name(h) {
            return Ok(Entry::Srv {
                text: h.into(),
                name: name(h)?,
            });
        }
        let parsed = h
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)));
        match parsed {
            Some((host, port)) if !host.is_empty() && !host.contains([':', '[', ']']) => {
                Ok(Entry::Name {
                    text: h.into(),
                    name: name(host)?,
                    port,
                })
            }
            _ => anyhow::bail!("\"{h}\" is neither name:port, ip:port nor _service._proto.name"),
        }
    }
}

impl Dns {
    /// The source of `config`: its `hosts` entries checked and the resolver built (it
    /// asks nothing until the first poll).
    pub fn new(config: &config::Cluster) -> anyhow::Result<Dns> {
        let entries = config
            .hosts
            .iter()
            .map(|h| Entry::parse(h))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut builder = match config.dns_server {
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for c in &mut ns.connections {
                    c.port = server.port();
                }
                let resolver_config = ResolverConfig::from_name_servers(vec![ns]);
                TokioResolver::builder_with_config(resolver_config, TokioRuntimeProvider::default())
            }
            None => TokioResolver::builder_tokio()
                .context("reading the system's DNS configuration (/etc/resolv.conf)")?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 2;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // The builder would read /etc/hosts once; `resolver()` reads it on every poll.
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build().context("building the DNS resolver")?;
        Ok(Dns {
            entries,
            resolver,
            server: config.dns_server,
        })
    }

    /// The resolver for one poll: the same cache, and today's `/etc/hosts` when the
    /// system's configuration applies.
    fn resolver(&self) -> TokioResolver {
        let mut resolver = self.resolver.clone();
        if self.server.is_none() {
            // A missing or unreadable /etc/hosts is no hosts file, as for the C library.
            let hosts = Hosts::from_system().unwrap_or_default();
            resolver.set_hosts(Arc::new(hosts));
        }
        resolver
    }

    fn server_name(&self) -> String {
        match self.server {
            Some(server) => server.to_string(),
            None => "the system's name servers".into(),
        }
    }

    /// The A and AAAA addresses of `name`; `what` is the entry as the error names it.
    async fn addresses(
        &self,
        resolver: &TokioResolver,
        name: &Name,
        what: &str,
        deadline: Instant,
    ) -> anyhow::Result<Vec<IpAddr>> {
        let lookup = tokio::time::timeout_at(deadline, resolver.lookup_ip(name.clone()))
            .await
            .map_err(|_| self.late(what))?
            .map_err(|e| self.failed(what, &e, "A or AAAA"))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            anyhow::bail!("resolving {what} via {}: no address", self.server_name());
        }
        Ok(ips)
    }

    /// The members of the SRV name `name`.
    async fn srv_members(
        &self,
        resolver: &TokioResolver,
        name: &Name,
        text: &str,
        deadline: Instant,
        out: &mut BTreeSet<SocketAddr>,
    ) -> anyhow::Result<()> {
        let lookup = tokio::time::timeout_at(deadline, resolver.srv_lookup(name.clone()))
            .await
            .map_err(|_| self.late(text))?
            .map_err(|e| self.failed(text, &e, "SRV"))?;
        let records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            anyhow::bail!("resolving {text} via {}: no SRV record", self.server_name());
        }
        for srv in records {
            // A target of "." says the service is not offered there (RFC 2782).
            if srv.target.is_root() {
                continue;
            }
            let what = format!("{} (target of {text})", srv.target);
            for ip in self
                .addresses(resolver, &srv.target, &what, deadline)
                .await?
            {
                out.insert(SocketAddr::new(ip, srv.port));
            }
        }
        Ok(())
    }

    /// The error for a failed lookup of `what`, which asked for `wanted` records.
    fn failed(&self, what: &str, e: &NetError, wanted: &str) -> anyhow::Error {
        let why = if e.is_nx_domain() {
            "no such name (NXDOMAIN)".to_string()
        } else if e.is_no_records_found() {
            format!("no {wanted} record")
        } else {
            e.to_string()
        };
        anyhow::anyhow!("resolving {what} via {}: {why}", self.server_name())
    }

    fn late(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "resolving {what}: no answer from {} within {}s",
            self.server_name(),
            POLL_TIMEOUT.as_secs()
        )
    }
}

impl Source for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn members(&self) -> Poll<'_> {
        Box::pin(async move {
            let deadline = Instant::now() + POLL_TIMEOUT;
            let resolver = self.resolver();
            let mut addrs = BTreeSet::new();
            for entry in &self.entries {
                match entry {
                    Entry::Addr(addr) => {
                        addrs.insert(*addr);
                    }
                    Entry::Name { text, name, port } => {
                        for ip in self.addresses(&resolver, name, text, deadline).await? {
                            addrs.insert(SocketAddr::new(ip, *port));
                        }
                    }
                    Entry::Srv { text, name } => {
                        self.srv_members(&resolver, name, text, deadline, &mut addrs)
                            .await?;
                    }
                }
            }
            Ok(addrs
                .into_iter()
                .map(|a| Member::at(a.to_string()))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let addr = |s: &str| Entry::Addr(s.parse().unwrap());
        assert_eq!(
            Entry::parse("127.0.0.1:5432").unwrap(),
            addr("127.0.0.1:5432")
        );
        assert_eq!(Entry::parse("[::1]:6432").unwrap(), addr("[::1]:6432"));
        match Entry::parse("db.example.com:5433").unwrap() {
            Entry::Name { name, port, .. } => {
                assert_eq!(name.to_string(), "db.example.com");
                assert_eq!(port, 5433);
            }
            other => panic!("{other:?}"),
        }
        match Entry::parse("_postgresql._tcp.example.com").unwrap() {
            Entry::Srv { name, .. } => assert_eq!(name.to_string(), "_postgresql._tcp.example.com"),
            other => panic!("{other:?}"),
        }
        for bad in [
            "db.example.com",
            "db:x",
            ":5432",
            "[db]:5432",
            "::1:5432",
            "db:70000",
        ] {
            let e = Entry::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    /// Configuration is read before the runtime starts: building the source must not
    /// need one (queries start on the first poll).
    #[test]
    fn builds_outside_a_runtime() {
        let text = "discovery = \"dns\"\nhosts = [\"db.example.com:5432\"]\n\
                    dns_server = \"127.0.0.1:53\"\n[endpoints]\n";
        let cluster: config::Cluster = toml::from_str(text).unwrap();
        let dns = Dns::new(&cluster).unwrap();
        assert_eq!(dns.entries.len(), 1);
    }
}
