//! Google Vertex AI (`vertex/*`) against a mock of its API and of a Google token endpoint, in
//! one server: service-account tokens (the JWT's RS256 signature verified by the mock with the
//! test key's public key, cached, exchanged again near expiry and after a 401, a refused
//! exchange taking the account out of rotation), express-mode API keys, the Gemini and Claude
//! publishers whole and streamed, tools, embeddings, rotation, and no secret echoed anywhere.

use crate::support::mock::Piece;
use crate::support::{Mock, MockReply, Proxy, Recorded};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const BASE_PATH: &str = "/v1/projects/p1/locations/us-central1";
const KEY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vertex/test-service-account.json");
const PUBLIC_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vertex/test-service-account.pub.pem");
const REFUSED_EMAIL: &str = "disabled@keyrelay-test-project.iam.gserviceaccount.com";

/// The test key file with `token_uri` on the mock (and another account's name when `email`).
fn key_json(mock_port: u16, email: Option<&str>) -> String {
    let mut key: Value = serde_json::from_str(&std::fs::read_to_string(KEY_FILE).unwrap()).unwrap();
    key["token_uri"] = json!(format!("http://127.0.0.1:{mock_port}/token"));
    if let Some(email) = email {
        key["client_email"] = json!(email);
        key["private_key_id"] = json!("fedcba9876543210fedcba9876543210fedcba98");
    }
    key.to_string()
}

fn private_key_body() -> String {
    let key: Value = serde_json::from_str(&std::fs::read_to_string(KEY_FILE).unwrap()).unwrap();
    key["private_key"].as_str().unwrap().lines().filter(|l| !l.starts_with("-----")).collect()
}

/// Verifies a token request as Google would: the JWT bearer grant, an RS256 signature by the
/// test key, the claims. Returns the issuer.
fn verify_token_request(req: &Recorded, token_uri: &str) -> Result<String, String> {
    let form = String::from_utf8(req.body.clone()).unwrap();
    let field = |name: &str| form.split('&').find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_string));
    if field("grant_type").as_deref() != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return Err(format!("grant_type: {form}"));
    }
    let jwt = field("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pem = std::fs::read_to_string(PUBLIC_KEY).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap();
    let signature = b64.decode(parts.get(2).ok_or("not a JWT")?).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .map_err(|_| "bad signature".to_string())?;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    if header["alg"] != "RS256" || header["kid"].as_str().is_none_or(str::is_empty) {
        return Err(format!("header {header}"));
    }
    let lifetime = claims["exp"].as_u64().unwrap_or(0).saturating_sub(claims["iat"].as_u64().unwrap_or(0));
    if claims["aud"] != token_uri
        || claims["scope"] != "https://www.googleapis.com/auth/cloud-platform"
        || lifetime != 3600
    {
        return Err(format!("claims {claims}"));
    }
    Ok(claims["iss"].as_str().unwrap_or_default().to_string())
}

/// A mock Vertex: `/token` exchanges (tokens `ya29.mock-<n>`, living `lifetime` seconds, the
/// refused account refused), everything else handled by `api` after the bearer is checked
/// to be one the token endpoint gave.
struct Vertex {
    mock: Mock,
    exchanges: Arc<AtomicUsize>,
}

impl Vertex {
    fn start(lifetime: u64, api: impl Fn(&Recorded) -> MockReply + Send + Sync + 'static) -> Vertex {
        let exchanges = Arc::new(AtomicUsize::new(0));
        let counter = exchanges.clone();
        let port = Arc::new(AtomicUsize::new(0));
        let port_seen = port.clone();
        let mock = Mock::start(move |req| {
            let token_uri = format!("http://127.0.0.1:{}/token", port_seen.load(Ordering::SeqCst));
            if req.url == "/token" {
                return match verify_token_request(req, &token_uri) {
                    Ok(iss) if iss == REFUSED_EMAIL => MockReply::json(
                        400,
                        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
                    ),
                    Ok(_) => {
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        MockReply::json(
                            200,
                            json!({"access_token": format!("ya29.mock-{n}"), "expires_in": lifetime, "token_type": "Bearer"}),
                        )
                    }
                    Err(why) => MockReply::json(400, json!({"error": "invalid_grant", "error_description": why})),
                };
            }
            api(req)
        });
        port.store(mock.port as usize, Ordering::SeqCst);
        Vertex { mock, exchanges }
    }

