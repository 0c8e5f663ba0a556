//! The pool's rules, one at a time, with the time passed in.

use super::record::*;
use super::*;
use crate::clock::{HOUR, MINUTE, SECOND};
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
        fail(&mut p, "a", model, Outcome::QuotaExhausted { retry_after: Some(3 * HOUR), reason: "quota".into() }, T0);
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
    let lockout =
        Block { key: b.clone(), model: None, until: T0 + 5 * MINUTE, reason: "401".into(), step: 1, transient: false };
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
    fresh.apply_block(&Block { key: c, model: None, until, reason: "401 elsewhere".into(), step: 2, transient: false });
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

#[test]
fn a_stream_that_opens_through_a_transient_cooldown_ends_it() {
    let mut p = pool(&[("OPENAI_API_KEY", "a"), ("MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI", "3")]);
    let blip = || Outcome::Transient { reason: "503".into() };
    for _ in 0..2 {
        take(&mut p, "m", T0);
        fail(&mut p, "a", "m", blip(), T0);
        release(&mut p, "a", "m");
    }
    let id = p.providers["openai"].keys[0].id.clone();
    // Resting for a transient failure: a probe, one at a time.
    assert_eq!(take(&mut p, "m", T0 + 1), "a");
    assert_eq!(p.acquire("openai", "m", T0 + 1, &[]), Pick::Busy, "the probe goes alone");
    // Its stream opened: the key works, and takes the others up to its limit.
    assert!(p.stream_opened("openai", &id, "m"));
    assert_eq!(take(&mut p, "m", T0 + 1), "a");
    assert!(!p.stream_opened("openai", &id, "m"), "nothing more to end");
    // A rate limit is not ended by a stream that opens.
    let limited = Outcome::RateLimited { retry_after: Some(5 * SECOND), reason: "429".into() };
    fail(&mut p, "a", "m", limited, T0 + 2);
    assert!(!p.stream_opened("openai", &id, "m"));
}
