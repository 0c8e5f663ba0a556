//! The key pool: a pure state machine. It decides which key a request gets and records what
//! happened, with the time passed in (`now`, ms since the epoch) and no locks, clock or I/O
//! inside, so every rule below is unit-tested without sleeping. `AppState` keeps it behind one
//! mutex, and every access is one short decide-and-record block (ARCHITECTURE.md, invariants).
//!
//! Per key: requests in flight per model; per (key, model) a cooldown with its ladder step
//! and a half-open flag; a key-wide lockout; today's counters per model and lifetime totals.
//!
//! Neither choosing a key nor recording an outcome scans the pool, so a request costs the same
//! with 2 keys or 5,000. Per (provider, model), built on the model's first use, a `ModelIndex`
//! keeps the free keys grouped by priority (best first), within it by tier (idle, then with
//! room), and within that by the rotation's order, and
//! the cooling or locked keys in a timer queue by the time they are free: `acquire` reads the
//! first entries, `CoolingUntil` the queue's head. A change to one key (in flight, outcome)
//! moves that key in each of its provider's indexes, since the idle tier and a key-wide probe
//! depend on requests in flight on every model. The records changed since the
//! `key_usage.json` writer last asked are listed, so it copies only those (`take_changes`).
//! The rules themselves, in prose: docs/key-rotation.md.

use crate::clock::{self, DAY, SECOND};
use crate::config::Config;
use crate::keys::shared::Block;
use crate::secret::Secret;
use index::{Key, Place, ProviderKeys, first_in};
use record::{cool, lock_out, record_outcome, spare};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

mod index;
mod record;

use crate::oauth::tier::DEFAULT_PRIORITY;
pub use record::{Counters, KeyRecord, Outcome};

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
    /// The API key; None for an OAuth credential (its token comes from `AppState::oauth`).
    pub secret: Option<Secret>,
    /// What people see: the key's masked form, or the OAuth credential's account.
    pub masked: String,
    /// Handed out as a half-open probe while it rests for transient failures only
    /// (`ProviderKeys::transient_probe`): one request at a time, and a shared store must let
    /// it through its transient cooldown.
    pub probe: bool,
}

#[derive(Debug)]
pub struct KeyPool {
    providers: BTreeMap<String, ProviderKeys>,
    reset_hour: u64,
    /// When "today" began.
    day_start: u64,
    /// xorshift state for tie-breaks, so two proxies do not hammer the same key.
    rng: u64,
    /// Every record changed at once (reload, restore, daily reset): the writer takes them all.
    all_dirty: bool,
}

/// A key's state for `status` and `/v1/quota-stats`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub provider: String,
    pub id: String,
    pub masked: String,
    pub state: &'static str,
    pub in_flight: u32,
    /// Lower is better: keys of a worse priority are used only when no better one can be.
    pub priority: u32,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub version: u32,
    pub saved_at: u64,
    pub day_start: u64,
    pub keys: BTreeMap<String, KeyRecord>,
}

impl Snapshot {
    /// Brings a copy of the records up to date with what the pool handed over.
    pub fn apply(&mut self, changes: Changes) {
        self.version = 1;
        self.day_start = changes.day_start;
        if changes.all {
            self.keys.clear();
        }
        self.keys.extend(changes.records);
    }
}

/// The records changed since the writer last asked (`KeyPool::take_changes`).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// `records` are every configured key: replace the copy, forgetting keys not in it.
    pub all: bool,
    pub day_start: u64,
    pub records: Vec<(String, KeyRecord)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        !self.all && self.records.is_empty()
    }
}

impl KeyPool {
    pub fn new(config: &Config, now: u64) -> KeyPool {
        let reset_hour = config.settings.daily_reset_hour;
        let mut pool = KeyPool {
            providers: BTreeMap::new(),
            reset_hour,
            day_start: clock::day_start(now, reset_hour),
            rng: now | 1,
            all_dirty: true,
        };
        pool.sync(config);
        pool
    }

