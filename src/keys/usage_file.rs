//! `key_usage.json`: the pool's cooldowns, lockouts and counters, so they survive a restart.
//! Written off the request path by one thread, debounced (at most one write per
//! `DEBOUNCE`), atomically (temp file, fsync, rename), and once more on shutdown. A missing
//! file starts a clean state; a corrupt one is reported, set aside, and replaced.

use crate::clock;
use crate::keys::pool::Snapshot;
use crate::state::{AppState, lock};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub const FILE_NAME: &str = "key_usage.json";
/// How long a change may wait before it is on disk (what a `kill -9` can lose).
pub const DEBOUNCE: Duration = Duration::from_secs(1);

/// Reads the file. Problems are logged, never fatal: the state then starts clean.
pub fn read(path: &Path) -> Option<Snapshot> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::error!("{} unreadable ({e}); starting with a clean key state", path.display());
            return None;
        }
    };
    match serde_json::from_slice::<Snapshot>(&bytes) {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            let aside = path.with_extension(format!("json.corrupt-{}", clock::utc_stamp(clock::now_ms())));
            let moved = fs::rename(path, &aside).map(|_| format!("; kept as {}", aside.display())).unwrap_or_default();
            log::error!("{} is corrupt ({e}); starting with a clean key state{moved}", path.display());
            None
        }
    }
}

/// Writes `snapshot` to `path` so that a crash at any moment leaves either the old file or
/// the new one, never a torn one.
pub fn save(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(snapshot).expect("a snapshot serialises"))?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) =
        path.parent().and_then(|d| fs::File::open(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok())
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The background writer. `stop` writes once more and joins the thread.
pub struct Writer {
    stop_tx: crossbeam_channel::Sender<()>,
    thread: JoinHandle<()>,
}

impl Writer {
    pub fn start(state: Arc<AppState>, path: PathBuf) -> Writer {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("key-usage-writer".into())
            .spawn(move || {
                let mut written = None;
                loop {
                    crossbeam_channel::select! {
                        recv(state.usage_rx) -> _ => {
                            // Debounce: gather the changes of the next moment into one write,
                            // unless shutdown comes first.
                            let stopping = stop_rx.recv_timeout(DEBOUNCE).is_ok();
                            write_if_changed(&state, &path, &mut written);
                            if stopping { return; }
                        }
                        recv(stop_rx) -> _ => {
                            write_if_changed(&state, &path, &mut written);
                            return;
                        }
                    }
                }
            })
            .expect("spawn the key_usage.json writer");
        Writer { stop_tx, thread }
    }

    pub fn stop(self) {
        let _ = self.stop_tx.send(());
        let _ = self.thread.join();
    }
}

fn write_if_changed(state: &AppState, path: &Path, written: &mut Option<u64>) {
    let now = clock::now_ms();
    let (version, snapshot) = {
        let pool = lock(&state.pool);
        if *written == Some(pool.version) {
            return;
        }
        (pool.version, pool.snapshot(now))
    };
    match save(path, &snapshot) {
        Ok(()) => {
            *written = Some(version);
            log::debug!("saved {}", path.display());
        }
        Err(e) => log::error!("could not save {}: {e}", path.display()),
    }
}
