//! Logging to stderr (never stdout, which belongs to command output) and, for `serve`, to
//! `logs/keyrelay.log`, rotated by size, without ever making the caller wait for a write.
//!
//! A log call formats its line and offers it to a bounded channel; one writer thread owns the
//! buffered outputs, redacts every line and writes it. When the channel is full the line is
//! dropped and counted ([`dropped`]), because a request must never wait for the log. The
//! writer flushes whenever the channel runs empty, every [`FLUSH_INTERVAL`] under continuous
//! load, and at [`stop`], which every command calls before the process exits.
//!
//! ureq, rustls and tiny_http are kept out entirely: ureq logs headers unredacted at TRACE.
//! The log directory is 0700 and its files 0600: request logs hold prompts and answers.

use crate::clock::{now_ms, rfc3339};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use log::{LevelFilter, Log, Metadata, Record};
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX_LOG_BYTES: u64 = 10 << 20;
/// Lines that may wait for the writer; past this a burst is dropped, not waited for.
const CHANNEL_LINES: usize = 8192;
/// The longest a written line stays in a buffer while lines keep coming.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const BUFFER_BYTES: usize = 64 << 10;
/// Log targets never written: ureq logs headers (keys included) at TRACE.
const IGNORED_TARGETS: [&str; 3] = ["ureq", "rustls", "tiny_http"];
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Set by the first `init`; `stop` takes the writer out of it.
static STATE: Mutex<State> = Mutex::new(State { installed: false, writer: None });

struct State {
    installed: bool,
    writer: Option<(Sender<Msg>, JoinHandle<()>)>,
}

enum Msg {
    Line(String),
    Stop,
}

/// Log lines dropped so far because the writer was behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The level named by `KEYRELAY_LOG` (off, error, warn, info, debug, trace; default info).
pub fn level(name: &str) -> LevelFilter {
    match name.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => LevelFilter::Info,
    }
}

/// Starts logging; with `log_dir`, also into `<log_dir>/keyrelay.log`. A second call (tests
/// run several commands in one process) keeps the first logger and does nothing.
pub fn init(level: LevelFilter, log_dir: Option<&Path>) -> io::Result<()> {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if state.installed {
        return Ok(());
    }
    let mut outputs: Vec<Box<dyn Write + Send>> = vec![Box::new(BufWriter::with_capacity(BUFFER_BYTES, io::stderr()))];
    let mut tightened = Vec::new();
    if let Some(dir) = log_dir {
        tightened = prepare_dir(dir)?;
        let file = RotatingFile::open(dir.join("keyrelay.log"))?;
        outputs.push(Box::new(BufWriter::with_capacity(BUFFER_BYTES, file)));
    }
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_LINES);
    let thread =
        std::thread::Builder::new().name("log-writer".into()).spawn(move || Writer::new(outputs, &DROPPED).run(&rx))?;
    let logger = Logger { level, sink: Sink { tx: tx.clone(), dropped: &DROPPED } };
    // Installed once per process (guarded by `installed`), so leaking it costs nothing.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level);
    }
    state.installed = true;
    state.writer = Some((tx, thread));
    drop(state);
    for path in tightened {
        log::warn!("{} was open to other users; it is now private to this user", path.display());
    }
    Ok(())
}

/// Writes out every line logged so far and ends the writer thread. Lines logged later go
/// straight to stderr. Safe to call more than once, or without `init`.
pub fn stop() {
    let writer = STATE.lock().unwrap_or_else(|e| e.into_inner()).writer.take();
    if let Some((tx, thread)) = writer {
        // Blocking here is fine: this is shutdown, not a request.
        let _ = tx.send(Msg::Stop);
        let _ = thread.join();
    }
}

/// Creates a private directory (and any missing parents) readable by this user only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates or truncates a file readable by this user only.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)
}

