//! Several keyrelay instances sharing one key pool through a real Redis
//! (`STATE_BACKEND=redis+unix://...`): limits held across instances, cooldowns honoured by
//! all, a killed instance's slots back within the lease TTL, and no request lost when Redis
//! goes away.

use crate::support::mock::{Piece, completion, content_chunk, counting_upstream, event};
use crate::support::{Mock, MockReply, Proxy, Recorded, Redis, WAIT};
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";

/// An instance's `.env`: a 2 s lease TTL, and unless `extra` says otherwise a generous Redis
/// timeout, so that a test machine under load does not look like a Redis outage.
fn env(mock: &Mock, redis: &Redis, instance: &str, extra: &str) -> String {
    let timeout = if extra.contains("REDIS_TIMEOUT") { "" } else { "REDIS_TIMEOUT=2\n" };
    format!(
        "OPENAI_API_BASE={}\nSTATE_BACKEND={}\nINSTANCE_ID={instance}\nREDIS_LEASE_TTL=2\n{timeout}{extra}",
        mock.base(),
        redis.url()
    )
}

fn three_instances(mock: &Mock, redis: &Redis, extra: &str) -> Vec<Proxy> {
    ["a", "b", "c"].iter().map(|i| Proxy::start(&env(mock, redis, i, extra))).collect()
}

