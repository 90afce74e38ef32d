//! Transaction mode with session state: a client whose statements leave state in its
//! session keeps its server connection until it leaves (and the next client gets a
//! reset one), or, with `pin = "error"`, has them refused.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

const TXN: &str = "pool_mode = \"transaction\"\nquery_wait_timeout = \"20s\"";
const ADMIN: &str = "admin_listen = \"127.0.0.1:0\"\nadmin_users = [\"app\"]";

fn roles(s: &Setup) {
    let primary = s.cluster.primary();
    blocking(|| s.cluster.psql(primary, "create role r; grant r to app")).expect("create role r");
}

/// The `pinned` column of `SHOW CLIENTS`, one line per client.
fn pinned_column(s: &Setup) -> Vec<String> {
    let admin = s.fleet.admin.expect("admin_listen is served");
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW CLIENTS"));
    assert!(ok, "{out}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    let at = header
        .iter()
        .position(|c| *c == "pinned")
        .expect("a pinned column");
    lines
        .filter(|l| l.contains('|'))
        .map(|l| l.split('|').nth(at).unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_keeps_its_session_and_the_next_one_gets_a_clean_connection() {
    let s = setup(0, ADMIN, "", &format!("{TXN}\ndefault_pool_size = 1")).await;
    roles(&s);
    let addr = s.addr("writer");
    let a = app(addr).await;
    a.batch_execute("set role r").await.unwrap();
    // Each statement is a transaction of its own: the client keeps its connection.
    let me: String = a
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, "r");
    a.batch_execute("create temp table tt(i int); insert into tt values (1)")
        .await
        .unwrap();
    let n: i64 = a
        .query_one("select count(*) from tt", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 1,
        "the temporary table lives on in the client's next transaction"
    );
    // Extended protocol (a named statement): the lock is taken in the session.
    let locked: bool = a
        .query_one("select pg_try_advisory_lock($1)", &[&42i64])
        .await
        .unwrap()
        .get(0);
    assert!(locked);
    let pinned = pinned_column(&s);
    assert!(
        pinned.iter().any(|p| p == "role,advisory_lock,temp_object"),
        "SHOW CLIENTS pinned: {pinned:?}"
    );
    let counted: u64 = s.main().pins().iter().map(|(_, n)| n).sum();
    assert_eq!(counted, 3);

    // B waits for the only server connection while A holds it, and gets it reset.
    let b = app(addr).await;
    let view = tokio::spawn(async move {
        let row = b
            .query_one(
                "select current_user::text, pg_try_advisory_lock(42), to_regclass('pg_temp.tt') is null",
                &[],
            )
            .await
            .unwrap();
        (
            row.get::<_, String>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2),
        )
    });
    let main = s.main();
    wait_for(
        "B waits for the server connection",
        Duration::from_secs(10),
        || main.pools.all().iter().any(|p| p.waiting() == 1),
    )
    .await;
    drop(a);
    let seen = tokio::time::timeout(Duration::from_secs(10), view)
        .await
        .expect("B gets the connection once A left")
        .unwrap();
    assert_eq!(
        seen,
        ("app".to_owned(), true, true),
        "(role, lock free, no temp table)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_client_gets_notifications_while_idle() {
    let s = setup(0, ADMIN, "", &format!("{TXN}\ndefault_pool_size = 2")).await;
    let addr = s.addr("writer");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app");
    let (a, mut connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(stream.for_each(move |m| {
        if let Ok(AsyncMessage::Notification(n)) = m {
            let _ = tx.send(n.payload().to_owned());
        }
        std::future::ready(())
    }));
    a.batch_execute("listen pgfleet_channel").await.unwrap();
    let other = app(addr).await;
    for i in 0..3 {
        other
            .batch_execute(&format!("notify pgfleet_channel, 'hello {i}'"))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the idle listener gets the notification")
            .unwrap();
        assert_eq!(got, format!("hello {i}"));
    }
    assert_eq!(
        pinned_column(&s).iter().filter(|p| *p == "listen").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_lets_the_connection_go() {
    let s = setup(0, ADMIN, "", &format!("{TXN}\ndefault_pool_size = 1")).await;
    roles(&s);
    let addr = s.addr("writer");
    let a = app(addr).await;
    a.batch_execute("set role r").await.unwrap();
    a.batch_execute("discard all").await.unwrap();
    // A stays connected; B gets the connection, as the role A had set.
    let b = app(addr).await;
    let me: String = tokio::time::timeout(
        Duration::from_secs(10),
        b.query_one("select current_user::text", &[]),
    )
    .await
    .expect("A no longer holds the connection")
    .unwrap()
    .get(0);
    assert_eq!(me, "app");
    let me: String = a
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_error_refuses_session_state_with_a_clear_error() {
    let s = setup(
        0,
        ADMIN,
        "",
        &format!("{TXN}\ndefault_pool_size = 1\npin = \"error\""),
    )
    .await;
    roles(&s);
    let addr = s.addr("writer");
    let a = app(addr).await;
    let e = a.batch_execute("set role r").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    let text = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        text.contains("pin = \"error\"") && text.contains("SET LOCAL ROLE"),
        "{text}"
    );
    // Inside a block, the refusal aborts it as any error would.
    a.batch_execute("begin").await.unwrap();
    let e = a
        .query_one("select pg_advisory_lock($1)", &[&7i64])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    let e = a.batch_execute("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    a.batch_execute("rollback").await.unwrap();
    let me: String = a
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, "app");
    // Nothing pinned: another client shares the one connection.
    let b = app(addr).await;
    let one: i32 = b.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert!(pinned_column(&s).iter().all(|p| p.is_empty()));
    // What stays allowed: the transaction-scoped forms.
    a.batch_execute("begin; set local role r; select pg_advisory_xact_lock(1); create temp table t(i int) on commit drop; commit")
        .await
        .unwrap();
}