/// Creates `dir` 0700, or takes group and other access away from it and from everything
/// directly in it (`keyrelay.log`, `keyrelay.log.1`, `detailed_logs/`), as left by an older
/// version. Deeper entries are not walked: with `dir` at 0700 no other user can reach them,
/// and a walk of every request folder ever logged would slow every start. Returns the paths
/// it tightened.
fn prepare_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    create_private_dir(dir)?;
    let mut tightened = Vec::new();
    if tighten(dir, DIR_MODE)? {
        tightened.push(dir.to_path_buf());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let mode = if entry.file_type()?.is_dir() { DIR_MODE } else { FILE_MODE };
        if tighten(&entry.path(), mode)? {
            tightened.push(entry.path());
        }
    }
    Ok(tightened)
}

/// Removes group and other permission bits from `path` when it has any; `mode` is what it
/// gets then. A symlink is left alone (its target is not ours to change). True when changed.
fn tighten(path: &Path, mode: u32) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode))?;
    Ok(true)
}

/// One formatted line: `<RFC 3339 UTC time> [LEVEL] message`.
fn format_line(level: log::Level, message: &std::fmt::Arguments<'_>) -> String {
    format!("{} [{level}] {message}\n", rfc3339(now_ms()))
}

struct Logger {
    level: LevelFilter,
    sink: Sink,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level && !IGNORED_TARGETS.iter().any(|t| metadata.target().starts_with(t))
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.sink.send(format_line(record.level(), record.args()));
        }
    }

    /// Nothing to do here: the writer flushes on its own, and `stop` flushes at exit.
    fn flush(&self) {}
}

/// The caller's end of the channel: offers a line, never waits.
struct Sink {
    tx: Sender<Msg>,
    dropped: &'static AtomicU64,
}

impl Sink {
    fn send(&self, line: String) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer has stopped (after `stop`): a late line goes out directly.
            Err(TrySendError::Disconnected(Msg::Line(line))) => {
                let _ = io::stderr().write_all(crate::redact::text(&line).as_bytes());
            }
            Err(TrySendError::Disconnected(Msg::Stop)) => {}
        }
    }
}

/// The writer thread's state: the buffered outputs and how many drops it has reported.
struct Writer<W: Write> {
    outputs: Vec<W>,
    dropped: &'static AtomicU64,
    reported: u64,
    last_flush: Instant,
}

impl<W: Write> Writer<W> {
    fn new(outputs: Vec<W>, dropped: &'static AtomicU64) -> Writer<W> {
        Writer { outputs, dropped, reported: 0, last_flush: Instant::now() }
    }

    /// Writes lines until `Msg::Stop` (and the lines already queued behind it) or until every
    /// sender is gone, then flushes.
    fn run(&mut self, rx: &Receiver<Msg>) {
        loop {
            let msg = match rx.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Empty) => {
                    // Nothing more to read right now: this is when a line reaches the file.
                    self.flush();
                    match rx.recv() {
                        Ok(msg) => msg,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            match msg {
                Msg::Line(line) => self.write(&line),
                Msg::Stop => {
                    // A thread still running at shutdown may have logged after the stop.
                    while let Ok(Msg::Line(line)) = rx.try_recv() {
                        self.write(&line);
                    }
                    break;
                }
            }
            if self.last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush();
            }
        }
        self.flush();
    }

    /// A write error is ignored: there is nowhere left to report it, and one output failing
    /// (a closed stderr, a full disk) must not stop the other.
    fn write(&mut self, line: &str) {
        let line = crate::redact::text(line);
        for out in &mut self.outputs {
            let _ = out.write_all(line.as_bytes());
        }
    }

    /// Reports lines dropped since the last report, as a line of its own, then flushes.
    fn flush(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported {
            let message = format!("{} log lines dropped: the log writer was behind", dropped - self.reported);
            self.write(&format_line(log::Level::Warn, &format_args!("{message}")));
            self.reported = dropped;
        }
        for out in &mut self.outputs {
            let _ = out.flush();
        }
        self.last_flush = Instant::now();
    }
}

/// A log file, 0600, that moves itself to `<name>.1` when it passes `MAX_LOG_BYTES`. Whole
/// lines reach it (each line is one `write_all` into the buffer before it), so a rotation
/// never splits one.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
}

