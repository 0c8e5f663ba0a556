//! A real `redis-server` for the shared-state tests: started on a unix socket in a temporary
//! directory (no port to race for), with persistence off, and ready once it says so on stdout.
//! A missing `redis-server` fails the test: `scripts/test.sh` installs it.

use super::TempDir;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Redis {
    child: Option<Child>,
    dir: TempDir,
    password: Option<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::launched(None)
    }

    /// A server that asks clients for `password`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::launched(Some(password.to_string()))
    }

    fn launched(password: Option<String>) -> Redis {
        let mut redis = Redis { child: None, dir: TempDir::new(), password };
        redis.launch();
        redis
    }

    /// `STATE_BACKEND` for this server.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis+unix://{}?pass={password}", self.socket()),
            None => format!("redis+unix://{}", self.socket()),
        }
    }

    fn socket(&self) -> String {
        self.dir.path().join("redis.sock").display().to_string()
    }

    fn launch(&mut self) {
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket", &self.socket(), "--unixsocketperm", "700"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(self.password.iter().flat_map(|p| ["--requirepass", p.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = spawned.unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): install it (`apt-get install redis-server`; scripts/test.sh does)")
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, ready) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        ready.recv_timeout(super::WAIT).expect("redis-server did not get ready");
        self.child = Some(child);
    }

    /// SIGKILL, as when the server dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-s", "CONT", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// SIGSTOP (`pause`) or SIGCONT (`resume`): a server that stops answering without closing
    /// its connections, as when it is overloaded or its host stalls.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args(["-s", name, &pid]).status().expect("run kill").success();
        assert!(ok, "kill -s {name} failed");
    }

    /// A fresh, empty server on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
