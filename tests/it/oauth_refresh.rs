//! OAuth credentials serving `qwen_code`: a mock token endpoint and a mock Qwen API, the real
//! binary between them. Chat through a credential file, a refresh before expiry written back
//! (rotated refresh token, mode 0600) before the token is used, a refused refresh becoming
//! `needs_login` in the file, in `status` and in the answer, a 401 healed by one forced
//! refresh, a stateless credential refreshed in memory only, and `export-env` variables in a
//! fresh data directory serving the same account.

use crate::support::mock::completion;
use crate::support::{Mock, MockReply, Proxy, Recorded, TempDir, run_cli};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const CHAT: &str = r#"{"model":"qwen_code/qwen3-coder-plus","messages":[{"role":"user","content":"hi"}]}"#;
const OLD_ACCESS: &str = "qwen-access-token-old-0001";
const OLD_REFRESH: &str = "qwen-refresh-token-old-0001";
const TOKEN_PATH: &str = "/api/v1/oauth2/token";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A token endpoint that hands out `qwen-access-fresh-<n>` / `qwen-refresh-rotated-<n>`
/// (valid 6 h), or refuses every refresh like a dead refresh token.
fn token_endpoint(refuse: bool) -> Mock {
    let n = AtomicUsize::new(0);
    Mock::start(move |_: &Recorded| {
        if refuse {
            return MockReply::json(
                400,
                json!({"error": "invalid_grant", "error_description": "refresh token expired"}),
            );
        }
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        MockReply::json(
            200,
            json!({"access_token": format!("qwen-access-fresh-{n}"), "refresh_token": format!("qwen-refresh-rotated-{n}"),
                   "token_type": "Bearer", "expires_in": 21600}),
        )
    })
}

/// A Qwen API that answers every chat call.
fn qwen_api() -> Mock {
    Mock::start(|_| MockReply::json(200, completion("hello from qwen")))
}

/// The credential file text: `expires_in_ms` from now, the API mock as its `resource_url`.
fn credential(api: &Mock, expires_in_ms: i64) -> String {
    format!(
        r#"{{"access_token":"{OLD_ACCESS}","refresh_token":"{OLD_REFRESH}","token_type":"Bearer","resource_url":"http://127.0.0.1:{}","email":"work","expiry_date":{}}}"#,
        api.port,
        now_ms() as i64 + expires_in_ms
    )
}