impl RotatingFile {
    fn open(path: PathBuf) -> io::Result<RotatingFile> {
        let file = OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { path, file, size })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, old)?;
        *self = RotatingFile::open(self.path.clone())?;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size + buf.len() as u64 > MAX_LOG_BYTES && self.size > 0 {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> &'static AtomicU64 {
        Box::leak(Box::new(AtomicU64::new(0)))
    }

    fn text(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec()).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn lines_reach_every_output_in_order() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let sink = Sink { tx: tx.clone(), dropped: counter() };
        for i in 0..10 {
            sink.send(format!("line {i}\n"));
        }
        tx.send(Msg::Stop).unwrap();
        sink.send("logged after the stop\n".into());
        let mut writer = Writer::new(vec![Vec::new(), Vec::new()], sink.dropped);
        writer.run(&rx);
        let mut expected: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
        expected.push("logged after the stop".into());
        assert_eq!(text(&writer.outputs[0]), expected);
        assert_eq!(text(&writer.outputs[1]), expected);
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_waiting_and_the_writer_reports_it() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let sink = Sink { tx, dropped: counter() };
        // No writer is reading: a send that waited would hang this test.
        for i in 0..5 {
            sink.send(format!("line {i}\n"));
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 3);
        let dropped = sink.dropped;
        drop(sink);
        let mut writer = Writer::new(vec![Vec::new()], dropped);
        writer.run(&rx);
        let lines = text(&writer.outputs[0]);
        assert_eq!(lines[..2], ["line 0", "line 1"]);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[2].ends_with("[WARN] 3 log lines dropped: the log writer was behind"), "{lines:?}");
        // Reported once: a later flush with no new drops adds nothing.
        writer.flush();
        assert_eq!(text(&writer.outputs[0]).len(), 3);
    }

    #[test]
    fn a_line_has_the_time_the_level_and_the_message() {
        let line = format_line(log::Level::Info, &format_args!("listening on {}", 8000));
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(crate::clock::parse_rfc3339(time).is_some() && time.ends_with('Z'), "{line}");
        assert_eq!(rest, "[INFO] listening on 8000\n");
    }

    #[test]
    fn ureq_rustls_and_tiny_http_are_kept_out() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let logger = Logger { level: LevelFilter::Trace, sink: Sink { tx, dropped: counter() } };
        let meta = |target| Metadata::builder().level(log::Level::Error).target(target).build();
        for target in ["ureq::unversioned", "ureq_proto::client", "rustls::conn", "tiny_http"] {
            assert!(!logger.enabled(&meta(target)), "{target}");
        }
        assert!(logger.enabled(&meta("keyrelay::relay")));
        let warn_only = Logger { level: LevelFilter::Warn, ..logger };
        let info = Metadata::builder().level(log::Level::Info).target("keyrelay").build();
        assert!(!warn_only.enabled(&info));
    }

    #[test]
    fn the_log_file_rotates_to_dot_1_and_both_are_private() {
        let dir = std::env::temp_dir().join(format!("keyrelay-logging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir(&dir).unwrap();
        let path = dir.join("keyrelay.log");
        let mut file = RotatingFile::open(path.clone()).unwrap();
        file.size = MAX_LOG_BYTES - 3;
        file.write_all(b"after rotation\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after rotation\n");
        assert_eq!((mode(&dir), mode(&path), mode(&dir.join("keyrelay.log.1"))), (0o700, 0o600, 0o600));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_open_log_dir_and_its_files_are_tightened() {
        let dir = std::env::temp_dir().join(format!("keyrelay-tighten-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("detailed_logs")).unwrap();
        std::fs::write(dir.join("keyrelay.log"), "old\n").unwrap();
        for (p, m) in [(dir.clone(), 0o755), (dir.join("detailed_logs"), 0o755), (dir.join("keyrelay.log"), 0o644)] {
            std::fs::set_permissions(&p, Permissions::from_mode(m)).unwrap();
        }
        let mut tightened = prepare_dir(&dir).unwrap();
        tightened.sort();
        assert_eq!(tightened, [dir.clone(), dir.join("detailed_logs"), dir.join("keyrelay.log")]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode(&dir), mode(&dir.join("detailed_logs")), mode(&dir.join("keyrelay.log"))),
            (0o700, 0o700, 0o600)
        );
        assert!(prepare_dir(&dir).unwrap().is_empty(), "a second start changes nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
