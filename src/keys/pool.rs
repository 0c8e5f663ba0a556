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
//! The rules themselves, in prose: docs/resilience.md.

use crate::clock::{self, DAY, HOUR, MINUTE, SECOND};
use crate::config::{Config, Rotation};
use crate::keys::Secret;
use crate::keys::shared::Block;
use crate::providers::errors::QUOTA_HINT_MS;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Consecutive key-attributable failures of one (key, model) without a hint: 10 s, 30 s,
/// 60 s, 120 s, then 2 h.
const LADDER: [u64; 5] = [10 * SECOND, 30 * SECOND, 60 * SECOND, 120 * SECOND, 2 * HOUR];
/// Auth failures lock the whole key out, longer each time within a day.
const LOCKOUT_LADDER: [u64; 4] = [5 * MINUTE, 15 * MINUTE, HOUR, 4 * HOUR];
/// After the same-key retry of a transient failure; not counted on the ladder.
const TRANSIENT_COOLDOWN: u64 = 30 * SECOND;
/// The priority of a key nothing ranks: every API key, and an OAuth credential whose tier is
/// unknown. Lower is better; a key is used only when no better one could take the request.
pub const DEFAULT_PRIORITY: u32 = 10;

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
    /// What one attempt's outcome adds to a day's numbers (a cancelled one adds nothing).
    pub fn of(outcome: &Outcome) -> Counters {
        match outcome {
            Outcome::Cancelled => Counters::default(),
            Outcome::Success { prompt_tokens, completion_tokens } => Counters {
                requests: 1,
                successes: 1,
                failures: 0,
                prompt_tokens: *prompt_tokens,
                completion_tokens: *completion_tokens,
            },
            _ => Counters { requests: 1, failures: 1, ..Counters::default() },
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.failures += other.failures;
        // Token counts come from upstreams: saturating, so a careless count cannot overflow.
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Until {
    pub until: u64,
    pub reason: String,
    /// A cooldown for a transient failure (a 5xx, a dropped connection) with no hint from
    /// the upstream: when every key rests only for such reasons, one is tried anyway
    /// (`ProviderKeys::transient_probe`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
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
    /// None for an OAuth credential, whose token is taken at attempt time (`oauth::refresh`).
    secret: Option<Secret>,
    record: KeyRecord,
    in_flight: BTreeMap<String, u32>,
    /// The sum of `in_flight`, kept so the "idle" test costs nothing.
    in_flight_total: u32,
    /// Lower is better (`DEFAULT_PRIORITY` unless the key's account ranks it); not persisted,
    /// since it comes from the credential.
    priority: u32,
    /// Changed since the `key_usage.json` writer last took it (and listed in `dirty`).
    dirty: bool,
}

impl Key {
    fn new(id: String, secret: Option<Secret>, record: KeyRecord) -> Key {
        let priority = DEFAULT_PRIORITY;
        Key { id, secret, record, in_flight: BTreeMap::new(), in_flight_total: 0, priority, dirty: false }
    }

    fn in_flight_for(&self, model: &str) -> u32 {
        self.in_flight.get(model).copied().unwrap_or(0)
    }

    /// The end of whatever blocks this key for `model` (0: nothing ever did); it is blocked at
    /// `now` when this is later than `now`.
    fn blocked_until(&self, model: &str) -> u64 {
        let lock = self.record.lockout.as_ref().map_or(0, |l| l.until);
        let cool = self.record.models.get(model).and_then(|m| m.cooldown.as_ref()).map_or(0, |c| c.until);
        lock.max(cool)
    }

    fn has_room(&self, model: &str, limit: u32) -> bool {
        let half_open = self.half_open(model);
        let limit = if half_open { 1 } else { limit };
        let busy = if self.record.probe { self.in_flight_total } else { self.in_flight_for(model) };
        busy < limit
    }

    fn requests_today(&self, model: &str) -> u64 {
        self.record.models.get(model).map_or(0, |m| m.today.requests)
    }

    /// What balanced rotation evens out: today's requests for `model` plus those in flight now.
    /// Today's count grows only when a request ends, so during a burst of long streams the
    /// in-flight count is what tells the keys apart.
    fn load(&self, model: &str) -> u64 {
        self.requests_today(model) + u64::from(self.in_flight_for(model))
    }

    /// Half-open: after a cooldown, a lockout or a spared failure, one request at a time.
    fn half_open(&self, model: &str) -> bool {
        self.record.probe || self.record.models.get(model).is_some_and(|m| m.probe)
    }
}

/// A free key's place in a tier: (requests today for the model, random tie-break, key index)
/// in balanced mode, (0, 0, key index) in sequential mode, so the first slot is the pick.
type Slot = (u64, u64, usize);

/// A group of free keys with room: (priority, tier), best first. Tier 0 holds idle keys
/// (nothing in flight on any model), tier 1 the rest, so a busy key of a better priority goes
/// before an idle one of a worse priority.
type Group = (u32, usize);

/// Where one key stands for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Free, with room, in this group.
    Tier(Group, Slot),
    /// Free but at its concurrency limit.
    Full,
    /// Cooling down or locked out until then.
    Blocked(u64),
}

/// Every key of a provider ordered for one model, so a pick reads the first entries instead of
/// scanning the pool. Built on first use of the model and dropped whenever it could be stale
/// wholesale (reload, restore, daily reset); every change to one key moves that key in every
/// index of its provider (`ProviderKeys::relocate`).
#[derive(Debug)]
struct ModelIndex {
    /// Only non-empty groups, so a pick visits at most the few priorities in use (twice).
    tiers: BTreeMap<Group, BTreeSet<Slot>>,
    /// How many keys are `Place::Full`.
    full: usize,
    /// The timer queue: (blocked until, key index), soonest first.
    blocked: BTreeSet<(u64, usize)>,
    /// Each key's place, by key index.
    place: Vec<Place>,
    /// The latest `now` seen: a key is in `blocked` exactly when it is blocked beyond this.
    /// (A clock stepping back does not block again a key already seen free.)
    seen: u64,
    /// When the index was last used, in `ProviderKeys::uses`, to evict the least recent.
    used: u64,
}

impl ModelIndex {
    fn remove(&mut self, i: usize) {
        match self.place[i] {
            Place::Tier(group, slot) => {
                if let Some(set) = self.tiers.get_mut(&group) {
                    set.remove(&slot);
                    if set.is_empty() {
                        self.tiers.remove(&group);
                    }
                }
            }
            Place::Full => self.full -= 1,
            Place::Blocked(until) => {
                self.blocked.remove(&(until, i));
            }
        }
    }

    fn insert(&mut self, i: usize, place: Place) {
        match place {
            Place::Tier(group, slot) => {
                self.tiers.entry(group).or_default().insert(slot);
            }
            Place::Full => self.full += 1,
            Place::Blocked(until) => {
                self.blocked.insert((until, i));
            }
        }
        self.place[i] = place;
    }

    /// Free keys, excluded ones included.
    fn free(&self) -> usize {
        self.tiers.values().map(BTreeSet::len).sum::<usize>() + self.full
    }
}

/// The most model indexes a provider keeps: model names come from clients, and each index
/// costs memory per key and an update per acquire and release.
const MAX_MODEL_INDEXES: usize = 32;

#[derive(Debug)]
struct ProviderKeys {
    keys: Vec<Key>,
    by_id: HashMap<String, usize>,
    limit: u32,
    rotation: Rotation,
    /// Index of the key used last (sequential mode stays on it).
    last: Option<usize>,
    indexes: HashMap<String, ModelIndex>,
    /// A counter of index uses, for eviction.
    uses: u64,
    /// Keys with `dirty` set, for the `key_usage.json` writer.
    dirty: Vec<usize>,
}

/// What placing a key needs to read of its provider, borrowed apart from the indexes.
struct View<'a> {
    keys: &'a [Key],
    limit: u32,
    rotation: Rotation,
}

