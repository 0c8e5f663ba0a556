//! Logging to stderr (never stdout, which belongs to command output) and, for `serve`, to
//! `logs/keyrelay.log`, rotated by size. ureq, rustls and tiny_http are kept out entirely:
//! ureq logs headers unredacted at TRACE.

use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, LevelFilter, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAX_LOG_BYTES: u64 = 10 << 20;

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

/// Starts logging; with `log_dir`, also into `<log_dir>/keyrelay.log`.
pub fn init(level: LevelFilter, log_dir: Option<&Path>) -> io::Result<()> {
    let config = ConfigBuilder::new()
        .add_filter_ignore_str("ureq")
        .add_filter_ignore_str("rustls")
        .add_filter_ignore_str("tiny_http")
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    let mut loggers: Vec<Box<dyn SharedLogger>> =
        vec![TermLogger::new(level, config.clone(), TerminalMode::Stderr, ColorChoice::Never)];
    if let Some(dir) = log_dir {
        std::fs::create_dir_all(dir)?;
        loggers.push(WriteLogger::new(level, config, RotatingFile::open(dir.join("keyrelay.log"))?));
    }
    // A second init (tests run several servers in one process) keeps the first logger.
    let _ = CombinedLogger::init(loggers);
    Ok(())
}

/// A log file that moves itself to `<name>.1` when it passes `MAX_LOG_BYTES`.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
}

impl RotatingFile {
    fn open(path: PathBuf) -> io::Result<RotatingFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
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