/// `count` clients at once, spread over the instances, each sending one chat request.
fn spread(proxies: &[Proxy], count: usize, models: &[&'static str]) -> Vec<std::thread::JoinHandle<(u16, String)>> {
    (0..count)
        .map(|i| {
            let client = proxies[i % proxies.len()].client();
            let model = models[i % models.len()];
            std::thread::spawn(move || {
                let answer = client.post(CHAT, &format!(r#"{{"model":"{model}","messages":[]}}"#));
                (answer.status, answer.text())
            })
        })
        .collect()
}

fn quota_stats(proxy: &Proxy) -> Value {
    proxy.client().get("/v1/quota-stats").json()
}

const KEYS: &str = "OPENAI_API_KEY_1=sk-shared-one\nOPENAI_API_KEY_2=sk-shared-two\nOPENAI_API_KEY_3=sk-shared-three\n";

#[test]
fn three_instances_never_exceed_a_key_limit_together() {
    let redis = Redis::start();
    let (arrived, _) = crossbeam_channel::unbounded();
    let (mock, seen) = counting_upstream(Some(arrived));
    let proxies = three_instances(&mock, &redis, &format!("{KEYS}MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI=2\n"));
    for client in spread(&proxies, 300, &["openai/a", "openai/b"]) {
        let (status, body) = client.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(mock.requests().len(), 300);
    let c = seen.lock().unwrap();
    for ((key, model), max) in &c.max {
        assert!(*max <= 2, "key {key} model {model} held {max} at once across the instances (limit 2)");
    }
    assert!(c.max.values().any(|&m| m == 2), "the limit was never reached: the test did not overlap requests");
    // Every lease is back: the shared view shows nothing in flight.
    let stats = quota_stats(&proxies[0]);
    assert_eq!(stats["state_backend"]["up"], true, "{stats}");
    let keys = stats["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k["shared"]["in_flight"] == 0), "{stats}");
    // Today's counters add up over the instances.
    let total: u64 = keys.iter().map(|k| k["shared"]["today"]["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 300, "{stats}");
}

#[test]
fn a_cooldown_set_by_one_instance_is_honoured_by_the_others_at_once() {
    let redis = Redis::start();
    let mock = Mock::start(|_| MockReply::Full {
        status: 429,
        headers: vec![("retry-after".into(), "60".into()), ("content-type".into(), "application/json".into())],
        body: br#"{"error":{"message":"slow down","type":"rate_limit_exceeded"}}"#.to_vec(),
    });
    let proxies = three_instances(&mock, &redis, "OPENAI_API_KEY=sk-cooling-key-0001\n");
    let first = proxies[0].client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
    assert_eq!(first.status, 429, "{}", first.text());
    assert_eq!(mock.requests().len(), 1);
    for proxy in &proxies[1..] {
        let answer = proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
        assert_eq!(answer.status, 429, "{}", answer.text());
        let key = &quota_stats(proxy)["keys"][0];
        assert_eq!(key["state"], "cooldown", "{key}");
        let left = key["shared"]["cooldowns"][0]["seconds_left"].as_u64().unwrap();
        assert!((55..=60).contains(&left), "{key}");
    }
    assert_eq!(mock.requests().len(), 1, "the other instances did not call the upstream with a cooling key");
    // An instance started later takes the cooldown in from Redis before any request.
    let late = Proxy::start(&env(&mock, &redis, "late", "OPENAI_API_KEY=sk-cooling-key-0001\n"));
    late.wait_for_log("took in 1 cooldowns and lockouts from Redis");
    assert_eq!(quota_stats(&late)["keys"][0]["state"], "cooldown");
}

#[test]
fn a_key_resting_for_transient_failures_elsewhere_is_still_probed() {
    let redis = Redis::start();
    // Down for four calls (two requests on the first instance, each with its same-key retry).
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let mock = Mock::start(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 4 {
            MockReply::json(503, serde_json::json!({"error": {"message": "down", "type": "server_error"}}))
        } else {
            MockReply::json(200, completion("back"))
        }
    });
    let key = "OPENAI_API_KEY=sk-flaky-key-0007\n";
    let (a, b) = (Proxy::start(&env(&mock, &redis, "a", key)), Proxy::start(&env(&mock, &redis, "b", key)));
    let chat = |p: &Proxy| p.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
    assert_eq!(chat(&a).status, 502, "the first failure spares the only key");
    assert_eq!(chat(&a).status, 502, "the second rests it, for a transient failure");
    let shared = &quota_stats(&a)["keys"][0]["shared"]["cooldowns"][0];
    assert_eq!(shared["transient"], true, "{shared}");
    // The other instance knows of the rest, yet probes the key instead of answering 429 (and
    // does not spin between its pool and Redis).
    let answer = chat(&b);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.requests().len(), 5);
}

#[test]
fn a_killed_instance_frees_its_slots_within_the_lease_ttl() {
    let redis = Redis::start();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let gate = Mutex::new(Some(release_rx));
    let mock = Mock::start(move |req: &Recorded| {
        if req.json()["stream"] == true {
            let hold = gate.lock().unwrap().take().expect("one stream");
            return MockReply::sse(vec![Piece::Bytes(event(&content_chunk("start"))), Piece::Hold(hold)]);
        }
        MockReply::json(200, completion("ok"))
    });
    let extra = "OPENAI_API_KEY=sk-only-key-0001\nMAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI=1\nGLOBAL_TIMEOUT=8\n";
    let doomed = Proxy::start(&env(&mock, &redis, "doomed", extra));
    let survivor = Proxy::start(&env(&mock, &redis, "survivor", extra));
    let mut stream = doomed.client().stream(CHAT, r#"{"model":"openai/m","messages":[],"stream":true}"#);
    assert!(stream.next_event().is_some_and(|e| e.contains("start")), "the stream started");
    let key = &quota_stats(&survivor)["keys"][0];
    assert_eq!(key["shared"]["in_flight"], 1, "{key}");
    assert_eq!(key["shared"]["leases"][0]["instance"], "doomed", "{key}");
    // While the stream runs its lease is renewed: a request that waits longer than the TTL
    // (its 3 s deadline) still finds the key taken.
    let patient = Proxy::start(&env(&mock, &redis, "patient", &extra.replace("GLOBAL_TIMEOUT=8", "GLOBAL_TIMEOUT=3")));
    let started = Instant::now();
    let refused = patient.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
    assert_ne!(refused.status, 200, "{}", refused.text());
    assert!(started.elapsed() >= Duration::from_secs(2), "gave up before the lease could have expired");
    assert_eq!(mock.requests().len(), 1, "only the stream reached the upstream");
    let _dir = doomed.kill();
    // The survivor's request waits for the dead instance's lease to expire (2 s), not longer.
    let started = Instant::now();
    let answer = survivor.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "waited {waited:?} for a 2 s lease");
    drop(release_tx);
}

#[test]
fn stopping_redis_mid_load_loses_no_request() {
    let mut redis = Redis::start();
    let (arrived_tx, arrived) = crossbeam_channel::unbounded();
    let (mock, _) = counting_upstream(Some(arrived_tx));
    let proxies = three_instances(&mock, &redis, &format!("{KEYS}MAX_CONCURRENT_REQUESTS_PER_KEY_OPENAI=4\n"));
    let clients = spread(&proxies, 240, &["openai/a", "openai/b"]);
    for _ in 0..60 {
        arrived.recv_timeout(WAIT).expect("requests reach the upstream");
    }
    redis.kill();
    for client in clients {
        let (status, body) = client.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(mock.requests().len(), 240);
    // The outage shows, and is said once per outage.
    let after = proxies[0].client().post(CHAT, r#"{"model":"openai/a","messages":[]}"#);
    assert_eq!(after.status, 200);
    let metrics = proxies[0].client().get("/metrics").text();
    assert!(metrics.contains("keyrelay_state_backend_up 0"), "{metrics}");
    proxies[0].wait_for_log("Redis is not answering");
    let logs = proxies[0].logs();
    assert_eq!(
        logs.matches("Redis is not answering").count(),
        logs.matches("Redis answers again").count() + 1,
        "{logs}"
    );
    // Back: the instances find it again by themselves, and share their state once more.
    redis.restart();
    proxies[0].wait_for_log("Redis answers again");
    let stats = quota_stats(&proxies[0]);
    assert_eq!(stats["state_backend"]["up"], true, "{stats}");
}

#[test]
fn the_redis_password_never_shows() {
    const PASSWORD: &str = "redis-pass-Qx7vT9kLm2";
    let mut redis = Redis::start_with_password(PASSWORD);
    let mock = Mock::start(|_| MockReply::json(200, completion("ok")));
    let proxy = Proxy::start(&env(&mock, &redis, "a", "OPENAI_API_KEY=sk-pass-test-0001\n"));
    assert_eq!(proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#).status, 200);
    let stats = quota_stats(&proxy);
    assert_eq!(stats["state_backend"]["up"], true, "the password was not used: {stats}");
    assert_eq!(stats["keys"][0]["shared"]["today"]["requests"], 1, "{stats}");
    // An outage's warning carries the error, and never the URL's password.
    redis.kill();
    assert_eq!(proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#).status, 200);
    proxy.wait_for_log("Redis is not answering");
    let status = proxy.status();
    let metrics = proxy.client().get("/metrics").text();
    let (_, dir) = proxy.stop();
    let usage = std::fs::read_to_string(dir.path().join("key_usage.json")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("logs/keyrelay.log")).unwrap();
    for (what, text) in
        [("status", format!("{status:?}")), ("metrics", metrics), ("key_usage.json", usage), ("log", log)]
    {
        assert!(!text.contains(&PASSWORD[..12]), "{what} shows the Redis password: {text}");
    }
}

#[test]
fn a_redis_that_stops_answering_costs_requests_little() {
    let redis = Redis::start();
    let mock = Mock::start(|_| MockReply::json(200, completion("ok")));
    let proxy = Proxy::start(&env(&mock, &redis, "a", "OPENAI_API_KEY=sk-stalled-redis-0001\nREDIS_TIMEOUT=0.2\n"));
    assert_eq!(proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#).status, 200);
    redis.signal("STOP");
    // Each call to Redis gives up after 200 ms, and while it is down only one call per
    // back-off period tries it again.
    let started = Instant::now();
    for _ in 0..20 {
        let answer = proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "20 requests took {took:?} with a stalled Redis");
    proxy.wait_for_log("Redis is not answering");
    redis.signal("CONT");
    proxy.wait_for_log("Redis answers again");
    assert_eq!(quota_stats(&proxy)["state_backend"]["up"], true);
}
