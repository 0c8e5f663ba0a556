//! iFlow accounts serving `iflow`, against a mock iFlow API and mock OAuth endpoints: a chat
//! through a credential file carries the account's API key as the bearer and a signature the
//! test verifies; a key near expiry is refreshed and the new API key fetched and used; a
//! refused refresh becomes `needs_login`. And the logins end to end: `keyrelay oauth iflow`
//! (the test plays the browser) and `keyrelay oauth qwen-code` (the device flow through
//! pending and slow_down), each followed by a chat served through the new credential.

use crate::oauth_login::{Login, browse, free_port, param, query, qwen_mock};
use crate::support::mock::{Piece, completion, content_chunk, event, finish_chunk};
use crate::support::{Mock, MockReply, Proxy, Recorded, TempDir};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const CHAT: &str = r#"{"model":"iflow/glm-4.6","messages":[{"role":"user","content":"hi"}]}"#;
const API_KEY: &str = "sk-iflow-account-key-0001";
const ACCESS: &str = "iflow-access-old-0001";
const REFRESH: &str = "iflow-refresh-old-0001";
const HOUR_MS: u64 = 3_600_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// HMAC-SHA256 written out here too, so the test checks the proxy's signature independently.
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner = Sha256::new().chain_update(block.map(|b| b ^ 0x36)).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(block.map(|b| b ^ 0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a call's iFlow headers: `key` as the bearer, the CLI's User-Agent, a session id, a
/// timestamp between `from` and now, and the signature of both made with `key`.
fn assert_signed(call: &Recorded, key: &str, from: u64) {
    assert_eq!(call.key().as_deref(), Some(key));
    assert_eq!(call.header("user-agent"), Some("iFlow-Cli"));
    let session = call.header("session-id").expect("a session-id");
    assert!(session.starts_with("session-") && session.len() == "session-".len() + 36, "{session}");
    let stamp = call.header("x-iflow-timestamp").expect("a timestamp");
    let ms: u64 = stamp.parse().unwrap();
    assert!(ms >= from && ms <= now_ms(), "{ms}");
    let expected = hmac_hex(key.as_bytes(), format!("iFlow-Cli:{session}:{stamp}").as_bytes());
    assert_eq!(call.header("x-iflow-signature"), Some(expected.as_str()));
}

fn iflow_api() -> Mock {
    Mock::start(|_| MockReply::json(200, completion("hello from iflow")))
}

/// iFlow's OAuth endpoints: each refresh hands out `iflow-access-fresh-<n>`, a rotated refresh
/// token and 48 hours, and getUserInfo answers `sk-iflow-fresh-<n>` for that access token;
/// or every refresh is refused like a dead refresh token.
fn oauth_endpoints(refuse: bool) -> Mock {
    let n = std::sync::atomic::AtomicUsize::new(0);
    Mock::start(move |req| {
        if req.url == "/oauth/token" {
            if refuse {
                return MockReply::json(400, json!({"error": "invalid_grant"}));
            }
            let n = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            return MockReply::json(
                200,
                json!({"access_token": format!("iflow-access-fresh-{n}"), "refresh_token": format!("iflow-refresh-rotated-{n}"),
                       "expires_in": 172_800, "token_type": "bearer", "scope": "read"}),
            );
        }
        if let Some(n) = req.url.strip_prefix("/api/oauth/getUserInfo?accessToken=iflow-access-fresh-") {
            return MockReply::json(
                200,
                json!({"success": true, "data": {"apiKey": format!("sk-iflow-fresh-{n}"),
                "email": "user@example.com", "phone": ""}}),
            );
        }
        MockReply::json(404, json!({"success": false}))
    })
}

/// A data directory pointing `iflow` at `api` and its OAuth at `oauth`, holding one credential
/// file (the iFlow CLI's field names) whose token expires `expires_in_ms` from now.
fn data_dir(api: &Mock, oauth: &Mock, expires_in_ms: u64) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    dir.write(".env", &format!("IFLOW_API_BASE={}\nIFLOW_OAUTH_BASE=http://127.0.0.1:{}\n", api.base(), oauth.port));
    std::fs::create_dir_all(dir.path().join("oauth_creds")).unwrap();
    let expiry = keyrelay::rfc3339(now_ms() + expires_in_ms);
    let file = json!({"access_token": ACCESS, "refresh_token": REFRESH, "apiKey": API_KEY,
        "email": "user@example.com", "expiry_date": expiry, "token_type": "bearer", "scope": "read"});
    dir.write("oauth_creds/iflow_oauth_1.json", &file.to_string());
    let path = dir.path().join("oauth_creds/iflow_oauth_1.json");
    (dir, path)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn key_of(proxy: &Proxy, provider: &str) -> Value {
    proxy.status().into_iter().find(|l| l["type"] == "key" && l["provider"] == provider).expect("a key of the provider")
}

#[test]
fn chat_through_an_iflow_credential_uses_its_api_key_and_a_verifiable_signature() {
    let (api, oauth) = (iflow_api(), oauth_endpoints(false));
    let (dir, _) = data_dir(&api, &oauth, 48 * HOUR_MS);
    let proxy = Proxy::start_in(dir, &[]);
    let before = now_ms();
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hello from iflow");
    let call = &api.requests()[0];
    assert_eq!(call.url, "/v1/chat/completions");
    assert_signed(call, API_KEY, before);
    let body = call.json();
    assert_eq!(body["model"], "glm-4.6");
    assert_eq!(body["tools"][0]["function"]["name"], "noop", "a request without tools gets the placeholder");
    assert!(oauth.requests().is_empty(), "a key 48 hours from expiry is not refreshed");

    let key = key_of(&proxy, "iflow");
    assert_eq!((key["masked"].clone(), key["state"].clone()), (json!("user@example.com"), json!("ready")));
    assert_eq!(key["oauth"]["account"], "user@example.com");
    assert_eq!(key["oauth"]["state"], "ok");
    assert!(key["oauth"]["expires_in_seconds"].as_i64().unwrap() > 47 * 3600);
    let everything = proxy.status().iter().map(Value::to_string).collect::<String>();
    for secret in [API_KEY, ACCESS, REFRESH] {
        assert!(!everything.contains(secret), "{everything}");
        assert!(!proxy.logs().contains(secret), "a secret reached the log");
    }
}

#[test]
fn a_key_under_24_hours_from_expiry_is_refreshed_and_the_new_api_key_used() {
    let (api, oauth) = (iflow_api(), oauth_endpoints(false));
    let (dir, path) = data_dir(&api, &oauth, 20 * HOUR_MS);
    let proxy = Proxy::start_in(dir, &[]);
    let before = now_ms();
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());

    let calls = oauth.requests();
    assert_eq!(calls.len(), 2, "the refresh, then the API key fetch: {calls:?}");
    let basic = base64::engine::general_purpose::STANDARD.encode("10009311001:4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW");
    assert_eq!(calls[0].header("authorization"), Some(format!("Basic {basic}").as_str()));
    let form = String::from_utf8(calls[0].body.clone()).unwrap();
    assert!(form.contains("grant_type=refresh_token") && form.contains(&format!("refresh_token={REFRESH}")), "{form}");
    assert_eq!(calls[1].url, "/api/oauth/getUserInfo?accessToken=iflow-access-fresh-1");
    assert_signed(&api.requests()[0], "sk-iflow-fresh-1", before);

    let file = read_json(&path);
    assert_eq!(file["apiKey"], "sk-iflow-fresh-1", "the new key is written under the name it was read with");
    assert_eq!(file["refresh_token"], "iflow-refresh-rotated-1");
    assert!(file["expiry_date"].as_str().unwrap().ends_with('Z'), "the expiry keeps its ISO form: {file}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // The next call uses the new key without another refresh.
    assert_eq!(proxy.client().post("/v1/chat/completions", CHAT).status, 200);
    assert_eq!(oauth.requests().len(), 2);
    assert_eq!(api.keys_seen(), ["sk-iflow-fresh-1", "sk-iflow-fresh-1"]);
    assert!(!proxy.logs().contains("sk-iflow-fresh-1"), "the new API key reached the log");
}

#[test]
fn a_stream_is_signed_and_asks_for_events_without_stream_options() {
    let oauth = oauth_endpoints(false);
    let api = Mock::start(|_| {
        MockReply::sse(vec![
            Piece::Bytes(event(&content_chunk("streamed"))),
            Piece::Bytes(event(&finish_chunk())),
            Piece::Bytes(b"data: [DONE]\n\n".to_vec()),
        ])
    });
    let (dir, _) = data_dir(&api, &oauth, 48 * HOUR_MS);
    let proxy = Proxy::start_in(dir, &[]);
    let before = now_ms();
    let chat = r#"{"model":"iflow/glm-4.6","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let mut stream = proxy.client().stream("/v1/chat/completions", chat);
    assert_eq!(stream.status, 200);
    let events = stream.rest().join("\n");
    assert!(events.contains("streamed") && events.contains("[DONE]"), "{events}");
    let call = &api.requests()[0];
    assert_signed(call, API_KEY, before);
    assert_eq!(call.header("accept"), Some("text/event-stream"));
    assert_eq!(call.json().get("stream_options"), None, "iFlow refuses stream_options");
}

#[test]
fn a_401_refreshes_once_and_retries_with_the_api_key_fetched_again() {
    let oauth = oauth_endpoints(false);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let api = Mock::start(move |_| match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
        0 => MockReply::json(401, json!({"error": {"message": "invalid api key", "type": "invalid_request_error"}})),
        _ => MockReply::json(200, completion("after refresh")),
    });
    let (dir, path) = data_dir(&api, &oauth, 48 * HOUR_MS);
    let proxy = Proxy::start_in(dir, &[]);
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(api.keys_seen(), [API_KEY, "sk-iflow-fresh-1"]);
    assert_eq!(read_json(&path)["apiKey"], "sk-iflow-fresh-1");
    assert_eq!(key_of(&proxy, "iflow")["state"], "ready");
}

#[test]
fn a_refused_refresh_marks_the_iflow_account_needs_login() {
    let (api, oauth) = (iflow_api(), oauth_endpoints(true));
    let (dir, path) = data_dir(&api, &oauth, HOUR_MS);
    let proxy = Proxy::start_in(dir, &[]);
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 502, "{}", answer.text());
    let message = answer.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("keyrelay oauth iflow"), "{message}");
    assert!(api.requests().is_empty());
    assert_eq!(read_json(&path)["needs_login"], true);
    let key = key_of(&proxy, "iflow");
    assert_eq!((key["state"].clone(), key["oauth"]["state"].clone()), (json!("needs_login"), json!("needs_login")));
    let again = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(again.status, 502);
    assert_eq!(oauth.requests().len(), 1, "a refused account is not refreshed again");
}

