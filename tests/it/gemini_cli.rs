//! `gemini_cli` served with Gemini CLI accounts: a mock Code Assist API (`/v1internal:...`)
//! and a mock Google token endpoint, the real binary between them. Chat whole and streamed
//! through a credential file with a `project_id`, in Code Assist's envelope; the project found
//! with loadCodeAssist when the file has none (once, and written back); a quota 429 cooling
//! the credential for its hint; and a login (`keyrelay oauth gemini-cli`) whose new account,
//! onboarded on its first use, serves a chat.

use crate::oauth_login::{Login, browse, free_port, google_mock, param, query};
use crate::support::mock::Piece;
use crate::support::{Mock, MockReply, Proxy, Recorded, TempDir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const ACCESS: &str = "ya29.gemini-access-token-0001";
const REFRESH: &str = "1//gemini-refresh-token-0001";
const WHOLE: &str = r#"{"model":"gemini_cli/gemini-2.5-pro","messages":[{"role":"user","content":"hi"}]}"#;
const STREAMED: &str =
    r#"{"model":"gemini_cli/gemini-2.5-pro","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A generateContent response saying `text`.
fn response(text: &str, finish: Option<&str>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
    if let Some(reason) = finish {
        candidate["finishReason"] = json!(reason);
    }
    json!({"candidates": [candidate], "modelVersion": "gemini-2.5-pro",
           "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}})
}

/// A Code Assist API: loadCodeAssist answers `load`, onboardUser finishes at once with
/// `onboarded-proj`, generateContent and the stream answer in the envelope.
fn code_assist(load: Value) -> Mock {
    Mock::start(move |req: &Recorded| match req.url.as_str() {
        "/v1internal:loadCodeAssist" => MockReply::json(200, load.clone()),
        "/v1internal:onboardUser" => MockReply::json(
            200,
            json!({"name": "operations/onboard-1", "done": true,
                   "response": {"cloudaicompanionProject": {"id": "onboarded-proj", "name": "Onboarded"}}}),
        ),
        "/v1internal:generateContent" => MockReply::json(
            200,
            json!({"response": response("hello from code assist", Some("STOP")), "traceId": "t-1"}),
        ),
        "/v1internal:streamGenerateContent?alt=sse" => {
            let event = |v: Value| format!("data: {}\r\n\r\n", json!({"response": v, "traceId": "t-2"})).into_bytes();
            MockReply::sse(vec![
                Piece::Bytes(event(response("hello ", None))),
                Piece::Bytes(event(response("streamed", Some("STOP")))),
            ])
        }
        other => MockReply::json(404, json!({"error": {"code": 404, "message": format!("no {other}")}})),
    })
}

/// A token endpoint that must not be needed (tokens far from expiry): answers 500.
fn unused_tokens() -> Mock {
    Mock::start(|_| MockReply::json(500, json!({"error": "unexpected refresh"})))
}

/// The `.env` pointing gemini_cli at the mocks.
fn env(api: &Mock, tokens: &Mock) -> String {
    format!(
        "GEMINI_CLI_API_BASE=http://127.0.0.1:{}/v1internal\nGEMINI_CLI_TOKEN_URL=http://127.0.0.1:{}/token\n",
        api.port, tokens.port
    )
}

/// A data directory with one stored credential, `project_id` set when given.
fn data_dir(api: &Mock, tokens: &Mock, project: Option<&str>) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    dir.write(".env", &env(api, tokens));
    let mut cred = json!({"access_token": ACCESS, "refresh_token": REFRESH, "token_type": "Bearer",
        "email": "me@example.com", "expiry_date": now_ms() + 3_600_000, "universe_domain": "googleapis.com"});
    if let Some(p) = project {
        cred["project_id"] = json!(p);
    }
    std::fs::create_dir_all(dir.path().join("oauth_creds")).unwrap();
    dir.write("oauth_creds/gemini_cli_oauth_1.json", &cred.to_string());
    let path = dir.path().join("oauth_creds/gemini_cli_oauth_1.json");
    (dir, path)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn calls_to(mock: &Mock, url: &str) -> Vec<Recorded> {
    mock.requests().into_iter().filter(|r| r.url == url).collect()
}

/// The content of a streamed answer's chunks, joined, and whether it ended with `[DONE]`.
fn streamed_text(events: &[String]) -> (String, bool) {
    let mut text = String::new();
    for data in events.iter().filter_map(|e| e.strip_prefix("data: ")) {
        if let Ok(chunk) = serde_json::from_str::<Value>(data) {
            text.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    (text, events.last().map(String::as_str) == Some("data: [DONE]"))
}

#[test]
fn chat_whole_and_streamed_goes_through_a_credential_file_in_the_code_assist_envelope() {
    let (api, tokens) = (code_assist(json!({})), unused_tokens());
    let (dir, _) = data_dir(&api, &tokens, Some("file-proj"));
    let proxy = Proxy::start_in(dir, &[]);

    let answer = proxy.client().post("/v1/chat/completions", WHOLE);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["choices"][0]["message"]["content"], "hello from code assist");
    assert_eq!(body["model"], "gemini_cli/gemini-2.5-pro");
    assert_eq!(body["usage"]["total_tokens"], 5);
    let sent = &calls_to(&api, "/v1internal:generateContent")[0];
    assert_eq!(sent.key().as_deref(), Some(ACCESS));
    let envelope = sent.json();
    assert_eq!((envelope["model"].clone(), envelope["project"].clone()), (json!("gemini-2.5-pro"), json!("file-proj")));
    assert_eq!(envelope["request"]["contents"], json!([{"role": "user", "parts": [{"text": "hi"}]}]));

    let mut stream = proxy.client().stream("/v1/chat/completions", STREAMED);
    assert_eq!(stream.status, 200);
    let (text, done) = streamed_text(&stream.rest());
    assert_eq!((text.as_str(), done), ("hello streamed", true));
    let sent = &calls_to(&api, "/v1internal:streamGenerateContent?alt=sse")[0];
    assert_eq!((sent.json()["project"].clone(), sent.key()), (json!("file-proj"), Some(ACCESS.to_string())));

    assert!(calls_to(&api, "/v1internal:loadCodeAssist").is_empty(), "a known project is not looked up");
    assert!(tokens.requests().is_empty(), "a token far from expiry is not refreshed");
    let models = proxy.client().get("/v1/models").json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"gemini_cli/gemini-2.5-pro") && ids.contains(&"gemini_cli/gemini-2.5-flash"), "{ids:?}");
}

#[test]
fn a_credential_without_a_project_finds_it_once_with_load_code_assist_and_writes_it_back() {
    let api = code_assist(json!({"currentTier": {"id": "free-tier"}, "cloudaicompanionProject": "found-proj"}));
    let tokens = unused_tokens();
    let (dir, path) = data_dir(&api, &tokens, None);
    let proxy = Proxy::start_in(dir, &[]);
    for _ in 0..2 {
        let answer = proxy.client().post("/v1/chat/completions", WHOLE);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let loads = calls_to(&api, "/v1internal:loadCodeAssist");
    assert_eq!(loads.len(), 1, "found once, then remembered");
    assert_eq!(loads[0].key().as_deref(), Some(ACCESS));
    assert_eq!(loads[0].json()["metadata"]["pluginType"], "GEMINI");
    let projects: Vec<Value> =
        calls_to(&api, "/v1internal:generateContent").iter().map(|r| r.json()["project"].clone()).collect();
    assert_eq!(projects, [json!("found-proj"), json!("found-proj")]);
    let file = read_json(&path);
    assert_eq!(file["project_id"], "found-proj");
    // The tier learnt with it is kept where the Python proxy keeps it, and ranks the account.
    assert_eq!(
        (file["_proxy_metadata"]["tier"].clone(), file["_proxy_metadata"]["tier_full"].clone()),
        (json!("FREE"), json!("free-tier"))
    );
    let key = proxy.status().into_iter().find(|l| l["type"] == "key" && l["provider"] == "gemini_cli").unwrap();
    assert_eq!(key["priority"], 3, "{key}");
    assert_eq!(
        (file["universe_domain"].clone(), file["access_token"].clone()),
        (json!("googleapis.com"), json!(ACCESS))
    );
}

#[test]
fn a_quota_429_with_a_reset_hint_cools_the_credential_down() {
    let api = Mock::start(|_| {
        MockReply::json(
            429,
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                "message": "You have exhausted your capacity on this model. Your quota will reset after 2h0m0s.",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXHAUSTED",
                             "domain": "cloudcode-pa.googleapis.com", "metadata": {"quotaResetDelay": "7200s"}}]}}),
        )
    });
    let tokens = unused_tokens();
    let (dir, _) = data_dir(&api, &tokens, Some("file-proj"));
    let proxy = Proxy::start_in(dir, &[]);
    let answer = proxy.client().post("/v1/chat/completions", WHOLE);
    assert_eq!((answer.status, answer.error_code()), (429, "all_keys_cooling_down".to_string()), "{}", answer.text());
    let key = proxy.status().into_iter().find(|l| l["type"] == "key" && l["provider"] == "gemini_cli").unwrap();
    assert_eq!(key["state"], "cooldown", "{key}");
    let cooldown = &key["cooldowns"][0];
    let left = cooldown["seconds_left"].as_u64().unwrap();
    assert!((7190..=7200).contains(&left), "the hint sets the cooldown: {key}");
    assert!(cooldown["reason"].as_str().unwrap().contains("quota"), "{key}");
    // The model's preview variant was tried once too (its quota is its own), and failed alike.
    let models: Vec<Value> = api.requests().iter().map(|r| r.json()["model"].clone()).collect();
    assert_eq!(models, [json!("gemini-2.5-pro"), json!("gemini-2.5-pro-preview-06-05")]);
    let again = proxy.client().post("/v1/chat/completions", WHOLE);
    assert_eq!(again.status, 429);
    assert_eq!(api.requests().len(), 2, "a cooling credential is not tried again");
}