impl View<'_> {
    /// Where key `i` belongs for `model`, given the latest time seen; a new random tie-break
    /// only when its tier or count changed, so an unchanged key keeps its slot.
    fn place_of(&self, i: usize, model: &str, seen: u64, old: Place, rng: &mut u64) -> Place {
        let key = &self.keys[i];
        let until = key.blocked_until(model);
        if until > seen {
            return Place::Blocked(until);
        }
        if !key.has_room(model, self.limit) {
            return Place::Full;
        }
        let group = (key.priority, usize::from(key.in_flight_total > 0));
        let slot = match self.rotation {
            Rotation::Sequential => (0, 0, i),
            Rotation::Balanced => {
                let requests = key.load(model);
                match old {
                    Place::Tier(g, s) if g == group && s.0 == requests => s,
                    _ => (requests, next_random(rng), i),
                }
            }
        };
        Place::Tier(group, slot)
    }

    fn build(&self, model: &str, now: u64, used: u64, rng: &mut u64) -> ModelIndex {
        let n = self.keys.len();
        let mut index = ModelIndex {
            tiers: BTreeMap::new(),
            full: 0,
            blocked: BTreeSet::new(),
            place: vec![Place::Full; n],
            seen: now,
            used,
        };
        for i in 0..n {
            let place = self.place_of(i, model, now, Place::Full, rng);
            index.insert(i, place);
        }
        index
    }

    /// Moves the keys whose block ended by `now` back among the free ones.
    fn advance(&self, index: &mut ModelIndex, model: &str, now: u64, rng: &mut u64) {
        index.seen = index.seen.max(now);
        while let Some(&(until, i)) = index.blocked.first() {
            if until > index.seen {
                break;
            }
            index.remove(i);
            let place = self.place_of(i, model, index.seen, Place::Blocked(until), rng);
            index.insert(i, place);
        }
    }
}

