//! keyrelay: one OpenAI-compatible endpoint over a pool of LLM provider keys. See
//! ARCHITECTURE.md for the map of this crate.

mod api;
mod cli;
mod clock;
mod cmd;
mod config;
mod dotenv;
mod embed_batch;
mod env_vars;
mod error;
#[cfg(test)]
mod fuzz_config;
#[cfg(test)]
mod golden;
mod http;
mod json_splice;
mod keys;
mod logging;
mod metrics;
mod oauth;
mod providers;
mod redact;
mod relay;
mod reqlog;
mod secret;
mod sse;
mod state;
mod sync;
mod tokens;
mod upstream;

// What the binary and the integration tests use; everything else is private to the crate, so
// the compiler reports what nothing uses.
#[doc(hidden)]
pub use clock::rfc3339;
pub use config::ENV_VARS;
pub use error::Error;

use argh::FromArgs;
use cli::{Command, TopLevel};
use error::Result;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Parses `args` (without the program name) and runs the command.
pub fn run(args: &[String]) -> Result<ExitCode> {
    // `-h` as cargo and ripgrep take it; argh knows only `--help`.
    let strs: Vec<&str> = args.iter().map(|a| if a == "-h" { "--help" } else { a.as_str() }).collect();
    let top = match TopLevel::from_args(&["keyrelay"], &strs) {
        Ok(top) => top,
        Err(early) if early.status.is_ok() => {
            print!("{}", early.output);
            return Ok(ExitCode::SUCCESS);
        }
        Err(early) => return Err(Error::Usage(with_suggestion(early.output.trim_end(), &strs))),
    };
    if top.version {
        println!("keyrelay {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if top.command.is_none() && !interactive {
        return Err(Error::Usage("no subcommand given; try 'keyrelay --help'".into()));
    }
    let dir =
        top.dir.or_else(|| std::env::var_os("KEYRELAY_DIR").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        // A mistyped --dir would otherwise serve nothing from a new, empty folder.
        return Err(Error::Usage(format!("data directory {} does not exist (--dir or KEYRELAY_DIR)", dir.display())));
    }
    let config = config::Config::load(&dir)?;
    // Before anything can log or call out: every later line and upstream answer is redacted.
    redact::install(config.redactor());
    let result = match top.command {
        Some(command) => dispatch(config, command),
        // On a terminal with no subcommand: the menus.
        None => {
            start_logging(&config);
            cmd::launcher::run(config)
        }
    };
    // Log lines still in the writer's channel or buffers would be lost at exit.
    logging::stop();
    result
}

fn dispatch(config: config::Config, command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => cmd::serve::run(config, args),
        Command::Status(args) => {
            start_logging(&config);
            cmd::status::run(config, args)
        }
        Command::Models(args) => {
            start_logging(&config);
            cmd::models::run(config, args)
        }
        Command::Oauth(args) => {
            start_logging(&config);
            cmd::oauth::run(config, args)
        }
        Command::ExportEnv(args) => {
            start_logging(&config);
            cmd::export_env::run(config, args)
        }
        Command::AddKey(args) => {
            start_logging(&config);
            cmd::add_key::run(config, args)
        }
    }
}

/// Every subcommand, for usage hints and suggestions (a test checks it against `--help`).
pub const SUBCOMMANDS: [&str; 6] = ["serve", "status", "models", "add-key", "oauth", "export-env"];

/// argh's message, plus "did you mean" when the first word not taken as a flag is one or two
/// edits away from a subcommand.
fn with_suggestion(message: &str, args: &[&str]) -> String {
    let word = args.iter().find(|a| !a.starts_with('-') && message.contains(&format!("Unrecognized argument: {a}")));
    let near = word.and_then(|w| SUBCOMMANDS.iter().find(|c| edit_distance(w, c) <= 2));
    match near {
        Some(command) => format!("{message} (did you mean '{command}'?)"),
        None => message.to_string(),
    }
}

/// Levenshtein distance, for short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// Logging to stderr for the commands other than `serve` (which also logs to its file), and
/// what loading the configuration found worth a warning.
fn start_logging(config: &config::Config) {
    let _ = logging::init(logging::level(&config.log_level), None);
    config.log_warnings();
}
