//! auth_query: users who are not in auth_file, looked up in PostgreSQL as auth_user.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use pgfleet::auth_query::LookupStats;
use pgfleet::harness::{PasswordEncryption, TestCluster};

/// A superuser that may read `pg_authid` (the default `auth_query`).
const SUPER_AUTH: &str = "\"fleet_auth\" \"fleet_auth\"\n";

/// Creates `fleet_auth` (superuser, SCRAM password `fleet_auth`), then `roles` as
/// (name, password, encryption), and waits until the replicas have them.
fn create_roles(cluster: &TestCluster, roles: &[(&str, &str, PasswordEncryption)]) {
    blocking(|| {
        cluster
            .create_user("fleet_auth", "fleet_auth", PasswordEncryption::Scram)
            .unwrap();
        cluster
            .psql(cluster.primary(), "alter role fleet_auth superuser")
            .unwrap();
        for (name, password, enc) in roles {
            cluster.create_user(name, password, *enc).unwrap();
        }
        cluster.wait_caught_up().unwrap();
    })
}

fn lookups(s: &Setup) -> (u64, u64, u64, u64) {
    let main = s.main();
    let st: &LookupStats = &main.auth_query.stats;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    (
        n(&st.found),
        n(&st.missing),
        n(&st.failed),
        n(&st.cache_hits),
    )
}

/// The message of a refused login, and its SQLSTATE.
async fn refusal(addr: std::net::SocketAddr, user: &str, password: &str) -> (String, String) {
    let e = match connect(addr, user, password).await {
        Ok(_) => panic!("{user} logged in with {password:?}"),
        Err(e) => e,
    };
    let message = e.as_db_error().map(|d| d.message().to_owned());
    (sqlstate(&e), message.unwrap_or_else(|| e.to_string()))
}

