//! Endpoints reach only the nodes their role allows, and leastconn spreads sessions.

mod common;

use std::collections::HashMap;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_reaches_only_replicas_and_writer_only_the_primary() {
    let s = setup(2, "", "", "").await;
    let primary_port = s.cluster.port(0);
    let mut seen = HashMap::new();
    for _ in 0..8 {
        let c = app(s.addr("reader")).await;
        let (in_recovery, port) = whereami(&c).await;
        assert!(in_recovery, "reader session on a node not in recovery");
        assert_ne!(port, primary_port);
        *seen.entry(port).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "both replicas take reader sessions: {seen:?}"
    );
    for _ in 0..4 {
        let c = app(s.addr("writer")).await;
        assert_eq!(whereami(&c).await, (false, primary_port));
        c.batch_execute("create table if not exists w(i int); insert into w values (1)")
            .await
            .expect("writes work through the writer endpoint");
    }
    let c = app(s.addr("any")).await;
    whereami(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_spreads_32_sessions_evenly() {
    let s = setup(2, "", "", "").await;
    let mut clients = Vec::new();
    for _ in 0..32 {
        clients.push(app(s.addr("reader")).await);
    }
    let mut per_port: HashMap<u16, usize> = HashMap::new();
    for c in &clients {
        *per_port.entry(whereami(c).await.1).or_default() += 1;
    }
    let counts: Vec<usize> = per_port.values().copied().collect();
    assert_eq!(counts.len(), 2, "{per_port:?}");
    let (max, min) = (*counts.iter().max().unwrap(), *counts.iter().min().unwrap());
    assert!(
        max * 100 <= min * 120,
        "busiest replica has over 20% more sessions: {per_port:?}"
    );
    // pgfleet's own count agrees with the servers'.
    let main = s.main();
    let reader = main.endpoint("reader").unwrap().slot;
    let counted: usize = main.nodes().iter().map(|n| n.sessions(reader)).sum();
    assert_eq!(counted, 32);
}

/// A pgbench script that fails the run (division by zero) if a transaction lands on a
/// node whose recovery state is not `expect_recovery`.
fn guard_script(dir: &std::path::Path, expect_recovery: bool) -> std::path::PathBuf {
    let wrong = if expect_recovery {
        "\\if :rec\n\\else\nselect 1/0;\n\\endif"
    } else {
        "\\if :rec\nselect 1/0;\n\\endif"
    };
    let text = format!(
        "\\set aid random(1, 100000)\nselect pg_is_in_recovery() as rec \\gset\n{wrong}\nselect abalance from pgbench_accounts where aid = :aid;\n"
    );
    let path = dir.join(format!("guard-{expect_recovery}.sql"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_each_endpoint_stays_on_its_role() {
    let s = setup(2, "", "", "").await;
    blocking(|| s.cluster.pgbench_init(1)).unwrap();
    for (endpoint, expect_recovery) in [("reader", true), ("writer", false)] {
        let addr = s.addr(endpoint);
        let script = guard_script(s.dir.path(), expect_recovery);
        let (ok, out) = blocking(|| {
            run(std::process::Command::new("pgbench")
                .args(["-n", "-c", "8", "-j", "2", "-t", "200", "-h"])
                .arg(addr.ip().to_string())
                .arg("-p")
                .arg(addr.port().to_string())
                .args(["-U", "app", "-f"])
                .arg(&script)
                .arg("app")
                .env("PGPASSWORD", "app"))
        });
        assert!(ok, "pgbench through {endpoint}: {out}");
        assert!(
            out.contains("number of transactions actually processed: 1600/1600"),
            "{out}"
        );
    }
}
