//! The interactive logins, `keyrelay oauth gemini-cli|qwen-code|iflow`, against mock OAuth
//! servers: the test reads what the command prints on stderr and plays the user's browser
//! (a raw GET to the loopback callback) or the approving user (the device code mock's
//! answers). Checked: the PKCE verifier against its challenge, wrong-state callbacks ignored,
//! iFlow's API key fetch, the device poll through `authorization_pending` and `slow_down`,
//! refusals ending with exit 1, the saved files, and a second login updating its file.

use crate::support::proxy::BIN;
use crate::support::{Mock, MockReply, Recorded, TempDir, WAIT};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crossbeam_channel::{Receiver, unbounded};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A running `keyrelay oauth ...`, its stderr read line by line as it comes.
pub(crate) struct Login {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Login {
    pub(crate) fn start(dir: &TempDir, provider: &str, extra: &[&str], env: &[(&str, String)]) -> Login {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().env("KEYRELAY_LOG", "debug").arg("--dir").arg(dir.path());
        let timeout = if extra.contains(&"--timeout") { &[][..] } else { &["--timeout", "30"][..] };
        cmd.args(["oauth", provider, "--no-browser"]).args(timeout).args(extra);
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run keyrelay");
        let (tx, lines) = unbounded();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Login { child, lines, seen: Vec::new() }
    }

    /// The next stderr line for which `wanted` holds (the lines before it are kept).
    pub(crate) fn line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.lines.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no such line in {:#?}", self.seen));
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }

