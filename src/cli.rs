//! Command-line flags. The doc comments are the `--help` text; `man/keyrelay.1` says the same
//! at length (a test checks every flag appears there).

use argh::FromArgs;
use std::path::PathBuf;

/// A small, fast LLM API proxy: one OpenAI-compatible endpoint over a pool of provider keys.
#[derive(FromArgs, Debug)]
#[argh(
    example = "keyrelay serve                       # the proxy on 127.0.0.1:8000, keys from ./.env",
    example = "keyrelay add-key openai --validate   # add a key, typed on standard input",
    example = "keyrelay status --json | jq .state   # every key's state, as JSON Lines",
    note = "Settings come from .env files in the data directory and the environment; see keyrelay(1).",
    error_code(0, "success"),
    error_code(1, "a negative answer"),
    error_code(2, "an error: bad flags, unreadable configuration, cannot bind")
)]
pub struct TopLevel {
    /// data directory holding .env and launcher_config.json (default: $KEYRELAY_DIR, else the current directory)
    #[argh(option, arg_name = "DIR")]
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
    AddKey(AddKeyArgs),
}

/// Add a provider API key to .env as the next <PROVIDER>_API_KEY_<N> (from stdin if not given).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add-key")]
pub struct AddKeyArgs {
    /// the provider, e.g. openai, gemini, nvidia_nim (a custom one needs its <NAME>_API_BASE)
    #[argh(positional)]
    pub provider: String,

    /// the key; read from standard input when left out
    #[argh(positional)]
    pub key: Option<String>,

    /// first check the key against the provider's model list, and add it only if it works
    #[argh(switch)]
    pub validate: bool,
}

/// Run the proxy server.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "serve",
    example = "keyrelay serve --port 8080",
    example = "keyrelay serve --host 0.0.0.0 --port 8000   # needs PROXY_API_KEY in .env"
)]
pub struct ServeArgs {
    /// address to bind (default: launcher_config.json's host, else 127.0.0.1)
    #[argh(option, arg_name = "HOST")]
    pub host: Option<String>,

    /// port to bind, 0 for any free port (default: launcher_config.json's port, else 8000)
    #[argh(option, arg_name = "PORT")]
    pub port: Option<u16>,

    /// write each request's body, stream chunks, final response and outcome under logs/detailed_logs/ (also launcher_config.json's enable_request_logging)
    #[argh(switch)]
    pub enable_request_logging: bool,

    /// how many requests are handled at once, streams included (default 64)
    #[argh(option, arg_name = "N", default = "64")]
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
    #[argh(option, arg_name = "PROVIDER")]
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
    #[argh(option, arg_name = "URL")]
    pub url: Option<String>,

    /// exit 1 when some provider has no key that could take a request now
    #[argh(switch)]
    pub check: bool,
}

/// Manage OAuth accounts (Gemini CLI, Qwen Code, iFlow): log in, list them, import the official CLIs' logins.
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
    GeminiCli(LoginGeminiCli),
    GeminiCliAlias(LoginGeminiCliAlias),
    QwenCode(LoginQwenCode),
    QwenCodeAlias(LoginQwenCodeAlias),
    Iflow(LoginIflow),
    Refresh(OauthRefreshArgs),
}

/// The flags of an interactive login (`keyrelay oauth gemini-cli|qwen-code|iflow`), one
/// struct per accepted name since argh names each subcommand by its type.
#[derive(Debug, Clone)]
pub struct LoginArgs {
    pub provider: &'static str,
    pub no_browser: bool,
    pub timeout: u64,
    pub label: Option<String>,
}

macro_rules! login_args {
    ($type:ident, $name:tt, $provider:tt, $doc:tt) => {
        #[doc = $doc]
        #[derive(FromArgs, Debug)]
        #[argh(subcommand, name = $name)]
        pub struct $type {
            /// do not open a browser (the URL to open is printed either way)
            #[argh(switch)]
            pub no_browser: bool,

            /// seconds the whole login may take before it gives up with exit 1 (default 300)
            #[argh(option, arg_name = "SECS", default = "300")]
            pub timeout: u64,

            /// the account name to store when the provider names none (Qwen Code's token names none)
            #[argh(option, arg_name = "NAME")]
            pub label: Option<String>,
        }

        impl From<$type> for LoginArgs {
            fn from(a: $type) -> LoginArgs {
                LoginArgs { provider: $provider, no_browser: a.no_browser, timeout: a.timeout, label: a.label }
            }
        }
    };
}

login_args!(
    LoginGeminiCli,
    "gemini-cli",
    "gemini_cli",
    "Log in with a Google account (Gemini CLI) in a browser and store the account in oauth_creds/."
);
login_args!(LoginGeminiCliAlias, "gemini_cli", "gemini_cli", "Same as gemini-cli.");
login_args!(
    LoginQwenCode,
    "qwen-code",
    "qwen_code",
    "Log in with a Qwen account (Qwen Code) by approving a device code and store the account in oauth_creds/."
);
login_args!(LoginQwenCodeAlias, "qwen_code", "qwen_code", "Same as qwen-code.");
login_args!(
    LoginIflow,
    "iflow",
    "iflow",
    "Log in with an iFlow account in a browser, fetch its API key and store the account in oauth_creds/."
);

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
    #[argh(option, arg_name = "FILE")]
    pub output: Option<PathBuf>,
}