impl ProviderKeys {
    /// Whether a key other than `i` could take `model` now (not cooling down or locked out).
    /// From the model's index when there is one: its free keys, and blocks already over (the
    /// index moves those lazily); else by looking at every key, which happens only on a
    /// transient failure for a model no request has used yet.
    fn another_usable(&self, i: usize, model: &str, now: u64) -> bool {
        match self.indexes.get(model) {
            Some(index) => {
                let i_free = !matches!(index.place[i], Place::Blocked(_));
                index.free() > usize::from(i_free) || index.blocked.range(..=(now, usize::MAX)).any(|&(_, j)| j != i)
            }
            None => self.keys.iter().enumerate().any(|(j, k)| j != i && k.blocked_until(model) <= now),
        }
    }

    /// Every key not `excluded` is blocked for `model`. When each rests only on a transient
    /// cooldown (no lockout, no rate limit, no quota: the upstream's word is honoured), the
    /// request does not wait out 30 s or get a 429 for a provider that may be back already:
    /// the key whose cooldown ends first is tried as a half-open probe, one request at a time
    /// (docs/resilience.md). Some(Some(key)) to take it, Some(None) while its probe is under
    /// way (wait for its outcome), None when the rule does not apply. Only reached when no
    /// key is free, so the scan costs nothing on the usual path.
    fn transient_probe(&self, model: &str, now: u64, excluded: &[usize]) -> Option<Option<usize>> {
        let mut first: Option<(u64, usize)> = None;
        for (i, key) in self.keys.iter().enumerate().filter(|(i, _)| !excluded.contains(i)) {
            if key.record.lockout.as_ref().is_some_and(|l| l.until > now) {
                return None;
            }
            let cooldown = key.record.models.get(model).and_then(|m| m.cooldown.as_ref()).filter(|c| c.until > now)?;
            if !cooldown.transient {
                return None;
            }
            if first.is_none_or(|(until, _)| cooldown.until < until) {
                first = Some((cooldown.until, i));
            }
        }
        let (_, i) = first?;
        Some(self.keys[i].has_room(model, 1).then_some(i))
    }

    /// The index for `model`, built on first use, with the keys whose block ended by `now`
    /// moved back among the free ones.
    fn index(&mut self, model: &str, now: u64, rng: &mut u64) -> &mut ModelIndex {
        let ProviderKeys { keys, limit, rotation, indexes, uses, .. } = self;
        let view = View { keys, limit: *limit, rotation: *rotation };
        *uses += 1;
        if !indexes.contains_key(model) {
            if indexes.len() >= MAX_MODEL_INDEXES {
                if let Some(stale) = indexes.iter().min_by_key(|(_, x)| x.used).map(|(m, _)| m.clone()) {
                    indexes.remove(&stale);
                }
            }
            indexes.insert(model.to_string(), view.build(model, now, *uses, rng));
        }
        let index = indexes.get_mut(model).expect("just ensured");
        index.used = *uses;
        view.advance(index, model, now, rng);
        index
    }

    /// Key `i` changed (in flight, cooldown, lockout, probe or counters): moves it in every
    /// model index. The models in use per provider are few.
    fn relocate(&mut self, i: usize, rng: &mut u64) {
        let view = View { keys: &self.keys, limit: self.limit, rotation: self.rotation };
        for (model, index) in &mut self.indexes {
            let old = index.place[i];
            let place = view.place_of(i, model, index.seen, old, rng);
            if place != old {
                index.remove(i);
                index.insert(i, place);
            }
        }
    }

    fn mark_dirty(&mut self, i: usize) {
        if !self.keys[i].dirty {
            self.keys[i].dirty = true;
            self.dirty.push(i);
        }
    }
}

/// The first free key of `set` not excluded: in balanced mode the fewest requests (ties in
/// random order), in sequential mode the first at or after `last`, cyclically.
fn first_in(set: &BTreeSet<Slot>, rotation: Rotation, last: Option<usize>, excluded: &[usize]) -> Option<usize> {
    let ok = |s: &&Slot| !excluded.contains(&s.2);
    let found = match rotation {
        Rotation::Balanced => set.iter().find(ok),
        Rotation::Sequential => set.range((0, 0, last.unwrap_or(0))..).find(ok).or_else(|| set.iter().find(ok)),
    };
    found.map(|s| s.2)
}