    /// Exit code, stdout and all of stderr.
    pub(crate) fn finish(mut self) -> (i32, String, String) {
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        self.seen.extend(self.lines.iter());
        (code, out, self.seen.join("\n"))
    }
}

/// A port that was free a moment ago, for the callback server.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The decoded query parameters of a URL.
pub(crate) fn query(url: &str) -> Vec<(String, String)> {
    let (_, q) = url.split_once('?').expect("a query");
    q.split('&').map(|p| p.split_once('=').unwrap_or((p, ""))).map(|(n, v)| (decode(n), decode(v))).collect()
}

fn decode(text: &str) -> String {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

pub(crate) fn param(pairs: &[(String, String)], name: &str) -> String {
    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {name} in {pairs:?}"))
}

fn form_of(req: &Recorded) -> Vec<(String, String)> {
    query(&format!("?{}", String::from_utf8_lossy(&req.body)))
}

/// Plays the browser: GET `path_and_query` on the callback port; returns status and page.
pub(crate) fn browse(port: u16, path_and_query: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn jwt(claims: &Value) -> String {
    format!("eyJhbGciOiJub25lIn0.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn creds_files(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("oauth_creds"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A Google-like token endpoint (`/token`) and userinfo endpoint (`/userinfo`). The token
/// answer carries `access` and `refresh`, and an id_token naming `email` when `id_email`.
pub(crate) fn google_mock(access: &'static str, refresh: &'static str, id_email: bool) -> Mock {
    Mock::start(move |req| match req.url.as_str() {
        "/token" => {
            let mut body = json!({"access_token": access, "refresh_token": refresh, "expires_in": 3599,
                "token_type": "Bearer", "scope": "openid"});
            if id_email {
                body["id_token"] = json!(jwt(&json!({"email": "Person@Example.com", "sub": "1"})));
            }
            MockReply::json(200, body)
        }
        "/userinfo" if req.header("authorization") == Some(&format!("Bearer {access}")) => {
            MockReply::json(200, json!({"email": "person@example.com"}))
        }
        _ => MockReply::json(404, json!({"error": "not_found"})),
    })
}

/// Runs one Gemini login against `mock` through a wrong-state callback and the right one.
fn gemini_login(dir: &TempDir, mock: &Mock) -> (i32, String, String, Vec<(String, String)>) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{}", mock.port);
    let env = [
        ("GEMINI_CLI_AUTH_URL", format!("{base}/auth")),
        ("GEMINI_CLI_TOKEN_URL", format!("{base}/token")),
        ("GEMINI_CLI_USERINFO_URL", format!("{base}/userinfo")),
        ("GEMINI_CLI_OAUTH_PORT", port.to_string()),
    ];
    let mut login = Login::start(dir, "gemini-cli", &[], &env);
    let url = login.line(|l| l.starts_with(&format!("{base}/auth?")));
    let auth = query(&url);
    assert_eq!(param(&auth, "code_challenge_method"), "S256");
    assert_eq!(param(&auth, "redirect_uri"), format!("http://127.0.0.1:{port}/oauth2callback"));
    let state = param(&auth, "state");
    let (status, page) = browse(port, "/oauth2callback?code=forged-code&state=someone-else");
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("ignored"), "{page}");
    let (status, page) = browse(port, &format!("/oauth2callback?code=4%2F0Ab-code&state={state}&scope=x"));
    assert_eq!(status, 200, "{page}");
    let (code, out, err) = login.finish();
    (code, out, err, auth)
}

#[test]
fn gemini_login_uses_pkce_ignores_a_wrong_state_and_a_second_login_updates_the_file() {
    let dir = TempDir::new();
    let mock = google_mock("ya29.login-access-1", "1//login-refresh-1", true);
    let (code, out, err, auth) = gemini_login(&dir, &mock);
    assert_eq!(code, 0, "{err}");
    let tokens = mock.requests().into_iter().filter(|r| r.url == "/token").collect::<Vec<_>>();
    assert_eq!(tokens.len(), 1, "the forged code was never exchanged");
    let form = form_of(&tokens[0]);
    assert_eq!(param(&form, "code"), "4/0Ab-code");
    assert_eq!(param(&form, "grant_type"), "authorization_code");
    assert_eq!(s256(&param(&form, "code_verifier")), param(&auth, "code_challenge"));
    assert_eq!(param(&form, "client_id"), param(&auth, "client_id"));
    assert!(param(&form, "client_id").ends_with(".apps.googleusercontent.com"));
    assert!(out.contains("saved gemini_cli account Person@Example.com"), "{out}");

    let path = dir.path().join("oauth_creds/gemini_cli_oauth_1.json");
    let file = read_json(&path);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(file["access_token"], "ya29.login-access-1");
    assert_eq!(file["refresh_token"], "1//login-refresh-1");
    assert_eq!(file["email"], "Person@Example.com");
    assert_eq!(file["token_uri"], format!("http://127.0.0.1:{}/token", mock.port));
    assert!(file["expiry_date"].as_u64().unwrap() > now_ms() + 3_000_000);
    for secret in ["ya29.login-access-1", "1//login-refresh-1"] {
        assert!(!out.contains(secret) && !err.contains(secret), "a token was printed");
    }

    // The account is marked for a new login; logging in again (this time the email comes from
    // the userinfo endpoint) updates the same file and clears the mark.
    let mut marked = file.clone();
    marked["needs_login"] = json!(true);
    std::fs::write(&path, marked.to_string()).unwrap();
    let mock = google_mock("ya29.login-access-2", "1//login-refresh-2", false);
    let (code, out, err, _) = gemini_login(&dir, &mock);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gemini_cli_oauth_1.json"), "{out}");
    assert!(mock.requests().iter().any(|r| r.url == "/userinfo"));
    assert_eq!(creds_files(&dir), ["gemini_cli_oauth_1.json"]);
    let file = read_json(&path);
    assert_eq!(
        (&file["access_token"], &file["refresh_token"]),
        (&json!("ya29.login-access-2"), &json!("1//login-refresh-2"))
    );
    assert_eq!(file.get("needs_login"), None);
}

#[test]
fn a_denied_authorization_ends_with_exit_1_and_saves_nothing() {
    let dir = TempDir::new();
    let mock = google_mock("ya29.never", "1//never", true);
    let port = free_port();
    let env = [
        ("GEMINI_CLI_AUTH_URL", format!("http://127.0.0.1:{}/auth", mock.port)),
        ("GEMINI_CLI_TOKEN_URL", format!("http://127.0.0.1:{}/token", mock.port)),
        ("GEMINI_CLI_OAUTH_PORT", port.to_string()),
    ];
    let mut login = Login::start(&dir, "gemini_cli", &[], &env);
    let state = param(&query(&login.line(|l| l.contains("/auth?"))), "state");
    let (status, _) = browse(port, &format!("/oauth2callback?error=access_denied&state={state}"));
    assert_eq!(status, 200);
    let (code, _, err) = login.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("denied"), "{err}");
    assert!(mock.requests().is_empty());
    assert!(creds_files(&dir).is_empty());
}

#[test]
fn iflow_login_exchanges_the_code_with_basic_auth_and_fetches_the_api_key() {
    let dir = TempDir::new();
    let mock = Mock::start(|req| {
        if req.url == "/oauth/token" {
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("10009311001:4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW")
            );
            if req.header("authorization") != Some(&basic) {
                return MockReply::json(401, json!({"error": "invalid_client"}));
            }
            return MockReply::json(
                200,
                json!({"access_token": "iflow-access-tok", "refresh_token": "iflow-refresh-tok",
                "expires_in": 172800, "token_type": "bearer", "scope": "read"}),
            );
        }
        if req.url == "/api/oauth/getUserInfo?accessToken=iflow-access-tok" {
            return MockReply::json(
                200,
                json!({"success": true,
                "data": {"apiKey": "sk-iflow-login-key", "email": "", "phone": "13800000000"}}),
            );
        }
        MockReply::json(404, json!({"success": false}))
    });
    let port = free_port();
    let base = format!("http://127.0.0.1:{}", mock.port);
    let env = [("IFLOW_OAUTH_BASE", base.clone()), ("IFLOW_OAUTH_PORT", port.to_string())];
    let mut login = Login::start(&dir, "iflow", &[], &env);
    let auth = query(&login.line(|l| l.starts_with(&format!("{base}/oauth?"))));
    assert_eq!(param(&auth, "redirect"), format!("http://localhost:{port}/oauth2callback"));
    let (status, _) = browse(port, &format!("/oauth2callback?code=iflow-code&state={}", param(&auth, "state")));
    assert_eq!(status, 200);
    let (code, out, err) = login.finish();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("saved iflow account 13800000000"), "{out}");