    /// Brings the key set in line with a (re)loaded config; keys that stay keep their state.
    pub fn sync(&mut self, config: &Config) {
        let mut providers = BTreeMap::new();
        for p in config.configured() {
            let mut old: HashMap<String, Key> = self
                .providers
                .remove(&p.name)
                .map(|o| o.keys.into_iter().map(|k| (k.id.clone(), k)).collect())
                .unwrap_or_default();
            // API keys, then OAuth credentials: an OAuth credential's id and masked form come
            // from its account, so they stay the same across token refreshes.
            let api_keys = p
                .keys
                .iter()
                .map(|secret| (secret.id(&p.name), secret.masked(), Some(secret.clone()), DEFAULT_PRIORITY));
            let oauth = p.oauth.iter().map(|o| (o.id.clone(), o.account.clone(), None, o.priority));
            let keys: Vec<Key> = api_keys
                .chain(oauth)
                .map(|(id, masked, secret, priority)| {
                    let mut key = old.remove(&id).unwrap_or_else(|| {
                        let record = KeyRecord { provider: p.name.clone(), masked, ..KeyRecord::default() };
                        Key::new(id, secret, record)
                    });
                    // A rank learnt at run time (a stateless credential's tier) outlives a
                    // reload that knows none.
                    if priority != DEFAULT_PRIORITY {
                        key.priority = priority;
                    }
                    key
                })
                .collect();
            let by_id = keys.iter().enumerate().map(|(i, k)| (k.id.clone(), i)).collect();
            providers.insert(
                p.name.clone(),
                ProviderKeys {
                    keys,
                    by_id,
                    limit: p.max_concurrent,
                    rotation: p.rotation,
                    last: None,
                    indexes: HashMap::new(),
                    uses: 0,
                    dirty: Vec::new(),
                },
            );
        }
        self.providers = providers;
        self.all_changed();
    }

    /// Chooses a key for (provider, model): the best priority among the keys that could take
    /// the request now, then idle before busy, then the rotation's order; skipping `exclude`d key ids, and counts the request
    /// in flight on it (`release` gives it back). Reads the first entries of the model's index:
    /// O(log n) in the keys, plus the few excluded ones skipped.
    pub fn acquire(&mut self, provider: &str, model: &str, now: u64, exclude: &[String]) -> Pick {
        self.roll_day(now);
        let rng = &mut self.rng;
        let Some(p) = self.providers.get_mut(provider) else { return Pick::NoneLeft };
        let mut excluded: Vec<usize> = exclude.iter().filter_map(|id| p.by_id.get(id).copied()).collect();
        excluded.sort_unstable();
        excluded.dedup();
        let (rotation, last) = (p.rotation, p.last);
        let index = p.index(model, now, rng);
        let chosen = index.tiers.values().find_map(|set| first_in(set, rotation, last, &excluded));
        let mut probed = false;
        let chosen = match chosen {
            Some(chosen) => chosen,
            None => {
                let free_excluded = excluded.iter().filter(|&&i| !matches!(index.place[i], Place::Blocked(_))).count();
                if index.free() > free_excluded {
                    return Pick::Busy;
                }
                match p.transient_probe(model, now, &excluded) {
                    Some(Some(probe)) => {
                        probed = true;
                        probe
                    }
                    Some(None) => return Pick::Busy,
                    None => {
                        let index = p.index(model, now, rng);
                        let soonest = index.blocked.iter().find(|(_, i)| !excluded.contains(i));
                        return soonest.map_or(Pick::NoneLeft, |&(until, _)| Pick::CoolingUntil(until));
                    }
                }
            }
        };
        p.last = Some(chosen);
        let key = &mut p.keys[chosen];
        match key.in_flight.get_mut(model) {
            Some(n) => *n += 1,
            None => {
                key.in_flight.insert(model.to_string(), 1);
            }
        }
        key.in_flight_total += 1;
        let candidate = Candidate {
            id: key.id.clone(),
            secret: key.secret.clone(),
            masked: key.record.masked.clone(),
            probe: probed,
        };
        p.relocate(chosen, rng);
        Pick::Key(candidate)
    }