async fn start(
    cluster: TestCluster,
    users: &str,
    general: &str,
    cluster_extra: &str,
    pool: &str,
) -> Setup {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let (fleet, dir) = start_fleet_with_users(&cluster, users, general, cluster_extra, pool).await;
    Setup {
        fleet,
        dir,
        cluster,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_md5_roles_log_in_and_unknown_users_look_the_same() {
    let cluster = blocking(|| TestCluster::start(1)).expect("start the test cluster");
    create_roles(
        &cluster,
        &[
            ("aq_scram", "scram pw", PasswordEncryption::Scram),
            ("aq_md5", "md5 pw", PasswordEncryption::Md5),
            ("aq_many", "many", PasswordEncryption::Scram),
        ],
    );
    blocking(|| {
        let sql = "create role aq_nopass login";
        cluster.psql(cluster.primary(), sql).unwrap();
        cluster.wait_caught_up().unwrap();
    });
    // md5: an md5 secret gets md5, a SCRAM secret SCRAM (as for auth_file users).
    let general = "auth_type = \"md5\"\nauth_user = \"fleet_auth\"";
    let s = start(cluster, SUPER_AUTH, general, "", "").await;
    let reader = s.addr("reader");
    for (user, password) in [("aq_scram", "scram pw"), ("aq_md5", "md5 pw")] {
        let c = connect(reader, user, password)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot log in: {e:?}"));
        let row = c
            .query_one("select current_user::text, pg_is_in_recovery()", &[])
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get(1)),
            (user.to_owned(), true)
        );
    }
    let (ok, out) = blocking(|| psql(reader, "aq_md5", "md5 pw", "select current_user"));
    assert!(ok && out.trim() == "aq_md5", "{out}");
    assert_eq!(
        lookups(&s).0,
        2,
        "one query per user, psql's login from the cache"
    );

    // A wrong password, a role without one, and no role at all: the same refusal.
    let failed = |user: &str| {
        (
            "28P01".to_owned(),
            format!("password authentication failed for user \"{user}\""),
        )
    };
    for (user, password) in [
        ("aq_scram", "wrong"),
        ("aq_md5", "wrong"),
        ("aq_nopass", "x"),
        ("aq_nobody", "x"),
        ("app", "wrong"),
    ] {
        assert_eq!(refusal(reader, user, password).await, failed(user));
    }
    let (found, missing, failed_lookups, _) = lookups(&s);
    assert_eq!((found, missing, failed_lookups), (2, 2, 0));

    // Logins of a user not looked up yet, all at once: one query.
    let logins = (0..8).map(|_| connect(reader, "aq_many", "many"));
    for c in futures_util::future::join_all(logins).await {
        let c = c.expect("aq_many logs in");
        c.simple_query("select 1").await.unwrap();
    }
    assert_eq!(lookups(&s).0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_definer_function_for_a_non_superuser_auth_user() {
    let cluster = blocking(|| TestCluster::start(1)).expect("start the test cluster");
    blocking(|| {
        // The README's recipe, in database postgres (auth_dbname's default).
        let sql = "create role pgfleet_auth login password 'lookup';
            create schema pgfleet;
            create function pgfleet.user_lookup(i_username text, out uname text, out phash text)
            returns record as $$
              select rolname, case when rolvaliduntil < now() then null else rolpassword end
              from pg_catalog.pg_authid where rolname = i_username and rolcanlogin;
            $$ language sql security definer set search_path = pg_catalog, pg_temp;
            revoke all on function pgfleet.user_lookup(text) from public;
            grant usage on schema pgfleet to pgfleet_auth;
            grant execute on function pgfleet.user_lookup(text) to pgfleet_auth;";
        cluster.psql(cluster.primary(), sql).unwrap();
        let enc = PasswordEncryption::Scram;
        cluster.create_user("aq_user", "user pw", enc).unwrap();
        cluster.wait_caught_up().unwrap();
    });
    // Set for the cluster: its own auth_user and query over [general]'s.
    let cluster_extra = "auth_user = \"pgfleet_auth\"\n\
        auth_query = \"SELECT uname, phash FROM pgfleet.user_lookup($1)\"";
    let general = "auth_user = \"nobody_at_all\"";
    let users = "\"pgfleet_auth\" \"lookup\"\n";
    let s = start(cluster, users, general, cluster_extra, "").await;
    let c = connect(s.addr("reader"), "aq_user", "user pw")
        .await
        .expect("aq_user logs in");
    let row = c.query_one("select current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "aq_user");
    let (code, _) = refusal(s.addr("writer"), "aq_user", "wrong").await;
    assert_eq!(code, "28P01");
    // pgfleet_auth cannot read pg_authid itself: only the function lets it.
    let sql = "select count(*) from pg_authid";
    let c = connect(s.addr("writer"), "pgfleet_auth", "lookup")
        .await
        .unwrap();
    let e = c.query_one(sql, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert_eq!(lookups(&s).0, 1);
}

/// A role PostgreSQL refuses (`VALID UNTIL` passed, `NOLOGIN`) is refused by pgfleet
/// too: looked up for the first time, and when its secret is cached and the pool
/// holds a server connection already logged in as it (which PostgreSQL does not check
/// again), once `auth_cache_ttl` is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_nologin_roles_are_refused_cold_and_warm() {
    let cluster = blocking(|| TestCluster::start(1)).expect("start the test cluster");
    let enc = PasswordEncryption::Scram;
    create_roles(
        &cluster,
        &[
            ("aq_expired", "pw", enc),
            ("aq_nologin", "pw", enc),
            ("aq_expires", "pw", enc),
        ],
    );
    blocking(|| {
        let sql = "alter role aq_expired valid until 'yesterday';
            alter role aq_nologin nologin;";
        cluster.psql(cluster.primary(), sql).unwrap();
        cluster.wait_caught_up().unwrap();
    });
    let general = "auth_user = \"fleet_auth\"\nauth_cache_ttl = \"1s\"";
    let s = start(cluster, SUPER_AUTH, general, "", "").await;
    let reader = s.addr("reader");
    let failed = |user: &str| {
        (
            "28P01".to_owned(),
            format!("password authentication failed for user \"{user}\""),
        )
    };
    for user in ["aq_expired", "aq_nologin"] {
        assert_eq!(refusal(reader, user, "pw").await, failed(user));
    }
    assert_eq!(lookups(&s).1, 2, "both found without a password");

    // Warm: the secret is cached and the pool keeps the server connection.
    let c = connect(reader, "aq_expires", "pw").await.expect("logs in");
    c.simple_query("select 1").await.unwrap();
    drop(c);
    let backends = "select count(*) from pg_stat_activity where usename = 'aq_expires'";
    blocking(|| {
        let sql = "alter role aq_expires valid until 'yesterday'";
        s.cluster.psql(s.cluster.primary(), sql).unwrap();
        s.cluster.wait_caught_up().unwrap();
        let open = s.cluster.psql(1, backends).unwrap();
        assert_eq!(open, "1", "the pool keeps aq_expires' server connection");
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        refusal(reader, "aq_expires", "pw").await,
        failed("aq_expires")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_secret_until_the_ttl_then_the_new_password() {
    let cluster = blocking(|| TestCluster::start(1)).expect("start the test cluster");
    create_roles(&cluster, &[("aq_cache", "one", PasswordEncryption::Scram)]);
    let general = "auth_user = \"fleet_auth\"\nauth_cache_ttl = \"1h\"";
    let s = start(cluster, SUPER_AUTH, general, "", "").await;
    let writer = s.addr("writer");
    let first = connect(writer, "aq_cache", "one")
        .await
        .expect("first login");
    first.simple_query("select 1").await.unwrap();
    assert_eq!(lookups(&s).0, 1);

    blocking(|| {
        let sql = "alter role aq_cache password 'two'";
        s.cluster.psql(s.cluster.primary(), sql).unwrap();
        s.cluster.wait_caught_up().unwrap();
    });
    // Within the TTL pgfleet still holds the secret of "one": "two" is refused, and no
    // query was run for it.
    let (code, _) = refusal(writer, "aq_cache", "two").await;
    assert_eq!(code, "28P01");
    let (found, _, _, hits) = lookups(&s);
    assert_eq!((found, hits), (1, 1));

    // A short TTL (a reload keeps the cache; the TTL applies to what it holds): the
    // next login after it has passed looks the user up again, and "two" works.
    let text = config_text(
        &s.cluster,
        "auth_user = \"fleet_auth\"\nauth_cache_ttl = \"100ms\"",
        "",
        "",
    );
    std::fs::write(s.dir.path().join("pgfleet.toml"), text).unwrap();
    pgfleet::fleet::reload(&s.fleet.state)
        .await
        .expect("reload");
    // `first` holds the pool's server connection: the login that works needs a new one,
    // made with the keys of the new password.
    let mut attempts = 0;
    let second = loop {
        attempts += 1;
        match connect(writer, "aq_cache", "two").await {
            Ok(c) => break c,
            Err(e) => assert!(attempts < 100, "two never worked: {e:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let row = second
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "aq_cache");
    assert_eq!(lookups(&s).0, 2);
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_lookups_refuse_the_client_with_the_reason() {
    let cluster = blocking(|| TestCluster::start(0)).expect("start the test cluster");
    create_roles(&cluster, &[("aq_user", "pw", PasswordEncryption::Scram)]);
    // auth_user's password in auth_file is wrong.
    let users = "\"fleet_auth\" \"not its password\"\n";
    let general = "auth_user = \"fleet_auth\"";
    let s = start(cluster, users, general, "", "").await;
    let writer = s.addr("writer");
    let (code, message) = refusal(writer, "aq_user", "pw").await;
    assert_eq!(code, "08006", "{message}");
    assert_eq!(
        message,
        "pgfleet cannot look up the password of user \"aq_user\" (auth_query): \
         the server refused auth_user's login"
    );
    // Users in auth_file still log in.
    app(writer).await;

    // An auth_query that fails.
    let general = "auth_user = \"fleet_auth\"\n\
        auth_query = \"SELECT usename, passwd FROM no_such_table WHERE usename = $1\"";
    let text = config_text(&s.cluster, general, "", "");
    std::fs::write(s.dir.path().join("pgfleet.toml"), text).unwrap();
    let users = blocking(|| userlist(&s.cluster)) + SUPER_AUTH;
    std::fs::write(s.dir.path().join("userlist.txt"), users).unwrap();
    pgfleet::fleet::reload(&s.fleet.state)
        .await
        .expect("reload");
    let (code, message) = refusal(writer, "aq_user", "pw").await;
    assert_eq!(code, "28000", "{message}");
    assert!(
        message.ends_with("(auth_query): auth_query failed"),
        "{message}"
    );
    // Failures are not kept: each login asks again.
    refusal(writer, "aq_user", "pw").await;
    assert_eq!(lookups(&s).2, 3);
}