/// A data directory with `.env` pointing the token endpoint at `tokens`, and one stored
/// credential; returns the directory and the credential's path.
fn data_dir(tokens: &Mock, credential: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    dir.write(".env", &format!("QWEN_CODE_OAUTH_BASE=http://127.0.0.1:{}\n", tokens.port));
    std::fs::create_dir_all(dir.path().join("oauth_creds")).unwrap();
    dir.write("oauth_creds/qwen_code_oauth_1.json", credential);
    let path = dir.path().join("oauth_creds/qwen_code_oauth_1.json");
    (dir, path)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn qwen_key(proxy: &Proxy) -> Value {
    proxy.status().into_iter().find(|l| l["type"] == "key" && l["provider"] == "qwen_code").expect("a qwen_code key")
}

#[test]
fn chat_goes_through_a_qwen_credential_file_to_its_resource_url() {
    let (tokens, api) = (token_endpoint(false), qwen_api());
    let (dir, _) = data_dir(&tokens, &credential(&api, 5 * 3_600_000));
    let proxy = Proxy::start_in(dir, &[]);
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hello from qwen");
    let sent = &api.requests()[0];
    assert_eq!((sent.url.as_str(), sent.key().as_deref()), ("/v1/chat/completions", Some(OLD_ACCESS)));
    let body = sent.json();
    assert_eq!(body["model"], "qwen3-coder-plus");
    assert_eq!(body["tools"][0]["function"]["name"], "do_not_call_me", "a request without tools gets the placeholder");
    assert!(tokens.requests().is_empty(), "a token far from expiry is not refreshed");

    let key = qwen_key(&proxy);
    assert_eq!((key["masked"].clone(), key["state"].clone()), (json!("work"), json!("ready")));
    assert_eq!((key["oauth"]["account"].clone(), key["oauth"]["state"].clone()), (json!("work"), json!("ok")));
    assert!(key["oauth"]["expires_in_seconds"].as_i64().unwrap() > 4 * 3600);
    assert_eq!(key["today"]["requests"], 1);
    let everything = proxy.status().iter().map(Value::to_string).collect::<String>();
    assert!(!everything.contains(OLD_ACCESS) && !everything.contains(OLD_REFRESH), "{everything}");
}

#[test]
fn a_token_near_expiry_is_refreshed_and_written_back_before_use() {
    let tokens = token_endpoint(false);
    // The API reads the file when the call reaches it: the rotated token must be there by then.
    let seen_in_file: Arc<Mutex<Vec<Value>>> = Arc::default();
    let path_slot: Arc<Mutex<Option<PathBuf>>> = Arc::default();
    let api = {
        let (seen, path) = (seen_in_file.clone(), path_slot.clone());
        Mock::start(move |_| {
            if let Some(p) = path.lock().unwrap().as_ref() {
                seen.lock().unwrap().push(read_json(p));
            }
            MockReply::json(200, completion("fresh"))
        })
    };
    let (dir, path) = data_dir(&tokens, &credential(&api, 10 * 60_000));
    *path_slot.lock().unwrap() = Some(path.clone());
    let proxy = Proxy::start_in(dir, &[]);
    let before = now_ms();
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());

    let refresh = &tokens.requests()[0];
    assert_eq!(refresh.url, TOKEN_PATH);
    let form = String::from_utf8(refresh.body.clone()).unwrap();
    assert!(
        form.contains("grant_type=refresh_token") && form.contains(&format!("refresh_token={OLD_REFRESH}")),
        "{form}"
    );
    assert_eq!(api.keys_seen(), ["qwen-access-fresh-1"]);
    let at_call = seen_in_file.lock().unwrap()[0].clone();
    assert_eq!(at_call["refresh_token"], "qwen-refresh-rotated-1", "written before use: {at_call}");
    assert_eq!(at_call["access_token"], "qwen-access-fresh-1");
    let expiry = at_call["expiry_date"].as_u64().unwrap();
    assert!(expiry >= before + 21_600_000 && expiry <= now_ms() + 21_600_000, "{expiry}");
    assert_eq!(
        (at_call["email"].clone(), at_call["resource_url"].clone()),
        (json!("work"), json!(format!("http://127.0.0.1:{}", api.port)))
    );
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // The next request uses the new token without another refresh.
    assert_eq!(proxy.client().post("/v1/chat/completions", CHAT).status, 200);
    assert_eq!(tokens.requests().len(), 1);
    assert_eq!(api.keys_seen(), ["qwen-access-fresh-1", "qwen-access-fresh-1"]);
    assert!(!proxy.logs().contains("qwen-access-fresh-1"), "a refreshed token reached the log");
}

#[test]
fn a_refused_refresh_marks_needs_login_and_the_answer_says_how_to_log_in() {
    let (tokens, api) = (token_endpoint(true), qwen_api());
    let (dir, path) = data_dir(&tokens, &credential(&api, 60_000));
    let proxy = Proxy::start_in(dir, &[]);
    for _ in 0..2 {
        let answer = proxy.client().post("/v1/chat/completions", CHAT);
        assert_eq!((answer.status, answer.error_code()), (502, "upstream_error".to_string()), "{}", answer.text());
        let message = answer.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("keyrelay oauth qwen-code"), "{message}");
    }
    assert_eq!(tokens.requests().len(), 1, "a refused credential is not refreshed again");
    assert!(api.requests().is_empty());
    let file = read_json(&path);
    assert_eq!((file["needs_login"].clone(), file["refresh_token"].clone()), (json!(true), json!(OLD_REFRESH)));
    let key = qwen_key(&proxy);
    assert_eq!((key["state"].clone(), key["oauth"]["state"].clone()), (json!("needs_login"), json!("needs_login")));
    let provider =
        proxy.status().into_iter().find(|l| l["type"] == "provider" && l["provider"] == "qwen_code").unwrap();
    assert_eq!((provider["needs_login"].clone(), provider["ready"].clone()), (json!(1), json!(0)));

    let (_, table, _) =
        run_cli(proxy.dir().path(), &["status", "--url", &format!("http://127.0.0.1:{}", proxy.port)], "");
    assert!(table.contains("needs login: keyrelay oauth qwen-code"), "{table}");
    let (code, out, err) = run_cli(proxy.dir().path(), &["oauth", "refresh"], "");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("work: needs login"), "{out}");
}

