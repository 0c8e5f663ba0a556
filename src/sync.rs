//! Locking without poison: every mutex in keyrelay guards counters, timestamps or caches that
//! stay consistent even if a holder panicked, so a panic in one request must not turn every
//! later lock into another panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, recovering from poisoning: the guarded data are counters and timestamps
/// that stay consistent even if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
