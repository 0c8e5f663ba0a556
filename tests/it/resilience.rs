//! The resilience engine end to end: concurrency limits under load, every failure class with
//! the keys the upstream saw, cooldowns in `status --json`, fail-fast answers, persistence
//! across SIGTERM and `kill -9`.

use crate::support::mock::{Piece, RawMock, completion, content_chunk, counting_upstream, event};
use crate::support::{Mock, MockReply, Proxy, TempDir, WAIT, run_cli};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"openai/m","messages":[]}"#;

fn chat(proxy: &Proxy) -> crate::support::Answer {
    proxy.client().post(CHAT, BODY)
}

/// Key `bad` answers with `reply`, key `good` succeeds.
fn one_bad_key(reply: impl Fn() -> MockReply + Send + Sync + 'static) -> (Mock, Proxy) {
    let mock = Mock::start(move |req| {
        if req.key().as_deref() == Some("sk-bad-key-0bad") { reply() } else { MockReply::json(200, completion("ok")) }
    });
    let proxy = Proxy::start(&format!(
        "OPENAI_API_BASE={}\nOPENAI_API_KEY_1=sk-bad-key-0bad\nOPENAI_API_KEY_2=sk-good-key-good\n",
        mock.base()
    ));
    (mock, proxy)
}

fn with_headers(status: u16, headers: &[(&str, &str)], body: Value) -> MockReply {
    let mut h: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    h.push(("content-type".into(), "application/json".into()));
    MockReply::Full { status, headers: h, body: body.to_string().into_bytes() }
}

/// Sends requests until the bad key has been tried, and returns the bad key's status line.
fn bad_key_after_failure(mock: &Mock, proxy: &Proxy) -> Value {
    for _ in 0..4 {
        let answer = chat(proxy);
        assert_eq!(answer.status, 200, "the good key must answer: {}", answer.text());
        if mock.keys_seen().iter().any(|k| k == "sk-bad-key-0bad") {
            return proxy.key_status("...0bad");
        }
    }
    panic!("the bad key was never tried");
}

#[track_caller]
fn assert_cooldown(status: &Value, seconds: u64, reason_part: &str) {
    assert_eq!(status["state"], "cooldown", "{status}");
    let c = &status["cooldowns"][0];
    let left = c["seconds_left"].as_u64().unwrap();
    assert!(left <= seconds && left + 3 >= seconds, "expected about {seconds} s left: {status}");
    assert!(c["reason"].as_str().unwrap().contains(reason_part), "{status}");
    assert_eq!(c["model"], "m");
}

#[test]
fn rate_limit_hints_in_every_format_set_the_cooldown() {
    let in_90s = {
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(90);
        httpdate(t)
    };
    // (what, response headers, response body, expected cooldown in seconds)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Value, u64);
    let cases: Vec<Case> = vec![
        (
            "retry-after seconds",
            vec![("retry-after", "42".into())],
            json!({"error": {"message": "slow", "code": "rate_limit_exceeded"}}),
            42,
        ),
        ("retry-after date", vec![("retry-after", in_90s)], json!({"error": {"message": "slow"}}), 90),
        ("retry-after-ms", vec![("retry-after-ms", "33000".into())], json!({"error": {"message": "slow"}}), 33),
        (
            "x-ratelimit-reset",
            vec![("x-ratelimit-reset-tokens", "1m10s".into()), ("x-ratelimit-remaining-tokens", "0".into())],
            json!({"error": {"message": "slow"}}),
            70,
        ),
        (
            "gemini RetryInfo",
            vec![],
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "55s"}]}}),
            55,
        ),
        (
            "message text",
            vec![],
            json!({"error": {"message": "Rate limit reached. Please try again in 47.2s.", "type": "requests"}}),
            48,
        ),
        ("no hint: the ladder's first step", vec![], json!({"error": {"message": "slow"}}), 10),
    ];
    for (name, headers, body, seconds) in cases {
        let headers: Vec<(String, String)> = headers.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        let (mock, proxy) = one_bad_key(move || MockReply::Full {
            status: 429,
            headers: headers.iter().cloned().chain([("content-type".into(), "application/json".into())]).collect(),
            body: body.to_string().into_bytes(),
        });
        let status = bad_key_after_failure(&mock, &proxy);
        assert_cooldown(&status, seconds, "rate limited");
        // The cooling key is not tried again while it cools.
        let before = mock.keys_seen().len();
        for _ in 0..3 {
            assert_eq!(chat(&proxy).status, 200, "{name}");
        }
        let after: Vec<String> = mock.keys_seen()[before..].to_vec();
        assert!(after.iter().all(|k| k == "sk-good-key-good"), "{name}: {after:?}");
    }
}

fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days (Howard Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(mo - 1) as usize];
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    format!("{weekday}, {d:02} {month} {y} {h:02}:{m:02}:{s:02} GMT")
}

#[test]
fn quota_and_auth_failures() {
    let quota = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}});
    let (mock, proxy) = one_bad_key(move || MockReply::json(429, quota.clone()));
    let status = bad_key_after_failure(&mock, &proxy);
    assert_eq!(status["state"], "cooldown");
    assert!(status["cooldowns"][0]["reason"].as_str().unwrap().contains("quota exhausted"), "{status}");
    assert!(status["cooldowns"][0]["seconds_left"].as_u64().unwrap() > 60, "until the daily reset: {status}");

    let gemini_bad_key = json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}});
    let replies: Vec<(u16, Value)> = vec![
        (401, json!({"error": {"message": "invalid key"}})),
        (403, json!({"error": {"message": "forbidden"}})),
        (400, gemini_bad_key),
    ];
    for (status_code, body) in replies {
        let (mock, proxy) = one_bad_key(move || MockReply::json(status_code, body.clone()));
        let status = bad_key_after_failure(&mock, &proxy);
        assert_eq!(status["state"], "locked", "{status_code}: {status}");
        let left = status["locked_seconds_left"].as_u64().unwrap();
        assert!((295..=300).contains(&left), "a first lockout is 5 min: {status}");
        // A locked key serves no model at all, and is not tried again.
        let other = proxy.client().post(CHAT, r#"{"model":"openai/other","messages":[]}"#);
        assert_eq!(other.status, 200);
        assert_eq!(mock.keys_seen().iter().filter(|k| *k == "sk-bad-key-0bad").count(), 1, "{status_code}");
    }
}

#[test]
fn server_errors_get_one_same_key_retry_then_a_short_cooldown() {
    for code in [500u16, 502, 503, 529] {
        let (mock, proxy) = one_bad_key(move || {
            MockReply::json(code, json!({"error": {"message": "upstream trouble", "type": "server_error"}}))
        });
        let status = bad_key_after_failure(&mock, &proxy);
        assert_cooldown(&status, 30, "upstream error");
        let bad_tries = mock.keys_seen().iter().filter(|k| *k == "sk-bad-key-0bad").count();
        assert_eq!(bad_tries, 2, "{code}: one retry on the same key, then rotation");
    }
}

#[test]
fn a_transient_failure_that_recovers_on_the_retry_succeeds() {
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let mock = Mock::start(move |_| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 1 {
            MockReply::json(503, json!({"error": {"message": "blip"}}))
        } else {
            MockReply::json(200, completion("second time lucky"))
        }
    });
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=only-key\n", mock.base()));
    let answer = chat(&proxy);
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "second time lucky");
    assert_eq!(mock.keys_seen(), ["only-key", "only-key"]);
    assert_eq!(proxy.key_status("...-key")["state"], "ready");
}