#[test]
fn a_401_forces_one_refresh_and_one_retry_on_the_same_credential() {
    let tokens = token_endpoint(false);
    let calls = AtomicUsize::new(0);
    let api = Mock::start(move |_| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => {
            MockReply::json(401, json!({"error": {"message": "invalid access token", "type": "invalid_request_error"}}))
        }
        _ => MockReply::json(200, completion("after refresh")),
    });
    let (dir, path) = data_dir(&tokens, &credential(&api, 5 * 3_600_000));
    let proxy = Proxy::start_in(dir, &[]);
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(api.keys_seen(), [OLD_ACCESS, "qwen-access-fresh-1"]);
    assert_eq!(tokens.requests().len(), 1);
    assert_eq!(read_json(&path)["refresh_token"], "qwen-refresh-rotated-1");
    assert_eq!(qwen_key(&proxy)["state"], "ready", "a healed 401 does not lock the credential");
}

#[test]
fn a_second_401_locks_the_credential_like_any_auth_failure() {
    let tokens = token_endpoint(false);
    let api =
        Mock::start(|_| MockReply::json(401, json!({"error": {"message": "no", "type": "invalid_request_error"}})));
    let (dir, _) = data_dir(&tokens, &credential(&api, 5 * 3_600_000));
    let proxy = Proxy::start_in(dir, &[]);
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(api.keys_seen(), [OLD_ACCESS, "qwen-access-fresh-1"]);
    assert_eq!(qwen_key(&proxy)["state"], "locked");
}

#[test]
fn a_stateless_credential_is_refreshed_in_memory_only() {
    let (tokens, api) = (token_endpoint(false), qwen_api());
    let dir = TempDir::new();
    let env = format!(
        "QWEN_CODE_OAUTH_BASE=http://127.0.0.1:{}\nQWEN_CODE_1_ACCESS_TOKEN={OLD_ACCESS}\nQWEN_CODE_1_REFRESH_TOKEN={OLD_REFRESH}\nQWEN_CODE_1_EXPIRY_DATE=0\nQWEN_CODE_1_RESOURCE_URL=http://127.0.0.1:{}\nQWEN_CODE_1_EMAIL=ci\n",
        tokens.port, api.port
    );
    dir.write(".env", &env);
    let proxy = Proxy::start_in(dir, &[]);
    for _ in 0..2 {
        assert_eq!(proxy.client().post("/v1/chat/completions", CHAT).status, 200);
    }
    assert_eq!(api.keys_seen(), ["qwen-access-fresh-1", "qwen-access-fresh-1"]);
    assert_eq!(tokens.requests().len(), 1);
    assert_eq!(std::fs::read_to_string(proxy.dir().path().join(".env")).unwrap(), env, "variables are never written");
    assert!(!proxy.dir().path().join("oauth_creds").exists());
    assert_eq!(qwen_key(&proxy)["oauth"]["account"], "ci");
}

#[test]
fn export_env_variables_serve_the_same_account_from_a_fresh_data_dir() {
    let (tokens, api) = (token_endpoint(false), qwen_api());
    let (source, _) = data_dir(&tokens, &credential(&api, 5 * 3_600_000));
    let first = Proxy::start_in(source, &[]);
    let id = qwen_key(&first)["id"].clone();
    let (code, exported, err) = run_cli(first.dir().path(), &["export-env", "qwen-code"], "");
    assert_eq!(code, 0, "{err}");

    let fresh = TempDir::new();
    fresh.write(".env", &format!("QWEN_CODE_OAUTH_BASE=http://127.0.0.1:{}\n{exported}", tokens.port));
    let second = Proxy::start_in(fresh, &[]);
    assert_eq!(second.client().post("/v1/chat/completions", CHAT).status, 200);
    let key = qwen_key(&second);
    assert_eq!((key["id"].clone(), key["masked"].clone()), (id, json!("work")));
    assert_eq!(api.keys_seen(), [OLD_ACCESS]);
}

