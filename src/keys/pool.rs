//! The key pool: a pure state machine. It decides which key a request gets and records what
//! happened, with the time passed in (`now`, ms since the epoch) and no locks, clock or I/O
//! inside, so every rule below is unit-tested without sleeping. `AppState` keeps it behind one
//! mutex, and every access is one short decide-and-record block (resilience.md).
//!
//! Per key: requests in flight per model; per (key, model) a cooldown with its ladder step
//! and a half-open flag; a key-wide lockout; today's counters per model and lifetime totals.

use crate::clock::{self, DAY, HOUR, MINUTE, SECOND};
use crate::config::{Config, Rotation};
use crate::keys::Secret;
use crate::providers::errors::QUOTA_HINT_MS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Consecutive key-attributable failures of one (key, model) without a hint: 10 s, 30 s,
/// 60 s, 120 s, then 2 h.
const LADDER: [u64; 5] = [10 * SECOND, 30 * SECOND, 60 * SECOND, 120 * SECOND, 2 * HOUR];
/// Auth failures lock the whole key out, longer each time within a day.
const LOCKOUT_LADDER: [u64; 4] = [5 * MINUTE, 15 * MINUTE, HOUR, 4 * HOUR];
/// After the same-key retry of a transient failure; not counted on the ladder.
const TRANSIENT_COOLDOWN: u64 = 30 * SECOND;
/// Three models cooling this long lock the key out for `LONG_COOLDOWN_LOCKOUT`.
const LONG_COOLDOWN: u64 = 2 * HOUR;
const LONG_COOLDOWN_LOCKOUT: u64 = 5 * MINUTE;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success {
        prompt_tokens: u64,
        completion_tokens: u64,
    },
    /// `retry_after` is the upstream's hint in ms, when it gave one.
    RateLimited {
        retry_after: Option<u64>,
        reason: String,
    },
    QuotaExhausted {
        retry_after: Option<u64>,
        reason: String,
    },
    AuthFailed {
        reason: String,
    },
    Transient {
        reason: String,
    },
    /// The upstream rejected the request itself: not the key's fault.
    RequestError,
    /// The client left: not the key's fault either.
    Cancelled,
}

/// Today's (or lifetime) numbers for one model on one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.failures += other.failures;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Until {
    pub until: u64,
    pub reason: String,
}

/// The persisted part of a (key, model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelState {
    pub cooldown: Option<Until>,
    /// Consecutive failures on the ladder.
    pub step: u32,
    /// Half-open: the cooldown ended but no request has succeeded since, so the key takes
    /// one request at a time for this model.
    pub probe: bool,
    pub today: Counters,
    pub lifetime: Counters,
}

/// The persisted part of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRecord {
    pub provider: String,
    pub masked: String,
    pub lockout: Option<Until>,
    pub lockout_step: u32,
    /// Half-open after a lockout: one request at a time on the whole key.
    pub probe: bool,
    pub models: BTreeMap<String, ModelState>,
}

#[derive(Debug)]
struct Key {
    id: String,
    secret: Secret,
    record: KeyRecord,
    in_flight: BTreeMap<String, u32>,
}

impl Key {
    fn in_flight_total(&self) -> u32 {
        self.in_flight.values().sum()
    }

    fn in_flight_for(&self, model: &str) -> u32 {
        self.in_flight.get(model).copied().unwrap_or(0)
    }

    /// When this key can next take `model` (None: now).
    fn blocked_until(&self, model: &str, now: u64) -> Option<u64> {
        let lock = self.record.lockout.as_ref().map(|l| l.until).filter(|&u| u > now);
        let cool =
            self.record.models.get(model).and_then(|m| m.cooldown.as_ref()).map(|c| c.until).filter(|&u| u > now);
        lock.max(cool)
    }

    fn has_room(&self, model: &str, limit: u32) -> bool {
        let half_open = self.record.probe || self.record.models.get(model).is_some_and(|m| m.probe);
        let limit = if half_open { 1 } else { limit };
        let busy = if self.record.probe { self.in_flight_total() } else { self.in_flight_for(model) };
        busy < limit
    }

    fn requests_today(&self, model: &str) -> u64 {
        self.record.models.get(model).map_or(0, |m| m.today.requests)
    }
}

#[derive(Debug)]
struct ProviderKeys {
    keys: Vec<Key>,
    limit: u32,
    rotation: Rotation,
    /// Index of the key used last (sequential mode stays on it).
    last: Option<usize>,
}

