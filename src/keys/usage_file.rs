//! `key_usage.json`: the pool's cooldowns, lockouts and counters, so they survive a restart.
//! Written off the request path by one thread, debounced (at most one write per
//! `DEBOUNCE`), atomically (temp file, fsync, rename), and once more on shutdown. A missing
//! file starts a clean state; a corrupt one is reported, set aside, and replaced.
//!
//! The writer keeps its own copy of every record and takes from the pool, under its lock, only
//! the records changed since the last write, so a save costs the pool nothing per key; the
//! file is serialised and written from the copy with the lock released. The file holds no key,
//! but it names every key and its usage: it is written owner-only (0600).

use super::PoolHost;
use crate::clock;
use crate::keys::pool::Snapshot;
use crate::sync::lock;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub const FILE_NAME: &str = "key_usage.json";
/// How long a change may wait before it is on disk (what a `kill -9` can lose).
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// The file's mode, and its temporary file's.
const MODE: u32 = 0o600;

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
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(MODE).open(&tmp)?;
    // `mode` applies only to a file it creates: a leftover temporary file keeps its own.
    file.set_permissions(fs::Permissions::from_mode(MODE))?;
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

/// Narrows an existing file to 0600 if it is readable by others (written by an older version);
/// a missing file is fine.
pub fn tighten(path: &Path) {
    let Ok(meta) = fs::metadata(path) else { return };
    if meta.permissions().mode() & 0o077 != 0 {
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(MODE)) {
            log::warn!("could not make {} owner-only: {e}", path.display());
        }
    }
}

/// The background writer. `stop` writes once more and joins the thread.
pub struct Writer {
    stop_tx: crossbeam_channel::Sender<()>,
    thread: JoinHandle<()>,
}

impl Writer {
    pub fn start(state: Arc<dyn PoolHost>, path: PathBuf) -> Writer {
        tighten(&path);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("key-usage-writer".into())
            .spawn(move || {
                let mut copy = UsageCopy::default();
                loop {
                    crossbeam_channel::select! {
                        recv(state.usage_signals()) -> _ => {
                            // Debounce: gather the changes of the next moment into one write,
                            // unless shutdown comes first.
                            let stopping = stop_rx.recv_timeout(DEBOUNCE).is_ok();
                            copy.write_if_changed(state.as_ref(), &path);
                            if stopping { return; }
                        }
                        recv(stop_rx) -> _ => {
                            copy.write_if_changed(state.as_ref(), &path);
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

/// The writer's own copy of every record, brought up to date from the pool's changes.
#[derive(Default)]
struct UsageCopy {
    snapshot: Snapshot,
    /// The copy has changes the file does not have yet (a failed write is retried).
    unsaved: bool,
}

impl UsageCopy {
    fn write_if_changed(&mut self, state: &dyn PoolHost, path: &Path) {
        let changes = lock(state.pool()).take_changes();
        if !changes.is_empty() {
            self.snapshot.apply(changes);
            self.unsaved = true;
        }
        if !self.unsaved {
            return;
        }
        self.snapshot.saved_at = clock::now_ms();
        match save(path, &self.snapshot) {
            Ok(()) => {
                self.unsaved = false;
                log::debug!("saved {}", path.display());
            }
            Err(e) => log::error!("could not save {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keyrelay-usage-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_file_and_its_temporary_are_owner_only() {
        let dir = scratch("mode");
        let path = dir.join(FILE_NAME);
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, "left over").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        let snapshot = Snapshot { version: 1, day_start: 7, ..Snapshot::default() };
        save(&path, &snapshot).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read(&path).unwrap(), snapshot);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wider_existing_file_is_narrowed() {
        let dir = scratch("tighten");
        let path = dir.join(FILE_NAME);
        fs::write(&path, "{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        tighten(&path);
        assert_eq!(mode(&path), 0o600);
        tighten(&dir.join("missing.json"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
