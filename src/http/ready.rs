//! Readiness: pgfleet is ready when every endpoint of every cluster has a member that
//! would take a new session now.

use crate::cluster::{ClusterState, EndpointState};
use crate::config::{Fallback, Role};
use crate::state::Topology;

/// Whether `endpoint` would find a member for a new session now: a member that fits
/// its role, or, for a replica endpoint with `fallback = "primary"`, the writer.
pub fn endpoint_ready(cluster: &ClusterState, endpoint: &EndpointState) -> bool {
    let role = endpoint.config().role;
    let fits = cluster.nodes().iter().any(|n| cluster.fits(n, role));
    fits || (role == Role::Replica
        && endpoint.config().fallback == Fallback::Primary
        && cluster.writer().is_some())
}

/// The endpoints that are not ready, each as `cluster.endpoint (role ...)`.
pub fn not_ready(topology: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    for cluster in &topology.clusters {
        for endpoint in cluster.endpoints().iter() {
            if !endpoint_ready(cluster, endpoint) {
                out.push(format!(
                    "{}.{} (role {}): no member fits",
                    cluster.name,
                    endpoint.name,
                    role_name(endpoint.config().role)
                ));
            }
        }
    }
    out
}

/// The role as the configuration spells it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Replica => "replica",
        Role::Primary => "primary",
        Role::Any => "any",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Health, NodeRole};
    use crate::config::Config;

    fn cluster(fallback: &str) -> ClusterState {
        let text = format!(
            r#"[clusters.c]
hosts = ["h:1", "h:2"]
[clusters.c.endpoints.reader]
listen = "127.0.0.1:0"
role = "replica"
fallback = "{fallback}"
[clusters.c.endpoints.writer]
listen = "127.0.0.1:0"
role = "primary"
"#
        );
        let config: Config = toml::from_str(&text).unwrap();
        let c = ClusterState::new("c", &config.clusters["c"]);
        for (i, role) in [NodeRole::Primary, NodeRole::Replica]
            .into_iter()
            .enumerate()
        {
            c.nodes()[i].set_role(role);
            c.nodes()[i].set_health(Health::Up);
        }
        c.nodes()[0].set_primary_since(c.next_promotion());
        c.observe_primary(&c.nodes()[0], 1);
        c
    }

    fn ready(c: &ClusterState, name: &str) -> bool {
        let endpoint = c.endpoint(name).unwrap();
        endpoint_ready(c, &endpoint)
    }

    #[test]
    fn a_reader_endpoint_without_replicas_is_ready_only_with_fallback_and_a_writer() {
        let strict = cluster("error");
        let fallback = cluster("primary");
        for c in [&strict, &fallback] {
            assert!(ready(c, "reader") && ready(c, "writer"));
            c.nodes()[1].set_health(Health::Down);
        }
        assert!(!ready(&strict, "reader"));
        assert!(ready(&fallback, "reader"));
        // Without a writer, the fallback has nothing either.
        fallback.nodes()[0].set_health(Health::Down);
        assert!(!ready(&fallback, "reader"));
        assert!(!ready(&fallback, "writer"));
    }

    #[test]
    fn a_lagging_replica_does_not_make_a_reader_ready() {
        let c = cluster("error");
        c.nodes()[1].set_lagging(true);
        assert!(!ready(&c, "reader"));
        assert!(ready(&c, "writer"));
    }
}
