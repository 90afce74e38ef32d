//! Where a cluster's members come from. Each source is polled every
//! `discovery_interval` and answers with the whole member list; the cluster applies the
//! difference (see `cluster::membership`). Health checks, not sources, decide a member's
//! role and whether it serves: a source's writer flag and lag are only shown and used
//! as hints.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Discovery};

mod aurora;
mod dir;
mod dns;
mod rds;
mod static_hosts;

/// One member as a source sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `host:port`, as the health checker and the pools connect to it.
    pub addr: String,
    /// The source says this member is the writer (Aurora, RDS).
    pub writer: Option<bool>,
    /// Replication lag the source reports (Aurora's `replica_lag_in_msec`).
    pub lag: Option<Duration>,
    /// Where the member runs (an availability zone), if the source knows.
    pub zone: Option<String>,
}

impl Member {
    /// A member known only by its address.
    pub fn at(addr: impl Into<String>) -> Member {
        Member {
            addr: addr.into(),
            writer: None,
            lag: None,
            zone: None,
        }
    }
}

/// A future a source returns, boxed so sources can live behind `dyn Source`.
pub type Poll<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Vec<Member>>> + Send + 'a>>;

/// A discovery source: the cluster's whole member list, each time it is asked.
///
/// An error keeps the members as they are (the source is asked again after
/// `discovery_interval`); an empty list removes every member.
pub trait Source: Send + Sync {
    /// The source's name, as in `discovery = "..."`.
    fn name(&self) -> &'static str;
    /// The members now.
    fn members(&self) -> Poll<'_>;
    /// Whether the members can change between two polls (every `discovery_interval`);
    /// a list written in the configuration changes only with it.
    fn polls(&self) -> bool {
        true
    }
}

/// What a source may need besides the cluster's configuration.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The health user's password (the `aurora` source queries through it).
    pub health_password: Option<String>,
    /// The cluster's TLS settings towards its servers, as they are when used.
    pub server_tls: Arc<arc_swap::ArcSwap<crate::tls::ServerTls>>,
}

/// The source a cluster's configuration selects.
pub fn source(config: &config::Cluster, ctx: &Context) -> anyhow::Result<Arc<dyn Source>> {
    match config.discovery {
        Discovery::Static => Ok(Arc::new(static_hosts::StaticHosts::new(config))),
        Discovery::Dir => Ok(Arc::new(dir::MemberDir::new(config)?)),
        Discovery::Dns => Ok(Arc::new(dns::Dns::new(config)?)),
        Discovery::Aurora => Ok(Arc::new(aurora::Aurora::new(
            config,
            ctx.health_password.clone(),
            ctx.server_tls.clone(),
        ))),
        Discovery::Rds => Ok(Arc::new(rds::Rds::new(config)?)),
    }
}
