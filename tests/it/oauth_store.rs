//! OAuth credentials without the network: the `oauth_creds/` store, discovery and its duplicate
//! warning, `oauth import` from the official CLIs' folders, `oauth list`, and `export-env`
//! whose output, as the only `.env` of a fresh data directory, gives the same accounts.

use crate::support::{TempDir, run_cli, run_cli_with_env};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const GEMINI_ACCESS: &str = "ya29.a0Af-gemini-access-token";
const GEMINI_REFRESH: &str = "1//0g-gemini-refresh-token";
const QWEN_REFRESH: &str = "qwen-refresh-token-zzzz";
const IFLOW_KEY: &str = "sk-iflow-account-api-key";

/// Milliseconds since the epoch, `hours` from now.
fn in_hours(hours: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    now + hours * 3_600_000
}

/// An unsigned JWT with these claims (only its claims are read).
fn jwt(claims: &str) -> String {
    format!("eyJhbGciOiJub25lIn0.{}.sig", URL_SAFE_NO_PAD.encode(claims))
}

fn gemini_file(email: &str) -> String {
    format!(
        r#"{{"access_token":"{GEMINI_ACCESS}","refresh_token":"{GEMINI_REFRESH}","token_type":"Bearer","id_token":"{}","expiry_date":{},"universe_domain":"googleapis.com"}}"#,
        jwt(&format!(r#"{{"email":"{email}"}}"#)),
        in_hours(1)
    )
}

fn store(dir: &TempDir, name: &str, content: &str) {
    std::fs::create_dir_all(dir.path().join("oauth_creds")).unwrap();
    dir.write(&format!("oauth_creds/{name}"), content);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `oauth list --json` of `dir`, one value per credential.
fn list(dir: &Path) -> (Vec<Value>, String) {
    let (code, out, err) = run_cli(dir, &["oauth", "list", "--json"], "");
    assert_eq!(code, 0, "{err}");
    (out.lines().map(|l| serde_json::from_str(l).expect("JSON Lines")).collect(), err)
}

/// What must survive a round trip besides the expiry: provider, account, state.
fn accounts(lines: &[Value]) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().expect("a string").to_string();
    lines
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "credential");
            (text(&l["provider"]), text(&l["account"]), text(&l["state"]))
        })
        .collect()
}

/// The expiries of two lists taken moments apart agree to a couple of seconds.
fn assert_same_expiries(a: &[Value], b: &[Value]) {
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x["expires_in_seconds"].as_i64().unwrap(), y["expires_in_seconds"].as_i64().unwrap());
        assert!((x - y).abs() <= 2, "expiry {x} became {y}");
    }
}

#[test]
fn export_env_into_a_fresh_data_dir_gives_the_same_accounts() {
    let source = TempDir::new();
    store(&source, "gemini_cli_oauth_1.json", &gemini_file("me@example.com"));
    store(
        &source,
        "qwen_code_oauth_1.json",
        &format!(
            r#"{{"access_token":"opaque","refresh_token":"{QWEN_REFRESH}","resource_url":"portal.qwen.ai","expiry_date":{}}}"#,
            in_hours(5)
        ),
    );
    store(
        &source,
        "qwen_code_oauth_2.json",
        &format!(
            r#"{{"access_token":"opaque2","refresh_token":"r2","email":"work laptop #1 'x'","expiry_date":{}}}"#,
            in_hours(-1)
        ),
    );
    store(
        &source,
        "iflow_oauth_1.json",
        r#"{"access_token":"iflow-at","refresh_token":"iflow-rt","apiKey":"sk-iflow-account-api-key","phone":"13800000000","expiry_date":"2099-01-01T00:00:00Z"}"#,
    );
    let (before, _) = list(source.path());
    assert_eq!(before.len(), 4);

    let (code, exported, err) = run_cli(source.path(), &["export-env"], "");
    assert_eq!(code, 0, "{err}");
    assert!(exported.contains("# gemini_cli credential 1: me@example.com\n"), "{exported}");
    assert!(exported.contains(&format!("IFLOW_1_API_KEY='{IFLOW_KEY}'")), "{exported}");
    assert!(exported.contains("QWEN_CODE_2_EMAIL=\"work laptop #1 'x'\""), "{exported}");

    let fresh = TempDir::new();
    fresh.write(".env", &exported);
    let (after, err) = list(fresh.path());
    assert_eq!(accounts(&after), accounts(&before), "{err}");
    assert_same_expiries(&after, &before);
    assert!(after.iter().all(|l| l["file"] == "env"), "{after:?}");
    assert_eq!(after[0]["env"], "GEMINI_CLI_1");
    assert_eq!(accounts(&before)[1].1, qwen_hash_account());
    assert_eq!(before[2]["state"], "expired");
}

/// `qwen-` and the first 8 hex digits of SHA-256 of the refresh token.
fn qwen_hash_account() -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(QWEN_REFRESH.as_bytes());
    format!("qwen-{}", digest.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>())
}