#[test]
fn a_new_login_is_onboarded_at_first_use_and_serves_a_chat() {
    let google = google_mock("ya29.logged-in-access-1", "1//logged-in-refresh-1", true);
    let api = code_assist(json!({"allowedTiers": [{"id": "legacy-tier"}, {"id": "free-tier", "isDefault": true}]}));
    let dir = TempDir::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{}", google.port);
    let login_env = [
        ("GEMINI_CLI_AUTH_URL", format!("{base}/auth")),
        ("GEMINI_CLI_TOKEN_URL", format!("{base}/token")),
        ("GEMINI_CLI_USERINFO_URL", format!("{base}/userinfo")),
        ("GEMINI_CLI_OAUTH_PORT", port.to_string()),
    ];
    let mut login = Login::start(&dir, "gemini-cli", &[], &login_env);
    let url = login.line(|l| l.starts_with(&format!("{base}/auth?")));
    let state = param(&query(&url), "state");
    let (status, page) = browse(port, &format!("/oauth2callback?code=4%2F0Ab-code&state={state}"));
    assert_eq!(status, 200, "{page}");
    let (code, out, err) = login.finish();
    assert_eq!(code, 0, "{out}\n{err}");

    dir.write(".env", &env(&api, &google));
    let proxy = Proxy::start_in(dir, &[]);
    let answer = proxy.client().post("/v1/chat/completions", WHOLE);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hello from code assist");
    let onboard = &calls_to(&api, "/v1internal:onboardUser")[0];
    assert_eq!(onboard.json()["tierId"], "free-tier");
    assert!(onboard.json().get("cloudaicompanionProject").is_none(), "the free tier takes no project");
    let chat = &calls_to(&api, "/v1internal:generateContent")[0];
    assert_eq!(
        (chat.key().as_deref(), chat.json()["project"].clone()),
        (Some("ya29.logged-in-access-1"), json!("onboarded-proj"))
    );
    let file = read_json(&proxy.dir().path().join("oauth_creds/gemini_cli_oauth_1.json"));
    assert_eq!(file["project_id"], "onboarded-proj");
    let key = proxy.status().into_iter().find(|l| l["type"] == "key" && l["provider"] == "gemini_cli").unwrap();
    assert_eq!((key["masked"].clone(), key["state"].clone()), (json!("Person@Example.com"), json!("ready")), "{key}");
}