    let form = form_of(&mock.requests()[0]);
    assert_eq!(param(&form, "code"), "iflow-code");
    assert_eq!(param(&form, "client_secret"), "4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW");
    assert!(!form.iter().any(|(n, _)| n == "code_verifier"), "iFlow uses no PKCE");
    let file = read_json(&dir.path().join("oauth_creds/iflow_oauth_1.json"));
    assert_eq!(file["apiKey"], "sk-iflow-login-key");
    assert_eq!(file["refresh_token"], "iflow-refresh-tok");
    assert_eq!(file["phone"], "13800000000");
    let expiry = file["expiry_date"].as_str().expect("an ISO 8601 expiry");
    assert!(expiry.ends_with('Z') && expiry.contains('T'), "{expiry}");
    for secret in ["sk-iflow-login-key", "iflow-access-tok", "iflow-refresh-tok"] {
        assert!(!out.contains(secret) && !err.contains(secret), "a token was printed");
    }
}

/// A Qwen device flow server whose token endpoint answers `polls` in turn (then the last
/// again), checking the PKCE verifier against the device request's challenge. Each poll's
/// arrival time is recorded.
pub(crate) fn qwen_mock(polls: Vec<(u16, Value)>) -> (Mock, Arc<Mutex<Vec<Instant>>>) {
    let challenge = Arc::new(Mutex::new(String::new()));
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = times.clone();
    let mock = Mock::start(move |req| {
        let form = form_of(req);
        match req.url.as_str() {
            "/api/v1/oauth2/device/code" => {
                *challenge.lock().unwrap() = param(&form, "code_challenge");
                MockReply::json(
                    200,
                    json!({"device_code": "dev-code-1", "user_code": "ABCD-1234",
                    "verification_uri": "https://qwen.example/authorize",
                    "verification_uri_complete": "https://qwen.example/authorize?user_code=ABCD-1234",
                    "expires_in": 600, "interval": 0}),
                )
            }
            "/api/v1/oauth2/token" => {
                if s256(&param(&form, "code_verifier")) != *challenge.lock().unwrap() {
                    return MockReply::json(400, json!({"error": "invalid_grant"}));
                }
                let mut times = seen.lock().unwrap();
                times.push(Instant::now());
                let (status, body) = polls[(times.len() - 1).min(polls.len() - 1)].clone();
                MockReply::json(status, body)
            }
            _ => MockReply::json(404, json!({})),
        }
    });
    (mock, times)
}

