//! `keyrelay add-key` as a user drives it: argv or stdin in, `.env` kept byte for byte with one
//! line added, the variable name on stdout, exit codes for duplicates and failed validation.

use crate::support::mock::MockReply;
use crate::support::{Mock, TempDir, run_cli};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

/// A `.env` written by hand: comments, `export`, quotes, blank lines, a gap in the numbering,
/// and no final newline.
const HAND_WRITTEN: &str = "# my keys\nexport OPENAI_API_KEY_1=\"sk-one-0001\"\n\nOPENAI_API_KEY_5='sk-five-0005'  # old\nGROQ_API_KEY=gsk-0003";

fn read(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join(".env")).unwrap()
}

#[test]
fn a_key_is_appended_as_the_next_number_and_every_other_byte_is_kept() {
    let dir = TempDir::new();
    dir.write(".env", HAND_WRITTEN);
    let (code, out, err) = run_cli(dir.path(), &["add-key", "openai", "sk-new-0006"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "OPENAI_API_KEY_6\n", "stdout is the variable alone, for scripts");
    assert_eq!(read(&dir), format!("{HAND_WRITTEN}\nOPENAI_API_KEY_6='sk-new-0006'\n"));
    assert!(err.contains("...0006") && !err.contains("sk-new-0006"), "masked on stderr: {err}");
    // The configuration reads it back as a key of the provider.
    let (code, out, _) = run_cli(dir.path(), &["status", "--json"], "");
    assert_eq!(code, 0);
    assert!(out.contains(r#""masked":"...0006""#), "{out}");
}

#[test]
fn a_key_from_standard_input_is_never_echoed() {
    let dir = TempDir::new();
    let (code, out, err) = run_cli(dir.path(), &["add-key", "groq"], "gsk-from-stdin-0007\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "GROQ_API_KEY_1\n");
    assert!(!out.contains("gsk-from-stdin") && !err.contains("gsk-from-stdin"), "{out}{err}");
    assert_eq!(read(&dir), "GROQ_API_KEY_1='gsk-from-stdin-0007'\n");
    let mode = std::fs::metadata(dir.path().join(".env")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new .env is private");
}

#[test]
fn duplicates_are_refused_naming_the_variable_and_the_mode_is_kept() {
    let dir = TempDir::new();
    dir.write(".env", HAND_WRITTEN);
    let path = dir.path().join(".env");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, out, err) = run_cli(dir.path(), &["add-key", "openai", "sk-five-0005"], "");
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("OPENAI_API_KEY_5"), "{err}");
    assert_eq!(read(&dir), HAND_WRITTEN, "nothing written");
    let (code, _, err) = run_cli(dir.path(), &["add-key", "mistral", "ms-0008"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640, "the file's mode is kept");
}

#[test]
fn unknown_and_oauth_only_providers_are_usage_errors() {
    let dir = TempDir::new();
    let (code, _, err) = run_cli(dir.path(), &["add-key", "nosuch", "k-0009"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("NOSUCH_API_BASE"), "{err}");
    let (code, _, err) = run_cli(dir.path(), &["add-key", "gemini-cli", "k-0010"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("keyrelay oauth gemini-cli"), "{err}");
    assert!(!dir.path().join(".env").exists());
}

#[test]
fn validate_adds_a_working_key_and_refuses_a_rejected_one() {
    let mock = Mock::start(|req| match req.key().as_deref() {
        Some("sk-works-0011") => {
            MockReply::json(200, json!({"object": "list", "data": [{"id": "m", "object": "model"}]}))
        }
        _ => MockReply::json(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-bro...0012", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ),
    });
    let dir = TempDir::new();
    dir.write(".env", &format!("LOCAL_API_BASE={}\n", mock.base()));
    let (code, out, err) = run_cli(dir.path(), &["add-key", "local", "sk-works-0011", "--validate"], "");
    assert_eq!((code, out.as_str()), (0, "LOCAL_API_KEY_1\n"), "{err}");
    assert_eq!(mock.requests()[0].url, "/v1/models");
    let (code, out, err) = run_cli(dir.path(), &["add-key", "local", "sk-broken-0012", "--validate"], "");
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("401") && err.contains("auth failed"), "the class of the failure: {err}");
    assert!(!read(&dir).contains("sk-broken"), "a rejected key is not added");
}

#[test]
fn validate_is_refused_for_providers_without_a_model_list() {
    let dir = TempDir::new();
    dir.write(".env", "");
    for provider in ["bedrock", "vertex"] {
        let (code, out, err) = run_cli(dir.path(), &["add-key", provider, "key-0013", "--validate"], "");
        assert_eq!((code, out.as_str()), (2, ""), "{err}");
        assert!(err.contains("cannot check") && err.contains(provider), "{err}");
    }
    assert!(!read(&dir).contains("key-0013"), "nothing added");
    let (code, out, err) = run_cli(dir.path(), &["add-key", "bedrock", "bedrock-api-key-0014"], "");
    assert_eq!((code, out.as_str()), (0, "BEDROCK_API_KEY_1\n"), "{err}");
}
