//! The pool checked against the linear rules it replaced, over seeded random histories.

use super::index::{Key, MAX_MODEL_INDEXES, next_random};
use super::record::*;
use super::*;
use crate::clock::{HOUR, MINUTE, SECOND};
use crate::config::LauncherConfig;
use crate::config::Rotation;
use crate::providers::errors::QUOTA_HINT_MS;
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