#[test]
fn oauth_refresh_refreshes_now_and_writes_the_file() {
    let (tokens, api) = (token_endpoint(false), qwen_api());
    let (dir, path) = data_dir(&tokens, &credential(&api, 5 * 3_600_000));
    let (code, out, err) = run_cli(dir.path(), &["oauth", "refresh", "work"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("qwen_code work: refreshed") && !out.contains("fresh-1"), "{out}");
    assert_eq!(read_json(&path)["access_token"], "qwen-access-fresh-1");
    let (code, _, err) = run_cli(dir.path(), &["oauth", "refresh", "nobody"], "");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn qwen_code_api_base_wins_over_the_resource_url() {
    let (tokens, named, chosen) = (token_endpoint(false), qwen_api(), qwen_api());
    let (dir, _) = data_dir(&tokens, &credential(&named, 5 * 3_600_000));
    dir.write(
        ".env",
        &format!("QWEN_CODE_OAUTH_BASE=http://127.0.0.1:{}\nQWEN_CODE_API_BASE={}\n", tokens.port, chosen.base()),
    );
    let proxy = Proxy::start_in(dir, &[]);
    assert_eq!(proxy.client().post("/v1/chat/completions", CHAT).status, 200);
    assert!(named.requests().is_empty());
    assert_eq!(chosen.keys_seen(), [OLD_ACCESS]);
}

#[test]
fn the_background_refresher_refreshes_before_any_request_and_stops_with_the_server() {
    let (tokens, api) = (token_endpoint(false), qwen_api());
    let (dir, path) = data_dir(&tokens, &credential(&api, 60_000));
    dir.write(".env", &format!("QWEN_CODE_OAUTH_BASE=http://127.0.0.1:{}\nOAUTH_REFRESH_INTERVAL=0.05\n", tokens.port));
    let proxy = Proxy::start_in(dir, &[]);
    proxy.wait_for_log("work: token refreshed");
    assert!(api.requests().is_empty());
    assert_eq!(read_json(&path)["refresh_token"], "qwen-refresh-rotated-1");
    let (status, _) = proxy.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(tokens.requests().len(), 1, "a fresh token is not refreshed again");
}

#[test]
fn serve_imports_a_cli_login_and_refreshes_the_stored_copy_not_the_cli_file() {
    let tokens = token_endpoint(false);
    let api = qwen_api();
    let home = TempDir::new();
    std::fs::create_dir_all(home.path().join(".qwen")).unwrap();
    // Near expiry, so the first request refreshes.
    let cli_text = credential(&api, 60_000);
    home.write(".qwen/oauth_creds.json", &cli_text);
    let dir = TempDir::new();
    dir.write(".env", &format!("QWEN_CODE_OAUTH_BASE=http://127.0.0.1:{}\n", tokens.port));
    let proxy = Proxy::start_with_home(dir, home.path());
    proxy.wait_for_log("imported qwen_code account work");
    let stored = proxy.dir().path().join("oauth_creds/qwen_code_oauth_1.json");
    assert_eq!(std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(proxy.client().post("/v1/chat/completions", CHAT).status, 200);
    assert_eq!(read_json(&stored)["refresh_token"], "qwen-refresh-rotated-1", "the store's copy is refreshed");
    let cli_file = home.path().join(".qwen/oauth_creds.json");
    assert_eq!(std::fs::read_to_string(&cli_file).unwrap(), cli_text, "the CLI's own file is never written");
    // A second start finds the account stored: nothing imported twice.
    let (_, dir) = proxy.stop();
    let again = Proxy::start_with_home(dir, home.path());
    assert_eq!(again.client().post("/v1/chat/completions", CHAT).status, 200);
    assert!(!again.logs().contains("imported qwen_code"), "{}", again.logs());
    let files = std::fs::read_dir(again.dir().path().join("oauth_creds")).unwrap().count();
    assert_eq!(files, 1);
}

#[test]
fn serve_refreshes_a_token_near_expiry_at_start_without_a_request() {
    let (called, calls) = std::sync::mpsc::channel::<()>();
    let called = Mutex::new(called);
    let n = AtomicUsize::new(0);
    let tokens = Mock::start(move |_: &Recorded| {
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = called.lock().unwrap().send(());
        MockReply::json(
            200,
            json!({"access_token": format!("qwen-access-fresh-{n}"), "refresh_token": format!("qwen-refresh-rotated-{n}"),
                   "token_type": "Bearer", "expires_in": 21600}),
        )
    });
    let api = qwen_api();
    let (dir, _) = data_dir(&tokens, &credential(&api, 10 * 60_000));
    let proxy = Proxy::start_in(dir, &[]);
    calls.recv_timeout(crate::support::WAIT).expect("the start-up check refreshes the token with no request");
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(api.keys_seen(), ["qwen-access-fresh-1"], "the request uses the token refreshed at start");
    assert_eq!(tokens.requests().len(), 1, "one refresh in all");
}
