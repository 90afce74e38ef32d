//! The `auth_query` keys: `[general]` sets them, a cluster may override `auth_user`,
//! `auth_query` and `auth_dbname` (its members may be another PostgreSQL installation).

use super::{Cluster, General};

/// What a cluster's `auth_query` lookups use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthQuery {
    /// The user the lookup logs in as.
    pub user: String,
    /// The query, `$1` being the client's user name.
    pub query: String,
    /// The database it runs in.
    pub dbname: String,
}

impl AuthQuery {
    /// The cluster's settings over `[general]`'s; `None` when it has no `auth_user`
    /// (unset or `""`).
    pub fn of(general: &General, cluster: &Cluster) -> Option<AuthQuery> {
        let user = cluster.auth_user.as_ref().or(general.auth_user.as_ref())?;
        if user.is_empty() {
            return None;
        }
        Some(AuthQuery {
            user: user.clone(),
            query: cluster
                .auth_query
                .as_ref()
                .unwrap_or(&general.auth_query)
                .clone(),
            dbname: cluster
                .auth_dbname
                .as_ref()
                .unwrap_or(&general.auth_dbname)
                .clone(),
        })
    }
}

/// Checks the settings a cluster with an `auth_user` ends up with: `Err((whether the
/// cluster sets the key, key, what is wrong))`.
pub(super) fn check(g: &General, c: &Cluster) -> Result<(), (bool, &'static str, &'static str)> {
    let Some(settings) = AuthQuery::of(g, c) else {
        return Ok(());
    };
    if !settings.query.contains("$1") {
        let in_cluster = c.auth_query.is_some();
        return Err((in_cluster, "auth_query", "must take the user name as $1"));
    }
    if settings.dbname.is_empty() {
        let in_cluster = c.auth_dbname.is_some();
        return Err((in_cluster, "auth_dbname", "must name a database"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use std::path::Path;

    const CLUSTERS: &str = r#"
[clusters.a]
hosts = ["127.0.0.1:5432"]
[clusters.a.endpoints.r]
listen = "127.0.0.1:6432"
role = "replica"

[clusters.b]
hosts = ["127.0.0.1:5442"]
auth_user = "b_auth"
auth_query = "SELECT uname, phash FROM pgfleet.user_lookup($1)"
[clusters.b.endpoints.r]
listen = "127.0.0.1:6442"
role = "replica"

[clusters.c]
hosts = ["127.0.0.1:5452"]
auth_user = ""
[clusters.c.endpoints.r]
listen = "127.0.0.1:6452"
role = "replica"
"#;

    fn load_text(dir: &Path, name: &str, text: &str) -> Result<crate::config::Config, String> {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        load(&p).map(|l| l.config).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_text(dir.path(), "a.toml", CLUSTERS).unwrap();
        let g = &c.general;
        assert_eq!(g.auth_user, None);
        assert_eq!(g.auth_query, crate::config::DEFAULT_AUTH_QUERY);
        assert_eq!(
            (g.auth_dbname.as_str(), g.auth_cache_ttl.as_secs()),
            ("postgres", 60)
        );
        assert_eq!(AuthQuery::of(g, &c.clusters["a"]), None);
        let b = AuthQuery::of(g, &c.clusters["b"]).unwrap();
        assert_eq!((b.user.as_str(), b.dbname.as_str()), ("b_auth", "postgres"));
        assert!(b.query.contains("user_lookup"));

        let text = format!(
            "[general]\nauth_user = \"fleet\"\nauth_dbname = \"app\"\nauth_cache_ttl = \"5s\"\n{CLUSTERS}"
        );
        let c = load_text(dir.path(), "b.toml", &text).unwrap();
        let g = &c.general;
        assert_eq!(g.auth_cache_ttl.as_secs(), 5);
        let a = AuthQuery::of(g, &c.clusters["a"]).unwrap();
        assert_eq!((a.user.as_str(), a.dbname.as_str()), ("fleet", "app"));
        assert_eq!(a.query, g.auth_query);
        assert_eq!(AuthQuery::of(g, &c.clusters["b"]).unwrap().user, "b_auth");
        // A cluster's "" turns auth_query off for it.
        assert_eq!(AuthQuery::of(g, &c.clusters["c"]), None);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            format!("[general]\nauth_user = \"fleet\"\nauth_query = \"select 1\"\n{CLUSTERS}");
        let e = load_text(dir.path(), "a.toml", &text).unwrap_err();
        assert!(e.contains("general.auth_query") && e.contains("$1"), "{e}");
        // Not checked while no cluster uses it.
        let text = format!(
            "[general]\nauth_query = \"select 1\"\n{}",
            &CLUSTERS[..CLUSTERS.find("[clusters.b]").unwrap()]
        );
        load_text(dir.path(), "b.toml", &text).unwrap();
        let text = CLUSTERS.replace("user_lookup($1)", "user_lookup('x')");
        let e = load_text(dir.path(), "c.toml", &text).unwrap_err();
        assert!(e.contains("clusters.b.auth_query"), "{e}");
        let text = CLUSTERS.replace(
            "auth_user = \"b_auth\"",
            "auth_user = \"b_auth\"\nauth_dbname = \"\"",
        );
        let e = load_text(dir.path(), "d.toml", &text).unwrap_err();
        assert!(e.contains("clusters.b.auth_dbname"), "{e}");
        let text = format!("[general]\nauth_cache_ttl = \"400days\"\n{CLUSTERS}");
        let e = load_text(dir.path(), "e.toml", &text).unwrap_err();
        assert!(e.contains("general.auth_cache_ttl"), "{e}");
        let text = format!("[general]\nauth_cache_ttl = \"soon\"\n{CLUSTERS}");
        assert!(load_text(dir.path(), "f.toml", &text)
            .unwrap_err()
            .contains("soon"));
    }
}
