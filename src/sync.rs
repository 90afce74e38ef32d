//! Locking, the one way every module does it.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: no locked section in pgfleet leaves its data half
/// changed at a point that can panic, so a task that panicked while holding a lock must
/// not take down every other task that needs it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
