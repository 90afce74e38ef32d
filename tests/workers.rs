//! Clients spread over worker threads share one pool: a worker's clients use server
//! connections another worker opened, and every answer reaches the right client.

mod common;

use std::collections::HashSet;

use common::*;

/// Threads of this process whose name starts with `prefix` (names are cut to 15 bytes).
fn threads_named(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_three_workers_share_two_server_connections() {
    let pool = "pool_mode = \"transaction\"\ndefault_pool_size = 1";
    let s = setup(2, "workers = 3", "", pool).await;
    assert_eq!(s.fleet.state.workers.len(), 3);
    assert!(threads_named("pgfleet-worker-") >= 3);
    let reader = s.addr("reader");
    // Twelve clients, spread by the kernel over the three workers. With one server
    // connection per replica, a worker's clients use connections another worker
    // opened.
    let mut tasks = Vec::new();
    for client in 0..12 {
        tasks.push(tokio::spawn(async move {
            let c = app(reader).await;
            let mut pids = HashSet::new();
            for i in 0..40 {
                let marker = format!("{client}-{i}");
                let sql = format!("select pg_backend_pid()::text, '{marker}'");
                let rows = c.simple_query(&sql).await.unwrap();
                let row = rows
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                        _ => None,
                    })
                    .expect("a row");
                assert_eq!(row.get(1), Some(marker.as_str()), "another client's answer");
                pids.insert(row.get(0).unwrap_or_default().to_owned());
            }
            pids
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert!(
        all.len() <= 2,
        "{} server connections for a pool of one per replica: {all:?}",
        all.len()
    );
    let open: usize = s.main().pools.all().iter().map(|p| p.open()).sum();
    assert!(open <= 2, "{open} server connections open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_spread_evenly_over_the_workers() {
    let pool = "pool_mode = \"transaction\"\ndefault_pool_size = 8";
    let s = setup(1, "workers = 2", "", pool).await;
    blocking(|| s.cluster.pgbench_init(1)).unwrap();
    // Sixteen clients start at once: the worker that runs first opens most of the
    // eight connections. Borrowing from the richer worker moves them until the two
    // hold the same number.
    let args = ["-S", "-c", "16", "-j", "2", "-T", "3"];
    blocking(|| pgbench_finish(pgbench_spawn(s.addr("reader"), &args)));
    let main = s.main();
    let pools = main.pools.all();
    let pool = pools
        .iter()
        .find(|p| p.open() > 0)
        .expect("the replica's pool");
    let per_worker = [pool.open_on_worker(0), pool.open_on_worker(1)];
    assert_eq!(per_worker.iter().sum::<usize>(), pool.open());
    assert!(
        per_worker[0].abs_diff(per_worker[1]) <= 1,
        "server connections per worker: {per_worker:?}"
    );
}
