//! The key pool: which keys each provider has, which one to try next, and how many requests
//! each carries. A plain data structure with no locks, clock or I/O inside; `AppState` keeps
//! it behind one mutex and every access is one short decide-and-record block.
//!
//! For now keys are simply used in turn (round robin, each key at most once per request); the
//! resilience engine (cooldowns, concurrency limits, error classes) grows here.

use crate::config::Config;
use crate::keys::Secret;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct KeyState {
    pub id: String,
    pub secret: Secret,
    pub in_flight: u32,
}

#[derive(Debug, Default)]
struct ProviderKeys {
    keys: Vec<KeyState>,
    /// Where the next request starts its round.
    cursor: usize,
}

#[derive(Debug, Default)]
pub struct KeyPool {
    providers: BTreeMap<String, ProviderKeys>,
}

/// A key handed out for one attempt.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub secret: Secret,
}

impl KeyPool {
    pub fn new(config: &Config) -> KeyPool {
        let mut pool = KeyPool::default();
        pool.sync(config);
        pool
    }

    /// Brings the key set in line with a (re)loaded config; keys that stay keep their state.
    pub fn sync(&mut self, config: &Config) {
        let mut providers = BTreeMap::new();
        for p in config.configured() {
            let mut old = self.providers.remove(&p.name).unwrap_or_default();
            let keys = p
                .keys
                .iter()
                .map(|secret| {
                    let id = secret.id(&p.name);
                    match old.keys.iter().position(|k| k.id == id) {
                        Some(i) => old.keys.swap_remove(i),
                        None => KeyState { id, secret: secret.clone(), in_flight: 0 },
                    }
                })
                .collect();
            providers.insert(p.name.clone(), ProviderKeys { keys, cursor: old.cursor });
        }
        self.providers = providers;
    }

    /// The order in which this request tries the provider's keys; the next request starts one
    /// further along, so load spreads over the keys.
    pub fn rotation(&mut self, provider: &str) -> Vec<Candidate> {
        let Some(p) = self.providers.get_mut(provider) else {
            return Vec::new();
        };
        let n = p.keys.len();
        if n == 0 {
            return Vec::new();
        }
        let start = p.cursor % n;
        p.cursor = (start + 1) % n;
        (0..n)
            .map(|i| &p.keys[(start + i) % n])
            .map(|k| Candidate { id: k.id.clone(), secret: k.secret.clone() })
            .collect()
    }

    /// Marks one more request on the key; false when the key is gone (after a reload).
    pub fn acquire(&mut self, provider: &str, id: &str) -> bool {
        match self.key_mut(provider, id) {
            Some(k) => {
                k.in_flight += 1;
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, provider: &str, id: &str) {
        if let Some(k) = self.key_mut(provider, id) {
            k.in_flight = k.in_flight.saturating_sub(1);
        }
    }

    pub fn keys(&self, provider: &str) -> &[KeyState] {
        self.providers.get(provider).map_or(&[], |p| &p.keys)
    }

    fn key_mut(&mut self, provider: &str, id: &str) -> Option<&mut KeyState> {
        self.providers.get_mut(provider)?.keys.iter_mut().find(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LauncherConfig;
    use std::path::Path;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_env(Path::new("."), &env, LauncherConfig::default()).unwrap()
    }

    #[test]
    fn rotation_starts_one_further_each_time() {
        let mut pool =
            KeyPool::new(&config(&[("OPENAI_API_KEY_1", "a"), ("OPENAI_API_KEY_2", "b"), ("OPENAI_API_KEY_3", "c")]));
        let firsts: Vec<String> = (0..4).map(|_| pool.rotation("openai")[0].secret.expose().to_string()).collect();
        assert_eq!(firsts, ["a", "b", "c", "a"]);
        assert_eq!(pool.rotation("openai").len(), 3);
        assert!(pool.rotation("groq").is_empty());
    }

    #[test]
    fn in_flight_survives_a_reload_of_the_same_keys() {
        let cfg = config(&[("OPENAI_API_KEY", "a")]);
        let mut pool = KeyPool::new(&cfg);
        let id = pool.rotation("openai")[0].id.clone();
        assert!(pool.acquire("openai", &id));
        pool.sync(&cfg);
        assert_eq!(pool.keys("openai")[0].in_flight, 1);
        pool.release("openai", &id);
        pool.release("openai", &id);
        assert_eq!(pool.keys("openai")[0].in_flight, 0);
        pool.sync(&config(&[]));
        assert!(!pool.acquire("openai", &id));
    }
}
