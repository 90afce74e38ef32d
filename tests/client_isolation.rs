//! Nothing of one client reaches another: client A breaks the protocol in the middle of
//! a transaction while client B waits for the same (only) server connection; B gets
//! its own results on a clean session.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::raw::*;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What A leaves behind if anything leaks: rows, a session variable, an open transaction.
const A_WORK: &str =
    "BEGIN; insert into isolation values ('A'); select set_config('pgfleet.secret', 'A', false)";

/// B's view: A's rows, whether B runs in a transaction of its own (A's has written, so
/// it has a transaction id; a read-only one of B's has none), A's session variable, and
/// B's own value.
const B_VIEW: &str = "select (select count(*) from isolation where v like 'A%'), \
     pg_current_xact_id_if_assigned() is null, \
     coalesce(current_setting('pgfleet.secret', true), ''), \
     'B'::text";

/// Starts A's transaction on a raw socket; returns the socket once A holds the server
/// connection inside its transaction block.
async fn a_in_transaction(addr: std::net::SocketAddr) -> TcpStream {
    let mut a = raw_session(addr).await;
    a.write_all(&query(A_WORK)).await.unwrap();
    read_until(&mut a, &[b'Z', 0, 0, 0, 5, b'T']).await;
    a
}

/// Runs B's view while A holds the connection: returns once B waits for it.
async fn b_waits(s: &Setup, b: &Arc<tokio_postgres::Client>) -> tokio::task::JoinHandle<()> {
    let client = b.clone();
    let view = tokio::spawn(async move {
        let row = client.query_one(B_VIEW, &[]).await.expect("B's query");
        assert_eq!(row.get::<_, i64>(0), 0, "B sees A's rows");
        assert!(row.get::<_, bool>(1), "B runs inside A's transaction");
        assert_eq!(row.get::<_, String>(2), "", "B sees A's session variable");
        assert_eq!(row.get::<_, String>(3), "B");
    });
    let main = s.main();
    wait_for(
        "B waits for the server connection",
        Duration::from_secs(5),
        || main.pools.all().iter().any(|p| p.waiting() == 1),
    )
    .await;
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_breaking_the_protocol_mid_transaction_leaves_nothing_for_the_next() {
    let pool = "pool_mode = \"transaction\"\ndefault_pool_size = 1";
    let general = "auth_type = \"trust\"\nmax_message_size = 65536";
    let s = setup(1, general, "", pool).await;
    let addr = s.addr("writer");
    let b = Arc::new(connect(addr, "trustuser", "").await.unwrap());
    b.batch_execute("create table isolation(v text)")
        .await
        .unwrap();

    // 1. Half a message, then A leaves.
    let mut a = a_in_transaction(addr).await;
    let view = b_waits(&s, &b).await;
    let mut partial = query("insert into isolation values ('A-partial')");
    partial.truncate(20);
    a.write_all(&partial).await.unwrap();
    drop(a);
    view.await.unwrap();

    // 2. A message larger than max_message_size.
    let mut a = a_in_transaction(addr).await;
    let view = b_waits(&s, &b).await;
    let mut oversized = vec![b'Q'];
    oversized.extend_from_slice(&70_000u32.to_be_bytes());
    oversized.extend_from_slice(b"insert into isolation values ('A-oversized')");
    a.write_all(&oversized).await.unwrap();
    assert_eq!(error_fields(&read_to_close(&mut a).await).code, "08P01");
    view.await.unwrap();

    // 3. A whole statement and an impossible length in one write: nothing is forwarded.
    let mut a = a_in_transaction(addr).await;
    let view = b_waits(&s, &b).await;
    let mut batch = query("insert into isolation values ('A-pipelined')");
    batch.extend_from_slice(&[b'Q', 0, 0, 0, 2]);
    a.write_all(&batch).await.unwrap();
    assert_eq!(error_fields(&read_to_close(&mut a).await).code, "08P01");
    view.await.unwrap();

    // 4. A well-framed message that is no frontend message: PostgreSQL ends A's server
    // connection.
    let mut a = a_in_transaction(addr).await;
    let view = b_waits(&s, &b).await;
    a.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
    let got = read_to_close(&mut a).await;
    assert!(messages(&got).iter().any(|m| m[0] == b'E'), "{got:?}");
    view.await.unwrap();

    // B's session goes on, and the table holds nothing of A's.
    let row = b
        .query_one("select count(*) from isolation", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
}
