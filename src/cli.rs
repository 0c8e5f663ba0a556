//! Command-line flags. The doc comments are the `--help` text; `man/keyrelay.1` says the same
//! at length (a test checks every flag appears there).

use argh::FromArgs;
use std::path::PathBuf;

/// A small, fast LLM API proxy: one OpenAI-compatible endpoint over a pool of provider keys.
#[derive(FromArgs, Debug)]
#[argh(
    note = "Settings come from .env files in the data directory and the environment; see keyrelay(1).",
    error_code(0, "success"),
    error_code(1, "a negative answer"),
    error_code(2, "an error: bad flags, unreadable configuration, cannot bind")
)]
pub struct TopLevel {
    /// data directory holding .env and launcher_config.json (default: $KEYRELAY_DIR, else the current directory)
    #[argh(option)]
    pub dir: Option<PathBuf>,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,

    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeArgs),
    Status(StatusArgs),
    Models(ModelsArgs),
    Oauth(OauthArgs),
    ExportEnv(ExportEnvArgs),
}

/// Run the proxy server.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// address to bind (default: launcher_config.json's host, else 127.0.0.1)
    #[argh(option)]
    pub host: Option<String>,

    /// port to bind, 0 for any free port (default: launcher_config.json's port, else 8000)
    #[argh(option)]
    pub port: Option<u16>,

    /// write each request's body, stream chunks, final response and outcome under logs/detailed_logs/ (also launcher_config.json's enable_request_logging)
    #[argh(switch)]
    pub enable_request_logging: bool,

    /// how many requests are handled at once, streams included (default 64)
    #[argh(option, default = "64")]
    pub workers: usize,

    /// allow binding a non-loopback address without PROXY_API_KEY set
    #[argh(switch)]
    pub allow_no_auth: bool,
}

/// List the provider/model ids the proxy would serve.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "models")]
pub struct ModelsArgs {
    /// print JSON Lines, one {"type":"model","id","provider"} object per line
    #[argh(switch)]
    pub json: bool,

    /// only this provider's models
    #[argh(option)]
    pub provider: Option<String>,
}

/// Show every key's state: ready, busy, cooldown or locked, with cooldowns and today's usage.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusArgs {
    /// print JSON Lines: one {"type":"key"} object per key, one {"type":"provider"} per provider, a {"type":"summary"} last
    #[argh(switch)]
    pub json: bool,

    /// ask the keyrelay at this URL (default: the host and port of launcher_config.json when it answers, else read key_usage.json)
    #[argh(option)]
    pub url: Option<String>,

    /// exit 1 when some provider has no key that could take a request now
    #[argh(switch)]
    pub check: bool,
}

/// Manage OAuth accounts (Gemini CLI, Qwen Code, iFlow): list them, import the official CLIs' logins.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "oauth")]
pub struct OauthArgs {
    #[argh(subcommand)]
    pub command: OauthCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum OauthCommand {
    List(OauthListArgs),
    Import(OauthImportArgs),
    Refresh(OauthRefreshArgs),
}

/// List every OAuth credential: provider, account, state, expiry and where it comes from.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct OauthListArgs {
    /// print JSON Lines, one {"type":"credential","provider","account","file","expires_in_seconds","state"} object per credential
    #[argh(switch)]
    pub json: bool,
}

/// Copy the logins of the official CLIs (~/.gemini, ~/.qwen, ~/.iflow) into oauth_creds/; an account already stored is skipped.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "import")]
pub struct OauthImportArgs {}

/// Refresh OAuth tokens now: every credential, or the one whose id (as status shows it) or account is ID. Exit 1 when a refresh was refused (the credential then needs a new login).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "refresh")]
pub struct OauthRefreshArgs {
    /// a credential's pool id (qwen_code:0123456789ab) or account; all credentials when left out
    #[argh(positional)]
    pub id: Option<String>,
}

/// Print every OAuth credential as .env variables (one numbered block per credential), for hosts without credential files.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "export-env")]
pub struct ExportEnvArgs {
    /// only this provider's credentials: gemini_cli, qwen_code or iflow (gemini-cli and qwen-code also work)
    #[argh(positional)]
    pub provider: Option<String>,

    /// write to this file (mode 0600) instead of standard output
    #[argh(option)]
    pub output: Option<PathBuf>,
}