    fn env(&self, accounts: &[Option<&str>], extra: &str) -> String {
        let mut env = format!("VERTEX_API_BASE=http://127.0.0.1:{}{BASE_PATH}\n", self.mock.port);
        for (i, email) in accounts.iter().enumerate() {
            env.push_str(&format!("VERTEX_CREDENTIALS_{}='{}'\n", i + 1, key_json(self.mock.port, *email)));
        }
        env + extra
    }

    fn api_calls(&self) -> Vec<Recorded> {
        self.mock.requests().into_iter().filter(|r| r.url != "/token").collect()
    }
}

fn gemini_answer(text: &str) -> Value {
    json!({"candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [{"text": text}]}}],
           "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
           "modelVersion": "gemini-2.5-flash"})
}

fn claude_answer(content: Value, stop: &str) -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": content,
           "stop_reason": stop, "usage": {"input_tokens": 5, "output_tokens": 3}})
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn stream_text(proxy: &Proxy, body: &str) -> (String, Vec<String>) {
    let events = proxy.client().stream("/v1/chat/completions", body).rest();
    let chunks: Vec<Value> =
        events.iter().filter_map(|e| e.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect();
    (chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect(), events)
}

#[test]
fn gemini_through_a_service_account_whole_and_streamed_with_one_token() {
    let vertex = Vertex::start(3600, |req| {
        if req.url.contains(":streamGenerateContent") {
            let event = |text: &str, last: bool| {
                let mut a = gemini_answer(text);
                if !last {
                    a["candidates"][0].as_object_mut().unwrap().remove("finishReason");
                }
                format!("data: {a}\r\n\r\n").into_bytes()
            };
            MockReply::sse(vec![Piece::Bytes(event("str", false)), Piece::Bytes(event("eamed", true))])
        } else {
            MockReply::json(200, gemini_answer("hello from vertex"))
        }
    });
    let proxy = Proxy::start(&vertex.env(&[None], ""));
    let answer = proxy.client().post("/v1/chat/completions", &chat("vertex/gemini-2.5-flash", false));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hello from vertex");
    assert_eq!(answer.json()["model"], "vertex/gemini-2.5-flash");
    let (text, events) = stream_text(&proxy, &chat("vertex/gemini-2.5-flash", true));
    assert_eq!(text, "streamed");
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let calls = vertex.api_calls();
    assert_eq!(calls[0].url, format!("{BASE_PATH}/publishers/google/models/gemini-2.5-flash:generateContent"));
    assert_eq!(
        calls[1].url,
        format!("{BASE_PATH}/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    );
    for call in &calls {
        assert_eq!(call.header("authorization"), Some("Bearer ya29.mock-1"));
        assert_eq!(call.header("x-goog-api-key"), None);
        assert_eq!(call.json()["contents"][0]["parts"][0]["text"], "hi");
    }
    assert_eq!(vertex.exchanges.load(Ordering::SeqCst), 1, "the token is cached");
}

#[test]
fn a_token_near_expiry_is_exchanged_again_and_a_401_forces_a_new_one() {
    // Two minutes to live is inside the five-minute margin: every call exchanges again.
    let seen_401 = Arc::new(AtomicUsize::new(0));
    let seen = seen_401.clone();
    let vertex = Vertex::start(120, move |req| {
        if req.header("authorization") == Some("Bearer ya29.mock-2") && seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return MockReply::json(
                401,
                json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
            );
        }
        MockReply::json(200, gemini_answer("ok"))
    });
    let proxy = Proxy::start(&vertex.env(&[None], ""));
    for _ in 0..2 {
        let answer = proxy.client().post("/v1/chat/completions", &chat("vertex/gemini-2.5-flash", false));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let bearers: Vec<String> =
        vertex.api_calls().iter().filter_map(|c| c.header("authorization").map(String::from)).collect();
    assert_eq!(bearers, ["Bearer ya29.mock-1", "Bearer ya29.mock-2", "Bearer ya29.mock-3"], "the 401 forced one more");
    assert_eq!(vertex.exchanges.load(Ordering::SeqCst), 3);
}

#[test]
fn claude_goes_to_raw_predict_with_anthropic_version_whole_streamed_and_with_tools() {
    let vertex = Vertex::start(3600, |req| {
        if req.url.ends_with(":streamRawPredict") {
            let events = [
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_2", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 5, "output_tokens": 0}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "from claude"}}),
                ),
                ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                (
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ];
            MockReply::sse(
                events.iter().map(|(n, d)| Piece::Bytes(format!("event: {n}\ndata: {d}\n\n").into_bytes())).collect(),
            )
        } else if req.json().get("tools").is_some() {
            let call =
                json!([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]);
            MockReply::json(200, claude_answer(call, "tool_use"))
        } else {
            MockReply::json(200, claude_answer(json!([{"type": "text", "text": "hello from claude"}]), "end_turn"))
        }
    });
    let proxy = Proxy::start(&vertex.env(&[None], ""));
    let model = "vertex/claude-sonnet-4@20250514";
    let answer = proxy.client().post("/v1/chat/completions", &chat(model, false));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hello from claude");
    assert_eq!(answer.json()["model"], "vertex/claude-sonnet-4-5");
    let (text, _) = stream_text(&proxy, &chat(model, true));
    assert_eq!(text, "from claude");
    let tools = json!({"model": model, "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]});
    let answer = proxy.client().post("/v1/chat/completions", &tools.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let call = &answer.json()["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        (call["function"]["name"].as_str(), call["function"]["arguments"].as_str()),
        (Some("get_weather"), Some(r#"{"city":"Paris"}"#))
    );
    let calls = vertex.api_calls();
    let base = format!("{BASE_PATH}/publishers/anthropic/models/claude-sonnet-4@20250514");
    assert_eq!(calls[0].url, format!("{base}:rawPredict"));
    assert_eq!(calls[1].url, format!("{base}:streamRawPredict"));
    assert_eq!(calls[2].url, format!("{base}:rawPredict"));
    for call in &calls {
        let body = call.json();
        assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
        assert!(body.get("model").is_none(), "the model is in the URL only: {body}");
        assert_eq!(call.header("anthropic-version"), None);
        assert_eq!(call.header("authorization"), Some("Bearer ya29.mock-1"));
    }
    assert_eq!(calls[1].json()["stream"], true);
    assert_eq!(calls[2].json()["tools"][0]["name"], "get_weather");
}

#[test]
fn embeddings_go_to_predict() {
    let vertex = Vertex::start(3600, |_| {
        MockReply::json(
            200,
            json!({"predictions": [
            {"embeddings": {"values": [0.25, -0.5], "statistics": {"token_count": 2, "truncated": false}}},
            {"embeddings": {"values": [1.0, 0.0], "statistics": {"token_count": 1, "truncated": false}}}]}),
        )
    });
    let proxy = Proxy::start(&vertex.env(&[None], "EMBEDDING_BATCH_WINDOW_MS=0\n"));
    let body = r#"{"model":"vertex/text-embedding-005","input":["hello","x"],"dimensions":2}"#;
    let answer = proxy.client().post("/v1/embeddings", body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["data"][1]["embedding"], json!([1.0, 0.0]));
    assert_eq!(json["usage"]["prompt_tokens"], 3);
    assert_eq!(json["model"], "vertex/text-embedding-005");
    let calls = vertex.api_calls();
    assert_eq!(calls[0].url, format!("{BASE_PATH}/publishers/google/models/text-embedding-005:predict"));
    assert_eq!(
        calls[0].json(),
        json!({"instances": [{"content": "hello"}, {"content": "x"}], "parameters": {"outputDimensionality": 2}})
    );
    let refused = proxy.client().post("/v1/embeddings", r#"{"model":"vertex/claude-sonnet-4","input":"x"}"#);
    assert_eq!(refused.status, 400, "{}", refused.text());
}

#[test]
fn express_api_keys_use_x_goog_api_key_and_rotate_on_a_429() {
    let vertex = Vertex::start(3600, |req| {
        if req.header("x-goog-api-key") == Some("AIza-vertex-key-0001") {
            return MockReply::json(
                429,
                json!({"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}),
            );
        }
        MockReply::json(200, gemini_answer("from key 2"))
    });
    let env = format!(
        "VERTEX_API_BASE=http://127.0.0.1:{}/v1\nVERTEX_API_KEY_1=AIza-vertex-key-0001\nVERTEX_API_KEY_2=AIza-vertex-key-0002\n",
        vertex.mock.port
    );
    let proxy = Proxy::start(&env);
    for _ in 0..3 {
        let answer = proxy.client().post("/v1/chat/completions", &chat("vertex/gemini-2.0-flash-001", false));
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["choices"][0]["message"]["content"], "from key 2");
    }
    let calls = vertex.api_calls();
    assert!(calls.iter().any(|c| c.header("x-goog-api-key") == Some("AIza-vertex-key-0001")), "both keys were tried");
    for call in &calls {
        assert_eq!(call.url, "/v1/publishers/google/models/gemini-2.0-flash-001:generateContent");
        assert_eq!(call.header("authorization"), None);
    }
    assert_eq!(proxy.key_status("...0001")["state"], "cooldown");
    assert_eq!(vertex.exchanges.load(Ordering::SeqCst), 0, "API keys need no token");
}

#[test]
fn a_refused_exchange_takes_the_account_out_of_rotation_and_status_says_why() {
    let vertex = Vertex::start(3600, |_| MockReply::json(200, gemini_answer("ok")));
    // Sequential rotation tries the refused account (VERTEX_CREDENTIALS_1) first.
    let proxy = Proxy::start(&vertex.env(&[Some(REFUSED_EMAIL), None], "ROTATION_MODE_VERTEX=sequential\n"));
    for _ in 0..3 {
        let answer = proxy.client().post("/v1/chat/completions", &chat("vertex/gemini-2.5-flash", false));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let token_calls = vertex.mock.requests().iter().filter(|r| r.url == "/token").count();
    assert_eq!(token_calls, 2, "one refusal, one token, and the refused account is not tried again");
    let bad = proxy.key_status(&format!("{REFUSED_EMAIL} (key fedcba98)"));
    assert_eq!((bad["state"].as_str(), bad["oauth"]["state"].as_str()), (Some("refused"), Some("refused")), "{bad}");
    let why = bad["oauth"]["why"].as_str().unwrap();
    assert!(why.contains("400") && why.contains("invalid_grant"), "{why}");
    let (code, table, _) = crate::support::run_cli(
        proxy.dir().path(),
        &["status", "--url", &format!("http://127.0.0.1:{}", proxy.port)],
        "",
    );
    assert_eq!(code, 0);
    assert!(table.contains("refused:"), "{table}");
}

#[test]
fn a_refused_only_account_fails_with_what_to_fix() {
    let vertex = Vertex::start(3600, |_| MockReply::json(200, gemini_answer("never")));
    let proxy = Proxy::start(&vertex.env(&[Some(REFUSED_EMAIL)], ""));
    for _ in 0..2 {
        let answer = proxy.client().post("/v1/chat/completions", &chat("vertex/gemini-2.5-flash", false));
        assert_eq!(answer.status, 502, "{}", answer.text());
        assert!(answer.text().contains("replace VERTEX_CREDENTIALS_1"), "{}", answer.text());
    }
    assert_eq!(vertex.mock.requests().iter().filter(|r| r.url == "/token").count(), 1);
    assert!(vertex.api_calls().is_empty());
}

#[test]
fn tokens_and_private_keys_echoed_by_vertex_reach_nothing_the_proxy_writes() {
    let key_body = private_key_body();
    let fragment = key_body[100..180].to_string();
    let echo = fragment.clone();
    let vertex = Vertex::start(3600, move |req| {
        let bearer = req.header("authorization").unwrap_or_default().to_string();
        let message = format!("echo {bearer} {} {echo}", bearer.to_uppercase());
        MockReply::Full {
            status: 500,
            headers: vec![("content-type".into(), "application/json".into()), ("x-echo".into(), message.clone())],
            body: json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}}).to_string().into_bytes(),
        }
    });
    let dir = crate::support::TempDir::new();
    // A short GLOBAL_TIMEOUT: the failing account cools down, and the stream need not wait it out.
    dir.write(".env", &vertex.env(&[None], "GLOBAL_TIMEOUT=2\n"));
    let proxy = Proxy::start_in(dir, &["--enable-request-logging"]);
    let answer = proxy.client().post("/v1/chat/completions", &chat("vertex/gemini-2.5-flash", false));
    assert_eq!(answer.status, 502, "{}", answer.text());
    let streamed =
        proxy.client().stream("/v1/chat/completions", &chat("vertex/gemini-2.5-flash", true)).rest().join("\n");
    let status: String = proxy.status().iter().map(Value::to_string).collect();
    let dir = proxy.kill();
    assert!(dir.path().join("logs/detailed_logs").is_dir(), "request logs were written");
    let mut files = String::new();
    for entry in walk(dir.path()) {
        if entry.file_name().is_some_and(|n| n != ".env") {
            files.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()));
        }
    }
    for (what, text) in [("answer", answer.text()), ("stream", streamed), ("status", status), ("files", files)] {
        assert!(!text.contains("ya29.mock") && !text.contains("YA29.MOCK"), "{what} holds a token: {text}");
        assert!(!text.contains(&fragment[..20]), "{what} holds the private key");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}
