//! `discovery = "rds"`: the instances of an Aurora (or Multi-AZ) DB cluster, read from
//! the RDS API. DescribeDBClusters says which instances belong to the cluster and which
//! is the writer; DescribeDBInstances gives each one's endpoint, status and zone.
//!
//! Credentials, and the region when `region` is not set, come from the standard AWS
//! configuration chain (environment, profile files, web identity, container and
//! instance metadata).

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{DbInstance, Filter};
use aws_sdk_rds::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::OnceCell;

use super::{Member, Poll, Source};
use crate::config;

/// The longest a poll may take, API calls and first configuration load together, so a
/// hung API never stalls discovery.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// DescribeDBInstances page size: the API's minimum. A cluster has at most 16
/// instances, so one page is the rule; `Marker` is followed all the same.
const PAGE_SIZE: i32 = 20;

/// Statuses that take an instance out of the members: it is going away, stopped, or
/// cannot serve until someone acts. Any other status (`available`, `backing-up`,
/// `modifying`, `configuring-*`, `rebooting`, `upgrading`, `starting`, ...) keeps it,
/// and the health checks decide whether it serves.
const GONE: &[&str] = &[
    "delete-precheck",
    "deleting",
    "stopping",
    "stopped",
    "failed",
    "storage-full",
    "restore-error",
    "insufficient-capacity",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "incompatible-network",
    "incompatible-option-group",
    "incompatible-parameters",
    "incompatible-restore",
];

/// The instances of `cluster_identifier`, one member per instance with an endpoint.
pub struct Rds {
    cluster_identifier: String,
    endpoint_url: Option<String>,
    region: Option<String>,
    /// Built on the first poll (loading the AWS configuration is async) and kept.
    client: OnceCell<Client>,
}

impl Rds {
    /// The source for a cluster with `discovery = "rds"`; asks nothing until polled.
    pub fn new(config: &config::Cluster) -> anyhow::Result<Rds> {
        let Some(cluster_identifier) = config.cluster_identifier.clone() else {
            anyhow::bail!("discovery = \"rds\" needs cluster_identifier");
        };
        Ok(Rds {
            cluster_identifier,
            endpoint_url: config.endpoint_url.clone(),
            region: config.region.clone(),
            client: OnceCell::new(),
        })
    }

    /// Where the API is asked, for error messages.
    fn target(&self) -> String {
        let region = self.region.as_deref().unwrap_or("the AWS chain's region");
        match &self.endpoint_url {
            Some(url) => format!("{url} ({region})"),
            None => region.to_owned(),
        }
    }

    async fn client(&self) -> anyhow::Result<&Client> {
        self.client.get_or_try_init(|| self.load_client()).await
    }

    async fn load_client(&self) -> anyhow::Result<Client> {
        // ring instead of the SDK's default aws-lc: the same rustls, a far shorter build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            anyhow::bail!(
                "no AWS region: set region in the cluster's configuration, or AWS_REGION, \
                 or a region in the AWS profile"
            );
        }
        Ok(Client::new(&sdk))
    }

    async fn poll(&self) -> anyhow::Result<Vec<Member>> {
        let client = self.client().await?;
        let id = &self.cluster_identifier;
        let out = client
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(|e| api_error("DescribeDBClusters", e))?;
        let Some(cluster) = out
            .db_clusters()
            .iter()
            // RDS keeps identifiers in lower case and matches them in any case.
            .find(|c| {
                c.db_cluster_identifier()
                    .is_some_and(|c| c.eq_ignore_ascii_case(id))
            })
        else {
            anyhow::bail!("DescribeDBClusters did not return the cluster");
        };
        // The filter below gets the identifier as RDS spells it.
        let id = cluster.db_cluster_identifier().unwrap_or(id);
        let writers: Vec<(String, bool)> = cluster
            .db_cluster_members()
            .iter()
            .filter_map(|m| {
                let name = m.db_instance_identifier()?;
                Some((name.to_owned(), m.is_cluster_writer().unwrap_or(false)))
            })
            .collect();
        let mut instances = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let filter = Filter::builder().name("db-cluster-id").values(id).build();
            let page = client
                .describe_db_instances()
                .filters(filter)
                .max_records(PAGE_SIZE)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| api_error("DescribeDBInstances", e))?;
            instances.extend_from_slice(page.db_instances());
            match page.marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
                _ => break,
            }
        }
        Ok(members(&writers, &instances, cluster.port()))
    }
}