/// The answer to "which key may this request use?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Key(Candidate),
    /// Keys are free of cooldowns but all at their concurrency limit: wait for a release.
    Busy,
    /// Every remaining key is cooling down or locked; the soonest is free at this time.
    CoolingUntil(u64),
    /// Every key has been tried (or the provider has none).
    NoneLeft,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub secret: Secret,
}

#[derive(Debug)]
pub struct KeyPool {
    providers: BTreeMap<String, ProviderKeys>,
    reset_hour: u64,
    /// When "today" began.
    day_start: u64,
    /// xorshift state for tie-breaks, so two proxies do not hammer the same key.
    rng: u64,
    /// Bumped on every change worth persisting.
    pub version: u64,
}

/// A key's state for `status` and `/v1/quota-stats`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub provider: String,
    pub id: String,
    pub masked: String,
    pub state: &'static str,
    pub in_flight: u32,
    pub cooldowns: Vec<CooldownStatus>,
    pub locked_seconds_left: u64,
    pub today: Counters,
}

#[derive(Debug, Clone, Serialize)]
pub struct CooldownStatus {
    pub model: String,
    pub seconds_left: u64,
    pub reason: String,
}

/// What `key_usage.json` holds: no raw key, only ids and masked forms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub version: u32,
    pub saved_at: u64,
    pub day_start: u64,
    pub keys: BTreeMap<String, KeyRecord>,
}

impl KeyPool {
    pub fn new(config: &Config, now: u64) -> KeyPool {
        let reset_hour = config.settings.daily_reset_hour;
        let mut pool = KeyPool {
            providers: BTreeMap::new(),
            reset_hour,
            day_start: clock::day_start(now, reset_hour),
            rng: now | 1,
            version: 0,
        };
        pool.sync(config);
        pool
    }

    /// Brings the key set in line with a (re)loaded config; keys that stay keep their state.
    pub fn sync(&mut self, config: &Config) {
        let mut providers = BTreeMap::new();
        for p in config.configured() {
            let mut old = self.providers.remove(&p.name).map(|o| o.keys).unwrap_or_default();
            let keys = p
                .keys
                .iter()
                .map(|secret| {
                    let id = secret.id(&p.name);
                    match old.iter().position(|k| k.id == id) {
                        Some(i) => old.swap_remove(i),
                        None => Key {
                            id,
                            secret: secret.clone(),
                            record: KeyRecord {
                                provider: p.name.clone(),
                                masked: secret.masked(),
                                ..KeyRecord::default()
                            },
                            in_flight: BTreeMap::new(),
                        },
                    }
                })
                .collect();
            providers.insert(
                p.name.clone(),
                ProviderKeys { keys, limit: p.max_concurrent, rotation: p.rotation, last: None },
            );
        }
        self.providers = providers;
        self.version += 1;
    }

    /// Chooses a key for (provider, model), skipping `exclude`d key ids, and counts the request
    /// in flight on it (`release` gives it back).
    pub fn acquire(&mut self, provider: &str, model: &str, now: u64, exclude: &[String]) -> Pick {
        self.roll_day(now);
        let rng = self.next_random();
        let Some(p) = self.providers.get_mut(provider) else { return Pick::NoneLeft };
        let mut soonest: Option<u64> = None;
        let mut free: Vec<usize> = Vec::new();
        for (i, key) in p.keys.iter().enumerate() {
            if exclude.contains(&key.id) {
                continue;
            }
            match key.blocked_until(model, now) {
                Some(until) => soonest = Some(soonest.map_or(until, |s| s.min(until))),
                None => free.push(i),
            }
        }
        if free.is_empty() {
            return soonest.map_or(Pick::NoneLeft, Pick::CoolingUntil);
        }
        let idle: Vec<usize> = free
            .iter()
            .copied()
            .filter(|&i| p.keys[i].in_flight_total() == 0 && p.keys[i].has_room(model, p.limit))
            .collect();
        let tier = if idle.is_empty() {
            free.iter().copied().filter(|&i| p.keys[i].has_room(model, p.limit)).collect()
        } else {
            idle
        };
        if tier.is_empty() {
            return Pick::Busy;
        }
        let chosen = match p.rotation {
            Rotation::Balanced => {
                let fewest = tier.iter().map(|&i| p.keys[i].requests_today(model)).min().unwrap_or(0);
                let ties: Vec<usize> =
                    tier.iter().copied().filter(|&i| p.keys[i].requests_today(model) == fewest).collect();
                ties[(rng % ties.len() as u64) as usize]
            }
            Rotation::Sequential => {
                let n = p.keys.len();
                let start = p.last.unwrap_or(0);
                (0..n).map(|step| (start + step) % n).find(|i| tier.contains(i)).unwrap_or(tier[0])
            }
        };
        p.last = Some(chosen);
        let key = &mut p.keys[chosen];
        *key.in_flight.entry(model.to_string()).or_insert(0) += 1;
        Pick::Key(Candidate { id: key.id.clone(), secret: key.secret.clone() })
    }

