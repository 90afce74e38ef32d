//! The cache and the shared queries of `Lookups`, with a stand-in for the query. (How
//! long answers are kept is tested in `cache.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::poll;

use super::*;

fn auth(query: &str) -> AuthQuery {
    AuthQuery {
        user: "fleet".into(),
        query: query.into(),
        dbname: "postgres".into(),
    }
}

fn md5() -> Secret {
    Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d")
}

const TTL: Duration = Duration::from_secs(3600);

/// A query that lets the other logins run once, then answers `outcome`; counted in
/// `runs`.
async fn answer(runs: &AtomicUsize, outcome: Outcome) -> Outcome {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    outcome
}

#[tokio::test]
async fn concurrent_logins_share_one_query_then_the_cache() {
    let l = Lookups::default();
    let a = auth("q $1");
    let runs = AtomicUsize::new(0);
    // All twenty are polled before the first one's query answers.
    let logins = (0..20).map(|_| l.get_or_fetch(&a, TTL, "u", answer(&runs, Ok(Some(md5())))));
    let outcomes = join_all(logins).await;
    assert!(outcomes.iter().all(|o| *o == Ok(Some(md5()))));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(l.stats.found.load(Ordering::Relaxed), 1);
    assert!(l.lock().running.is_empty());
    // Later logins are answered from the cache.
    let again = l.get_or_fetch(&a, TTL, "u", answer(&runs, Ok(None))).await;
    assert_eq!(again, Ok(Some(md5())));
    assert_eq!(l.stats.cache_hits.load(Ordering::Relaxed), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // With a TTL of 0 every login asks.
    let fresh = l
        .get_or_fetch(&a, Duration::ZERO, "u", answer(&runs, Ok(None)))
        .await;
    assert_eq!(fresh, Ok(None));
    assert_eq!(l.stats.queries(), 2);
}

#[tokio::test]
async fn unknown_users_are_kept_failures_are_not() {
    let l = Lookups::default();
    let a = auth("q $1");
    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let found = l
            .get_or_fetch(&a, TTL, "ghost", answer(&runs, Ok(None)))
            .await;
        assert_eq!(found, Ok(None));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for _ in 0..2 {
        let failed = answer(&runs, Err(LookupError::Timeout(TTL)));
        assert!(l.get_or_fetch(&a, TTL, "u", failed).await.is_err());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(l.stats.failed.load(Ordering::Relaxed), 2);
    assert_eq!(l.stats.missing.load(Ordering::Relaxed), 1);
    assert_eq!(l.cached(), 1);
}

#[tokio::test]
async fn another_query_starts_with_an_empty_cache() {
    let l = Lookups::default();
    let runs = AtomicUsize::new(0);
    let found = || answer(&runs, Ok(Some(md5())));
    l.get_or_fetch(&auth("q $1"), TTL, "u", found())
        .await
        .unwrap();
    l.get_or_fetch(&auth("q $1"), TTL, "v", found())
        .await
        .unwrap();
    assert_eq!(l.cached(), 2);
    l.get_or_fetch(&auth("r $1"), TTL, "u", found())
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(l.cached(), 1);
}

#[tokio::test]
async fn a_login_that_leaves_hands_the_query_over() {
    let l = Lookups::default();
    let a = auth("q $1");
    let runs = AtomicUsize::new(0);
    let stuck = async {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Outcome>().await
    };
    let mut first = Box::pin(l.get_or_fetch(&a, TTL, "u", stuck));
    assert!(poll!(&mut first).is_pending());
    let mut second = Box::pin(l.get_or_fetch(&a, TTL, "u", answer(&runs, Ok(Some(md5())))));
    assert!(poll!(&mut second).is_pending());
    // The first login gives up (its client left): the second runs its own query.
    drop(first);
    assert_eq!(second.await, Ok(Some(md5())));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(l.stats.queries(), 1);
    assert!(l.lock().running.is_empty());

    // Every login gone before an answer: nothing is left behind.
    let mut gone = Box::pin(l.get_or_fetch(&a, TTL, "v", std::future::pending()));
    assert!(poll!(&mut gone).is_pending());
    drop(gone);
    assert!(l.lock().running.is_empty());
}
