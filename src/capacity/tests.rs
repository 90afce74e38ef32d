//! `Capacity`: limits, order of waiters, resizing, contention.

use super::*;
use std::sync::atomic::AtomicUsize;

fn soon(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(ms)
}

#[test]
fn shrinking_below_the_permits_held_takes_effect_as_they_come_back() {
    let c = Capacity::new(3);
    let a = c.try_acquire().unwrap();
    let b = c.try_acquire().unwrap();
    c.resize(1);
    assert_eq!(c.in_use(), 2);
    assert!(c.try_acquire().is_none());
    drop(a);
    // The permit given back paid the debt: still none free.
    assert!(c.try_acquire().is_none());
    assert_eq!(c.in_use(), 1);
    drop(b);
    let only = c.try_acquire().unwrap();
    assert!(c.try_acquire().is_none());
    drop(only);
    assert_eq!(c.in_use(), 0);
}

#[test]
fn growing_cancels_debt_first() {
    let c = Capacity::new(2);
    let a = c.try_acquire().unwrap();
    let b = c.try_acquire().unwrap();
    c.resize(0);
    c.resize(3);
    assert_eq!(c.size(), 3);
    assert_eq!(c.in_use(), 2);
    let third = c.try_acquire().unwrap();
    assert!(c.try_acquire().is_none());
    drop((a, b, third));
    assert_eq!(c.in_use(), 0);
    let all: Vec<_> = (0..3).map(|_| c.try_acquire().unwrap()).collect();
    assert!(c.try_acquire().is_none());
    drop(all);
}

#[tokio::test]
async fn a_permit_given_back_goes_to_the_first_waiter_not_to_a_newcomer() {
    let c = Capacity::new(1);
    let held = c.try_acquire().unwrap();
    let (c1, c2) = (c.clone(), c.clone());
    let first = tokio::spawn(async move { c1.acquire_until(soon(5_000)).await });
    tokio::task::yield_now().await;
    let second = tokio::spawn(async move { c2.acquire_until(soon(5_000)).await });
    tokio::task::yield_now().await;
    drop(held);
    // The freed permit is the first waiter's: a newcomer finds none.
    assert!(c.try_acquire().is_none());
    let p1 = first.await.unwrap().expect("first waiter served");
    assert!(!second.is_finished());
    drop(p1);
    let p2 = second.await.unwrap().expect("second waiter served");
    assert_eq!(c.in_use(), 1);
    drop(p2);
    assert_eq!(c.in_use(), 0);
    assert!(c.try_acquire().is_some());
}

#[tokio::test]
async fn a_waiter_that_times_out_leaves_the_queue_and_loses_no_permit() {
    let c = Capacity::new(1);
    let held = c.try_acquire().unwrap();
    assert!(c.acquire_until(soon(20)).await.is_none());
    // Its place in the queue is skipped: the permit given back becomes free.
    drop(held);
    assert_eq!(c.in_use(), 0);
    let again = c.try_acquire().expect("free after the waiter left");
    drop(again);
    // Raw takes and gives count the same permits.
    assert!(c.try_take());
    assert!(!c.try_take());
    assert!(!c.take_until(soon(10)).await);
    c.give();
    assert!(c.take_until(soon(10)).await);
    c.give();
    assert_eq!(c.in_use(), 0);
}

#[tokio::test]
async fn growing_serves_waiters() {
    let c = Capacity::new(0);
    let c1 = c.clone();
    let waiter = tokio::spawn(async move { c1.acquire_until(soon(5_000)).await });
    tokio::task::yield_now().await;
    c.resize(1);
    let p = waiter.await.unwrap().expect("served by the grown limit");
    assert_eq!(c.in_use(), 1);
    drop(p);
    assert_eq!(c.in_use(), 0);
}

/// A permit given back toward a worker goes to that worker's waiter, though a
/// waiter of another worker came first; with none of its own waiting, to the other.
#[test]
fn a_permit_given_back_toward_a_worker_goes_to_that_workers_waiter_first() {
    let workers = crate::workers::Workers::start(2).unwrap();
    let c = Capacity::new(1);
    assert!(c.try_take());
    let (tx, served) = std::sync::mpsc::channel();
    for (n, worker) in [1usize, 0].into_iter().enumerate() {
        let (c2, tx) = (c.clone(), tx.clone());
        workers.spawn_on(worker, async move {
            let taken = c2.take_until(soon(10_000)).await;
            tx.send((worker, taken)).unwrap();
        });
        let queued = std::time::Instant::now();
        while lock(&c.inner.queue).len() <= n {
            assert!(queued.elapsed() < Duration::from_secs(10), "never queued");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (list_tx, list) = std::sync::mpsc::channel();
    workers.spawn_on(0, async move { list_tx.send(workers::list()).unwrap() });
    let wait = Duration::from_secs(10);
    let worker0 = list.recv_timeout(wait).unwrap();
    assert_ne!(worker0, workers::list());
    // From this thread, toward worker 0.
    c.give_to(worker0);
    assert_eq!(served.recv_timeout(wait), Ok((0, true)));
    // Worker 0's waiter gives back on its own thread: the other worker's turn.
    let c2 = c.clone();
    workers.spawn_on(0, async move { c2.give() });
    assert_eq!(served.recv_timeout(wait), Ok((1, true)));
    c.give();
    assert_eq!(c.in_use(), 0);
}

/// Threads taking, waiting and timing out at once never hold more permits than the
/// limit, and every permit is back at the end.
#[test]
fn permits_are_never_exceeded_nor_lost_under_contention() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let c = Capacity::new(3);
    let held = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (c, held, most) = (c.clone(), held.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..2_000u64 {
                    let permit = match (t + i) % 3 {
                        0 => c.try_acquire(),
                        1 => c.acquire_until(soon(1)).await,
                        _ => c.acquire_until(soon(1_000)).await,
                    };
                    let Some(permit) = permit else { continue };
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    held.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert!(most.load(Ordering::SeqCst) <= 3);
    assert_eq!(c.in_use(), 0);
    let all: Vec<_> = (0..3).map(|_| c.try_acquire().unwrap()).collect();
    assert!(c.try_acquire().is_none());
    drop(all);
}