#[test]
fn two_files_of_one_account_are_listed_once_with_one_warning() {
    let dir = TempDir::new();
    store(&dir, "gemini_cli_oauth_1.json", &gemini_file("twice@example.com"));
    store(&dir, "gemini_cli_oauth_2.json", &gemini_file("Twice@Example.com"));
    let (lines, err) = list(dir.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0]["file"].as_str().unwrap().ends_with("gemini_cli_oauth_1.json"));
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("[WARN]")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("gemini_cli_oauth_1.json")
            && warnings[0].contains("gemini_cli_oauth_2.json")
            && warnings[0].contains("wice@"),
        "{err}"
    );
    let (code, text, err) = run_cli(dir.path(), &["oauth", "list"], "");
    assert_eq!((code, text.lines().count()), (0, 1), "{err}");
    for output in [&text, &err] {
        assert!(!output.contains(GEMINI_ACCESS) && !output.contains(GEMINI_REFRESH), "{output}");
    }
}

#[test]
fn import_copies_the_cli_logins_privately_and_skips_a_stored_account() {
    let home = TempDir::new();
    std::fs::create_dir_all(home.path().join(".gemini")).unwrap();
    std::fs::create_dir_all(home.path().join(".qwen")).unwrap();
    home.write(".gemini/oauth_creds.json", &gemini_file("stored@example.com"));
    let qwen = format!(
        r#"{{"access_token":"{}","refresh_token":"rt","resource_url":"portal.qwen.ai","expiry_date":{}}}"#,
        jwt(r#"{"sub":"qwen-user-7"}"#),
        in_hours(2)
    );
    home.write(".qwen/oauth_creds.json", &qwen);
    std::fs::set_permissions(home.path().join(".qwen/oauth_creds.json"), std::fs::Permissions::from_mode(0o644))
        .unwrap();
    let dir = TempDir::new();
    let stored = r#"{"refresh_token":"newer","email":"stored@example.com","needs_login":true}"#;
    store(&dir, "gemini_cli_oauth_1.json", stored);
    let env = [("HOME", home.path().as_os_str())];

    let (code, out, err) = run_cli_with_env(dir.path(), &["oauth", "import"], "", &env);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("duplicate") && err.contains("stored@example.com"), "{err}");
    assert!(out.contains("imported qwen_code account qwen-user-7"), "{out}");
    let creds = dir.path().join("oauth_creds");
    assert_eq!(std::fs::read_to_string(creds.join("gemini_cli_oauth_1.json")).unwrap(), stored);
    let copy = creds.join("qwen_code_oauth_1.json");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), qwen);
    assert_eq!((mode(&copy), mode(&creds)), (0o600, 0o700));

    // Listed once each, and the CLI's own copies are not reported as duplicates.
    let (code, out, err) = run_cli_with_env(dir.path(), &["oauth", "list", "--json"], "", &env);
    assert_eq!(code, 0, "{err}");
    let states: Vec<(String, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| (l["account"].as_str().unwrap().to_string(), l["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states, [("stored@example.com".into(), "needs_login".into()), ("qwen-user-7".into(), "ok".into())]);
    assert!(!err.contains("[WARN]"), "{err}");

    let (code, _, err) = run_cli_with_env(dir.path(), &["oauth", "import"], "", &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("duplicate").count(), 2, "{err}");
    assert_eq!(std::fs::read_dir(&creds).unwrap().count(), 2);
}

#[test]
fn export_env_to_a_file_is_private_and_takes_either_provider_spelling() {
    let dir = TempDir::new();
    store(&dir, "gemini_cli_oauth_1.json", &gemini_file("file@example.com"));
    dir.write(".env", "QWEN_CODE_REFRESH_TOKEN=from-env\nQWEN_CODE_EMAIL=env-label\n");
    let out_path = dir.path().join("exported.env");
    let out_arg = out_path.to_str().unwrap();

    let (code, out, err) = run_cli(dir.path(), &["export-env", "qwen-code", "--output", out_arg], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(mode(&out_path), 0o600);
    let written = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(
        written,
        "# qwen_code credential 1: env-label\nQWEN_CODE_1_REFRESH_TOKEN='from-env'\nQWEN_CODE_1_EMAIL='env-label'\n"
    );

    let (code, out, _) = run_cli(dir.path(), &["export-env", "gemini_cli"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("# gemini_cli credential 1: file@example.com\n") && !out.contains("QWEN"), "{out}");

    let (code, _, err) = run_cli(dir.path(), &["export-env", "gemini"], "");
    assert_eq!(code, 2);
    assert!(err.contains("unknown OAuth provider"), "{err}");
    let (code, out, err) = run_cli(dir.path(), &["export-env", "iflow"], "");
    assert_eq!((code, out.as_str()), (1, ""), "{err}");

    // A credential whose refresh was refused carries a dead refresh token: not exported.
    store(&dir, "iflow_oauth_1.json", r#"{"refresh_token":"dead","email":"gone@example.com","needs_login":true}"#);
    let (code, out, err) = run_cli(dir.path(), &["export-env", "iflow"], "");
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("gone@example.com") && err.contains("needs a new login"), "{err}");
}