    /// Ranks a key (its account's tier, learnt at run time): lower is better. Moves it in every
    /// index of its provider.
    pub fn set_priority(&mut self, provider: &str, id: &str, priority: u32) {
        let Some(p) = self.providers.get_mut(provider) else { return };
        let Some(&i) = p.by_id.get(id) else { return };
        if p.keys[i].priority != priority {
            p.keys[i].priority = priority;
            p.relocate(i, &mut self.rng);
        }
    }

    /// When the first key of the provider that is now blocked for `model` becomes free
    /// (None when one is free already, or the provider has no keys).
    pub fn soonest_free(&mut self, provider: &str, model: &str, now: u64) -> Option<u64> {
        let index = self.providers.get_mut(provider)?.index(model, now, &mut self.rng);
        if index.free() > 0 {
            return None;
        }
        index.blocked.first().map(|&(until, _)| until)
    }

    pub fn release(&mut self, provider: &str, id: &str, model: &str) {
        let Some(p) = self.providers.get_mut(provider) else { return };
        let Some(&i) = p.by_id.get(id) else { return };
        let key = &mut p.keys[i];
        let Some(n) = key.in_flight.get_mut(model) else { return };
        if *n > 0 {
            *n -= 1;
            key.in_flight_total -= 1;
        }
        if *n == 0 {
            key.in_flight.remove(model);
        }
        p.relocate(i, &mut self.rng);
    }

    /// A stream on this key opened with a real event. A transient cooldown of (key, model),
    /// which only a half-open probe could pass, ends here: the key works, and the other
    /// requests need not wait for the whole stream to learn it. Its outcome is still recorded
    /// when the stream ends. Answers whether a cooldown ended.
    pub fn stream_opened(&mut self, provider: &str, id: &str, model: &str) -> bool {
        let Some(p) = self.providers.get_mut(provider) else { return false };
        let Some(&i) = p.by_id.get(id) else { return false };
        let Some(state) = p.keys[i].record.models.get_mut(model) else { return false };
        if !state.cooldown.as_ref().is_some_and(|c| c.transient) {
            return false;
        }
        state.cooldown = None;
        state.probe = false;
        p.mark_dirty(i);
        p.relocate(i, &mut self.rng);
        true
    }

    /// Records an attempt's outcome: counters, and cooldowns or lockouts for key failures.
    pub fn report(&mut self, provider: &str, id: &str, model: &str, outcome: &Outcome, now: u64) {
        self.roll_day(now);
        let next_reset = self.day_start + DAY;
        let Some(p) = self.providers.get_mut(provider) else { return };
        let Some(&i) = p.by_id.get(id) else { return };
        let spared = matches!(outcome, Outcome::Transient { .. })
            && !p.keys[i].half_open(model)
            && !p.another_usable(i, model, now);
        if spared {
            // The last usable key is not benched for a blip: a 30 s rest would turn every
            // request into a 429. It takes one request at a time instead; if that one fails
            // too, the key is half-open already and rests like any other.
            spare(&mut p.keys[i].record, model);
        } else {
            record_outcome(&mut p.keys[i].record, model, outcome, now, next_reset);
        }
        p.mark_dirty(i);
        p.relocate(i, &mut self.rng);
    }

    /// The cooldown of (key, model) and the key's lockout in force at `now`, for the other
    /// instances (`keys::shared`).
    pub fn blocks_of(&self, provider: &str, id: &str, model: &str, now: u64) -> Vec<Block> {
        let Some(p) = self.providers.get(provider) else { return Vec::new() };
        let Some(&i) = p.by_id.get(id) else { return Vec::new() };
        let record = &p.keys[i].record;
        let state = record.models.get(model);
        let cooldown = state.and_then(|m| m.cooldown.as_ref().map(|c| (Some(model), c, m.step)));
        cooldown
            .into_iter()
            .chain(record.lockout.as_ref().map(|l| (None, l, record.lockout_step)))
            .filter(|(_, u, _)| u.until > now)
            .map(|(model, u, step)| Block {
                key: id.to_string(),
                model: model.map(String::from),
                until: u.until,
                reason: u.reason.clone(),
                step,
                transient: u.transient,
            })
            .collect()
    }