/// The API's error code and message when it answered; otherwise why no answer came
/// (the error's chain of causes, without the SDK's debug dump of the response).
fn api_error<E, R>(operation: &str, e: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(code) = e.code() {
        let message = e.message().unwrap_or("no message");
        return anyhow::anyhow!("{operation}: {code}: {message}");
    }
    let mut text = format!("{operation}: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    anyhow::anyhow!(text)
}

/// One member per cluster member whose instance has an endpoint and a status that may
/// serve, sorted by instance identifier. An instance the cluster does not list (being
/// added or removed) is left out, as is a listed one not described (just deleted).
fn members(
    writers: &[(String, bool)],
    instances: &[DbInstance],
    cluster_port: Option<i32>,
) -> Vec<Member> {
    let by_id: HashMap<&str, &DbInstance> = instances
        .iter()
        .filter_map(|i| Some((i.db_instance_identifier()?, i)))
        .collect();
    let mut listed: Vec<&(String, bool)> = writers.iter().collect();
    listed.sort();
    let mut out = Vec::new();
    for (id, writer) in listed {
        let Some(instance) = by_id.get(id.as_str()) else {
            tracing::debug!(instance = %id, "cluster member not described; skipped");
            continue;
        };
        let status = instance.db_instance_status().unwrap_or("");
        if GONE.contains(&status) {
            tracing::debug!(instance = %id, status, "instance cannot serve; skipped");
            continue;
        }
        let Some(addr) = address(instance, cluster_port) else {
            tracing::debug!(instance = %id, status, "instance has no endpoint yet; skipped");
            continue;
        };
        out.push(Member {
            addr,
            writer: Some(*writer),
            lag: None,
            zone: instance.availability_zone().map(str::to_owned),
        });
    }
    out
}

/// `address:port`, with an IPv6 address in brackets; the cluster's port when the
/// instance endpoint has none.
fn address(instance: &DbInstance, cluster_port: Option<i32>) -> Option<String> {
    let endpoint = instance.endpoint()?;
    let host = endpoint.address().filter(|a| !a.is_empty())?;
    let port = endpoint.port().or(cluster_port)?;
    let port = u16::try_from(port).ok()?;
    if host.contains(':') {
        Some(format!("[{host}]:{port}"))
    } else {
        Some(format!("{host}:{port}"))
    }
}

impl Source for Rds {
    fn name(&self) -> &'static str {
        "rds"
    }

    fn members(&self) -> Poll<'_> {
        Box::pin(async move {
            let result = match tokio::time::timeout(POLL_TIMEOUT, self.poll()).await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!(
                    "no answer within {}s",
                    POLL_TIMEOUT.as_secs()
                )),
            };
            result.map_err(|e| {
                e.context(format!(
                    "RDS cluster {} at {}",
                    self.cluster_identifier,
                    self.target()
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_rds::types::Endpoint;

    fn instance(id: &str, status: &str, host: Option<&str>, zone: &str) -> DbInstance {
        let mut b = DbInstance::builder()
            .db_instance_identifier(id)
            .db_instance_status(status)
            .availability_zone(zone);
        if let Some(h) = host {
            b = b.endpoint(Endpoint::builder().address(h).port(5432).build());
        }
        b.build()
    }

    fn ids(list: &[(&str, bool)]) -> Vec<(String, bool)> {
        list.iter().map(|(i, w)| (i.to_string(), *w)).collect()
    }

    #[test]
    fn one_member_per_listed_instance_with_an_endpoint() {
        let writers = ids(&[("b", false), ("a", true), ("c", false), ("gone", false)]);
        let instances = [
            instance("a", "available", Some("a.example"), "eu-west-1a"),
            instance("b", "backing-up", Some("b.example"), "eu-west-1b"),
            instance("c", "creating", None, "eu-west-1c"),
            instance("stray", "available", Some("stray.example"), "eu-west-1c"),
        ];
        let got = members(&writers, &instances, None);
        let want = vec![
            Member {
                addr: "a.example:5432".into(),
                writer: Some(true),
                lag: None,
                zone: Some("eu-west-1a".into()),
            },
            Member {
                addr: "b.example:5432".into(),
                writer: Some(false),
                lag: None,
                zone: Some("eu-west-1b".into()),
            },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn statuses_that_cannot_serve_are_left_out() {
        let kept = [
            "available",
            "modifying",
            "configuring-log-exports",
            "rebooting",
        ];
        let dropped = ["deleting", "stopped", "stopping", "failed", "storage-full"];
        for (status, keep) in kept
            .iter()
            .map(|s| (s, true))
            .chain(dropped.iter().map(|s| (s, false)))
        {
            let got = members(
                &ids(&[("a", true)]),
                &[instance("a", status, Some("a.example"), "z")],
                None,
            );
            assert_eq!(got.len(), usize::from(keep), "status {status}");
        }
    }

    #[test]
    fn ipv6_is_bracketed_and_the_cluster_port_fills_in() {
        let i = DbInstance::builder()
            .endpoint(Endpoint::builder().address("2001:db8::7").build())
            .build();
        assert_eq!(
            address(&i, Some(5433)).as_deref(),
            Some("[2001:db8::7]:5433")
        );
        assert_eq!(address(&i, None), None);
    }
}