#[test]
fn an_iflow_login_then_serves_a_chat_with_the_fetched_api_key() {
    let dir = TempDir::new();
    let (api, oauth) = (iflow_api(), oauth_endpoints(false));
    // The login's own token and API key answers: a mock of its own, since its access token
    // differs from a refresh's.
    let login_oauth = Mock::start(|req| match req.url.as_str() {
        "/oauth/token" => MockReply::json(
            200,
            json!({"access_token": "iflow-login-access", "refresh_token": "iflow-login-refresh",
                   "expires_in": 172_800, "token_type": "bearer", "scope": "read"}),
        ),
        "/api/oauth/getUserInfo?accessToken=iflow-login-access" => MockReply::json(
            200,
            json!({"success": true, "data": {"apiKey": "sk-iflow-login-key", "email": "", "phone": "13800000000"}}),
        ),
        _ => MockReply::json(404, json!({"success": false})),
    });
    let port = free_port();
    let base = format!("http://127.0.0.1:{}", login_oauth.port);
    let env = [("IFLOW_OAUTH_BASE", base.clone()), ("IFLOW_OAUTH_PORT", port.to_string())];
    let mut login = Login::start(&dir, "iflow", &[], &env);
    let auth = query(&login.line(|l| l.starts_with(&format!("{base}/oauth?"))));
    let (status, _) = browse(port, &format!("/oauth2callback?code=iflow-code&state={}", param(&auth, "state")));
    assert_eq!(status, 200);
    let (code, out, err) = login.finish();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("saved iflow account 13800000000"), "{out}");

    dir.write(".env", &format!("IFLOW_API_BASE={}\nIFLOW_OAUTH_BASE=http://127.0.0.1:{}\n", api.base(), oauth.port));
    let proxy = Proxy::start_in(dir, &[]);
    let before = now_ms();
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_signed(&api.requests()[0], "sk-iflow-login-key", before);
    assert!(oauth.requests().is_empty(), "a fresh login needs no refresh");
    assert_eq!(key_of(&proxy, "iflow")["oauth"]["account"], "13800000000");
}

