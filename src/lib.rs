//! keyrelay: one OpenAI-compatible endpoint over a pool of LLM provider keys. See
//! ARCHITECTURE.md for the map of this crate.

pub mod api;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod error;
#[cfg(test)]
mod golden;
pub mod http;
mod json_splice;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod providers;
pub mod redact;
pub mod relay;
pub mod reqlog;
pub mod sse;
pub mod state;
pub mod tokens;
pub mod upstream;

use argh::FromArgs;
use cli::{Command, TopLevel};
use error::{Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Parses `args` (without the program name) and runs the command.
pub fn run(args: &[String]) -> Result<ExitCode> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let top = match TopLevel::from_args(&["keyrelay"], &strs) {
        Ok(top) => top,
        Err(early) if early.status.is_ok() => {
            print!("{}", early.output);
            return Ok(ExitCode::SUCCESS);
        }
        Err(early) => return Err(Error::Usage(early.output.trim_end().to_string())),
    };
    if top.version {
        println!("keyrelay {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = top.command else {
        return Err(Error::Usage("no subcommand given; try 'keyrelay --help'".into()));
    };
    let dir =
        top.dir.or_else(|| std::env::var_os("KEYRELAY_DIR").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("."));
    let config = config::Config::load(&dir)?;
    // Before anything can log or call out: every later line and upstream answer is redacted.
    redact::install(&config);
    let result = dispatch(config, command);
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

/// Logging to stderr for the commands other than `serve` (which also logs to its file), and
/// what loading the configuration found worth a warning.
fn start_logging(config: &config::Config) {
    let _ = logging::init(logging::level(&config.log_level), None);
    config.log_warnings();
}
