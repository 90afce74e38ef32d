//! A pool's idle server connections, one LIFO list per worker thread.
//!
//! A connection is registered with the event loop of the thread that opened it (its
//! `home`), and goes back to that thread's list. A client takes from its own worker's
//! list first, so its transaction's wake-ups stay on one thread; only when that list is
//! empty does it take one from another list. It then uses the connection where it is
//! registered (its wake-ups cross threads), unless that home has at least two more of
//! the pool's connections than the client's worker: then the connection moves to the
//! client's event loop for good. So the connections spread evenly over the workers,
//! as the kernel spreads the clients, whichever worker happened to open them (under a
//! burst of new clients, one worker may open nearly all). Connections opened outside
//! the workers move to the first worker that takes them. A TLS connection cannot move.
//! Each list is a stack, as PgBouncer's, so that connections beyond the load stay
//! unused and idle out.

use std::sync::Mutex;

use super::opens::Opens;
use super::{lock, Conns, ServerConn};
use crate::workers::{self, LISTS};

/// The idle connections of one pool.
#[derive(Debug, Default)]
pub(super) struct Idle {
    lists: [Mutex<Conns>; LISTS],
}

impl Idle {
    /// The most recently used connection of this thread's list, else of another list;
    /// that one moves to this thread's event loop when its home has at least two
    /// more of the pool's connections (`opens`) than this thread's, or is not a
    /// worker's.
    pub(super) fn pop(&self, opens: &Opens) -> Option<Box<ServerConn>> {
        let own = workers::list();
        if let Some(conn) = lock(&self.lists[own]).pop() {
            return Some(conn);
        }
        let (from, mut conn) = (0..workers::lists_in_use())
            .filter(|&i| i != own)
            .find_map(|i| lock(&self.lists[i]).pop().map(|c| (i, c)))?;
        // Moving only from a richer home to a poorer one spreads the connections
        // evenly over the workers (as the kernel spreads the clients) and never back
        // and forth: when clients outnumber the connections, a move at every borrow
        // cost more (two `epoll_ctl`) than the wake-ups across threads it saved. A
        // failed move leaves the connection closed: the checkout finds it so and
        // takes another.
        let richer = from == 0 || opens.at(own) + 2 <= opens.at(from);
        if own != 0 && richer && matches!(conn.stream.rehome(), Ok(true)) {
            conn.open.move_to(own);
        }
        Some(conn)
    }

    /// Puts `conn` on top of its home's list.
    pub(super) fn push(&self, conn: Box<ServerConn>) {
        lock(&self.lists[conn.open.home()]).push(conn);
    }

    /// How many connections are idle.
    pub(super) fn len(&self) -> usize {
        self.lists.iter().map(|l| lock(l).len()).sum()
    }

    /// The backend pids of the idle connections.
    pub(super) fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for list in &self.lists {
            pids.extend(lock(list).iter().map(|c| c.backend_pid));
        }
        pids
    }

    /// Removes the connections `remove` says yes to (asked once per connection, list
    /// by list); returns them.
    pub(super) fn take_where(&self, mut remove: impl FnMut(&ServerConn) -> bool) -> Conns {
        let mut out = Vec::new();
        for list in &self.lists {
            let mut idle = lock(list);
            let mut i = 0;
            while i < idle.len() {
                if remove(&idle[i]) {
                    out.push(idle.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        out
    }
}
