//! The per-(provider, model) index that makes a pick O(log n): each key's place (free in a
//! group, full, or blocked until a time), the free keys grouped by (priority, tier) in
//! rotation order, the blocked ones in a timer queue; and a provider's keys with their
//! indexes (`ProviderKeys`).

use super::record::KeyRecord;
use crate::config::Rotation;
use crate::oauth::tier::DEFAULT_PRIORITY;
use crate::secret::Secret;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug)]
pub(super) struct Key {
    pub(super) id: String,
    /// None for an OAuth credential, whose token is taken at attempt time (`oauth::refresh`).
    pub(super) secret: Option<Secret>,
    pub(super) record: KeyRecord,
    pub(super) in_flight: BTreeMap<String, u32>,
    /// The sum of `in_flight`, kept so the "idle" test costs nothing.
    pub(super) in_flight_total: u32,
    /// Lower is better (`DEFAULT_PRIORITY` unless the key's account ranks it); not persisted,
    /// since it comes from the credential.
    pub(super) priority: u32,
    /// Changed since the `key_usage.json` writer last took it (and listed in `dirty`).
    pub(super) dirty: bool,
}

impl Key {
    pub(super) fn new(id: String, secret: Option<Secret>, record: KeyRecord) -> Key {
        let priority = DEFAULT_PRIORITY;
        Key { id, secret, record, in_flight: BTreeMap::new(), in_flight_total: 0, priority, dirty: false }
    }

    pub(super) fn in_flight_for(&self, model: &str) -> u32 {
        self.in_flight.get(model).copied().unwrap_or(0)
    }

    /// The end of whatever blocks this key for `model` (0: nothing ever did); it is blocked at
    /// `now` when this is later than `now`.
    pub(super) fn blocked_until(&self, model: &str) -> u64 {
        let lock = self.record.lockout.as_ref().map_or(0, |l| l.until);
        let cool = self.record.models.get(model).and_then(|m| m.cooldown.as_ref()).map_or(0, |c| c.until);
        lock.max(cool)
    }

    pub(super) fn has_room(&self, model: &str, limit: u32) -> bool {
        let half_open = self.half_open(model);
        let limit = if half_open { 1 } else { limit };
        let busy = if self.record.probe { self.in_flight_total } else { self.in_flight_for(model) };
        busy < limit
    }

    pub(super) fn requests_today(&self, model: &str) -> u64 {
        self.record.models.get(model).map_or(0, |m| m.today.requests)
    }

    /// What balanced rotation evens out: today's requests for `model` plus those in flight now.
    /// Today's count grows only when a request ends, so during a burst of long streams the
    /// in-flight count is what tells the keys apart.
    pub(super) fn load(&self, model: &str) -> u64 {
        self.requests_today(model) + u64::from(self.in_flight_for(model))
    }

    /// Half-open: after a cooldown, a lockout or a spared failure, one request at a time.
    pub(super) fn half_open(&self, model: &str) -> bool {
        self.record.probe || self.record.models.get(model).is_some_and(|m| m.probe)
    }
}

/// A free key's place in a tier: (requests today for the model, random tie-break, key index)
/// in balanced mode, (0, 0, key index) in sequential mode, so the first slot is the pick.
pub(super) type Slot = (u64, u64, usize);

/// A group of free keys with room: (priority, tier), best first. Tier 0 holds idle keys
/// (nothing in flight on any model), tier 1 the rest, so a busy key of a better priority goes
/// before an idle one of a worse priority.
pub(super) type Group = (u32, usize);

