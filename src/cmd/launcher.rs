//! `keyrelay` with no arguments on a terminal: numbered menus over the other commands, for
//! people who do not want to learn the flags. Run the server, change `launcher_config.json`
//! (host, port, request logging), add an API key, log in with an OAuth account, export the
//! OAuth credentials, show the key status. Plain prompts on stdin and stdout; every action is
//! the same code as its subcommand, and the configuration is loaded again after each one.

use crate::cli::{AddKeyArgs, ExportEnvArgs, LoginArgs, ServeArgs, StatusArgs};
use crate::cmd;
use crate::config::{Config, LauncherConfig};
use crate::error::{Context, Error, Result};
use crate::oauth::store;
use serde_json::json;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const MENU: &str = concat!(
    "  1) Run the server\n",
    "  2) Change host, port or request logging\n",
    "  3) Add an API key\n",
    "  4) Log in with an OAuth account (Gemini CLI, Qwen Code, iFlow)\n",
    "  5) Export OAuth credentials as .env variables\n",
    "  6) Show key status\n",
    "  0) Quit"
);

/// The three OAuth logins, as the menu numbers them.
const LOGINS: [(&str, &str); 3] = [("gemini_cli", "Gemini CLI"), ("qwen_code", "Qwen Code"), ("iflow", "iFlow")];

pub fn run(config: Config) -> Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    let mut config = config;
    let stdin = io::stdin();
    let mut input = stdin.lock();
    loop {
        show(&config);
        let Some(choice) = ask(&mut input, "Choose [0-6]")? else { return Ok(ExitCode::SUCCESS) };
        let done = match choice.as_str() {
            "0" | "q" | "quit" => return Ok(ExitCode::SUCCESS),
            "1" => return cmd::serve::run(config, serve_args()),
            "2" => edit_launcher_config(&mut input, &config),
            "3" => add_key(&mut input, config.clone()),
            "4" => login(&mut input, config.clone()),
            "5" => export(&mut input, config.clone()),
            "6" => cmd::status::run(config.clone(), StatusArgs { json: false, url: None, check: false }).map(|_| ()),
            other => {
                println!("There is no choice '{other}'.");
                Ok(())
            }
        };
        // A failed action is reported and the menu comes back; nothing of it is fatal here.
        if let Err(e) = done {
            println!("keyrelay: {e}");
        }
        config = Config::load(&data_dir)?;
    }
}

fn show(config: &Config) {
    let l = &config.launcher;
    let providers: Vec<&str> = config.configured().map(|p| p.name.as_str()).collect();
    println!();
    println!("keyrelay {} in {}", env!("CARGO_PKG_VERSION"), config.data_dir.display());
    println!(
        "Providers with keys or accounts: {}",
        if providers.is_empty() { "none yet (choose 3 or 4)".to_string() } else { providers.join(", ") }
    );
    let logging = if l.enable_request_logging { "on" } else { "off" };
    println!("Server: http://{}:{}, request logging {logging}", l.host, l.port);
    println!("{MENU}");
}

/// Prints `prompt` and reads one line; `None` at the end of the input.
fn ask(input: &mut impl BufRead, prompt: &str) -> Result<Option<String>> {
    print!("{prompt}: ");
    io::stdout().flush().context("writing to stdout")?;
    let mut line = String::new();
    if input.read_line(&mut line).context("reading standard input")? == 0 {
        println!();
        return Ok(None);
    }
    Ok(Some(line.trim().to_string()))
}

/// Like `ask`, with the answer `default` when the line is empty.
fn ask_or(input: &mut impl BufRead, prompt: &str, default: &str) -> Result<String> {
    let answer = ask(input, &format!("{prompt} [{default}]"))?.unwrap_or_default();
    Ok(if answer.is_empty() { default.to_string() } else { answer })
}

/// `serve` as the launcher runs it: every setting from `launcher_config.json`.
fn serve_args() -> ServeArgs {
    ServeArgs { host: None, port: None, enable_request_logging: false, workers: 64, allow_no_auth: false }
}

fn edit_launcher_config(input: &mut impl BufRead, config: &Config) -> Result<()> {
    let old = &config.launcher;
    let host = ask_or(input, "Host", &old.host)?;
    let port = ask_or(input, "Port", &old.port.to_string())?;
    let port: u16 = port.parse().map_err(|_| Error::Usage(format!("'{port}' is not a port number")))?;
    let logging = ask_or(input, "Request logging (y/n)", if old.enable_request_logging { "y" } else { "n" })?;
    let enable_request_logging = matches!(logging.to_ascii_lowercase().as_str(), "y" | "yes" | "on" | "true");
    let new = LauncherConfig { host, port, enable_request_logging };
    let path = config.data_dir.join("launcher_config.json");
    write_launcher_config(&path, &new)?;
    println!("Saved {}.", path.display());
    Ok(())
}

fn write_launcher_config(path: &Path, launcher: &LauncherConfig) -> Result<()> {
    let value = json!({"host": launcher.host, "port": launcher.port, "enable_request_logging": launcher.enable_request_logging});
    let text = serde_json::to_string_pretty(&value).expect("a JSON value serialises") + "\n";
    store::write_atomic(path, text.as_bytes()).context(format!("writing {}", path.display()))
}

fn add_key(input: &mut impl BufRead, config: Config) -> Result<()> {
    let Some(provider) = ask(input, "Provider (openai, gemini, anthropic, groq, ...)")?.filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let key = read_secret(input, "Key (not shown)")?;
    cmd::add_key::run(config, AddKeyArgs { provider, key: Some(key), validate: false }).map(|_| ())
}

/// A line typed without echo on a terminal (`stty`), then a newline for the screen.
fn read_secret(input: &mut impl BufRead, prompt: &str) -> Result<String> {
    cmd::add_key::set_echo(false);
    let answer = ask(input, prompt);
    cmd::add_key::set_echo(true);
    println!();
    Ok(answer?.unwrap_or_default())
}

fn login(input: &mut impl BufRead, config: Config) -> Result<()> {
    for (i, (_, name)) in LOGINS.iter().enumerate() {
        println!("  {}) {name}", i + 1);
    }
    let choice = ask(input, "Which account [1-3]")?.unwrap_or_default();
    let Some(&(provider, _)) = choice.parse::<usize>().ok().and_then(|n| LOGINS.get(n.wrapping_sub(1))) else {
        println!("There is no choice '{choice}'.");
        return Ok(());
    };
    let args = LoginArgs { provider, no_browser: false, timeout: 300, label: None };
    cmd::oauth::login::run(config, args).map(|_| ())
}

fn export(input: &mut impl BufRead, config: Config) -> Result<()> {
    let file = ask(input, "Write to file (empty: print here)")?.unwrap_or_default();
    let output = (!file.is_empty()).then(|| PathBuf::from(file));
    cmd::export_env::run(config, ExportEnvArgs { provider: None, output }).map(|_| ())
}
