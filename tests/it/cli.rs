//! The command line: exit codes, help, refusals, graceful shutdown, `models`.

use crate::support::mock::completion;
use crate::support::{Mock, MockReply, Proxy, TempDir, run_cli};
use serde_json::json;

#[test]
fn help_and_version_exit_0_bad_flags_exit_2() {
    let dir = TempDir::new();
    let (code, out, _) = run_cli(dir.path(), &["--help"], "");
    assert_eq!(code, 0);
    assert!(out.contains("serve") && out.contains("models"), "{out}");
    let (code, out, _) = run_cli(dir.path(), &["serve", "--help"], "");
    assert_eq!(code, 0);
    assert!(out.contains("--allow-no-auth"), "{out}");
    let (code, out, _) = run_cli(dir.path(), &["--version"], "");
    assert_eq!((code, out.trim()), (0, concat!("keyrelay ", env!("CARGO_PKG_VERSION"))));
    let (code, out, err) = run_cli(dir.path(), &["serve", "--no-such-flag"], "");
    assert_eq!(code, 2);
    assert!(out.is_empty() && err.contains("--no-such-flag"), "{err}");
    let (code, _, err) = run_cli(dir.path(), &[], "");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_public_bind_without_a_proxy_key_is_refused() {
    let dir = TempDir::new();
    let (code, out, err) = run_cli(dir.path(), &["serve", "--host", "0.0.0.0", "--port", "0"], "");
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("PROXY_API_KEY") && err.contains("--allow-no-auth"), "{err}");
}

