//! A hand-run measurement of the key pool's cost per request as the pool grows:
//! `cargo run --release --example pool_bench`. Prints ns per acquire+report+release with 2 and
//! with 5,000 keys on one provider, and what the `key_usage.json` writer holds the lock for.

use keyrelay::config::{Config, LauncherConfig};
use keyrelay::keys::pool::{KeyPool, Outcome, Pick};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const T0: u64 = 1_795_561_200_000;

fn pool(keys: usize) -> KeyPool {
    let mut env: BTreeMap<String, String> =
        (1..=keys).map(|i| (format!("OPENAI_API_KEY_{i}"), format!("sk-bench-{i:06}"))).collect();
    env.insert("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI".into(), "4".into());
    let config = Config::from_env(Path::new("."), &env, LauncherConfig::default()).expect("config");
    KeyPool::new(&config, T0)
}

/// ns per acquire+report+release, with `held` requests kept in flight throughout.
fn per_op(keys: usize, held: usize, ops: u64) -> f64 {
    let mut p = pool(keys);
    let mut leases = std::collections::VecDeque::new();
    let take = |p: &mut KeyPool, now: u64| match p.acquire("openai", "m", now, &[]) {
        Pick::Key(c) => c.id,
        other => panic!("no key: {other:?}"),
    };
    for _ in 0..held {
        leases.push_back(take(&mut p, T0));
    }
    let success = Outcome::Success { prompt_tokens: 10, completion_tokens: 20 };
    let start = Instant::now();
    for i in 0..ops {
        let now = T0 + i / 10;
        let id = take(&mut p, now);
        p.report("openai", &id, "m", &success, now);
        p.release("openai", &id, "m");
        // Rotate the held ones so every key's tier keeps changing.
        if let Some(old) = leases.pop_front() {
            p.release("openai", &old, "m");
            leases.push_back(take(&mut p, now));
        }
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

/// ns the `key_usage.json` writer holds the pool lock for per save: a full snapshot (every
/// record), and the records changed since the last save when `changed` keys changed.
fn writer_hold(keys: usize, changed: usize) -> (f64, f64) {
    let mut p = pool(keys);
    let rounds = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(p.snapshot(T0));
    }
    let full = start.elapsed().as_nanos() as f64 / rounds as f64;
    p.take_changes();
    let success = Outcome::Success { prompt_tokens: 10, completion_tokens: 20 };
    let mut held = 0;
    for _ in 0..rounds {
        for _ in 0..changed {
            let Pick::Key(c) = p.acquire("openai", "m", T0, &[]) else { panic!("no key") };
            p.report("openai", &c.id, "m", &success, T0);
            p.release("openai", &c.id, "m");
        }
        let start = Instant::now();
        std::hint::black_box(p.take_changes());
        held += start.elapsed().as_nanos();
    }
    (full, held as f64 / rounds as f64)
}

fn main() {
    for keys in [2, 5_000] {
        let ops = if keys > 100 { 20_000 } else { 200_000 };
        println!("{keys:>5} keys: {:>9.0} ns/op (none held)", per_op(keys, 0, ops));
        println!("{keys:>5} keys: {:>9.0} ns/op (7 held in flight)", per_op(keys, 7, ops));
        let (full, changed) = writer_hold(keys, 2.min(keys));
        println!("{keys:>5} keys: {full:>9.0} ns to copy every record, {changed:.0} ns to take 2 changed ones");
    }
}
