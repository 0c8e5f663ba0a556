//! The key pool (`pool`), its report (`report`), its file (`usage_file`) and the state it
//! shares with other instances (`shared`).

pub mod pool;
pub mod report;
pub mod shared;
pub mod usage_file;

use crossbeam_channel::Receiver;
use pool::KeyPool;
use std::sync::Mutex;

/// What the threads around the pool (the `key_usage.json` writer, the shared state's renewal
/// and subscriber threads) need of whoever holds it: the pool behind its lock, the condition
/// variable waiting requests sleep on, and the signal that there is something to save.
/// `AppState` is the one implementation; the trait keeps `keys` below `state`.
pub trait PoolHost: Send + Sync {
    fn pool(&self) -> &Mutex<KeyPool>;
    /// Wakes the requests waiting for a key.
    fn wake_waiters(&self);
    /// Tells the `key_usage.json` writer there is something to save; never blocks.
    fn usage_changed(&self);
    /// Where `usage_changed` arrives.
    fn usage_signals(&self) -> &Receiver<()>;
}
