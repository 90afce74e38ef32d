//! Messages larger than a read buffer are passed on as they arrive: rows, COPY data,
//! Binds and (in session mode) query text, around the size where pgfleet starts passing
//! them on (64 KiB) and well past it, in both pool modes. Every byte arrives in order,
//! the statements a Bind names are rewritten on the way, and the connection serves the
//! next transaction cleanly.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};

const TXN: &str = "pool_mode = \"transaction\"\ndefault_pool_size = 1";
const SESSION: &str = "default_pool_size = 2";

/// Sizes just under, at and past the point where pgfleet passes a message on as it
/// comes, and a few MiB.
const SIZES: [usize; 5] = [(64 << 10) - 20, (64 << 10) + 1, 200_003, 1 << 20, 5 << 20];

/// A value whose every byte tells its place (a lost or moved piece shows).
fn value(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_parameters_and_rows_arrive_whole() {
    for pool in [TXN, SESSION] {
        let s = setup(0, "", "", pool).await;
        let c = app(s.addr("writer")).await;
        // A named statement: in transaction mode each Bind names pgfleet's statement.
        let echo = c
            .prepare("select $1::bytea, length($1::bytea)")
            .await
            .unwrap();
        for len in SIZES {
            let v = value(len);
            let row = c.query_one(&echo, &[&v]).await.unwrap();
            let (back, n): (Vec<u8>, i32) = (row.get(0), row.get(1));
            assert_eq!(n as usize, len, "{pool}: the server got {n} of {len} bytes");
            assert!(back == v, "{pool}: {len} bytes came back changed");
        }
        // Text rows as well (DataRow in text format, hex).
        let rows = c
            .simple_query("select repeat('ab', 3 << 20)")
            .await
            .unwrap();
        let text = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::len),
            _ => None,
        });
        assert_eq!(text, Some(6 << 20), "{pool}");
        assert!(!whereami(&c).await.0, "{pool}: the connection goes on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_copy_data_arrives_whole_both_ways() {
    for pool in [TXN, SESSION] {
        let s = setup(0, "", "", pool).await;
        let c = app(s.addr("writer")).await;
        c.batch_execute("create table big(i int, b bytea)")
            .await
            .unwrap();
        let mut expected = Vec::new();
        {
            let sink = c.copy_in("copy big from stdin").await.unwrap();
            futures_util::pin_mut!(sink);
            for (i, len) in SIZES.iter().enumerate() {
                // One CopyData per row: "i\t\\x<hex>\n".
                let hex: String = value(*len).iter().map(|b| format!("{b:02x}")).collect();
                let line = format!("{i}\t\\\\x{hex}\n");
                expected.extend_from_slice(line.as_bytes());
                sink.send(bytes::Bytes::from(line)).await.unwrap();
            }
            let n = sink.as_mut().finish().await.unwrap();
            assert_eq!(n as usize, SIZES.len(), "{pool}");
        }
        let stream = c
            .copy_out("copy (select * from big order by i) to stdout")
            .await
            .unwrap();
        futures_util::pin_mut!(stream);
        let mut back = Vec::new();
        while let Some(chunk) = stream.next().await {
            back.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(back.len(), expected.len(), "{pool}");
        assert!(back == expected, "{pool}: COPY came back changed");
        let sum: i64 = c
            .query_one("select sum(length(b)) from big", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sum as usize, SIZES.iter().sum::<usize>(), "{pool}");
        c.batch_execute("drop table big").await.unwrap();
    }
}

/// Session mode passes a long query's text on once its first words are in; RESET is
/// still seen (the session's settings are applied again after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_query_text_in_session_mode() {
    let s = setup(0, "", "", SESSION).await;
    let addr = s.addr("writer");
    let (c, conn) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .application_name("from-startup")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for len in SIZES {
        let sql = format!("select length('{}')", "x".repeat(len));
        let rows = c.simple_query(&sql).await.unwrap();
        let got = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(got, Some(len.to_string()));
    }
    // A RESET padded past the point where text passes on: read whole, and followed
    // (the startup value comes back, not the server's default).
    c.batch_execute("set application_name = 'changed'")
        .await
        .unwrap();
    let padded = format!("{}reset application_name", " ".repeat(100 << 10));
    c.batch_execute(&padded).await.unwrap();
    let name: String = c
        .query_one("show application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "from-startup");
}