    /// Every cooldown and lockout in force at `now`: what this instance pushes to the shared
    /// store when it comes back.
    pub fn blocks(&self, now: u64) -> Vec<Block> {
        let mut out = Vec::new();
        for p in self.providers.values() {
            for key in &p.keys {
                for model in key.record.models.keys() {
                    out.extend(
                        self.blocks_of(&key.record.provider, &key.id, model, now)
                            .into_iter()
                            .filter(|b| b.model.is_some()),
                    );
                }
                out.extend(
                    self.blocks_of(&key.record.provider, &key.id, "", now).into_iter().filter(|b| b.model.is_none()),
                );
            }
        }
        out
    }

    /// Takes in a cooldown or lockout another instance recorded, unless a longer one is in
    /// force here already; the key is half-open after it, as after one of its own, and its
    /// ladder is at least as far up as the other instance's.
    pub fn apply_block(&mut self, block: &Block) {
        let Some(p) = self.providers.values_mut().find(|p| p.by_id.contains_key(&block.key)) else { return };
        let i = p.by_id[&block.key];
        let record = &mut p.keys[i].record;
        match &block.model {
            Some(model) => {
                let state = record.models.entry(model.clone()).or_default();
                state.step = state.step.max(block.step);
                if state.cooldown.as_ref().is_none_or(|c| c.until < block.until) {
                    cool(state, block.until, &block.reason);
                    if let Some(cooldown) = &mut state.cooldown {
                        cooldown.transient = block.transient;
                    }
                } else if let Some(cooldown) = state.cooldown.as_mut().filter(|_| !block.transient) {
                    // The upstream's word elsewhere (a rate limit, a quota): no transient probe
                    // of this key while it lasts, even if the cooldown here ends later.
                    cooldown.transient = false;
                }
            }
            None => {
                record.lockout_step = record.lockout_step.max(block.step);
                if record.lockout.as_ref().is_none_or(|l| l.until < block.until) {
                    lock_out(record, block.until, &block.reason);
                }
            }
        }
        p.mark_dirty(i);
        p.relocate(i, &mut self.rng);
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
        self.all_changed();
    }

    /// Every record may have changed: the indexes are rebuilt on their next use and the
    /// writer takes every record.
    fn all_changed(&mut self) {
        for p in self.providers.values_mut() {
            p.indexes.clear();
        }
        self.all_dirty = true;
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
                let in_flight = key.in_flight_total;
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
                    priority: key.priority,
                    cooldowns,
                    locked_seconds_left: locked,
                    today,
                }
            })
            .collect()
    }

    /// Every record: what `key_usage.json` would hold now (the writer's copy is checked
    /// against it).
    #[cfg(test)]
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let keys =
            self.providers.values().flat_map(|p| p.keys.iter()).map(|k| (k.id.clone(), k.record.clone())).collect();
        Snapshot { version: 1, saved_at: now, day_start: self.day_start, keys }
    }

    /// The records changed since the last call, for the `key_usage.json` writer to apply to
    /// its own copy (`Snapshot::apply`): under the lock it copies only those.
    pub fn take_changes(&mut self) -> Changes {
        let day_start = self.day_start;
        if std::mem::take(&mut self.all_dirty) {
            let mut records = Vec::new();
            for p in self.providers.values_mut() {
                p.dirty.clear();
                for key in &mut p.keys {
                    key.dirty = false;
                    records.push((key.id.clone(), key.record.clone()));
                }
            }
            return Changes { all: true, day_start, records };
        }
        let mut records = Vec::new();
        for p in self.providers.values_mut() {
            for i in std::mem::take(&mut p.dirty) {
                let key = &mut p.keys[i];
                key.dirty = false;
                records.push((key.id.clone(), key.record.clone()));
            }
        }
        Changes { all: false, day_start, records }
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
        self.all_changed();
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