    /// When the first key of the provider that is now blocked for `model` becomes free
    /// (None when one is free already, or the provider has no keys).
    pub fn soonest_free(&self, provider: &str, model: &str, now: u64) -> Option<u64> {
        let keys = &self.providers.get(provider)?.keys;
        let blocked: Vec<Option<u64>> = keys.iter().map(|k| k.blocked_until(model, now)).collect();
        if blocked.iter().any(Option::is_none) {
            return None;
        }
        blocked.into_iter().flatten().min()
    }

    pub fn release(&mut self, provider: &str, id: &str, model: &str) {
        let Some(key) = self.key_mut(provider, id) else { return };
        if let Some(n) = key.in_flight.get_mut(model) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                key.in_flight.remove(model);
            }
        }
    }

    /// Records an attempt's outcome: counters, and cooldowns or lockouts for key failures.
    pub fn report(&mut self, provider: &str, id: &str, model: &str, outcome: &Outcome, now: u64) {
        self.roll_day(now);
        let next_reset = self.day_start + DAY;
        let Some(key) = self.key_mut(provider, id) else { return };
        let state = key.record.models.entry(model.to_string()).or_default();
        state.today.requests += 1;
        match outcome {
            Outcome::Success { prompt_tokens, completion_tokens } => {
                state.today.successes += 1;
                state.today.prompt_tokens += prompt_tokens;
                state.today.completion_tokens += completion_tokens;
                state.step = 0;
                state.probe = false;
                state.cooldown = None;
                key.record.probe = false;
            }
            Outcome::Cancelled => {}
            Outcome::RequestError => state.today.failures += 1,
            Outcome::RateLimited { retry_after, reason } => {
                state.today.failures += 1;
                match retry_after {
                    Some(hint) if *hint > QUOTA_HINT_MS => cool(state, now + hint, reason),
                    Some(hint) => {
                        state.step += 1;
                        cool(state, now + hint, reason);
                    }
                    None => {
                        let wait = LADDER[(state.step as usize).min(LADDER.len() - 1)];
                        state.step += 1;
                        cool(state, now + wait, reason);
                    }
                }
            }
            Outcome::QuotaExhausted { retry_after, reason } => {
                state.today.failures += 1;
                cool(state, retry_after.map_or(next_reset, |h| now + h), reason);
            }
            Outcome::Transient { reason } => {
                state.today.failures += 1;
                cool(state, now + TRANSIENT_COOLDOWN, reason);
            }
            Outcome::AuthFailed { reason } => {
                state.today.failures += 1;
                let wait = LOCKOUT_LADDER[(key.record.lockout_step as usize).min(LOCKOUT_LADDER.len() - 1)];
                key.record.lockout_step += 1;
                lock_out(&mut key.record, now + wait, reason);
            }
        }
        let long = key
            .record
            .models
            .values()
            .filter(|m| m.cooldown.as_ref().is_some_and(|c| c.until >= now + LONG_COOLDOWN))
            .count();
        let locked = key.record.lockout.as_ref().is_some_and(|l| l.until > now);
        if long >= 3 && !locked {
            lock_out(
                &mut key.record,
                now + LONG_COOLDOWN_LOCKOUT,
                "three or more models on cooldowns of 2 h or longer",
            );
        }
        self.version += 1;
    }

    /// The numbers of a new day: at the reset hour, today's counters fold into the lifetime
    /// totals, and ladders and lockouts start over.
    fn roll_day(&mut self, now: u64) {
        let start = clock::day_start(now, self.reset_hour);
        if start <= self.day_start {
            return;
        }
        self.day_start = start;
        for key in self.providers.values_mut().flat_map(|p| p.keys.iter_mut()) {
            key.record.lockout = None;
            key.record.lockout_step = 0;
            for m in key.record.models.values_mut() {
                let today = std::mem::take(&mut m.today);
                m.lifetime.add(&today);
                m.step = 0;
            }
        }
        self.version += 1;
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn key_mut(&mut self, provider: &str, id: &str) -> Option<&mut Key> {
        self.providers.get_mut(provider)?.keys.iter_mut().find(|k| k.id == id)
    }

    /// Every key's state now, providers in name order, keys in configuration order.
    pub fn status(&mut self, now: u64) -> Vec<KeyStatus> {
        self.roll_day(now);
        let secs = |until: u64| until.saturating_sub(now).div_ceil(SECOND);
        self.providers
            .values()
            .flat_map(|p| p.keys.iter())
            .map(|key| {
                let cooldowns: Vec<CooldownStatus> = key
                    .record
                    .models
                    .iter()
                    .filter_map(|(model, m)| {
                        let c = m.cooldown.as_ref().filter(|c| c.until > now)?;
                        Some(CooldownStatus {
                            model: model.clone(),
                            seconds_left: secs(c.until),
                            reason: c.reason.clone(),
                        })
                    })
                    .collect();
                let locked = key.record.lockout.as_ref().filter(|l| l.until > now).map_or(0, |l| secs(l.until));
                let in_flight = key.in_flight_total();
                let state = if locked > 0 {
                    "locked"
                } else if !cooldowns.is_empty() {
                    "cooldown"
                } else if in_flight > 0 {
                    "busy"
                } else {
                    "ready"
                };
                let mut today = Counters::default();
                key.record.models.values().for_each(|m| today.add(&m.today));
                KeyStatus {
                    provider: key.record.provider.clone(),
                    id: key.id.clone(),
                    masked: key.record.masked.clone(),
                    state,
                    in_flight,
                    cooldowns,
                    locked_seconds_left: locked,
                    today,
                }
            })
            .collect()
    }

    pub fn snapshot(&self, now: u64) -> Snapshot {
        let keys =
            self.providers.values().flat_map(|p| p.keys.iter()).map(|k| (k.id.clone(), k.record.clone())).collect();
        Snapshot { version: 1, saved_at: now, day_start: self.day_start, keys }
    }

    /// Takes back what a snapshot knows of the configured keys; keys no longer configured are
    /// forgotten. A snapshot from an earlier day is rolled over as if the proxy had run.
    pub fn restore(&mut self, snapshot: Snapshot, now: u64) {
        let day = self.day_start;
        self.day_start = snapshot.day_start.min(day);
        for key in self.providers.values_mut().flat_map(|p| p.keys.iter_mut()) {
            if let Some(record) = snapshot.keys.get(&key.id) {
                key.record = KeyRecord {
                    provider: key.record.provider.clone(),
                    masked: key.record.masked.clone(),
                    ..record.clone()
                };
            }
        }
        self.roll_day(now);
        self.version += 1;
    }
}

