//! Secrets never leave the proxy, whatever an upstream echoes (issue 7, item 8), and model ids
//! cannot rewrite an upstream URL (item 9). A mock upstream echoes the key it received, whole,
//! cut short, upper-cased and from its 6th character on, in every place an upstream can put
//! text; none of it may reach anything the proxy writes or answers.

use crate::support::mock::{Piece, completion, content_chunk, event, finish_chunk};
use crate::support::{Mock, MockReply, Proxy, Recorded, TempDir, run_cli};
use serde_json::{Value, json};

const KEY_1: &str = "sk-echo-Qm7Zt2Vx9Lp4Rn8W";
const KEY_2: &str = "sk-echo-Hy3Kd6Jc1Bf5Gs0T";
const PROXY_KEY: &str = "pk-proxy-Wd8Ue2Ns5Ak9";

/// The forms upstreams were seen to echo a key in.
fn echoes(key: &str) -> String {
    let forms = [key.to_string(), key[..key.len() - 1].to_string(), key.to_ascii_uppercase(), key[5..].to_string()];
    format!("Incorrect API key provided: {}", forms.join(" | "))
}

/// Fails when `text` holds any 8-character run of either key or of the proxy key, in any case.
fn assert_clean(what: &str, text: &str) {
    let lower = text.to_ascii_lowercase();
    for key in [KEY_1, KEY_2, PROXY_KEY] {
        for window in key.as_bytes().windows(8) {
            let window = String::from_utf8_lossy(window).to_ascii_lowercase();
            assert!(!lower.contains(&window), "{what} leaks {window:?} of a key:\n{text}");
        }
    }
}

fn error_body(key: &str) -> Value {
    json!({"error": {"message": echoes(key), "type": "server_error", "code": 500}})
}

/// The mock's answer for each model, always with the echo in a response header too.
fn upstream(req: &Recorded) -> MockReply {
    let key = req.key().unwrap_or_default();
    let model = serde_json::from_slice::<Value>(&req.body).ok().and_then(|b| b["model"].as_str().map(String::from));
    let header = ("x-echo".to_string(), echoes(&key));
    let full = |status: u16, body: Value| MockReply::Full {
        status,
        headers: vec![("content-type".into(), "application/json".into()), header.clone()],
        body: body.to_string().into_bytes(),
    };
    match model.as_deref().unwrap_or_default() {
        "server-error" => full(500, error_body(&key)),
        "rate-limited" => full(429, json!({"error": {"message": echoes(&key), "type": "rate_limit_error"}})),
        "bad-request" => full(400, json!({"error": {"message": echoes(&key), "type": "invalid_request_error"}})),
        "first-error" => MockReply::sse(vec![Piece::Bytes(event(&error_body(&key)))]),
        "mid-error" => MockReply::sse(vec![
            Piece::Bytes(event(&content_chunk("Hi"))),
            Piece::Bytes(event(&error_body(&key))),
            Piece::Bytes(event(&finish_chunk())),
        ]),
        _ => full(200, completion(&echoes(&key))),
    }
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": format!("openai/{model}"), "messages": [{"role": "user", "content": "Hi"}], "stream": stream})
        .to_string()
}

