//! The run-time shape both kinds of OAuth credential share (`oauth::refresh` for login
//! credentials, `oauth::service_account` for Vertex AI's accounts): a value behind a lock of
//! its own (never the pool's) that one caller at a time refreshes, outside the lock, while
//! the others wait for that refresh and take its result; and the registry of such states by
//! pool id, kept across reloads when nothing changed.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

/// What a refresh came to, as the owner of the value judges it.
pub enum Settled<R, E> {
    /// A usable result; an earlier transient failure is forgotten.
    Ready(R),
    /// A final refusal, already recorded in the value by the owner.
    Final(E),
    /// A failure that may pass: callers that waited for this refresh get it too.
    Transient(String),
}

struct Flight<T> {
    value: T,
    refreshing: bool,
    /// Counts finished refreshes, so a waiter can tell that the one it waited for failed.
    finished: u64,
    last_failure: Option<String>,
    /// Callers waiting for the refresh under way (the single-flight tests watch it).
    waiting: usize,
}

/// A value refreshed one caller at a time.
pub struct SingleFlight<T> {
    flight: Mutex<Flight<T>>,
    done: Condvar,
}

impl<T: Clone> SingleFlight<T> {
    pub fn new(value: T) -> SingleFlight<T> {
        let flight = Flight { value, refreshing: false, finished: 0, last_failure: None, waiting: 0 };
        SingleFlight { flight: Mutex::new(flight), done: Condvar::new() }
    }

    /// Reads the value under its lock.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&lock(&self.flight).value)
    }

    /// Changes the value under its lock.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut lock(&self.flight).value)
    }

    /// How many callers wait for the refresh under way.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        lock(&self.flight).waiting
    }

    /// What the value gives now: `usable` answers from it (`None`: it must be refreshed
    /// first). A refresh under way is waited for; otherwise this caller runs `refresh` on a
    /// copy, outside the lock, and `settle` puts its outcome into the value. A caller whose
    /// awaited refresh failed transiently gets that failure (`transient`) rather than
    /// starting another.
    pub fn get<R, E, W>(
        &self,
        usable: impl Fn(&T) -> Option<Result<R, E>>,
        refresh: impl FnOnce(T) -> W,
        settle: impl FnOnce(&mut T, W) -> Settled<R, E>,
        transient: impl FnOnce(String) -> E,
    ) -> Result<R, E> {
        let mut flight = lock(&self.flight);
        let mut waited_for = None;
        loop {
            if flight.refreshing {
                waited_for = Some(flight.finished);
                flight.waiting += 1;
                flight = self.done.wait(flight).unwrap_or_else(|e| e.into_inner());
                flight.waiting -= 1;
                continue;
            }
            if let Some(answer) = usable(&flight.value) {
                return answer;
            }
            // The refresh this caller waited for failed: report that rather than start another.
            if waited_for.is_some_and(|n| n < flight.finished) {
                if let Some(why) = &flight.last_failure {
                    return Err(transient(why.clone()));
                }
            }
            flight.refreshing = true;
            let start = flight.value.clone();
            drop(flight);
            let result = refresh(start);
            flight = lock(&self.flight);
            flight.refreshing = false;
            flight.finished += 1;
            let outcome = match settle(&mut flight.value, result) {
                Settled::Ready(answer) => {
                    flight.last_failure = None;
                    Ok(answer)
                }
                Settled::Final(e) => Err(e),
                Settled::Transient(why) => {
                    flight.last_failure = Some(why.clone());
                    Err(transient(why))
                }
            };
            self.done.notify_all();
            return outcome;
        }
    }
}

/// States by pool id.
pub struct Registry<S> {
    states: Mutex<BTreeMap<String, Arc<S>>>,
}

impl<S> Default for Registry<S> {
    fn default() -> Registry<S> {
        Registry { states: Mutex::new(BTreeMap::new()) }
    }
}

impl<S> Registry<S> {
    pub fn get(&self, id: &str) -> Option<Arc<S>> {
        lock(&self.states).get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<S>> {
        lock(&self.states).values().cloned().collect()
    }

    /// Takes a reloaded list: an item whose old state `keep` accepts keeps it, any other gets
    /// what `make` builds (left out when it cannot); gone ones are dropped.
    pub fn replace<I>(
        &self,
        items: &[I],
        id: impl Fn(&I) -> String,
        keep: impl Fn(&S, &I) -> bool,
        make: impl Fn(&I) -> Option<S>,
    ) {
        let mut states = lock(&self.states);
        let mut old = std::mem::take(&mut *states);
        for item in items {
            let id = id(item);
            let kept = old.remove(&id).filter(|s| keep(s, item));
            if let Some(state) = kept.or_else(|| make(item).map(Arc::new)) {
                states.insert(id, state);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::mpsc::{Receiver, Sender};

    /// Four callers of `access` at once: the first starts a refresh, which signals `entered`
    /// and holds until `release`; the other three are let in only when `waiting` counts them
    /// all waiting for it. Answers the first caller's result and the others'.
    pub fn four_callers<R: Send>(
        access: impl Fn() -> R + Sync,
        waiting: impl Fn() -> usize,
        entered: Receiver<()>,
        release: Sender<()>,
    ) -> (R, Vec<R>) {
        std::thread::scope(|s| {
            let first = s.spawn(&access);
            entered.recv().unwrap();
            // The refresh is under way: these find it so and wait.
            let others: Vec<_> = (0..3).map(|_| s.spawn(&access)).collect();
            while waiting() < 3 {
                std::thread::yield_now();
            }
            release.send(()).unwrap();
            (first.join().unwrap(), others.into_iter().map(|h| h.join().unwrap()).collect())
        })
    }
}