#[test]
fn qwen_device_login_waits_through_pending_and_slow_down() {
    let dir = TempDir::new();
    let token = json!({"access_token": "qwen-access-opaque", "refresh_token": "qwen-login-refresh",
        "token_type": "Bearer", "expires_in": 21600, "resource_url": "portal.qwen.ai"});
    let (mock, times) = qwen_mock(vec![
        (400, json!({"error": "authorization_pending"})),
        (400, json!({"error": "authorization_pending"})),
        // A server may name the interval it wants; this one asks for 1 second.
        (429, json!({"error": "slow_down", "interval": 1})),
        (200, token),
    ]);
    let env = [("QWEN_CODE_OAUTH_BASE", format!("http://127.0.0.1:{}", mock.port))];
    let mut login = Login::start(&dir, "qwen-code", &[], &env);
    login.line(|l| l == "https://qwen.example/authorize?user_code=ABCD-1234");
    assert_eq!(login.line(|_| true), "ABCD-1234", "the user code is alone on the next line");
    let (code, out, err) = login.finish();
    assert_eq!(code, 0, "{err}");
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 4, "two pending, one slow_down, then the token");
    assert!(times[3] - times[2] >= std::time::Duration::from_secs(1), "slow_down slowed the polling");

    let digest = Sha256::digest(b"qwen-login-refresh");
    let account = format!("qwen-{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3]);
    assert!(out.contains(&format!("saved qwen_code account {account}")), "{out}");
    let file = read_json(&dir.path().join("oauth_creds/qwen_code_oauth_1.json"));
    assert_eq!(file["refresh_token"], "qwen-login-refresh");
    assert_eq!(file["resource_url"], "portal.qwen.ai");
    assert!(file["expiry_date"].as_u64().unwrap() > now_ms() + 21_000_000);
    let device = form_of(&mock.requests()[0]);
    assert_eq!(param(&device, "code_challenge_method"), "S256");
    for secret in ["qwen-access-opaque", "qwen-login-refresh"] {
        assert!(!out.contains(secret) && !err.contains(secret), "a token was printed");
    }
}

#[test]
fn qwen_access_denied_ends_with_exit_1() {
    let dir = TempDir::new();
    let (mock, times) =
        qwen_mock(vec![(400, json!({"error": "authorization_pending"})), (400, json!({"error": "access_denied"}))]);
    let env = [("QWEN_CODE_OAUTH_BASE", format!("http://127.0.0.1:{}", mock.port))];
    let login = Login::start(&dir, "qwen_code", &["--label", "work"], &env);
    let (code, _, err) = login.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("denied"), "{err}");
    assert_eq!(times.lock().unwrap().len(), 2);
    assert!(creds_files(&dir).is_empty());
}

#[test]
fn a_login_nobody_completes_times_out_with_exit_1_and_a_taken_port_is_exit_2() {
    let dir = TempDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let env = [("IFLOW_OAUTH_BASE", "http://127.0.0.1:9".to_string()), ("IFLOW_OAUTH_PORT", port.to_string())];
    let (code, _, err) = Login::start(&dir, "iflow", &[], &env).finish();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    drop(taken);

    let env = [("IFLOW_OAUTH_BASE", "http://127.0.0.1:9".to_string()), ("IFLOW_OAUTH_PORT", free_port().to_string())];
    let started = Instant::now();
    let mut login = Login::start(&dir, "iflow", &["--timeout", "1"], &env);
    login.line(|l| l.starts_with("http://127.0.0.1:9/oauth?"));
    let (code, _, err) = login.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert!(creds_files(&dir).is_empty());
}
