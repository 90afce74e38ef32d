//! The waiters of a `Capacity`: one FIFO list per worker thread.
//!
//! A permit given back toward a worker goes to the first waiter of that worker when
//! there is one. A pool's slot is given back toward the worker whose event loop the
//! returned server connection is registered with (its `home`), which is the worker
//! whose idle list it goes back to (`pool::idle`): the waiter served takes that very
//! connection, and its transaction runs on one thread. Served on another worker, it
//! would take the connection from there, and each of the connection's events would
//! then wake a second thread.
//!
//! Order between workers is kept within a bound: the first waiter of another worker
//! that came earlier is passed over at most `MAX_PASSED` times by later waiters, then
//! served before any waiter of the worker the permit comes back toward. Within a
//! worker the order is strict.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::workers::{self, LISTS};

/// How many hand-offs to a later waiter of another worker the first waiter of a list
/// lets pass before it is served first.
const MAX_PASSED: u32 = 4;

#[derive(Debug, Default)]
pub(super) struct Queue {
    lists: [VecDeque<Waiter>; LISTS],
    /// The order of arrival of the next waiter.
    next: u64,
}

#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<()>,
    arrived: u64,
    /// Hand-offs to later waiters of other workers since it became its list's first.
    passed: u32,
}

impl Queue {
    pub(super) fn is_empty(&self) -> bool {
        self.lists.iter().all(VecDeque::is_empty)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lists.iter().map(VecDeque::len).sum()
    }

    /// Adds a waiter of this thread's worker.
    pub(super) fn push(&mut self, tx: oneshot::Sender<()>) {
        self.push_to(workers::list(), tx);
    }

    fn push_to(&mut self, list: usize, tx: oneshot::Sender<()>) {
        let arrived = self.next;
        self.next += 1;
        self.lists[list % LISTS].push_back(Waiter {
            tx,
            arrived,
            passed: 0,
        });
    }

    /// Removes the waiter a permit given back toward list `here` (`workers::list`)
    /// goes to.
    pub(super) fn pop_for(&mut self, here: usize) -> Option<oneshot::Sender<()>> {
        let here = here % LISTS;
        // The oldest first waiter, and the oldest of those passed over enough.
        let (mut oldest, mut starved) = (None::<(u64, usize)>, None::<(u64, usize)>);
        for (i, list) in self.lists.iter().enumerate() {
            let Some(w) = list.front() else { continue };
            if oldest.is_none_or(|(a, _)| w.arrived < a) {
                oldest = Some((w.arrived, i));
            }
            if w.passed >= MAX_PASSED && starved.is_none_or(|(a, _)| w.arrived < a) {
                starved = Some((w.arrived, i));
            }
        }
        let (_, oldest) = oldest?;
        let from = match (self.lists[here].front().map(|w| w.arrived), starved) {
            (None, _) => oldest,
            (Some(_), Some((_, i))) => i,
            (Some(mine), None) => {
                // Every earlier first waiter of another worker is passed over once more.
                for list in &mut self.lists {
                    if let Some(w) = list.front_mut().filter(|w| w.arrived < mine) {
                        w.passed += 1;
                    }
                }
                here
            }
        };
        self.lists[from].pop_front().map(|w| w.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue with waiters on the given lists, in that order of arrival, and their
    /// receivers.
    fn queue(lists: &[usize]) -> (Queue, Vec<oneshot::Receiver<()>>) {
        let mut q = Queue::default();
        let mut rxs = Vec::new();
        for &list in lists {
            let (tx, rx) = oneshot::channel();
            q.push_to(list, tx);
            rxs.push(rx);
        }
        (q, rxs)
    }

    /// Which waiter (by order of arrival) a permit given back on `list` goes to.
    fn serve(q: &mut Queue, rxs: &mut [oneshot::Receiver<()>], list: usize) -> Option<usize> {
        q.pop_for(list)?.send(()).unwrap();
        rxs.iter_mut().position(|rx| rx.try_recv().is_ok())
    }

    #[test]
    fn within_one_worker_the_order_is_strict() {
        let (mut q, mut rxs) = queue(&[1, 1, 1]);
        let served: Vec<_> = (0..3).map(|_| serve(&mut q, &mut rxs, 1)).collect();
        assert_eq!(served, [Some(0), Some(1), Some(2)]);
        assert!(q.is_empty());
        assert!(q.pop_for(1).is_none());
    }

    #[test]
    fn a_permit_goes_to_a_waiter_of_its_own_worker_first() {
        let (mut q, mut rxs) = queue(&[2, 1, 2]);
        assert_eq!(serve(&mut q, &mut rxs, 1), Some(1));
        // No waiter of worker 1 left: the oldest of the others.
        assert_eq!(serve(&mut q, &mut rxs, 1), Some(0));
        // Off the workers (list 0), nobody is local: strict order.
        assert_eq!(serve(&mut q, &mut rxs, 0), Some(2));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn an_older_waiter_of_another_worker_is_passed_over_a_bounded_number_of_times() {
        let n = MAX_PASSED as usize;
        // Worker 1's first waiter came before worker 2's: serving it passes nobody over.
        // Worker 1's later ones each pass worker 2's waiter over, MAX_PASSED times.
        let mut lists = vec![1, 2];
        lists.extend(std::iter::repeat_n(1, n + 1));
        let (mut q, mut rxs) = queue(&lists);
        let served: Vec<_> = (0..n + 3).map(|_| serve(&mut q, &mut rxs, 1)).collect();
        let mut want: Vec<_> = std::iter::once(0).chain(2..n + 2).map(Some).collect();
        want.extend([Some(1), Some(n + 2)]);
        assert_eq!(served, want);
        assert!(q.is_empty());
    }

    #[test]
    fn with_three_workers_each_earlier_waiter_is_passed_over_a_bounded_number_of_times() {
        let n = MAX_PASSED as usize;
        // Workers 2 and 3 each have a waiter that came before worker 1's.
        let mut lists = vec![2, 3];
        lists.extend(std::iter::repeat_n(1, 2 * n));
        let (mut q, mut rxs) = queue(&lists);
        let served: Vec<_> = (0..n + 2).map(|_| serve(&mut q, &mut rxs, 1)).collect();
        // Both are passed over by each of worker 1's first n, then served, in order.
        let mut want: Vec<_> = (2..n + 2).map(Some).collect();
        want.extend([Some(0), Some(1)]);
        assert_eq!(served, want);
    }
}
