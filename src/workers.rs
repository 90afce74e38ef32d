//! The threads that serve clients: `general.workers` of them (one per core by default),
//! each running its own single-threaded tokio runtime.
//!
//! Each worker accepts clients on its own socket of every endpoint's `SO_REUSEPORT`
//! group (see `fleet::launch::endpoint`), and a client stays on the worker that
//! accepted it for its whole life, with every wake-up of its task on that thread. The
//! server connections it opens are registered with the same thread's event loop, and
//! the pools keep idle connections per worker (see `pool::idle`), so in the common case
//! a transaction runs on one thread from the client's query to the server's answer: no
//! wake-up crosses threads, no task moves between cores. tokio's multi-thread runtime,
//! with work stealing, spent more CPU per transaction on wake-ups across its threads
//! (docs/performance.md).
//!
//! Everything else (health checks, discovery, janitors, the admin console, HTTP,
//! reloads, the hand-over) runs on the runtime that started pgfleet.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// This thread's worker index, on worker threads.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The most workers any `Workers` of this process has had.
static MOST: AtomicUsize = AtomicUsize::new(0);

/// How many per-thread lists a structure keeps when it keeps one per worker (idle
/// server connections, waiters for a slot): one for threads that are not workers, and
/// one per worker up to 15; workers beyond share them.
pub const LISTS: usize = 16;

/// The index of the worker running on this thread, if it is one.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// This thread's list among `LISTS`: 0 off the workers, `1 + worker` on them.
pub fn list() -> usize {
    current().map_or(0, list_of)
}

/// Worker `worker`'s list among `LISTS`.
pub fn list_of(worker: usize) -> usize {
    1 + worker % (LISTS - 1)
}

/// How many of the `LISTS` can be in use in this process.
pub fn lists_in_use() -> usize {
    (1 + most()).min(LISTS)
}

/// The most worker threads started in this process (worker indices are below it).
pub fn most() -> usize {
    MOST.load(Ordering::Relaxed)
}

/// The worker threads of one running pgfleet. Dropping it lets them end: each drops
/// its runtime (and any task still on it) once told to stop.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropped with `Workers`: each worker's `block_on` ends.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` worker threads (0 = one per core), named `pgfleet-worker-<i>`.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = match n {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        MOST.fetch_max(n, Ordering::Relaxed);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            // I/O and timers only: signals and child processes are the starting
            // runtime's, and their drivers would run at each of the worker's turns.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("pgfleet-worker-{i}"))
                .spawn(move || {
                    INDEX.with(|x| x.set(Some(i)));
                    // Ends when the sender is dropped; the runtime, and what still runs
                    // on it, is dropped here, outside any async context.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Workers {
            handles,
            _stop: stops,
        })
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `task` on worker `i` (modulo their number).
    pub fn spawn_on<F>(&self, i: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // After the workers stopped the task is dropped unrun (pgfleet is stopping).
        drop(self.handles[i % self.handles.len()].spawn(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_worker_they_are_given() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.len(), 3);
        assert!(most() >= 3);
        assert_eq!(current(), None);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..6 {
            let tx = tx.clone();
            workers.spawn_on(i, async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((current(), name)).unwrap();
            });
        }
        let mut seen: Vec<_> = (0..6).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        let want: Vec<_> = [0, 0, 1, 1, 2, 2]
            .into_iter()
            .map(|i| (Some(i), Some(format!("pgfleet-worker-{i}"))))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn dropping_the_workers_ends_their_threads() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A task that never ends holds `tx` until its runtime is dropped.
        workers.spawn_on(1, async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        let gone = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(gone, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    }
}