fn cool(state: &mut ModelState, until: u64, reason: &str) {
    state.cooldown = Some(Until { until, reason: reason.to_string() });
    state.probe = true;
}

fn lock_out(record: &mut KeyRecord, until: u64, reason: &str) {
    record.lockout = Some(Until { until, reason: reason.to_string() });
    record.probe = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LauncherConfig;
    use std::path::Path;

    const T0: u64 = 1_795_561_200_000; // 2026-11-24T23:00:00Z, well inside a day (reset at 03:00)

    fn pool(pairs: &[(&str, &str)]) -> KeyPool {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KeyPool::new(&Config::from_env(Path::new("."), &env, LauncherConfig::default()).unwrap(), T0)
    }

    fn three_keys(extra: &[(&str, &str)]) -> KeyPool {
        let mut pairs = vec![("OPENAI_API_KEY_1", "a"), ("OPENAI_API_KEY_2", "b"), ("OPENAI_API_KEY_3", "c")];
        pairs.extend_from_slice(extra);
        pool(&pairs)
    }

    fn take(p: &mut KeyPool, model: &str, now: u64) -> String {
        match p.acquire("openai", model, now, &[]) {
            Pick::Key(c) => c.secret.expose().to_string(),
            other => panic!("expected a key, got {other:?}"),
        }
    }

    fn id(p: &KeyPool, secret: &str) -> String {
        p.providers["openai"].keys.iter().find(|k| k.secret.expose() == secret).unwrap().id.clone()
    }

    fn fail(p: &mut KeyPool, secret: &str, model: &str, outcome: Outcome, now: u64) {
        let id = id(p, secret);
        p.report("openai", &id, model, &outcome, now);
    }

    fn rate_limited() -> Outcome {
        Outcome::RateLimited { retry_after: None, reason: "429".into() }
    }

    #[test]
    fn idle_keys_first_then_up_to_the_limit_per_model() {
        let mut p = three_keys(&[("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI", "2")]);
        let mut taken: Vec<String> = (0..3).map(|_| take(&mut p, "m", T0)).collect();
        taken.sort();
        assert_eq!(taken, ["a", "b", "c"], "every key is used once before any gets a second");
        (0..3).for_each(|_| {
            take(&mut p, "m", T0);
        });
        assert_eq!(p.acquire("openai", "m", T0, &[]), Pick::Busy);
        // A different model on the same keys runs concurrently.
        take(&mut p, "other", T0);
        let a = id(&p, "a");
        p.release("openai", &a, "m");
        assert_eq!(take(&mut p, "m", T0), "a");
    }

    #[test]
    fn balanced_prefers_the_least_used_key_today() {
        let mut p = three_keys(&[]);
        for secret in ["a", "a", "b"] {
            fail(&mut p, secret, "m", Outcome::Success { prompt_tokens: 1, completion_tokens: 1 }, T0);
        }
        assert_eq!(take(&mut p, "m", T0), "c");
    }

    #[test]
    fn sequential_stays_on_a_key_until_it_cools_down() {
        let mut p = three_keys(&[("ROTATION_MODE_OPENAI", "sequential")]);
        let first = take(&mut p, "m", T0);
        let id_first = id(&p, &first);
        p.release("openai", &id_first, "m");
        assert_eq!(take(&mut p, "m", T0), first);
        p.release("openai", &id_first, "m");
        fail(&mut p, &first, "m", rate_limited(), T0);
        let next = take(&mut p, "m", T0);
        assert_ne!(next, first);
    }

    #[test]
    fn the_ladder_escalates_and_a_success_resets_it() {
        let mut p = pool(&[("OPENAI_API_KEY", "a")]);
        let mut now = T0;
        for expected in [10, 30, 60, 120, 7200, 7200] {
            fail(&mut p, "a", "m", rate_limited(), now);
            assert_eq!(p.acquire("openai", "m", now, &[]), Pick::CoolingUntil(now + expected * 1000));
            now += expected * 1000;
        }
        take(&mut p, "m", now);
        fail(&mut p, "a", "m", Outcome::Success { prompt_tokens: 0, completion_tokens: 0 }, now);
        fail(&mut p, "a", "m", rate_limited(), now);
        assert_eq!(p.acquire("openai", "m", now, &[]), Pick::CoolingUntil(now + 10_000));
    }

    #[test]
    fn hints_set_the_cooldown_and_long_hints_are_quota() {
        let mut p = pool(&[("OPENAI_API_KEY", "a")]);
        fail(&mut p, "a", "m", Outcome::RateLimited { retry_after: Some(2_500), reason: "429".into() }, T0);
        assert_eq!(p.acquire("openai", "m", T0, &[]), Pick::CoolingUntil(T0 + 2_500));
        fail(&mut p, "a", "n", Outcome::QuotaExhausted { retry_after: None, reason: "quota".into() }, T0);
        // No hint: until the next daily reset (03:00 UTC after T0 = 23:00).
        assert_eq!(p.acquire("openai", "n", T0, &[]), Pick::CoolingUntil(T0 + 4 * HOUR));
    }

    #[test]
    fn auth_failures_lock_the_whole_key_out_escalating() {
        let mut p = pool(&[("OPENAI_API_KEY_1", "a"), ("OPENAI_API_KEY_2", "b")]);
        fail(&mut p, "a", "m", Outcome::AuthFailed { reason: "401".into() }, T0);
        assert_eq!(take(&mut p, "other-model", T0), "b");
        let a = id(&p, "a");
        let b = id(&p, "b");
        p.release("openai", &b, "other-model");
        assert_eq!(p.acquire("openai", "x", T0, std::slice::from_ref(&b)), Pick::CoolingUntil(T0 + 5 * MINUTE));
        fail(&mut p, "a", "m", Outcome::AuthFailed { reason: "401".into() }, T0 + 5 * MINUTE);
        assert_eq!(p.acquire("openai", "x", T0 + 5 * MINUTE, &[b]), Pick::CoolingUntil(T0 + 20 * MINUTE));
        assert_eq!(p.status(T0 + 5 * MINUTE).iter().find(|s| s.id == a).unwrap().state, "locked");
    }

    #[test]
    fn three_long_cooldowns_lock_the_key() {
        let mut p = pool(&[("OPENAI_API_KEY", "a")]);
        for model in ["m1", "m2", "m3"] {
            fail(
                &mut p,
                "a",
                model,
                Outcome::QuotaExhausted { retry_after: Some(3 * HOUR), reason: "quota".into() },
                T0,
            );
        }
        assert_eq!(p.acquire("openai", "m4", T0, &[]), Pick::CoolingUntil(T0 + 5 * MINUTE));
    }

    #[test]
    fn after_a_cooldown_the_key_is_half_open_until_a_success() {
        let mut p = pool(&[("OPENAI_API_KEY", "a"), ("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI", "3")]);
        fail(&mut p, "a", "m", Outcome::Transient { reason: "503".into() }, T0);
        let later = T0 + TRANSIENT_COOLDOWN;
        take(&mut p, "m", later);
        assert_eq!(p.acquire("openai", "m", later, &[]), Pick::Busy, "the probe goes alone");
        fail(&mut p, "a", "m", Outcome::Success { prompt_tokens: 0, completion_tokens: 0 }, later);
        take(&mut p, "m", later);
        take(&mut p, "m", later);
    }

    #[test]
    fn exclusions_and_empty_providers() {
        let mut p = pool(&[("OPENAI_API_KEY", "a")]);
        let a = id(&p, "a");
        assert_eq!(p.acquire("openai", "m", T0, &[a]), Pick::NoneLeft);
        assert_eq!(p.acquire("groq", "m", T0, &[]), Pick::NoneLeft);
    }

    #[test]
    fn the_daily_reset_folds_counters_and_clears_ladders_and_lockouts() {
        let mut p = pool(&[("OPENAI_API_KEY", "a")]);
        fail(&mut p, "a", "m", Outcome::Success { prompt_tokens: 7, completion_tokens: 3 }, T0);
        fail(&mut p, "a", "m", rate_limited(), T0);
        fail(&mut p, "a", "x", Outcome::AuthFailed { reason: "401".into() }, T0);
        let after_reset = T0 + 4 * HOUR;
        let status = p.status(after_reset);
        assert_eq!(status[0].state, "ready");
        assert_eq!(status[0].today, Counters::default());
        let m = &p.providers["openai"].keys[0].record.models["m"];
        assert_eq!((m.step, m.lifetime.requests, m.lifetime.prompt_tokens), (0, 2, 7));
    }

    #[test]
    fn status_counts_and_states() {
        let mut p = three_keys(&[]);
        take(&mut p, "m", T0);
        fail(&mut p, "b", "m", Outcome::RateLimited { retry_after: Some(59_001), reason: "slow down".into() }, T0);
        let status = p.status(T0);
        let busy = status.iter().filter(|s| s.state == "busy").count();
        let cooling: Vec<_> = status.iter().filter(|s| s.state == "cooldown").collect();
        assert_eq!((busy, cooling.len()), (1, 1));
        assert_eq!(cooling[0].cooldowns[0].seconds_left, 60);
        assert_eq!(cooling[0].today.failures, 1);
    }

    #[test]
    fn a_snapshot_round_trips_without_raw_keys() {
        let mut p = pool(&[("OPENAI_API_KEY", "sk-very-secret-value")]);
        fail(&mut p, "sk-very-secret-value", "m", rate_limited(), T0);
        let json = serde_json::to_string(&p.snapshot(T0)).unwrap();
        assert!(!json.contains("sk-very-secret-value"));
        let mut fresh = pool(&[("OPENAI_API_KEY", "sk-very-secret-value")]);
        fresh.restore(serde_json::from_str(&json).unwrap(), T0 + 1);
        assert_eq!(fresh.acquire("openai", "m", T0 + 1, &[]), Pick::CoolingUntil(T0 + 10_000));
    }
}