fn next_random(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
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

/// What one outcome does to a key's record.
fn record_outcome(record: &mut KeyRecord, model: &str, outcome: &Outcome, now: u64, next_reset: u64) {
    let state = record.models.entry(model.to_string()).or_default();
    state.today.requests += 1;
    match outcome {
        Outcome::Success { prompt_tokens, completion_tokens } => {
            state.today.successes += 1;
            state.today.prompt_tokens = state.today.prompt_tokens.saturating_add(*prompt_tokens);
            state.today.completion_tokens = state.today.completion_tokens.saturating_add(*completion_tokens);
            state.step = 0;
            state.probe = false;
            state.cooldown = None;
            record.probe = false;
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
            if let Some(cooldown) = &mut state.cooldown {
                cooldown.transient = true;
            }
        }
        Outcome::AuthFailed { reason } => {
            state.today.failures += 1;
            let wait = LOCKOUT_LADDER[(record.lockout_step as usize).min(LOCKOUT_LADDER.len() - 1)];
            record.lockout_step += 1;
            lock_out(record, now + wait, reason);
        }
    }
    let long =
        record.models.values().filter(|m| m.cooldown.as_ref().is_some_and(|c| c.until >= now + LONG_COOLDOWN)).count();
    let locked = record.lockout.as_ref().is_some_and(|l| l.until > now);
    if long >= 3 && !locked {
        lock_out(record, now + LONG_COOLDOWN_LOCKOUT, "three or more models on cooldowns of 2 h or longer");
    }
}

/// A transient failure of the last usable key: counted, and the key half-open for `model`.
fn spare(record: &mut KeyRecord, model: &str) {
    let state = record.models.entry(model.to_string()).or_default();
    state.today.requests += 1;
    state.today.failures += 1;
    state.probe = true;
}

fn cool(state: &mut ModelState, until: u64, reason: &str) {
    state.cooldown = Some(Until { until, reason: reason.to_string(), transient: false });
    state.probe = true;
}

fn lock_out(record: &mut KeyRecord, until: u64, reason: &str) {
    record.lockout = Some(Until { until, reason: reason.to_string(), transient: false });
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
            Pick::Key(c) => c.secret.expect("an API key").expose().to_string(),
            other => panic!("expected a key, got {other:?}"),
        }
    }

    fn id(p: &KeyPool, secret: &str) -> String {
        p.providers["openai"]
            .keys
            .iter()
            .find(|k| k.secret.as_ref().is_some_and(|s| s.expose() == secret))
            .unwrap()
            .id
            .clone()
    }

    fn fail(p: &mut KeyPool, secret: &str, model: &str, outcome: Outcome, now: u64) {
        let id = id(p, secret);
        p.report("openai", &id, model, &outcome, now);
    }

    fn release(p: &mut KeyPool, secret: &str, model: &str) {
        let id = id(p, secret);
        p.release("openai", &id, model);
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
    fn the_best_priority_takes_requests_while_it_has_room_then_the_next() {
        let mut p = three_keys(&[("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI", "2")]);
        let (a, b, c) = (id(&p, "a"), id(&p, "b"), id(&p, "c"));
        assert!(p.status(T0).iter().all(|s| s.priority == DEFAULT_PRIORITY), "API keys rank alike");
        p.set_priority("openai", &b, 1);
        p.set_priority("openai", &c, 2);
        // A busy key of a better priority goes before an idle one of a worse priority.
        assert_eq!((take(&mut p, "m", T0), take(&mut p, "m", T0)), ("b".to_string(), "b".to_string()));
        assert_eq!(take(&mut p, "m", T0), "c", "b is at its limit");
        p.release("openai", &b, "m");
        assert_eq!(take(&mut p, "m", T0), "b", "back to b as soon as it has room");
        // Cooling, b gives way to c, then to a; another model is unaffected.
        fail(&mut p, "b", "m", rate_limited(), T0);
        assert_eq!(take(&mut p, "m", T0), "c");
        fail(&mut p, "c", "m", rate_limited(), T0);
        assert_eq!(take(&mut p, "m", T0), "a");
        assert_eq!(take(&mut p, "other", T0), "b");
        // When b's cooldown ends it is the first choice again.
        for key in [&a, &b, &c, &b, &b, &c] {
            p.release("openai", key, "m");
        }
        assert_eq!(take(&mut p, "m", T0 + 10 * SECOND), "b");
        let shown: Vec<u32> = p.status(T0).iter().map(|s| s.priority).collect();
        assert_eq!(shown, [DEFAULT_PRIORITY, 1, 2]);
    }

    #[test]
    fn sequential_mode_stays_within_the_best_priority() {
        let mut p = three_keys(&[("ROTATION_MODE_OPENAI", "sequential")]);
        let (a, c) = (id(&p, "a"), id(&p, "c"));
        p.set_priority("openai", &a, 2);
        p.set_priority("openai", &c, 2);
        let first = take(&mut p, "m", T0);
        assert_ne!(first, "b", "b ranks below the others");
        fail(&mut p, &first, "m", rate_limited(), T0);
        let second = take(&mut p, "m", T0);
        assert!(second != "b" && second != first);
        fail(&mut p, &second, "m", rate_limited(), T0);
        assert_eq!(take(&mut p, "m", T0), "b", "the worse priority only when the better ones cool");
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
    fn the_last_usable_key_is_probed_after_a_blip_and_rests_only_from_rotation() {
        let mut p = pool(&[("OPENAI_API_KEY", "a"), ("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI", "3")]);
        let blip = || Outcome::Transient { reason: "stream dropped".into() };
        take(&mut p, "m", T0);
        fail(&mut p, "a", "m", blip(), T0);
        release(&mut p, "a", "m");
        // Not benched: the next request gets the key, one at a time.
        take(&mut p, "m", T0);
        assert_eq!(p.acquire("openai", "m", T0, &[]), Pick::Busy, "the probe goes alone");
        // The probe fails too: the key cools down, but while it rests for nothing but
        // transient failures each new request still gets it, one at a time, instead of a 429.
        fail(&mut p, "a", "m", blip(), T0);
        release(&mut p, "a", "m");
        assert_eq!(take(&mut p, "m", T0 + 1), "a", "a probe despite the transient cooldown");
        assert_eq!(p.acquire("openai", "m", T0 + 1, &[]), Pick::Busy, "the probe goes alone");
        release(&mut p, "a", "m");
        // A request that tried it already is not given it twice.
        let id = p.providers["openai"].keys[0].id.clone();
        assert_eq!(p.acquire("openai", "m", T0 + 1, &[id]), Pick::NoneLeft);
        // A rate limit is the upstream's word: then the key rests and the answer is a 429.
        let limited = Outcome::RateLimited { retry_after: Some(5 * SECOND), reason: "429".into() };
        take(&mut p, "m", T0 + 2);
        fail(&mut p, "a", "m", limited, T0 + 2);
        release(&mut p, "a", "m");
        assert_eq!(p.acquire("openai", "m", T0 + 2, &[]), Pick::CoolingUntil(T0 + 2 + 5 * SECOND));
        // With another key usable, a blip benches the key at once.
        let mut p = pool(&[("OPENAI_API_KEY_1", "a"), ("OPENAI_API_KEY_2", "b")]);
        take(&mut p, "m", T0);
        let first = p.providers["openai"].keys.iter().find(|k| k.in_flight_total > 0).unwrap().secret.clone().unwrap();
        fail(&mut p, first.expose(), "m", blip(), T0);
        release(&mut p, first.expose(), "m");
        let other = if first.expose() == "a" { "b" } else { "a" };
        assert_eq!(take(&mut p, "m", T0), other);
        release(&mut p, other, "m");
        assert_eq!(take(&mut p, "m", T0), other, "the failed key rests");
    }

    #[test]
    fn balanced_rotation_counts_requests_in_flight() {
        // A burst of long streams: nothing ends, so today's counts stay 0 while they run.
        let mut p = pool(&[
            ("OPENAI_API_KEY_1", "a"),
            ("OPENAI_API_KEY_2", "b"),
            ("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI", "600"),
        ]);
        let mut per_key = std::collections::HashMap::new();
        for _ in 0..1000 {
            *per_key.entry(take(&mut p, "m", T0)).or_insert(0) += 1;
        }
        assert_eq!((per_key["a"], per_key["b"]), (500, 500), "{per_key:?}");
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

    /// Regression: token counts from a careless upstream (near u64::MAX) overflowed the
    /// counters, a panic under the pool's lock in debug builds.
    #[test]
    fn huge_token_counts_saturate() {
        let mut p = pool(&[("OPENAI_API_KEY", "a")]);
        let huge = Outcome::Success { prompt_tokens: u64::MAX, completion_tokens: u64::MAX };
        fail(&mut p, "a", "m", huge.clone(), T0);
        fail(&mut p, "a", "m", huge, T0);
        let status = p.status(T0);
        assert_eq!((status[0].today.prompt_tokens, status[0].today.completion_tokens), (u64::MAX, u64::MAX));
        p.status(T0 + 4 * HOUR);
        assert_eq!(p.providers["openai"].keys[0].record.models["m"].lifetime.prompt_tokens, u64::MAX);
    }

    #[test]
    fn blocks_go_out_and_come_in_from_other_instances() {
        let mut p = three_keys(&[]);
        let (a, b) = (id(&p, "a"), id(&p, "b"));
        fail(&mut p, "a", "m", rate_limited(), T0);
        fail(&mut p, "b", "x", Outcome::AuthFailed { reason: "401".into() }, T0);
        let out = p.blocks_of("openai", &a, "m", T0);
        assert_eq!(
            out,
            [Block {
                key: a.clone(),
                model: Some("m".into()),
                until: T0 + 10 * SECOND,
                reason: "429".into(),
                step: 1,
                transient: false
            }]
        );
        let lockout = Block {
            key: b.clone(),
            model: None,
            until: T0 + 5 * MINUTE,
            reason: "401".into(),
            step: 1,
            transient: false,
        };
        assert_eq!(p.blocks(T0), [out[0].clone(), lockout]);
        assert!(p.blocks(T0 + 5 * MINUTE).is_empty(), "over by then");
        // Another instance's cooldown of c: the pool passes c over, and a shorter one later
        // does not shorten it.
        let mut fresh = three_keys(&[]);
        let c = id(&fresh, "c");
        let until = T0 + MINUTE;
        let elsewhere = |until, step| Block {
            key: c.clone(),
            model: Some("m".into()),
            until,
            reason: "r".into(),
            step,
            transient: false,
        };
        fresh.apply_block(&elsewhere(until, 3));
        fresh.apply_block(&elsewhere(T0 + 1, 0));
        let here = &fresh.blocks_of("openai", &c, "m", T0)[0];
        assert_eq!((here.until, here.step), (until, 3), "the longer block and the higher step stay");
        let picked: Vec<String> = (0..2).map(|_| take(&mut fresh, "m", T0)).collect();
        assert!(picked.iter().all(|k| k != "c"), "{picked:?}");
        // A lockout from elsewhere blocks every model.
        fresh.apply_block(&Block {
            key: c,
            model: None,
            until,
            reason: "401 elsewhere".into(),
            step: 2,
            transient: false,
        });
        let status = fresh.status(T0);
        assert_eq!((status[2].state, status[2].locked_seconds_left), ("locked", 60));
        assert!(!fresh.take_changes().is_empty(), "key_usage.json learns of it too");
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

/// The pool checked against the linear rules it replaced, over seeded random histories.
#[cfg(test)]
mod differential {
    use super::*;
    use crate::config::LauncherConfig;
    use std::path::Path;

    const T0: u64 = 1_795_561_200_000;

    /// What the linear rules allow `acquire` to answer: one of these keys, or exactly this.
    #[derive(Debug)]
    enum Allowed {
        AnyOf(Vec<usize>),
        Exactly(Pick),
    }

    /// The selection rules as one scan over every key, written from the records alone.
    fn reference(pool: &KeyPool, provider: &str, model: &str, now: u64, exclude: &[String]) -> Allowed {
        let Some(p) = pool.providers.get(provider) else { return Allowed::Exactly(Pick::NoneLeft) };
        let total = |k: &Key| k.in_flight.values().sum::<u32>();
        let blocked = |k: &Key| {
            let lock = k.record.lockout.as_ref().map(|l| l.until).filter(|&u| u > now);
            let cool = k.record.models.get(model).and_then(|m| m.cooldown.as_ref()).map(|c| c.until);
            lock.max(cool.filter(|&u| u > now))
        };
        let room = |k: &Key| {
            let half_open = k.record.probe || k.record.models.get(model).is_some_and(|m| m.probe);
            let busy = if k.record.probe { total(k) } else { k.in_flight.get(model).copied().unwrap_or(0) };
            busy < if half_open { 1 } else { p.limit }
        };
        let keys: Vec<(usize, &Key)> = p.keys.iter().enumerate().filter(|(_, k)| !exclude.contains(&k.id)).collect();
        let free: Vec<(usize, &Key)> = keys.iter().copied().filter(|(_, k)| blocked(k).is_none()).collect();
        if free.is_empty() {
            // Resting only for transient failures: the key that is free first goes as a probe.
            let locked = |k: &Key| k.record.lockout.as_ref().is_some_and(|l| l.until > now);
            let transient =
                |k: &Key| k.record.models.get(model).and_then(|m| m.cooldown.as_ref()).is_some_and(|c| c.transient);
            if !keys.is_empty() && keys.iter().all(|(_, k)| !locked(k) && transient(k)) {
                let (i, k) = *keys.iter().min_by_key(|(i, k)| (blocked(k), *i)).unwrap();
                return if room(k) { Allowed::AnyOf(vec![i]) } else { Allowed::Exactly(Pick::Busy) };
            }
            let soonest = keys.iter().filter_map(|(_, k)| blocked(k)).min();
            return Allowed::Exactly(soonest.map_or(Pick::NoneLeft, Pick::CoolingUntil));
        }
        let with_room: Vec<(usize, &Key)> = free.into_iter().filter(|(_, k)| room(k)).collect();
        let Some(best) = with_room.iter().map(|(_, k)| k.priority).min() else {
            return Allowed::Exactly(Pick::Busy);
        };
        let ranked: Vec<(usize, &Key)> = with_room.into_iter().filter(|(_, k)| k.priority == best).collect();
        let idle: Vec<(usize, &Key)> = ranked.iter().copied().filter(|(_, k)| total(k) == 0).collect();
        let tier = if idle.is_empty() { ranked } else { idle };
        let requests = |k: &Key| {
            k.record.models.get(model).map_or(0, |m| m.today.requests)
                + u64::from(k.in_flight.get(model).copied().unwrap_or(0))
        };
        match p.rotation {
            Rotation::Balanced => {
                let fewest = tier.iter().map(|(_, k)| requests(k)).min().unwrap();
                Allowed::AnyOf(tier.iter().filter(|(_, k)| requests(k) == fewest).map(|(i, _)| *i).collect())
            }
            Rotation::Sequential => {
                let n = p.keys.len();
                let start = p.last.unwrap_or(0);
                let first = (0..n).map(|s| (start + s) % n).find(|i| tier.iter().any(|(j, _)| j == i)).unwrap();
                Allowed::AnyOf(vec![first])
            }
        }
    }

    /// When the first blocked key frees, if no key is free now.
    fn reference_soonest(pool: &KeyPool, provider: &str, model: &str, now: u64) -> Option<u64> {
        let p = pool.providers.get(provider)?;
        let blocked: Vec<u64> = p.keys.iter().map(|k| k.blocked_until(model)).collect();
        blocked.iter().all(|&until| until > now).then(|| blocked.iter().copied().min()).flatten()
    }

    /// A random history on one provider: keys, models, leases held, the clock.
    struct World {
        pool: KeyPool,
        env: BTreeMap<String, String>,
        secrets: Vec<String>,
        models: Vec<String>,
        held: Vec<(String, String)>,
        now: u64,
        rng: u64,
    }

    impl World {
        fn new(seed: u64) -> World {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let n_keys = 1 + (next_random(&mut rng) % 40) as usize;
            let n_models = 1 + (next_random(&mut rng) % 3) as usize;
            let limit = 1 + next_random(&mut rng) % 3;
            let sequential = next_random(&mut rng) % 2 == 0;
            let mut env = BTreeMap::new();
            env.insert("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI".to_string(), limit.to_string());
            if sequential {
                env.insert("ROTATION_MODE_OPENAI".to_string(), "sequential".to_string());
            }
            let secrets: Vec<String> = (0..n_keys).map(|i| format!("sk-{seed}-{i}")).collect();
            let mut world = World {
                pool: KeyPool::new(&config(&env, &secrets), T0),
                env,
                secrets,
                models: (0..n_models).map(|m| format!("m{m}")).collect(),
                held: Vec::new(),
                now: T0,
                rng,
            };
            world.pool.rng = seed | 1;
            for id in world.ids() {
                if world.below(2) == 0 {
                    world.rank(&id);
                }
            }
            world
        }

        /// Gives key `id` a random priority, as a learnt tier would.
        fn rank(&mut self, id: &str) {
            let priority = [1, 2, 3, DEFAULT_PRIORITY][self.below(4)];
            self.pool.set_priority("openai", id, priority);
        }

        fn below(&mut self, n: usize) -> usize {
            (next_random(&mut self.rng) % n as u64) as usize
        }

        fn ids(&self) -> Vec<String> {
            self.pool.providers.get("openai").map_or(Vec::new(), |p| p.keys.iter().map(|k| k.id.clone()).collect())
        }

        fn outcome(&mut self) -> Outcome {
            let hint = [None, Some(0), Some(1_500), Some(QUOTA_HINT_MS + 1), Some(3 * HOUR)][self.below(5)];
            let reason = "r".to_string();
            match self.below(8) {
                0 | 1 => Outcome::Success { prompt_tokens: 3, completion_tokens: 4 },
                2 => Outcome::RateLimited { retry_after: hint, reason },
                3 => Outcome::QuotaExhausted { retry_after: hint, reason },
                4 => Outcome::AuthFailed { reason },
                5 => Outcome::Transient { reason },
                6 => Outcome::RequestError,
                _ => Outcome::Cancelled,
            }
        }

        /// One random operation, its answer checked against the linear rules.
        fn step(&mut self) {
            let m = self.below(self.models.len());
            let model = self.models[m].clone();
            match self.below(20) {
                0..=6 => self.acquire(&model),
                7..=9 if !self.held.is_empty() => {
                    let at = self.below(self.held.len());
                    let (id, model) = self.held.swap_remove(at);
                    self.pool.release("openai", &id, &model);
                }
                10..=13 => {
                    let ids = self.ids();
                    let (at, any) = (self.below(self.held.len().max(1)), self.below(ids.len()));
                    let (id, model) = self.held.get(at).cloned().unwrap_or_else(|| (ids[any].clone(), model));
                    let outcome = self.outcome();
                    self.pool.report("openai", &id, &model, &outcome, self.now);
                }
                14 | 15 => self.now += [1, 500, 10 * SECOND, 2 * MINUTE, 5 * HOUR][self.below(5)],
                16 => {
                    let soonest = self.pool.soonest_free("openai", &model, self.now);
                    assert_eq!(soonest, reference_soonest(&self.pool, "openai", &model, self.now));
                }
                17 if self.below(10) == 0 => self.reload(),
                18 if self.below(10) == 0 => {
                    let snapshot = self.pool.snapshot(self.now);
                    self.pool.restore(snapshot, self.now);
                }
                19 if self.below(3) == 0 => {
                    let ids = self.ids();
                    let id = ids[self.below(ids.len())].clone();
                    self.rank(&id);
                }
                _ => {}
            }
        }

        fn acquire(&mut self, model: &str) {
            let ids = self.ids();
            let exclude: Vec<String> = match self.below(6) {
                0 => ids.clone(),
                1 | 2 => {
                    let n = 1 + self.below(3);
                    (0..n).map(|_| ids[self.below(ids.len())].clone()).collect()
                }
                _ => Vec::new(),
            };
            self.pool.roll_day(self.now);
            let allowed = reference(&self.pool, "openai", model, self.now, &exclude);
            let pick = self.pool.acquire("openai", model, self.now, &exclude);
            match (&allowed, &pick) {
                (Allowed::AnyOf(keys), Pick::Key(c)) => {
                    let i = self.pool.providers["openai"].by_id[&c.id];
                    assert!(keys.contains(&i), "picked key {i}, the rules allow {keys:?}");
                    self.held.push((c.id.clone(), model.to_string()));
                }
                (Allowed::Exactly(expected), _) => assert_eq!(&pick, expected),
                _ => panic!("the rules allow {allowed:?}, the pool answered {pick:?}"),
            }
        }

        /// A SIGHUP with some keys gone and some back.
        fn reload(&mut self) {
            let secrets = self.secrets.clone();
            let kept: Vec<String> = secrets.into_iter().filter(|_| self.below(4) != 0).collect();
            let kept = if kept.is_empty() { self.secrets[..1].to_vec() } else { kept };
            self.pool.sync(&config(&self.env, &kept));
        }
    }

    fn config(env: &BTreeMap<String, String>, secrets: &[String]) -> Config {
        let mut env = env.clone();
        for (i, secret) in secrets.iter().enumerate() {
            env.insert(format!("OPENAI_API_KEY_{}", i + 1), secret.clone());
        }
        Config::from_env(Path::new("."), &env, LauncherConfig::default()).unwrap()
    }

    #[test]
    fn every_pick_is_one_the_linear_rules_allow() {
        let mut picks = 0;
        for seed in 1..=300 {
            let mut world = World::new(seed);
            for _ in 0..400 {
                world.step();
            }
            picks += world.pool.providers["openai"].keys.iter().map(|k| k.record.models.len()).sum::<usize>();
        }
        assert!(picks > 0);
    }

    #[test]
    fn more_models_than_indexes_evict_and_rebuild_them() {
        for seed in 1..=20 {
            let mut world = World::new(seed);
            world.models = (0..MAX_MODEL_INDEXES + 8).map(|m| format!("m{m}")).collect();
            for _ in 0..600 {
                world.step();
                assert!(world.pool.providers["openai"].indexes.len() <= MAX_MODEL_INDEXES);
            }
        }
    }

    #[test]
    fn the_writers_copy_equals_a_full_snapshot() {
        for seed in 1..=60 {
            let mut world = World::new(seed);
            let mut copy = Snapshot::default();
            for step in 0..400 {
                world.step();
                if step % 7 == 0 {
                    copy.apply(world.pool.take_changes());
                    copy.saved_at = world.now;
                    assert_eq!(copy, world.pool.snapshot(world.now), "seed {seed}, step {step}");
                }
            }
            let changes = world.pool.take_changes();
            copy.apply(changes);
            assert!(world.pool.take_changes().is_empty(), "nothing changed since");
        }
    }
}
