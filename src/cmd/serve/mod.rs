//! `keyrelay serve`: bind, serve until SIGINT/SIGTERM, reload on SIGHUP, shut down cleanly.

mod refresher;

use crate::cli::ServeArgs;
use crate::cmd::oauth::import::{self, Imported};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http;
use crate::keys::usage_file;
use crate::logging;
use crate::state::AppState;
use crate::sync::lock;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight requests may run on after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub fn run(config: Config, args: ServeArgs) -> Result<ExitCode> {
    let host = args.host.clone().unwrap_or_else(|| config.launcher.host.clone());
    let port = args.port.unwrap_or(config.launcher.port);
    if !is_loopback(&host) && config.proxy_api_key.is_none() && !args.allow_no_auth {
        return Err(Error::Usage(format!(
            "refusing to listen on {host} without PROXY_API_KEY: anyone who can reach it could spend your keys; set PROXY_API_KEY in .env, or pass --allow-no-auth"
        )));
    }
    if args.workers == 0 {
        return Err(Error::Usage("--workers must be at least 1".into()));
    }
    logging::init(logging::level(&config.log_level), Some(&config.data_dir.join("logs")))
        .map_err(|source| Error::Io { what: "opening logs/keyrelay.log".into(), source })?;
    let config = import_cli_logins(config)?;
    config.log_warnings();

    let data_dir = config.data_dir.clone();
    let request_logging = args.enable_request_logging || config.launcher.enable_request_logging;
    let mut state = AppState::new(config);
    if request_logging {
        state.request_logs = Some(data_dir.join("logs").join("detailed_logs"));
    }
    let usage_path = data_dir.join(usage_file::FILE_NAME);
    if let Some(snapshot) = usage_file::read(&usage_path) {
        lock(&state.pool).restore(snapshot, crate::clock::now_ms());
    }
    let state = Arc::new(state);
    let usage_writer = usage_file::Writer::start(state.clone(), usage_path);
    let refresher = refresher::Refresher::start(state.clone());
    let shared = state.shared.clone().start(state.clone());
    let (events_tx, events) = crossbeam_channel::unbounded::<i32>();
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|source| Error::Io { what: "installing signal handlers".into(), source })?;
    let signal_handle = signals.handle();
    let signal_thread = {
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if events_tx.send(signal).is_err() {
                    break;
                }
            }
        })
    };

    let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let running = http::start(state.clone(), &addr, args.workers).map_err(Error::Config)?;
    // The first stderr line, which scripts and tests wait for.
    eprintln!("keyrelay listening on http://{}", running.addr);
    log::info!("listening on http://{} with {} workers, data dir {}", running.addr, args.workers, data_dir.display());
    summarize(&state.config());

    for signal in events.iter() {
        match signal {
            SIGHUP => match Config::load(&data_dir) {
                Ok(config) => {
                    config.log_warnings();
                    state.reload(config);
                    log::info!("SIGHUP: configuration reloaded");
                }
                Err(e) => {
                    log::error!("SIGHUP: configuration not reloaded, keeping the old one: {e}")
                }
            },
            _ => {
                log::info!("shutting down: finishing requests under way (up to {} s)", SHUTDOWN_GRACE.as_secs());
                break;
            }
        }
    }
    let busy = running.shutdown(SHUTDOWN_GRACE);
    if busy > 0 {
        log::warn!("{busy} requests were still running after {} s; exiting anyway", SHUTDOWN_GRACE.as_secs());
    }
    refresher.stop();
    usage_writer.stop();
    shared.stop();
    signal_handle.close();
    let _ = signal_thread.join();
    log::info!("stopped");
    // The writer thread holds what is not yet on disk: flush it and join it before exiting.
    logging::stop();
    Ok(ExitCode::SUCCESS)
}

/// Imports the official CLIs' logins into `oauth_creds/` (accounts not stored yet), and loads
/// the configuration again when that added any, so their tokens are refreshed in the store's
/// copy and never in the CLI's own file.
fn import_cli_logins(config: Config) -> Result<Config> {
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else { return Ok(config) };
    let mut added = false;
    for outcome in import::import_cli_logins(&config.data_dir, std::path::Path::new(&home))? {
        match outcome {
            Imported::Stored(line) => {
                log::info!("{line}");
                added = true;
            }
            Imported::Duplicate(line) => log::debug!("{line}"),
            Imported::Unreadable(line) => log::warn!("{line}"),
        }
    }
    if added { Config::load(&config.data_dir) } else { Ok(config) }
}

/// What a newcomer needs to see at start: each provider with its keys and accounts (the keys'
/// masked forms at debug level), model filters and aliases; a warning naming the fix when no
/// provider can serve anything.
fn summarize(config: &Config) {
    let providers: Vec<String> = config
        .configured()
        .map(|p| {
            let keys = p.keys.len();
            let mut what = format!("{} ({keys} key{}", p.name, if keys == 1 { "" } else { "s" });
            if !p.oauth.is_empty() {
                let n = p.oauth.len();
                what.push_str(&format!(", {n} OAuth account{}", if n == 1 { "" } else { "s" }));
            }
            what.push(')');
            what
        })
        .collect();
    if providers.is_empty() {
        log::warn!(
            "no provider has a key or an account, so every model request will fail: add one with 'keyrelay add-key <provider>' or a <PROVIDER>_API_KEY line in {}",
            config.data_dir.join(".env").display()
        );
    } else {
        log::info!("providers: {}", providers.join(", "));
    }
    for p in config.configured() {
        let masked: Vec<String> =
            p.keys.iter().map(|k| k.masked()).chain(p.oauth.iter().map(|o| o.account.clone())).collect();
        log::debug!("{}: {}", p.name, masked.join(", "));
        if p.filter.is_set() {
            let upper = p.name.to_ascii_uppercase();
            log::info!("{}: models filtered by IGNORE_MODELS_{upper} / WHITELIST_MODELS_{upper}", p.name);
        }
    }
    if !config.aliases.is_empty() {
        log::info!("MODEL_ALIASES: {} names or globs", config.aliases.len());
    }
    if let Some(default) = &config.default_provider {
        log::info!("DEFAULT_PROVIDER: {default} takes model names with no provider");
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
