//! The keyrelay binary as a process: a temporary data directory, `serve --port 0`, the port
//! read from the first stderr line, every later stderr line kept for assertions.

use super::Client;
use crossbeam_channel::Receiver;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const BIN: &str = env!("CARGO_BIN_EXE_keyrelay");

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "keyrelay-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.0.join(name), content).expect("write test file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command with a clean environment: nothing of the developer's shell (proxies, API keys)
/// leaks into the process under test.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("KEYRELAY_LOG", "debug").arg("--dir").arg(dir).args(args);
    cmd
}

/// `command` run under `ulimit -n nofile`, through the shell (its builtin sets the limit, then
/// `exec` hands the same process over to keyrelay).
fn limited_command(dir: &Path, args: &[&str], nofile: u32) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.env_clear()
        .env("KEYRELAY_LOG", "debug")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args);
    cmd
}

pub struct Proxy {
    pub port: u16,
    dir: Option<TempDir>,
    child: Option<Child>,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Serves with `env` as the data directory's `.env`.
    pub fn start(env: &str) -> Proxy {
        let dir = TempDir::new();
        dir.write(".env", env);
        Proxy::start_in(dir, &[])
    }

    pub fn start_in(dir: TempDir, extra: &[&str]) -> Proxy {
        Proxy::launch(dir, extra, None, None)
    }

    /// Serves `dir` with `HOME` set to `home` (where the official CLIs keep their logins).
    pub fn start_with_home(dir: TempDir, home: &Path) -> Proxy {
        Proxy::launch(dir, &[], None, Some(home))
    }

    /// Serves with `env` as `.env`, allowed at most `nofile` open file descriptors.
    pub fn start_with_fd_limit(env: &str, nofile: u32) -> Proxy {
        let dir = TempDir::new();
        dir.write(".env", env);
        Proxy::launch(dir, &[], Some(nofile), None)
    }

    fn launch(dir: TempDir, extra: &[&str], nofile: Option<u32>, home: Option<&Path>) -> Proxy {
        let mut args = vec!["serve", "--port", "0"];
        args.extend_from_slice(extra);
        let mut cmd = match nofile {
            Some(n) => limited_command(dir.path(), &args, n),
            None => command(dir.path(), &args),
        };
        if let Some(home) = home {
            cmd.env("HOME", home);
        }
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start keyrelay");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = crossbeam_channel::unbounded();
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        // Start-up problems (a corrupt key_usage.json, say) may be logged before the line.
        let port = loop {
            let line = lines
                .recv_timeout(super::WAIT)
                .unwrap_or_else(|_| panic!("keyrelay did not start: {:?}", log.lock().unwrap()));
            if let Some(port) = line.strip_prefix("keyrelay listening on http://127.0.0.1:") {
                break port.trim().parse().expect("a port number");
            }
        };
        Proxy { port, dir: Some(dir), child: Some(child), lines, log }
    }

    /// The data directory.
    pub fn dir(&self) -> &TempDir {
        self.dir.as_ref().expect("kept until drop")
    }

    pub fn client(&self) -> Client {
        Client::new(self.port, None)
    }

    pub fn client_with_key(&self, key: &str) -> Client {
        Client::new(self.port, Some(key))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// How many threads the process has now (Linux `/proc`).
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        let line = status.lines().find(|l| l.starts_with("Threads:")).expect("a Threads: line");
        line["Threads:".len()..].trim().parse().expect("a thread count")
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args(["-s", name, &pid]).status().expect("run kill").success();
        assert!(ok, "kill -s {name} failed");
    }

    /// Waits for a stderr line containing `needle` (lines already read count too).
    pub fn wait_for_log(&self, needle: &str) -> String {
        if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(super::WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line with {needle:?}; log:\n{}", self.logs()),
            }
        }
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, wait for the exit, and hand back the data directory for inspection.
    pub fn stop(mut self) -> (ExitStatus, TempDir) {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(super::WAIT).expect("keyrelay did not exit in time").expect("wait for keyrelay");
        (status, self.dir.take().expect("kept until drop"))
    }
}

impl Proxy {
    /// SIGKILL: no shutdown work at all, as after a crash. Hands back the data directory.
    pub fn kill(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.dir.take().expect("kept until drop")
    }

    /// `keyrelay status --json --url <this server>`, one value per line.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}", self.port);
        let (code, out, err) = run_cli(self.dir().path(), &["status", "--json", "--url", &url], "");
        assert_eq!(code, 0, "status failed: {err}");
        out.lines().map(|l| serde_json::from_str(l).expect("status --json prints JSON lines")).collect()
    }

    /// The status line of the key whose masked form is `masked`.
    pub fn key_status(&self, masked: &str) -> serde_json::Value {
        self.status()
            .into_iter()
            .find(|l| l["type"] == "key" && l["masked"] == masked)
            .unwrap_or_else(|| panic!("no key {masked} in status"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a subcommand to completion: (exit code, stdout, stderr).
pub fn run_cli(dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    run_cli_with_env(dir, args, stdin, &[])
}

/// `run_cli` with extra environment variables (`HOME`, say) on top of the cleared environment.
pub fn run_cli_with_env(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &OsStr)]) -> (i32, String, String) {
    let mut cmd = command(dir, args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run keyrelay");
    // A command that exits without reading its input (or before all of it) closes the pipe:
    // what it printed and its exit status are still the result.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing keyrelay's input: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().expect("wait for keyrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