/// Where one key stands for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
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
pub(super) struct ModelIndex {
    /// Only non-empty groups, so a pick visits at most the few priorities in use (twice).
    pub(super) tiers: BTreeMap<Group, BTreeSet<Slot>>,
    /// How many keys are `Place::Full`.
    pub(super) full: usize,
    /// The timer queue: (blocked until, key index), soonest first.
    pub(super) blocked: BTreeSet<(u64, usize)>,
    /// Each key's place, by key index.
    pub(super) place: Vec<Place>,
    /// The latest `now` seen: a key is in `blocked` exactly when it is blocked beyond this.
    /// (A clock stepping back does not block again a key already seen free.)
    pub(super) seen: u64,
    /// When the index was last used, in `ProviderKeys::uses`, to evict the least recent.
    pub(super) used: u64,
}

impl ModelIndex {
    pub(super) fn remove(&mut self, i: usize) {
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

    pub(super) fn insert(&mut self, i: usize, place: Place) {
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
    pub(super) fn free(&self) -> usize {
        self.tiers.values().map(BTreeSet::len).sum::<usize>() + self.full
    }
}

/// The most model indexes a provider keeps: model names come from clients, and each index
/// costs memory per key and an update per acquire and release.
pub(super) const MAX_MODEL_INDEXES: usize = 32;

#[derive(Debug)]
pub(super) struct ProviderKeys {
    pub(super) keys: Vec<Key>,
    pub(super) by_id: HashMap<String, usize>,
    pub(super) limit: u32,
    pub(super) rotation: Rotation,
    /// Index of the key used last (sequential mode stays on it).
    pub(super) last: Option<usize>,
    pub(super) indexes: HashMap<String, ModelIndex>,
    /// A counter of index uses, for eviction.
    pub(super) uses: u64,
    /// Keys with `dirty` set, for the `key_usage.json` writer.
    pub(super) dirty: Vec<usize>,
}

/// What placing a key needs to read of its provider, borrowed apart from the indexes.
pub(super) struct View<'a> {
    pub(super) keys: &'a [Key],
    pub(super) limit: u32,
    pub(super) rotation: Rotation,
}

impl View<'_> {
    /// Where key `i` belongs for `model`, given the latest time seen; a new random tie-break
    /// only when its tier or count changed, so an unchanged key keeps its slot.
    pub(super) fn place_of(&self, i: usize, model: &str, seen: u64, old: Place, rng: &mut u64) -> Place {
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

    pub(super) fn build(&self, model: &str, now: u64, used: u64, rng: &mut u64) -> ModelIndex {
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
    pub(super) fn advance(&self, index: &mut ModelIndex, model: &str, now: u64, rng: &mut u64) {
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
    pub(super) fn another_usable(&self, i: usize, model: &str, now: u64) -> bool {
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
    /// (docs/key-rotation.md). Some(Some(key)) to take it, Some(None) while its probe is under
    /// way (wait for its outcome), None when the rule does not apply. Only reached when no
    /// key is free, so the scan costs nothing on the usual path.
    pub(super) fn transient_probe(&self, model: &str, now: u64, excluded: &[usize]) -> Option<Option<usize>> {
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
    pub(super) fn index(&mut self, model: &str, now: u64, rng: &mut u64) -> &mut ModelIndex {
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
    pub(super) fn relocate(&mut self, i: usize, rng: &mut u64) {
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

    pub(super) fn mark_dirty(&mut self, i: usize) {
        if !self.keys[i].dirty {
            self.keys[i].dirty = true;
            self.dirty.push(i);
        }
    }
}

/// The first free key of `set` not excluded: in balanced mode the fewest requests (ties in
/// random order), in sequential mode the first at or after `last`, cyclically.
pub(super) fn first_in(
    set: &BTreeSet<Slot>,
    rotation: Rotation,
    last: Option<usize>,
    excluded: &[usize],
) -> Option<usize> {
    let ok = |s: &&Slot| !excluded.contains(&s.2);
    let found = match rotation {
        Rotation::Balanced => set.iter().find(ok),
        Rotation::Sequential => set.range((0, 0, last.unwrap_or(0))..).find(ok).or_else(|| set.iter().find(ok)),
    };
    found.map(|s| s.2)
}

pub(super) fn next_random(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}
