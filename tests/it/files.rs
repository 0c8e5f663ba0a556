//! The files keyrelay writes under its data directory: `logs/` and the request logs are private
//! to the user (0700 directories, 0600 files), an older, wider mode is tightened at start, and
//! no log line is lost when the process exits.

use crate::support::mock::completion;
use crate::support::{Mock, MockReply, Proxy, TempDir, run_cli};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn env_for(mock: &Mock) -> String {
    format!("OPENAI_API_KEY=sk-files-key-0001\nOPENAI_API_BASE={}\n", mock.base())
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
}

#[test]
fn logs_and_request_logs_are_private_to_the_user() {
    let mock = Mock::start(|_| MockReply::json(200, completion("a private answer")));
    let dir = TempDir::new();
    dir.write(".env", &env_for(&mock));
    let proxy = Proxy::start_in(dir, &["--enable-request-logging"]);
    let answer = proxy.client().post("/v1/chat/completions", r#"{"model":"openai/m","messages":[]}"#);
    assert_eq!(answer.status, 200);
    let (status, dir) = proxy.stop();
    assert!(status.success());

    let logs = dir.path().join("logs");
    let detailed = logs.join("detailed_logs");
    assert_eq!((mode(&logs), mode(&logs.join("keyrelay.log")), mode(&detailed)), (0o700, 0o600, 0o700));
    let folders = entries(&detailed);
    assert_eq!(folders.len(), 1, "{folders:?}");
    assert_eq!(mode(&folders[0]), 0o700);
    let files = entries(&folders[0]);
    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["final_response.json", "metadata.json", "request.json"]);
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_log_dir_and_file_left_open_by_an_older_version_are_tightened_at_start() {
    let dir = TempDir::new();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("detailed_logs")).unwrap();
    std::fs::write(logs.join("keyrelay.log"), "a line from before\n").unwrap();
    for (path, m) in [(&logs, 0o755), (&logs.join("detailed_logs"), 0o755), (&logs.join("keyrelay.log"), 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let proxy = Proxy::start_in(dir, &[]);
    // Tightened before the server listens, so before the port is known.
    assert_eq!(
        (mode(&logs), mode(&logs.join("detailed_logs")), mode(&logs.join("keyrelay.log"))),
        (0o700, 0o700, 0o600)
    );
    proxy.wait_for_log("keyrelay.log was open to other users");
    let (_, dir) = proxy.stop();
    let log = std::fs::read_to_string(dir.path().join("logs").join("keyrelay.log")).unwrap();
    assert!(log.starts_with("a line from before\n"), "appended to, not replaced: {log}");
}

#[test]
fn the_last_lines_reach_the_log_file_after_sigterm() {
    let proxy = Proxy::start("");
    assert_eq!(proxy.client().get("/health").status, 200);
    let (status, dir) = proxy.stop();
    assert!(status.success());
    let log = std::fs::read_to_string(dir.path().join("logs").join("keyrelay.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().any(|l| l.contains("[INFO] shutting down")), "{log}");
    assert!(lines.last().is_some_and(|l| l.ends_with("[INFO] stopped")), "{log}");
    let (time, _) = lines[0].split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "an RFC 3339 UTC time first: {log}");
}

#[test]
fn a_cli_command_loses_no_log_line_at_exit_and_writes_no_log_file() {
    let mock = Mock::start(|_| MockReply::json(500, json!({"error": {"message": "down"}})));
    let dir = TempDir::new();
    dir.write(".env", &format!("{}OPENAI_MODELS='[\"mine\"]'\n", env_for(&mock)));
    let (code, out, err) = run_cli(dir.path(), &["models"], "");
    assert_eq!((code, out.as_str()), (0, "openai/mine\n"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("[WARN] model list of openai unavailable"), "{err}");
    assert!(!dir.path().join("logs").exists(), "only serve writes logs/");
}