fn all_files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() { files.extend(all_files_under(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn keys_echoed_by_an_upstream_reach_nothing_the_proxy_writes() {
    let mock = Mock::start(upstream);
    let dir = TempDir::new();
    dir.write(
        ".env",
        &format!(
            "OPENAI_API_BASE={}\nOPENAI_API_KEY_1={KEY_1}\nOPENAI_API_KEY_2={KEY_2}\nPROXY_API_KEY={PROXY_KEY}\n",
            mock.base()
        ),
    );
    let proxy = Proxy::start_in(dir, &["--enable-request-logging"]);
    let client = proxy.client_with_key(PROXY_KEY);
    let mut seen = Vec::new();

    // Whole answers: an error status on both keys, a request error, a normal body.
    for (model, status) in [("server-error", 502), ("rate-limited", 429), ("bad-request", 400), ("normal", 200)] {
        let answer = client.post("/v1/chat/completions", &chat(model, false));
        assert_eq!(answer.status, status, "{model}: {}", answer.text());
        seen.push((format!("{model} answer"), format!("{:?}\n{}", answer.headers, answer.text())));
        if model != "normal" {
            assert!(answer.text().contains("[REDACTED]"), "{model}: {}", answer.text());
        }
    }
    // A stream whose first event is an error rotates through both keys, then 502 naming both.
    let first = client.post("/v1/chat/completions", &chat("first-error", true));
    assert_eq!(first.status, 502, "{}", first.text());
    assert!(first.text().contains("all 2 keys of openai failed"), "{}", first.text());
    seen.push(("first-error answer".into(), format!("{:?}\n{}", first.headers, first.text())));
    // A stream that breaks after its first event: an in-band error, on both routes.
    let mut stream = client.stream("/v1/chat/completions", &chat("mid-error", true));
    let events = stream.rest();
    assert!(events.iter().any(|e| e.contains("error") && e.contains("[REDACTED]")), "{events:?}");
    seen.push(("mid-error SSE".into(), format!("{:?}\n{}", stream.headers, events.join("\n"))));
    let messages = json!({"model": "openai/mid-error", "max_tokens": 16, "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]});
    let mut stream = client.stream("/v1/messages", &messages.to_string());
    let events = stream.rest();
    assert!(events.iter().any(|e| e.starts_with("event: error")), "{events:?}");
    seen.push(("mid-error Anthropic SSE".into(), format!("{:?}\n{}", stream.headers, events.join("\n"))));
    assert!(mock.keys_seen().iter().any(|k| k == KEY_1) && mock.keys_seen().iter().any(|k| k == KEY_2));

    let stats = client.get("/v1/quota-stats");
    assert!(stats.text().contains("[REDACTED]"), "cooldown reasons are kept, redacted: {}", stats.text());
    seen.push(("/v1/quota-stats".into(), stats.text()));
    let url = format!("http://127.0.0.1:{}", proxy.port);
    for args in [&["status", "--url", &url][..], &["status", "--json", "--url", &url]] {
        let (code, out, err) = run_cli(proxy.dir().path(), args, "");
        assert_eq!(code, 0, "{err}");
        seen.push((format!("{args:?}"), format!("{out}\n{err}")));
    }

    let logs = proxy.logs();
    let (_, dir) = proxy.stop();
    seen.push(("stderr".into(), logs));
    // The writer's last save happens at shutdown, so the file is complete now.
    let usage = std::fs::read_to_string(dir.path().join("key_usage.json")).expect("key_usage.json written");
    assert!(usage.contains("[REDACTED]"), "the cooldown reasons are in the file: {usage}");
    seen.push(("key_usage.json".into(), usage));
    let (code, out, err) = run_cli(dir.path(), &["status", "--json"], "");
    assert_eq!(code, 0, "{err}");
    seen.push(("offline status --json".into(), format!("{out}\n{err}")));
    let files = all_files_under(&dir.path().join("logs"));
    assert!(files.iter().any(|f| f.ends_with("keyrelay.log")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("streaming_chunks.jsonl")), "{files:?}");
    for file in files {
        seen.push((file.display().to_string(), String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned()));
    }
    for (what, text) in &seen {
        assert_clean(what, text);
    }
}

#[test]
fn gemini_model_ids_cannot_change_the_upstream_url() {
    let mock = Mock::start(|_| {
        MockReply::json(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}),
        )
    });
    let proxy = Proxy::start(&format!("GEMINI_API_KEY=gm-key-0009\nGEMINI_API_BASE={}beta\n", mock.base()));
    let client = proxy.client();
    for model in ["gemini/gemini-2.5-flash:countTokens#", "gemini/../x", "gemini/a%2Fb", "gemini/.", "gemini/a b"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]}).to_string();
        for (path, body) in
            [("/v1/chat/completions", body), ("/v1/embeddings", json!({"model": model, "input": "x"}).to_string())]
        {
            let answer = client.post(path, &body);
            assert_eq!(answer.status, 400, "{model} on {path}: {}", answer.text());
            let error = &answer.json()["error"];
            assert_eq!(
                (error["type"].as_str(), error["param"].as_str()),
                (Some("invalid_request_error"), Some("model"))
            );
            assert_eq!(answer.error_code(), "invalid_request");
        }
    }
    assert!(mock.requests().is_empty(), "no upstream call: {:?}", mock.requests());
    let ok = client.post(
        "/v1/chat/completions",
        r#"{"model":"gemini/gemini-2.5-flash","messages":[{"role":"user","content":"Hi"}]}"#,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(mock.requests()[0].url, "/v1beta/models/gemini-2.5-flash:generateContent");
}
