//! `discovery = "static"`: the `hosts` list of the configuration.

use super::{Member, Poll, Source};
use crate::config;

/// The configured `hosts`, in order.
#[derive(Debug)]
pub struct StaticHosts {
    members: Vec<Member>,
}

impl StaticHosts {
    pub fn new(config: &config::Cluster) -> StaticHosts {
        StaticHosts {
            members: config.hosts.iter().map(Member::at).collect(),
        }
    }
}

impl Source for StaticHosts {
    fn name(&self) -> &'static str {
        "static"
    }

    fn members(&self) -> Poll<'_> {
        let members = self.members.clone();
        Box::pin(async move { Ok(members) })
    }

    fn polls(&self) -> bool {
        false
    }
}