#[test]
fn network_failures_are_transient() {
    // Connection refused: a port nothing listens on (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy = Proxy::start(&format!("DEAD_API_BASE=http://127.0.0.1:{dead}/v1\nDEAD_API_KEY=sk-dead-0001\n"));
    let answer = proxy.client().post(CHAT, r#"{"model":"dead/m","messages":[]}"#);
    assert_eq!((answer.status, answer.error_code()), (502, "upstream_error".into()));
    assert!(answer.text().contains("...0001") && answer.text().contains("connection failed"), "{}", answer.text());
    // The only key is spared once (a half-open probe); failing again, it rests 30 s.
    assert_eq!(proxy.client().post(CHAT, r#"{"model":"dead/m","messages":[]}"#).status, 502);
    assert_cooldown_model(&proxy.key_status("...0001"), "m", 30);

    // Dropped in the middle of the body.
    let dropper = RawMock::start(b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{\"choices\":");
    let proxy = Proxy::start(&format!("DROP_API_BASE={}\nDROP_API_KEY=sk-drop-0002\n", dropper.base()));
    let answer = proxy.client().post(CHAT, r#"{"model":"drop/m","messages":[]}"#);
    assert_eq!(answer.status, 502);
    assert!(answer.text().contains("cut off"), "{}", answer.text());
    assert_eq!(dropper.keys_seen().len(), 2);

    // Invalid JSON with a 200.
    let mock = Mock::start(|_| MockReply::raw(200, "<html>gateway hiccup</html>"));
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-html-0003\n", mock.base()));
    let answer = chat(&proxy);
    assert_eq!(answer.status, 502);
    assert!(answer.text().contains("not JSON"), "{}", answer.text());

    // A timeout: the upstream holds its answer past TIMEOUT_READ_NON_STREAMING.
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let slow = Mock::start(move |req| {
        if req.key().as_deref() == Some("sk-slow-0004") {
            let _ = release_rx.recv_timeout(WAIT);
        }
        MockReply::json(200, completion("fast"))
    });
    let proxy = Proxy::start(&format!(
        "OPENAI_API_BASE={}\nOPENAI_API_KEY_1=sk-slow-0004\nOPENAI_API_KEY_2=sk-fast-0005\nTIMEOUT_READ_NON_STREAMING=0.3\nROTATION_MODE_OPENAI=sequential\n",
        slow.base()
    ));
    let answer = chat(&proxy);
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "fast");
    assert!(proxy.key_status("...0004")["cooldowns"][0]["reason"].as_str().unwrap().contains("timed out"));
    drop(release_tx);
}

#[track_caller]
fn assert_cooldown_model(status: &Value, model: &str, seconds: u64) {
    let c = status["cooldowns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == model)
        .unwrap_or_else(|| panic!("no cooldown for {model}: {status}"));
    let left = c["seconds_left"].as_u64().unwrap();
    assert!(left <= seconds && left + 3 >= seconds, "{status}");
}

#[test]
fn all_keys_cooling_down_fails_fast_with_retry_after() {
    let mock = Mock::start(|_| {
        with_headers(
            429,
            &[("retry-after", "60")],
            json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}),
        )
    });
    let proxy =
        Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY_1=k-one\nOPENAI_API_KEY_2=k-two\n", mock.base()));
    let first = chat(&proxy);
    assert_eq!((first.status, first.error_code()), (429, "all_keys_cooling_down".into()));
    assert_eq!(first.json()["error"]["type"], "rate_limit_error");
    let seconds: u64 = first.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((57..=60).contains(&seconds), "{seconds}");
    assert_eq!(mock.requests().len(), 2);

    let started = Instant::now();
    let second = chat(&proxy);
    let waited = started.elapsed();
    assert_eq!((second.status, second.error_code()), (429, "all_keys_cooling_down".into()));
    assert!(second.header("retry-after").is_some());
    assert_eq!(mock.requests().len(), 2, "no upstream call while every key cools down");
    // GLOBAL_TIMEOUT is 30 s: answering in a fraction of it shows keyrelay did not wait.
    assert!(waited.as_secs() < 10, "took {waited:?}");

    let (code, _, _) =
        run_cli(proxy.dir().path(), &["status", "--check", "--url", &format!("http://127.0.0.1:{}", proxy.port)], "");
    assert_eq!(code, 1, "status --check: no usable key");
}

#[test]
fn a_short_rate_limit_is_waited_out_on_the_same_key() {
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let mock = Mock::start(move |_| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 1 {
            with_headers(429, &[("retry-after-ms", "300")], json!({"error": {"message": "wait a moment"}}))
        } else {
            MockReply::json(200, completion("after the wait"))
        }
    });
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=only-key\n", mock.base()));
    let answer = chat(&proxy);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.keys_seen(), ["only-key", "only-key"]);
}

#[test]
fn busy_keys_until_the_deadline_are_503() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let (arrived_tx, arrived_rx) = crossbeam_channel::bounded::<()>(1);
    let mock = Mock::start(move |_| {
        let _ = arrived_tx.try_send(());
        let _ = release_rx.recv_timeout(WAIT);
        MockReply::json(200, completion("held"))
    });
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=one-key\nGLOBAL_TIMEOUT=0.5\n", mock.base()));
    let holder = proxy.client();
    let held = std::thread::spawn(move || holder.post(CHAT, BODY));
    arrived_rx.recv_timeout(WAIT).unwrap();
    let busy = chat(&proxy);
    assert_eq!((busy.status, busy.error_code()), (503, "keys_busy".into()));
    assert_eq!(busy.header("retry-after"), Some("1"));
    // A different model is not held up by the busy one.
    drop(release_tx);
    assert_eq!(held.join().unwrap().status, 200);
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn sequential_mode_stays_on_one_key() {
    let mock = Mock::start(|_| MockReply::json(200, completion("ok")));
    let proxy = Proxy::start(&format!(
        "OPENAI_API_BASE={}\nOPENAI_API_KEY_1=k1\nOPENAI_API_KEY_2=k2\nOPENAI_API_KEY_3=k3\nROTATION_MODE_OPENAI=sequential\n",
        mock.base()
    ));
    for _ in 0..5 {
        assert_eq!(chat(&proxy).status, 200);
    }
    let seen = mock.keys_seen();
    assert!(seen.iter().all(|k| *k == seen[0]), "{seen:?}");
}

#[test]
fn two_hundred_concurrent_clients_never_exceed_the_per_key_limits() {
    let (mock, seen) = counting_upstream(None);
    let env = format!(
        "OPENAI_API_BASE={b}\nOPENAI_API_KEY_1=o1\nOPENAI_API_KEY_2=o2\nOPENAI_API_KEY_3=o3\n\
         PAIR_API_BASE={b}\nPAIR_API_KEY_1=p1\nPAIR_API_KEY_2=p2\nPAIR_API_KEY_3=p3\nMAX_CONCURRENT_REQUESTS_PER_KEY_PAIR=2\n",
        b = mock.base()
    );
    let proxy = Proxy::start(&env);
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let client = proxy.client();
            let model = ["openai/a", "openai/b", "pair/a", "pair/b"][i % 4];
            std::thread::spawn(move || client.post(CHAT, &format!(r#"{{"model":"{model}","messages":[]}}"#)))
        })
        .collect();
    for c in clients {
        let answer = c.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(mock.requests().len(), 200);
    let c = seen.lock().unwrap();
    for ((key, model), max) in &c.max {
        let limit = if key.starts_with('p') { 2 } else { 1 };
        assert!(*max <= limit, "key {key} model {model} held {max} at once (limit {limit})");
    }
    assert!(c.max.values().any(|&m| m == 2), "the limit of 2 was never reached: the test did not overlap requests");
    let status = proxy.status();
    assert!(status.iter().filter(|l| l["type"] == "key").all(|l| l["in_flight"] == 0), "{status:?}");
    assert_eq!(status.last().unwrap()["type"], "summary");
    assert_eq!(status.last().unwrap()["in_flight"], 0);
    let total: u64 =
        status.iter().filter(|l| l["type"] == "key").map(|l| l["today"]["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 200);
}

#[test]
fn a_stalled_stream_is_cut_with_an_in_band_error() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let gate = Mutex::new(Some(release_rx));
    let mock = Mock::start(move |_| {
        let hold = gate.lock().unwrap().take().expect("one stream");
        MockReply::sse(vec![Piece::Bytes(event(&content_chunk("start"))), Piece::Hold(hold)])
    });
    let proxy = Proxy::start(&format!(
        "OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-stall-0006\nTIMEOUT_READ_STREAMING=0.5\n",
        mock.base()
    ));
    let events = proxy.client().stream(CHAT, r#"{"model":"openai/m","messages":[],"stream":true}"#).rest();
    assert_eq!(events.len(), 3, "{events:?}");
    let error: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "stream_stalled");
    assert_eq!(events[2], "data: [DONE]");
    let status = proxy.key_status("...0006");
    assert_eq!(status["in_flight"], 0);
    assert_eq!(status["today"]["failures"], 1);
    drop(release_tx);
}

#[test]
fn a_client_leaving_mid_stream_frees_the_key_at_once() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let (broken_tx, broken_rx) = crossbeam_channel::bounded::<()>(1);
    let state = Mutex::new(Some((release_rx, broken_tx)));
    let mock = Mock::start(move |_| {
        let (hold, broken) = state.lock().unwrap().take().expect("one stream");
        let mut pieces = vec![Piece::Bytes(event(&content_chunk("first"))), Piece::Hold(hold)];
        pieces.push(Piece::UntilClosed(event(&content_chunk(&"x".repeat(512)))));
        MockReply::Stream { status: 200, pieces, on_write_error: Some(broken) }
    });
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-leave-0007\n", mock.base()));
    let mut s = proxy.client().stream(CHAT, r#"{"model":"openai/m","messages":[],"stream":true}"#);
    assert!(s.next_event().is_some());
    assert_eq!(proxy.key_status("...0007")["in_flight"], 1);
    drop(s);
    release_tx.send(()).unwrap();
    broken_rx.recv_timeout(WAIT).expect("the upstream connection was closed");
    // The key is released before the upstream connection closes (see chat::PassThrough).
    let status = proxy.key_status("...0007");
    assert_eq!((status["in_flight"].clone(), status["state"].clone()), (json!(0), json!("ready")));
}

fn cooled_proxy(dir: TempDir, mock: &Mock) -> Proxy {
    dir.write(".env", &format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-keep-0008\n", mock.base()));
    let proxy = Proxy::start_in(dir, &[]);
    let answer = chat(&proxy);
    assert_eq!(answer.status, 429);
    proxy
}

#[test]
fn cooldowns_survive_sigterm_and_kill_9() {
    let mock = Mock::start(|_| with_headers(429, &[("retry-after", "600")], json!({"error": {"message": "later"}})));
    // SIGTERM flushes on the way out.
    let proxy = cooled_proxy(TempDir::new(), &mock);
    let (status, dir) = proxy.stop();
    assert!(status.success());
    let text = std::fs::read_to_string(dir.path().join("key_usage.json")).expect("key_usage.json written");
    assert!(!text.contains("sk-keep-0008"), "no raw key in key_usage.json");
    let proxy = Proxy::start_in(dir, &[]);
    assert_cooldown(&proxy.key_status("...0008"), 600, "rate limited");
    assert_eq!(chat(&proxy).status, 429);
    assert_eq!(mock.requests().len(), 1, "the restarted proxy knew the key was cooling down");

    // kill -9 after the debounce interval: the background writer had saved it.
    let mock = Mock::start(|_| with_headers(429, &[("retry-after", "600")], json!({"error": {"message": "later"}})));
    let proxy = cooled_proxy(TempDir::new(), &mock);
    proxy.wait_for_log("saved");
    let dir = proxy.kill();
    let proxy = Proxy::start_in(dir, &[]);
    assert_cooldown(&proxy.key_status("...0008"), 600, "rate limited");
}

#[test]
fn a_corrupt_usage_file_is_reported_and_replaced() {
    let mock = Mock::start(|_| MockReply::json(200, completion("ok")));
    let dir = TempDir::new();
    dir.write(".env", &format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-corrupt-0009\n", mock.base()));
    dir.write("key_usage.json", "{\"keys\": {\"openai:0123");
    let proxy = Proxy::start_in(dir, &[]);
    proxy.wait_for_log("is corrupt");
    assert_eq!(chat(&proxy).status, 200);
    proxy.wait_for_log("saved");
    let (_, dir) = proxy.stop();
    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("key_usage.json")).unwrap()).expect("valid JSON again");
    assert_eq!(saved["version"], 1);
}

#[test]
fn the_usage_file_is_valid_json_after_kill_9_under_load() {
    let mock = Mock::start(|req| match req.key().as_deref() {
        Some("k-fails") => MockReply::json(500, json!({"error": {"message": "boom"}})),
        _ => MockReply::json(200, completion("ok")),
    });
    let proxy = Proxy::start(&format!(
        "OPENAI_API_BASE={}\nOPENAI_API_KEY_1=k-fails\nOPENAI_API_KEY_2=k-works\nOPENAI_API_KEY_3=k-works-too\n",
        mock.base()
    ));
    let port = proxy.port;
    let load: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..40 {
                    let model = format!("m{}", (t * 40 + i) % 17);
                    let _ = std::panic::catch_unwind(|| {
                        crate::support::Client::new(port, None)
                            .post(CHAT, &format!(r#"{{"model":"openai/{model}","messages":[]}}"#))
                    });
                }
            })
        })
        .collect();
    proxy.wait_for_log("saved");
    let dir = proxy.kill();
    for l in load {
        let _ = l.join();
    }
    let bytes = std::fs::read(dir.path().join("key_usage.json")).expect("written at least once");
    let saved: Value = serde_json::from_slice(&bytes).expect("key_usage.json is valid JSON after kill -9");
    assert!(saved["keys"].as_object().is_some_and(|k| k.len() == 3), "{saved}");
}

#[test]
fn status_without_a_server_reads_the_usage_file() {
    let mock = Mock::start(|_| with_headers(429, &[("retry-after", "600")], json!({"error": {"message": "later"}})));
    let proxy = cooled_proxy(TempDir::new(), &mock);
    let (_, dir) = proxy.stop();
    // A port nothing listens on, so status cannot find a server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    dir.write("launcher_config.json", &format!("{{\"port\": {closed}}}"));
    let (code, out, err) = run_cli(dir.path(), &["status", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "key");
    assert_eq!(lines[0]["state"], "cooldown");
    assert_eq!(
        lines[1],
        json!({"type": "provider", "provider": "openai", "keys": 1, "ready": 0, "busy": 0, "cooldown": 1, "locked": 0, "in_flight": 0})
    );
    assert_eq!(lines[2]["type"], "summary");
    let (code, _, err) = run_cli(dir.path(), &["status", "--check"], "");
    assert_eq!(code, 1, "{err}");
    let (code, table, _) = run_cli(dir.path(), &["status"], "");
    assert_eq!(code, 0);
    assert!(table.contains("...0008") && table.contains("cooldown"), "{table}");
}

#[test]
fn a_single_key_that_dropped_one_stream_serves_the_next_request() {
    // The first stream breaks after its first event; every later call succeeds.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let mock = Mock::start(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            // A chunked body that ends without its last chunk: the upstream connection drops.
            return MockReply::Full {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                body: event(&content_chunk("half")),
            };
        }
        MockReply::json(200, completion("whole"))
    });
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-only-key-0001\n", mock.base()));
    let stream = proxy.client().stream(CHAT, r#"{"model":"openai/m","messages":[],"stream":true}"#).rest();
    assert!(stream.iter().any(|e| e.contains("\"error\"")), "the dropped stream ends with an error: {stream:?}");
    let status = proxy.key_status("...0001");
    assert_eq!(status["state"], "ready", "a blip does not bench the only key: {status}");
    let next = chat(&proxy);
    assert_eq!(next.status, 200, "the next request is served (a probe), not a 429: {}", next.text());
}

#[test]
fn a_single_key_that_keeps_failing_rests_but_is_still_probed_not_refused() {
    // Down for six calls (three requests, each with its same-key retry), then back.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let mock = Mock::start(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 6 {
            MockReply::json(503, json!({"error": {"message": "down", "type": "server_error"}}))
        } else {
            MockReply::json(200, completion("back"))
        }
    });
    let proxy =
        Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-only-key-0002\nGLOBAL_TIMEOUT=5\n", mock.base()));
    assert_eq!(chat(&proxy).status, 502, "the first failure");
    assert_eq!(proxy.key_status("...0002")["state"], "ready", "spared once: the last usable key");
    assert_eq!(chat(&proxy).status, 502, "the probe fails too");
    assert_cooldown(&proxy.key_status("...0002"), 30, "upstream error");
    // Resting for transient failures only: the next request probes it instead of a 429.
    let probed = chat(&proxy);
    assert_eq!((probed.status, probed.error_code().as_str()), (502, "upstream_error"), "{}", probed.text());
    let back = chat(&proxy);
    assert_eq!(back.status, 200, "the provider is back and the next probe finds it: {}", back.text());
    assert_eq!(proxy.key_status("...0002")["state"], "ready", "a success ends the cooldown");
    assert_eq!(mock.requests().len(), 7);
}

#[test]
fn a_stream_of_keep_alives_without_an_event_is_cut_not_buffered() {
    // An upstream that sends comments for ever and never an event.
    let mock = Mock::start(|_| MockReply::sse(vec![Piece::UntilClosed(b": keep-alive\n\n".to_vec())]));
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=sk-chatty-0003\n", mock.base()));
    let answer = proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[],"stream":true}"#);
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert!(answer.text().contains("without an event"), "{}", answer.text());
}