#[test]
fn a_broken_env_file_is_a_config_error_that_hides_the_line() {
    let dir = TempDir::new();
    dir.write(".env", "OPENAI_API_KEY=\"sk-unterminated-secret\n");
    let (code, _, err) = run_cli(dir.path(), &["models"], "");
    assert_eq!(code, 2);
    assert!(err.contains(".env") && err.contains("line 1"), "{err}");
    assert!(!err.contains("sk-unterminated-secret"), "{err}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let (arrived_tx, arrived_rx) = crossbeam_channel::bounded::<()>(1);
    let mock = Mock::start(move |_| {
        let _ = arrived_tx.send(());
        let _ = release_rx.recv_timeout(crate::support::WAIT);
        MockReply::json(200, completion("finished after SIGTERM"))
    });
    let proxy = Proxy::start(&format!("OPENAI_API_KEY=k\nOPENAI_API_BASE={}\n", mock.base()));
    let client = proxy.client();
    let request =
        std::thread::spawn(move || client.post("/v1/chat/completions", r#"{"model":"openai/m","messages":[]}"#));
    arrived_rx.recv_timeout(crate::support::WAIT).expect("request reached the upstream");
    proxy.signal("TERM");
    proxy.wait_for_log("shutting down");
    release_tx.send(()).unwrap();
    let answer = request.join().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "finished after SIGTERM");
    assert!(proxy.stop().0.success());
}

#[test]
fn sighup_reloads_the_keys() {
    let mock = Mock::start(|_| MockReply::json(200, completion("ok")));
    let proxy = Proxy::start(&format!("OPENAI_API_KEY=k\nOPENAI_API_BASE={}\n", mock.base()));
    let before = proxy.client().get("/v1/providers");
    assert_eq!(before.json(), json!(["openai"]));
    proxy.dir().write(".env", &format!("OPENAI_API_KEY=k\nOPENAI_API_BASE={}\nGROQ_API_KEY=g\n", mock.base()));
    proxy.signal("HUP");
    proxy.wait_for_log("configuration reloaded");
    assert_eq!(proxy.client().get("/v1/providers").json(), json!(["groq", "openai"]));
}

#[test]
fn models_lists_ids_one_per_line_or_as_json_lines() {
    let mock = Mock::start(|_| MockReply::json(200, json!({"data": [{"id": "up-1"}, {"id": "up-2"}]})));
    let dir = TempDir::new();
    dir.write(".env", &format!("OPENAI_API_KEY=k\nOPENAI_API_BASE={}\nOPENAI_MODELS='[\"mine\"]'\n", mock.base()));
    let (code, out, _) = run_cli(dir.path(), &["models"], "");
    assert_eq!((code, out.as_str()), (0, "openai/mine\nopenai/up-1\nopenai/up-2\n"));
    let (code, out, _) = run_cli(dir.path(), &["models", "--json", "--provider", "openai"], "");
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first, json!({"type": "model", "id": "openai/mine", "provider": "openai"}));
    let (code, _, err) = run_cli(dir.path(), &["models", "--provider", "nosuch"], "");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_data_directory_that_does_not_exist_is_an_error_not_a_new_folder() {
    let dir = crate::support::TempDir::new();
    let missing = dir.path().join("typo");
    let (code, _, err) = run_cli(&missing, &["status"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists(), "the mistyped folder was created");
}

#[test]
fn serve_says_what_it_serves_and_names_the_fix_when_nothing() {
    let proxy = crate::support::Proxy::start("");
    let warning = proxy.wait_for_log("no provider has a key");
    assert!(warning.contains("keyrelay add-key"), "{warning}");

    let proxy = crate::support::Proxy::start(
        "OPENAI_API_KEY_1=sk-a-0001\nOPENAI_API_KEY_2=sk-b-0002\nGROQ_API_KEY=gsk-0003\nIGNORE_MODELS_GROQ=*preview*\nDEFAULT_PROVIDER=groq\n",
    );
    let line = proxy.wait_for_log("providers: ");
    assert!(line.contains("groq (1 key)") && line.contains("openai (2 keys)"), "{line}");
    proxy.wait_for_log("groq: models filtered by IGNORE_MODELS_GROQ");
    proxy.wait_for_log("DEFAULT_PROVIDER: groq");
    let keys = proxy.wait_for_log("openai: ...0001");
    assert!(keys.contains("...0002") && !keys.contains("sk-a-0001"), "masked ids only: {keys}");
}

#[test]
fn dash_h_is_help_and_a_mistyped_subcommand_gets_a_suggestion_and_every_subcommand() {
    let dir = TempDir::new();
    let (code, out, _) = run_cli(dir.path(), &["-h"], "");
    assert_eq!(code, 0);
    let listed: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("  ").filter(|rest| !rest.starts_with(' '))?.split_whitespace().next())
        .filter(|c| !c.starts_with('-') && *c != "help")
        .collect();
    assert!(listed.len() >= 6, "{out}");
    let (code, _, err) = run_cli(dir.path(), &["servr"], "");
    assert_eq!(code, 2);
    assert!(err.contains("did you mean 'serve'?"), "{err}");
    let usage = err.lines().find(|l| l.starts_with("usage:")).unwrap_or_default();
    for command in listed {
        assert!(usage.contains(command), "the usage hint lacks {command}: {usage}");
    }
    let (code, out, _) = run_cli(dir.path(), &["serve", "-h"], "");
    assert_eq!(code, 0);
    assert!(out.contains("--port"), "{out}");
}

/// Runs `keyrelay --dir DIR` with no subcommand on a pseudo-terminal (`script`), typing `keys`.
fn launcher(dir: &std::path::Path, keys: &str) -> String {
    use std::io::Write;
    let command = format!("{} --dir {}", crate::support::proxy::BIN, dir.display());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "dumb")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils) runs");
    child.stdin.take().unwrap().write_all(keys.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_launcher_is_driven_by_numbered_menus_on_a_terminal() {
    let dir = TempDir::new();
    // Change the server settings, add a key, mistype, quit.
    let screen = launcher(dir.path(), "2\n0.0.0.0\n9001\ny\n3\nopenai\nsk-launcher-0001\n9\n0\n");
    assert!(screen.contains("  1) Run the server") && screen.contains("  6) Show key status"), "{screen}");
    assert!(screen.contains("none yet (choose 3 or 4)"), "{screen}");
    assert!(screen.contains("Providers with keys or accounts: openai"), "the menu reloads the configuration: {screen}");
    assert!(screen.contains("There is no choice '9'"), "{screen}");
    // The key typed ahead here is echoed by the terminal before the launcher turns echo off,
    // so the screen cannot show whether a typed-at-the-prompt key would be; add_key's tests
    // prove keyrelay itself never prints it.
    let launcher_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("launcher_config.json")).unwrap()).unwrap();
    assert_eq!(launcher_config, json!({"host": "0.0.0.0", "port": 9001, "enable_request_logging": true}));
    assert_eq!(std::fs::read_to_string(dir.path().join(".env")).unwrap(), "OPENAI_API_KEY_1='sk-launcher-0001'\n");
    // Without a terminal there is no menu: usage and exit 2.
    let (code, out, err) = run_cli(dir.path(), &[], "1\n");
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("usage:"), "{err}");
}