#[test]
fn a_qwen_device_login_then_serves_a_chat_through_the_new_credential() {
    let dir = TempDir::new();
    let api = Mock::start(|_| MockReply::json(200, completion("hello from qwen")));
    let token = json!({"access_token": "qwen-login-access", "refresh_token": "qwen-login-refresh",
        "token_type": "Bearer", "expires_in": 21_600, "resource_url": api.base()});
    let (mock, times) = qwen_mock(vec![
        (400, json!({"error": "authorization_pending"})),
        (400, json!({"error": "authorization_pending"})),
        (429, json!({"error": "slow_down", "interval": 0})),
        (200, token),
    ]);
    let env = [("QWEN_CODE_OAUTH_BASE", format!("http://127.0.0.1:{}", mock.port))];
    let (code, out, err) = Login::start(&dir, "qwen-code", &["--label", "laptop"], &env).finish();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("saved qwen_code account laptop"), "{out}");
    assert_eq!(times.lock().unwrap().len(), 4, "two pending, one slow_down, then the token");

    dir.write(".env", &format!("QWEN_CODE_OAUTH_BASE=http://127.0.0.1:{}\n", mock.port));
    let proxy = Proxy::start_in(dir, &[]);
    let chat = r#"{"model":"qwen_code/qwen3-coder-plus","messages":[{"role":"user","content":"hi"}]}"#;
    let answer = proxy.client().post("/v1/chat/completions", chat);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hello from qwen");
    assert_eq!(api.requests()[0].url, "/v1/chat/completions", "served at the login's resource_url");
    assert_eq!(api.keys_seen(), ["qwen-login-access"]);
    assert_eq!(key_of(&proxy, "qwen_code")["oauth"]["account"], "laptop");
}
