//! Configuration: the data directory, the `.env` files merged with the real environment,
//! `launcher_config.json`, and the providers and settings resolved from them. A `Config` is
//! built once and never mutated; a reload builds a new one.

pub(crate) mod dotenv;

use crate::error::{Context, Error, Result};
use crate::keys::Secret;
use crate::oauth::{self, OAuthCredential};
use crate::providers::{self, Family};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One documented environment variable. `man/keyrelay.1` lists every name here (a test checks).
pub struct EnvVar {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

pub const ENV_VARS: &[EnvVar] = &[
    EnvVar { name: "KEYRELAY_DIR", default: "current directory", doc: "data directory (the --dir flag wins)" },
    EnvVar { name: "KEYRELAY_LOG", default: "info", doc: "log level: error, warn, info, debug or trace" },
    EnvVar {
        name: "PROXY_API_KEY",
        default: "unset",
        doc: "key clients must send; unset means no auth, loopback only",
    },
    EnvVar { name: "<PROVIDER>_API_KEY", default: "-", doc: "provider API keys, also <PROVIDER>_API_KEY_<N>" },
    EnvVar {
        name: "<PROVIDER>_API_BASE",
        default: "built in",
        doc: "upstream base URL; an unknown name defines a custom OpenAI-compatible provider",
    },
    EnvVar { name: "<PROVIDER>_MODELS", default: "-", doc: "JSON array of extra model ids, listed first" },
    EnvVar { name: "IGNORE_MODELS_<PROVIDER>", default: "-", doc: "comma-separated globs of models to hide" },
    EnvVar { name: "WHITELIST_MODELS_<PROVIDER>", default: "-", doc: "comma-separated globs of models always shown" },
    EnvVar { name: "GLOBAL_TIMEOUT", default: "30", doc: "seconds a request may spend rotating between keys" },
    EnvVar { name: "TIMEOUT_CONNECT", default: "30", doc: "upstream connect timeout, seconds" },
    EnvVar {
        name: "TIMEOUT_READ_NON_STREAMING",
        default: "600",
        doc: "whole-response timeout of non-streaming calls, seconds",
    },
    EnvVar { name: "TIMEOUT_READ_STREAMING", default: "300", doc: "longest silence allowed in a stream, seconds" },
    EnvVar {
        name: "MAX_CONCURRENT_REQUESTS_PER_KEY_<PROVIDER>",
        default: "1",
        doc: "requests one key may carry at once for the same model",
    },
    EnvVar {
        name: "ROTATION_MODE_<PROVIDER>",
        default: "balanced",
        doc: "balanced (least used first) or sequential (stay on one key)",
    },
    EnvVar {
        name: "DAILY_RESET_HOUR_UTC",
        default: "3",
        doc: "hour at which daily counters, ladders and lockouts reset",
    },
    EnvVar { name: "MAX_REQUEST_BODY_BYTES", default: "33554432", doc: "larger request bodies get 413" },
    EnvVar {
        name: "STATE_BACKEND",
        default: "file",
        doc: "file (key_usage.json) or redis://[:password@]host:port/db to share the key pool between instances",
    },
    EnvVar {
        name: "REDIS_LEASE_TTL",
        default: "30",
        doc: "seconds a killed instance's request slots stay taken in Redis (renewed while a request runs)",
    },
    EnvVar {
        name: "REDIS_TIMEOUT",
        default: "0.2",
        doc: "seconds one Redis call may take before the instance goes on with its own key state",
    },
    EnvVar { name: "INSTANCE_ID", default: "hostname-pid", doc: "this instance's name in the shared state" },
    EnvVar {
        name: "EMBEDDING_BATCH_WINDOW_MS",
        default: "10",
        doc: "how long concurrent embedding requests are gathered into one upstream call; 0 turns batching off",
    },
    EnvVar {
        name: "EMBEDDING_BATCH_MAX_INPUTS",
        default: "64",
        doc: "the most inputs one batched embeddings call carries",
    },
    EnvVar { name: "MODELS_CACHE_SECONDS", default: "600", doc: "how long upstream model lists are cached" },
    EnvVar {
        name: "MODEL_ALIASES",
        default: "unset",
        doc: "JSON object from a model name or glob to provider/model, for names without a provider",
    },
    EnvVar {
        name: "DEFAULT_PROVIDER",
        default: "unset",
        doc: "provider that takes a model name with no provider prefix and no alias, unchanged",
    },
    EnvVar {
        name: "MAX_CONNECTIONS",
        default: "1024",
        doc: "open client connections; beyond it a new connection gets a fast 503 and is closed",
    },
    EnvVar {
        name: "CLIENT_HEAD_TIMEOUT",
        default: "10",
        doc: "seconds a client has to send a whole request head, from its first byte (or from connecting)",
    },
    EnvVar {
        name: "CLIENT_BODY_TIMEOUT",
        default: "10",
        doc: "seconds in which a request body must bring CLIENT_BODY_MIN_BYTES more, or end",
    },
    EnvVar {
        name: "CLIENT_BODY_MIN_BYTES",
        default: "16384",
        doc: "bytes of request body each CLIENT_BODY_TIMEOUT interval must bring",
    },
    EnvVar { name: "CLIENT_IDLE_TIMEOUT", default: "30", doc: "seconds an idle keep-alive connection stays open" },
    EnvVar {
        name: "SKIP_OAUTH_INIT_CHECK",
        default: "false",
        doc: "skip validating OAuth credentials at start-up (nothing validates them yet)",
    },
    EnvVar {
        name: "GEMINI_CLI_<N>_REFRESH_TOKEN",
        default: "-",
        doc: "stateless Gemini CLI credential N with _ACCESS_TOKEN, _EXPIRY_DATE, _EMAIL, _PROJECT_ID, ...; no N is set 0",
    },
    EnvVar {
        name: "QWEN_CODE_<N>_REFRESH_TOKEN",
        default: "-",
        doc: "stateless Qwen Code credential N with _ACCESS_TOKEN, _EXPIRY_DATE, _RESOURCE_URL, _EMAIL; no N is set 0",
    },
    EnvVar {
        name: "IFLOW_<N>_REFRESH_TOKEN",
        default: "-",
        doc: "stateless iFlow credential N with _ACCESS_TOKEN, _API_KEY, _EXPIRY_DATE, _EMAIL; always numbered",
    },
    EnvVar { name: "GEMINI_CLI_OAUTH_PORT", default: "8085", doc: "loopback port of the Gemini CLI login's callback" },
    EnvVar { name: "IFLOW_OAUTH_PORT", default: "11451", doc: "loopback port of the iFlow login's callback" },
    EnvVar {
        name: "GEMINI_CLI_AUTH_URL",
        default: "https://accounts.google.com/o/oauth2/v2/auth",
        doc: "authorization endpoint of the Gemini CLI login",
    },
    EnvVar {
        name: "GEMINI_CLI_USERINFO_URL",
        default: "https://www.googleapis.com/oauth2/v2/userinfo",
        doc: "where the Gemini CLI login asks the account's email when the id_token has none",
    },
    EnvVar {
        name: "GEMINI_CLI_CLIENT_ID",
        default: "the official CLI's",
        doc: "OAuth client id of the Gemini CLI login, also GEMINI_CLI_CLIENT_SECRET",
    },
    EnvVar {
        name: "OAUTH_REFRESH_INTERVAL",
        default: "600",
        doc: "seconds between background checks that refresh OAuth tokens near expiry",
    },
    EnvVar {
        name: "QWEN_CODE_OAUTH_BASE",
        default: "https://chat.qwen.ai",
        doc: "origin of Qwen's OAuth endpoints (device login and token refresh)",
    },
    EnvVar {
        name: "GEMINI_CLI_TOKEN_URL",
        default: "https://oauth2.googleapis.com/token",
        doc: "Google's token endpoint (login and refresh), whole URL; wins over a credential's token_uri",
    },
    EnvVar {
        name: "IFLOW_OAUTH_BASE",
        default: "https://iflow.cn",
        doc: "origin of iFlow's OAuth endpoints (login, token refresh, API key)",
    },
    EnvVar {
        name: "QWEN_CODE_API_BASE",
        default: "the credential's resource_url",
        doc: "Qwen Code API base; wins over an OAuth credential's resource_url (normalised to https://<host>/v1)",
    },
    EnvVar {
        name: "IFLOW_API_BASE",
        default: "https://apis.iflow.cn/v1",
        doc: "iFlow API base, for API keys and OAuth accounts (whose calls use the account's API key, signed)",
    },
    EnvVar {
        name: "GEMINI_CLI_PROJECT_ID",
        default: "the credential's project_id, else discovered",
        doc: "Google Cloud project of every gemini_cli call; unset, each account's own is used or found",
    },
    EnvVar {
        name: "GEMINI_CLI_API_BASE",
        default: "https://cloudcode-pa.googleapis.com/v1internal",
        doc: "Code Assist API base of gemini_cli (chat, loadCodeAssist, onboardUser)",
    },
    EnvVar {
        name: "AZURE_API_BASE",
        default: "unset",
        doc: "Azure OpenAI resource, https://<resource>.openai.azure.com, or a base ending in /openai/v1 for the v1 API",
    },
    EnvVar {
        name: "AZURE_API_VERSION",
        default: "2024-10-21",
        doc: "api-version of Azure OpenAI's deployments API (not sent to the v1 API)",
    },
    EnvVar {
        name: "VERTEX_API_BASE",
        default: "https://aiplatform.googleapis.com/v1",
        doc: "Vertex AI base, replacing https://<location>-aiplatform.googleapis.com/v1/projects/<project>/locations/<location> (and express mode's) for every credential",
    },
    EnvVar {
        name: "VERTEX_PROJECT",
        default: "unset",
        doc: "Google Cloud project of Vertex AI calls with service accounts (unset: each key file's project_id)",
    },
    EnvVar { name: "VERTEX_LOCATION", default: "us-central1", doc: "Vertex AI location (region, or global)" },
    EnvVar {
        name: "VERTEX_CREDENTIALS_<N>",
        default: "unset",
        doc: "a Google service account key file for Vertex AI: its path, or its JSON itself (also VERTEX_CREDENTIALS)",
    },
    EnvVar {
        name: "BEDROCK_AWS_REGION",
        default: "us-east-1",
        doc: "AWS region of Bedrock: the default base's and the one SigV4 signs for",
    },
    EnvVar {
        name: "BEDROCK_API_BASE",
        default: "https://bedrock-runtime.<region>.amazonaws.com",
        doc: "Bedrock Runtime endpoint (a VPC endpoint, a proxy, a mock)",
    },
    EnvVar {
        name: "BEDROCK_AWS_ACCESS_KEY_ID",
        default: "-",
        doc: "AWS access key id of a Bedrock credential, also _<N>, with BEDROCK_AWS_SECRET_ACCESS_KEY[_<N>]",
    },
    EnvVar {
        name: "BEDROCK_AWS_SECRET_ACCESS_KEY",
        default: "-",
        doc: "the secret access key of the pair with the same suffix",
    },
    EnvVar {
        name: "BEDROCK_AWS_SESSION_TOKEN",
        default: "-",
        doc: "session token of a temporary pair with the same suffix, sent as x-amz-security-token",
    },
    EnvVar {
        name: "CLIENT_WRITE_TIMEOUT",
        default: "30",
        doc: "seconds a write to a client may make no progress before the connection is dropped",
    },
];

/// Durations and limits, read from the merged environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub global_timeout: Duration,
    pub timeout_connect: Duration,
    pub timeout_read_non_streaming: Duration,
    pub timeout_read_streaming: Duration,
    pub max_request_body_bytes: u64,
    pub models_cache: Duration,
    pub client: ClientLimits,
    pub embedding_batch_window: Duration,
    pub embedding_batch_max_inputs: usize,
    /// 0..=23.
    pub daily_reset_hour: u64,
}

/// What the server allows one client connection: how many connections, and how long each
/// phase of a request may take.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub body_min_bytes: u64,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

/// How a provider spreads requests over its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Least used today first, ties at random.
    Balanced,
    /// Stay on the key used last while it is available.
    Sequential,
}

/// `launcher_config.json`: defaults for `serve` (flags win).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LauncherConfig {
    pub host: String,
    pub port: u16,
    pub enable_request_logging: bool,
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig { host: "127.0.0.1".into(), port: 8000, enable_request_logging: false }
    }
}

/// Which model ids a provider shows and serves.
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    ignore: Vec<String>,
    whitelist: Vec<String>,
}

impl ModelFilter {
    /// Whether any `IGNORE_MODELS_*` or `WHITELIST_MODELS_*` glob is set.
    pub fn is_set(&self) -> bool {
        !self.ignore.is_empty() || !self.whitelist.is_empty()
    }

    fn parse(ignore: Option<&str>, whitelist: Option<&str>) -> ModelFilter {
        let globs = |v: Option<&str>| -> Vec<String> {
            v.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
        };
        ModelFilter { ignore: globs(ignore), whitelist: globs(whitelist) }
    }

    /// Whitelist wins over the blacklist; both match the bare id or `provider/id`.
    pub fn allows(&self, provider: &str, id: &str) -> bool {
        let full = format!("{provider}/{id}");
        let hit = |globs: &[String]| globs.iter().any(|g| glob_match(g, id) || glob_match(g, &full));
        hit(&self.whitelist) || !hit(&self.ignore)
    }
}

/// `*` and `?` globs, case-sensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A provider that can be routed to: built in, or defined by `<NAME>_API_BASE`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub family: Family,
    /// Base URL without a trailing `/`.
    pub base: String,
    pub keys: Vec<Secret>,
    /// `<PROVIDER>_MODELS`, listed first and served without an upstream list.
    pub static_models: Vec<String>,
    pub filter: ModelFilter,
    /// `MAX_CONCURRENT_REQUESTS_PER_KEY_<P>`: requests per key for one model.
    pub max_concurrent: u32,
    pub rotation: Rotation,
    /// OAuth credentials in the key pool (`qwen_code`, `gemini_cli`), after the API keys.
    pub oauth: Vec<OAuthKey>,
    /// `<PROVIDER>_API_BASE` was set: for `qwen_code` it wins over a credential's `resource_url`.
    pub base_from_env: bool,
    /// `AZURE_API_VERSION` (`api-version` of Azure's deployments API); empty for other providers.
    pub api_version: String,
    /// `BEDROCK_AWS_REGION` (SigV4's region, and the default base's); empty for other providers.
    pub region: String,
}

/// An OAuth credential as a key of the pool: an id and a name derived from its account, never
/// from a token, so both survive refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthKey {
    pub id: String,
    pub account: String,
    /// The pool's rank of the credential (`oauth::tier`): lower is better.
    pub priority: u32,
}

impl ProviderConfig {
    /// Whether the provider has an API key or an OAuth credential.
    pub fn has_credentials(&self) -> bool {
        !self.keys.is_empty() || !self.oauth.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `KEYRELAY_LOG`, as given (the logging module reads it).
    pub log_level: String,
    pub proxy_api_key: Option<Secret>,
    /// Every routable provider, configured or not, by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    pub settings: Settings,
    pub launcher: LauncherConfig,
    /// `MODEL_ALIASES`: model names (or globs) without a provider, to `provider/model`.
    pub aliases: ModelAliases,
    /// `DEFAULT_PROVIDER`: takes any other name without a provider prefix, unchanged.
    pub default_provider: Option<String>,
    /// OAuth accounts: the store, the official CLIs' files and the stateless variables, each
    /// account once (`oauth::discovery`).
    pub oauth: Vec<OAuthCredential>,
    /// What discovery had to say (duplicates, unreadable files), for `log_warnings`: the
    /// configuration is loaded before logging starts.
    pub oauth_warnings: Vec<String>,
    /// `SKIP_OAUTH_INIT_CHECK`: do not validate OAuth credentials at start-up. Nothing
    /// validates them yet; the flag is read now so that a setting given today keeps working.
    pub skip_oauth_init_check: bool,
    /// Where OAuth tokens are refreshed (`QWEN_CODE_OAUTH_BASE`, `GEMINI_CLI_TOKEN_URL`,
    /// `IFLOW_OAUTH_BASE`).
    pub oauth_endpoints: oauth::endpoint::Endpoints,
    /// `OAUTH_REFRESH_INTERVAL`: how often the background refresher looks for tokens near expiry.
    pub oauth_refresh_interval: Duration,
    /// `GEMINI_CLI_PROJECT_ID`: the project of every `gemini_cli` call, over each account's own.
    pub gemini_cli_project: Option<String>,
    /// `STATE_BACKEND`, `REDIS_LEASE_TTL`, `INSTANCE_ID`: where the key pool's state is shared.
    pub state: crate::keys::shared::Settings,
    /// Vertex AI's project, location and service accounts.
    pub vertex: VertexConfig,
}

/// Vertex AI's settings besides its API keys (`VERTEX_API_KEY_N`, ordinary pool keys).
#[derive(Debug, Clone, Default)]
pub struct VertexConfig {
    /// `VERTEX_PROJECT`: the project of every call, over each service account's own.
    pub project: Option<String>,
    /// `VERTEX_LOCATION`.
    pub location: String,
    /// `VERTEX_CREDENTIALS`, `VERTEX_CREDENTIALS_<N>`: in the pool after the API keys.
    pub accounts: Vec<oauth::service_account::ServiceAccount>,
}

impl VertexConfig {
    /// The base of a service account's calls: `VERTEX_PROJECT`'s, else the account's own
    /// project's (load checked that one of them is there).
    pub fn account_base(&self, account: &oauth::service_account::ServiceAccount) -> String {
        let project = self.project.as_deref().or(account.project_id.as_deref()).unwrap_or_default();
        providers::vertex::project_base(project, &self.location)
    }
}

/// `MODEL_ALIASES`, in the order exact names first, then globs in the order given.
#[derive(Debug, Clone, Default)]
pub struct ModelAliases {
    exact: BTreeMap<String, String>,
    globs: Vec<(String, String)>,
}

impl ModelAliases {
    /// Parses the JSON object of `MODEL_ALIASES`; every target must be `provider/model`.
    fn parse(raw: Option<&str>) -> Result<ModelAliases> {
        let Some(raw) = raw else { return Ok(ModelAliases::default()) };
        let bad = |why: String| Error::Config(format!("MODEL_ALIASES {why}"));
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
            .map_err(|e| bad(format!("must be a JSON object of names to provider/model: {e}")))?;
        let mut aliases = ModelAliases::default();
        for (name, target) in map {
            let target = match target.as_str() {
                Some(t) if providers::split_model(t).is_some() => t.to_string(),
                _ => return Err(bad(format!("maps '{name}' to {target}, which is not a \"provider/model\" string"))),
            };
            if name.contains(['*', '?']) {
                aliases.globs.push((name, target));
            } else {
                aliases.exact.insert(name, target);
            }
        }
        Ok(aliases)
    }

    /// The `provider/model` a name stands for: an exact name wins over a glob.
    pub fn lookup(&self, name: &str) -> Option<&str> {
        self.exact
            .get(name)
            .or_else(|| self.globs.iter().find(|(glob, _)| glob_match(glob, name)).map(|(_, t)| t))
            .map(String::as_str)
    }

    /// How many names and globs there are.
    pub fn len(&self) -> usize {
        self.exact.len() + self.globs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exact alias names, for model lists.
    pub fn names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.exact.iter().map(|(n, t)| (n.as_str(), t.as_str()))
    }
}

impl Config {
    /// Loads the data directory: `.env`, then the other `*.env` files sorted by name (an
    /// earlier file wins), with the real environment winning over all of them.
    pub fn load(data_dir: &Path) -> Result<Config> {
        let env = environment(data_dir)?;
        let launcher = read_launcher_config(data_dir)?;
        let mut config = Config::from_env(data_dir, &env, launcher)?;
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let found = oauth::discover(data_dir, home.as_deref(), &env).map_err(Error::Config)?;
        config.oauth = found.credentials;
        config.oauth_warnings = found.warnings;
        attach_oauth(&mut config.providers, &config.oauth);
        Ok(config)
    }

    /// Logs what loading found worth a warning; called once logging is up.
    pub fn log_warnings(&self) {
        for warning in &self.oauth_warnings {
            log::warn!("{warning}");
        }
    }

    /// Builds a config from an explicit variable map (tests pass one instead of touching the
    /// process environment). OAuth credentials come from the stateless variables only; `load`
    /// adds the files.
    pub fn from_env(data_dir: &Path, env: &BTreeMap<String, String>, launcher: LauncherConfig) -> Result<Config> {
        let get = |name: &str| env.get(name).map(String::as_str).filter(|v| !v.trim().is_empty());
        let settings = Settings {
            global_timeout: seconds(get, "GLOBAL_TIMEOUT", 30.0)?,
            timeout_connect: seconds(get, "TIMEOUT_CONNECT", 30.0)?,
            timeout_read_non_streaming: seconds(get, "TIMEOUT_READ_NON_STREAMING", 600.0)?,
            timeout_read_streaming: seconds(get, "TIMEOUT_READ_STREAMING", 300.0)?,
            max_request_body_bytes: number(get, "MAX_REQUEST_BODY_BYTES", 33_554_432)?,
            models_cache: seconds(get, "MODELS_CACHE_SECONDS", 600.0)?,
            embedding_batch_window: Duration::from_millis(number(get, "EMBEDDING_BATCH_WINDOW_MS", 10)?),
            embedding_batch_max_inputs: match number(get, "EMBEDDING_BATCH_MAX_INPUTS", 64)? {
                0 => return Err(Error::Config("EMBEDDING_BATCH_MAX_INPUTS must be at least 1".into())),
                n => n as usize,
            },
            client: ClientLimits {
                max_connections: match number(get, "MAX_CONNECTIONS", 1024)? {
                    0 => return Err(Error::Config("MAX_CONNECTIONS must be at least 1".into())),
                    n => n as usize,
                },
                head_timeout: positive_seconds(get, "CLIENT_HEAD_TIMEOUT", 10.0)?,
                body_timeout: positive_seconds(get, "CLIENT_BODY_TIMEOUT", 10.0)?,
                body_min_bytes: number(get, "CLIENT_BODY_MIN_BYTES", 16_384)?,
                idle_timeout: positive_seconds(get, "CLIENT_IDLE_TIMEOUT", 30.0)?,
                write_timeout: positive_seconds(get, "CLIENT_WRITE_TIMEOUT", 30.0)?,
            },
            daily_reset_hour: match number(get, "DAILY_RESET_HOUR_UTC", 3)? {
                h @ 0..=23 => h,
                h => return Err(Error::Config(format!("DAILY_RESET_HOUR_UTC must be 0 to 23, got {h}"))),
            },
        };
        let found = oauth::discovery::from_env_only(env).map_err(Error::Config)?;
        let mut providers = discover_providers(env)?;
        attach_oauth(&mut providers, &found.credentials);
        let vertex = vertex_config(env)?;
        if let Some(p) = providers.get_mut(providers::vertex::NAME) {
            attach_vertex(p, &vertex)?;
        }
        Ok(Config {
            data_dir: data_dir.to_path_buf(),
            log_level: get("KEYRELAY_LOG").unwrap_or("info").trim().to_string(),
            proxy_api_key: get("PROXY_API_KEY").map(|k| Secret::new(k.trim())),
            providers,
            settings,
            launcher,
            aliases: ModelAliases::parse(get("MODEL_ALIASES"))?,
            default_provider: get("DEFAULT_PROVIDER").map(|p| p.trim().to_ascii_lowercase().replace('-', "_")),
            oauth: found.credentials,
            oauth_warnings: found.warnings,
            skip_oauth_init_check: flag(get, "SKIP_OAUTH_INIT_CHECK")?,
            oauth_endpoints: oauth::endpoint::Endpoints::from_env(get),
            oauth_refresh_interval: positive_seconds(get, "OAUTH_REFRESH_INTERVAL", 600.0)?,
            gemini_cli_project: get("GEMINI_CLI_PROJECT_ID").map(|p| p.trim().to_string()),
            state: crate::keys::shared::Settings::parse(
                get("STATE_BACKEND"),
                positive_seconds(get, "REDIS_LEASE_TTL", 30.0)?,
                positive_seconds(get, "REDIS_TIMEOUT", 0.2)?,
                get("INSTANCE_ID"),
            )
            .map_err(Error::Config)?,
            vertex,
        })
    }

    /// Providers with at least one credential, by name.
    pub fn configured(&self) -> impl Iterator<Item = &ProviderConfig> {
        self.providers.values().filter(|p| p.has_credentials())
    }
}

/// Puts each served OAuth credential into its provider's key pool (replacing what an earlier
/// call put there).
fn attach_oauth(providers: &mut BTreeMap<String, ProviderConfig>, creds: &[OAuthCredential]) {
    // Only OAuth providers: Vertex's service accounts are attached once, by `from_env`.
    for p in providers.values_mut().filter(|p| oauth::Provider::parse(&p.name).is_some()) {
        p.oauth.clear();
    }
    for cred in creds.iter().filter(|c| oauth::refresh::in_pool(c.provider)) {
        if let Some(p) = providers.get_mut(cred.provider.name()) {
            p.oauth.push(OAuthKey {
                id: oauth::identity::pool_id(cred),
                account: oauth::identity::account(cred),
                priority: oauth::tier::priority_of(cred),
            });
        }
    }
}

/// `VERTEX_PROJECT`, `VERTEX_LOCATION` and the service accounts of `VERTEX_CREDENTIALS` and
/// `VERTEX_CREDENTIALS_<N>` (unnumbered first, then by N; one account once).
fn vertex_config(env: &BTreeMap<String, String>) -> Result<VertexConfig> {
    let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let segment = |name: &str, value: &str| {
        providers::path_segment(value)
            .map(str::to_string)
            .map_err(|_| Error::Config(format!("{name} must be letters, digits, '.', '_' and '-' only, got {value:?}")))
    };
    let project = get("VERTEX_PROJECT").map(|p| segment("VERTEX_PROJECT", p)).transpose()?;
    let location = segment("VERTEX_LOCATION", get("VERTEX_LOCATION").unwrap_or(providers::vertex::DEFAULT_LOCATION))?;
    let order = |var: &str| var.strip_prefix("VERTEX_CREDENTIALS_").and_then(|n| n.parse::<u64>().ok()).map(|n| n + 1);
    let mut vars: Vec<(&String, u64)> = env
        .keys()
        .filter_map(|var| match var.as_str() {
            "VERTEX_CREDENTIALS" => Some((var, 0)),
            _ => order(var).map(|n| (var, n)),
        })
        .collect();
    vars.sort_by_key(|&(_, n)| n);
    let mut accounts: Vec<oauth::service_account::ServiceAccount> = Vec::new();
    for (var, _) in vars {
        let Some(value) = get(var) else { continue };
        let account = oauth::service_account::ServiceAccount::load(var, value).map_err(Error::Config)?;
        if !accounts.iter().any(|a| a.id() == account.id()) {
            accounts.push(account);
        }
    }
    Ok(VertexConfig { project, location, accounts })
}

/// Puts Vertex's service accounts into its pool, after its API keys; `VERTEX_PROJECT` moves its
/// base to the project's (unless `VERTEX_API_BASE` is set). An account without a project is a
/// load error when nothing else names one.
fn attach_vertex(p: &mut ProviderConfig, vertex: &VertexConfig) -> Result<()> {
    if let (false, Some(project)) = (p.base_from_env, &vertex.project) {
        p.base = providers::vertex::project_base(project, &vertex.location);
    }
    for account in &vertex.accounts {
        if !p.base_from_env && vertex.project.is_none() && account.project_id.is_none() {
            return Err(Error::Config(format!(
                "{}: the key file has no \"project_id\"; set VERTEX_PROJECT",
                account.var
            )));
        }
        if let Some(project) = &account.project_id {
            if providers::path_segment(project).is_err() {
                return Err(Error::Config(format!("{}: \"project_id\" is not a plain project id", account.var)));
            }
        }
        p.oauth.push(OAuthKey {
            id: account.id(),
            account: account.masked(),
            priority: crate::keys::pool::DEFAULT_PRIORITY,
        });
    }
    Ok(())
}

/// The variables every command sees: the data directory's `.env` files, with the real
/// environment winning over them.
pub fn environment(data_dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut env = read_env_files(data_dir)?;
    env.extend(std::env::vars());
    Ok(env)
}

fn read_env_files(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".env")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context(format!("reading data directory {}", dir.display())),
    };
    // `.env` first, then the others by name.
    files.sort_by_key(|p| (p.file_name().is_none_or(|n| n != ".env"), p.clone()));
    let mut env = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).context(format!("reading {}", file.display()))?;
        let pairs = dotenv::parse(&text, &|name| std::env::var(name).ok())
            .map_err(|why| Error::Config(format!("cannot parse {}: {why}", file.display())))?;
        dotenv::merge_first_wins(&mut env, pairs);
    }
    Ok(env)
}

fn read_launcher_config(dir: &Path) -> Result<LauncherConfig> {
    let path = dir.join("launcher_config.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("cannot parse {}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LauncherConfig::default()),
        Err(e) => Err(e).context(format!("reading {}", path.display())),
    }
}

fn seconds<'a>(get: impl Fn(&str) -> Option<&'a str>, name: &str, default: f64) -> Result<Duration> {
    let Some(raw) = get(name) else {
        return Ok(Duration::from_secs_f64(default));
    };
    match raw.trim().parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(Error::Config(format!("{name} must be a number of seconds, got {raw:?}"))),
    }
}

/// Like `seconds`, but zero is refused: a socket timeout of zero would mean "never".
fn positive_seconds<'a>(get: impl Fn(&str) -> Option<&'a str>, name: &str, default: f64) -> Result<Duration> {
    match seconds(get, name, default)? {
        d if d.is_zero() => Err(Error::Config(format!("{name} must be more than 0 seconds"))),
        d => Ok(d),
    }
}

/// A true/false setting: `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off` (any case);
/// unset is false.
fn flag<'a>(get: impl Fn(&str) -> Option<&'a str>, name: &str) -> Result<bool> {
    match get(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some(other) => Err(Error::Config(format!("{name} must be true or false, got {other:?}"))),
    }
}

fn number<'a>(get: impl Fn(&str) -> Option<&'a str>, name: &str, default: u64) -> Result<u64> {
    let Some(raw) = get(name) else {
        return Ok(default);
    };
    raw.trim().parse().map_err(|_| Error::Config(format!("{name} must be a whole number, got {raw:?}")))
}

/// Whether `name` is a provider key variable (`<PROVIDER>_API_KEY`, `<PROVIDER>_API_KEY_<N>`).
pub fn is_key_var(name: &str) -> bool {
    key_var_provider(name).is_some()
}

/// The provider named by a `<PROVIDER>_API_KEY` or `<PROVIDER>_API_KEY_<N>` variable.
fn key_var_provider(name: &str) -> Option<String> {
    if name == "PROXY_API_KEY" {
        return None;
    }
    let prefix = match name.strip_suffix("_API_KEY") {
        Some(p) => p,
        None => {
            let (p, n) = name.rsplit_once("_API_KEY_")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p
        }
    };
    (!prefix.is_empty()).then(|| prefix.to_ascii_lowercase())
}

/// Sort key for key variables: the un-numbered one first, then by N.
fn key_var_order(name: &str) -> u64 {
    name.rsplit_once("_API_KEY_").and_then(|(_, n)| n.parse::<u64>().ok()).map_or(0, |n| n + 1)
}

fn discover_providers(env: &BTreeMap<String, String>) -> Result<BTreeMap<String, ProviderConfig>> {
    let mut providers = BTreeMap::new();
    for &(name, base, family) in providers::BUILTIN {
        providers.insert(name.to_string(), provider(env, name, base, family)?);
    }
    for (var, value) in env {
        let Some(name) = var.strip_suffix("_API_BASE").map(str::to_ascii_lowercase) else {
            continue;
        };
        if name.is_empty() || value.trim().is_empty() || providers.contains_key(&name) {
            continue;
        }
        providers.insert(name.clone(), provider(env, &name, "", Family::OpenAi)?);
    }
    let mut keyed: Vec<(&String, &String)> = env.iter().filter(|(var, _)| key_var_provider(var).is_some()).collect();
    keyed.sort_by_key(|(var, _)| key_var_order(var));
    for (var, value) in keyed {
        let value = value.trim();
        let Some(p) = key_var_provider(var).and_then(|name| providers.get_mut(&name)) else {
            continue;
        };
        let secret = Secret::new(value);
        if !value.is_empty() && !p.keys.contains(&secret) {
            p.keys.push(secret);
        }
    }
    if let Some(bedrock) = providers.get_mut(providers::bedrock::NAME) {
        bedrock.keys.extend(aws_key_pairs(env)?);
        bedrock.keys.dedup();
    }
    if let Some(azure) = providers.get(providers::azure::NAME) {
        if !azure.keys.is_empty() && azure.base.is_empty() {
            return Err(Error::Config(
                "AZURE_API_KEY is set but AZURE_API_BASE is not: set it to https://<resource>.openai.azure.com \
                 (or a base ending in /openai/v1)"
                    .into(),
            ));
        }
    }
    Ok(providers)
}

/// Bedrock's access-key pairs: `BEDROCK_AWS_ACCESS_KEY_ID[_N]` with the
/// `BEDROCK_AWS_SECRET_ACCESS_KEY` of the same suffix (and `BEDROCK_AWS_SESSION_TOKEN`, when
/// set), each as one `Secret` of several fields (`keys::FIELD_SEPARATOR`), un-numbered first,
/// then by N. A half pair is an error naming the missing variable.
fn aws_key_pairs(env: &BTreeMap<String, String>) -> Result<Vec<Secret>> {
    const ID: &str = "BEDROCK_AWS_ACCESS_KEY_ID";
    const SECRET: &str = "BEDROCK_AWS_SECRET_ACCESS_KEY";
    const TOKEN: &str = "BEDROCK_AWS_SESSION_TOKEN";
    let value = |name: String| env.get(&name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let suffix = |var: &str, prefix: &str| -> Option<Option<u64>> {
        let rest = var.strip_prefix(prefix)?;
        if rest.is_empty() {
            return Some(None);
        }
        rest.strip_prefix('_').and_then(|n| n.parse::<u64>().ok()).map(Some)
    };
    let mut suffixes: Vec<Option<u64>> =
        env.keys().filter_map(|var| suffix(var, ID).or_else(|| suffix(var, SECRET))).collect();
    suffixes.sort();
    suffixes.dedup();
    let mut pairs = Vec::new();
    for n in suffixes {
        let tail = n.map_or(String::new(), |n| format!("_{n}"));
        let (id, secret) = (value(format!("{ID}{tail}")), value(format!("{SECRET}{tail}")));
        let (id, secret) = match (id, secret) {
            (None, None) => continue,
            (Some(id), Some(secret)) => (id, secret),
            (Some(_), None) => return Err(Error::Config(format!("{ID}{tail} is set but {SECRET}{tail} is not"))),
            (None, Some(_)) => return Err(Error::Config(format!("{SECRET}{tail} is set but {ID}{tail} is not"))),
        };
        let sep = crate::keys::FIELD_SEPARATOR;
        let joined = match value(format!("{TOKEN}{tail}")) {
            Some(token) => format!("{id}{sep}{secret}{sep}{token}"),
            None => format!("{id}{sep}{secret}"),
        };
        pairs.push(Secret::new(&joined));
    }
    Ok(pairs)
}

fn provider(env: &BTreeMap<String, String>, name: &str, default_base: &str, family: Family) -> Result<ProviderConfig> {
    let upper = name.to_ascii_uppercase();
    let get = |suffix: &str| env.get(&format!("{upper}{suffix}")).map(String::as_str).filter(|v| !v.trim().is_empty());
    let region = match (name, get("_AWS_REGION").map(str::trim)) {
        (providers::bedrock::NAME, None) => providers::bedrock::DEFAULT_REGION.to_string(),
        (providers::bedrock::NAME, Some(r)) if providers::bedrock::valid_region(r) => r.to_string(),
        (providers::bedrock::NAME, Some(r)) => {
            return Err(Error::Config(format!("{upper}_AWS_REGION must look like us-east-1, got {r:?}")));
        }
        _ => String::new(),
    };
    let default_base = match name {
        providers::bedrock::NAME => providers::bedrock::default_base(&region),
        _ => default_base.to_string(),
    };
    let base = get("_API_BASE").unwrap_or(&default_base).trim().trim_end_matches('/').to_string();
    let static_models = match get("_MODELS") {
        None => Vec::new(),
        Some(raw) => serde_json::from_str::<Vec<String>>(raw)
            .map_err(|_| Error::Config(format!("{upper}_MODELS must be a JSON array of strings, got {raw:?}")))?,
    };
    let filter = ModelFilter::parse(
        env.get(&format!("IGNORE_MODELS_{upper}")).map(String::as_str),
        env.get(&format!("WHITELIST_MODELS_{upper}")).map(String::as_str),
    );
    let max_concurrent = match env.get(&format!("MAX_CONCURRENT_REQUESTS_PER_KEY_{upper}")).map(|v| v.trim()) {
        None | Some("") => 1,
        Some(v) => v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
            Error::Config(format!(
                "MAX_CONCURRENT_REQUESTS_PER_KEY_{upper} must be a whole number of at least 1, got {v:?}"
            ))
        })?,
    };
    let rotation = match env.get(&format!("ROTATION_MODE_{upper}")).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("balanced") => Rotation::Balanced,
        Some("sequential") => Rotation::Sequential,
        Some(other) => {
            return Err(Error::Config(format!("ROTATION_MODE_{upper} must be balanced or sequential, got {other:?}")));
        }
    };
    let api_version = match (name, get("_API_VERSION").map(str::trim)) {
        (providers::azure::NAME, None) => providers::azure::DEFAULT_API_VERSION.to_string(),
        (providers::azure::NAME, Some(v)) if providers::azure::valid_api_version(v) => v.to_string(),
        (providers::azure::NAME, Some(v)) => {
            return Err(Error::Config(format!(
                "{upper}_API_VERSION must be letters, digits, '.', '_' and '-' (like 2024-10-21), got {v:?}"
            )));
        }
        _ => String::new(),
    };
    Ok(ProviderConfig {
        name: name.to_string(),
        family,
        base,
        keys: Vec::new(),
        static_models,
        filter,
        max_concurrent,
        rotation,
        oauth: Vec::new(),
        base_from_env: get("_API_BASE").is_some(),
        api_version,
        region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn discovers_keys_bases_and_custom_providers() {
        let e = env(&[
            ("OPENAI_API_KEY_2", "k2"),
            ("OPENAI_API_KEY", "k0"),
            ("OPENAI_API_KEY_10", "k10"),
            ("OPENAI_API_KEY_1", "k0"),
            ("NVIDIA_NIM_API_KEY_1", "nv"),
            ("GROQ_API_KEY", " "),
            ("MYLOCAL_API_BASE", "http://127.0.0.1:9/v1/"),
            ("MYLOCAL_API_KEY", "x"),
            ("MYLOCAL_MODELS", r#"["m1","m2"]"#),
            ("PROXY_API_KEY", "proxy"),
            ("NOBASE_API_KEY", "stray"),
        ]);
        let cfg = Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap();
        let keys: Vec<&str> = cfg.providers["openai"].keys.iter().map(|k| k.expose()).collect();
        assert_eq!(keys, ["k0", "k2", "k10"]);
        assert_eq!(cfg.providers["nvidia_nim"].keys.len(), 1);
        assert!(cfg.providers["groq"].keys.is_empty());
        let local = &cfg.providers["mylocal"];
        assert_eq!(local.base, "http://127.0.0.1:9/v1");
        assert_eq!(local.static_models, ["m1", "m2"]);
        assert!(!cfg.providers.contains_key("nobase"));
        assert!(!cfg.providers.contains_key("proxy"));
        assert_eq!(cfg.proxy_api_key.as_ref().map(|k| k.expose()), Some("proxy"));
    }

    #[test]
    fn azure_needs_its_base_and_a_plain_api_version() {
        let load = |pairs: &[(&str, &str)]| Config::from_env(Path::new("."), &env(pairs), LauncherConfig::default());
        let e = load(&[("AZURE_API_KEY", "k")]).unwrap_err().to_string();
        assert!(e.contains("AZURE_API_BASE"), "{e}");
        let cfg = load(&[("AZURE_API_KEY", "k"), ("AZURE_API_BASE", "https://r.openai.azure.com/")]).unwrap();
        let azure = &cfg.providers["azure"];
        assert_eq!((azure.family, azure.base.as_str()), (Family::OpenAi, "https://r.openai.azure.com"));
        assert_eq!(azure.api_version, "2024-10-21");
        let cfg = load(&[("AZURE_API_BASE", "https://r"), ("AZURE_API_VERSION", "2025-04-01-preview")]).unwrap();
        assert_eq!(cfg.providers["azure"].api_version, "2025-04-01-preview");
        assert!(load(&[("AZURE_API_VERSION", "2024&x=1")]).is_err());
        // No keys, no base: loads, and an `azure/*` request says what is missing.
        assert!(load(&[]).unwrap().providers["azure"].base.is_empty());
    }

    #[test]
    fn vertex_bases_and_service_accounts() {
        let load = |pairs: &[(&str, &str)]| Config::from_env(Path::new("."), &env(pairs), LauncherConfig::default());
        let key_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vertex/test-service-account.json");
        let cfg = load(&[("VERTEX_API_KEY", "AIza-1")]).unwrap();
        assert_eq!(cfg.providers["vertex"].base, "https://aiplatform.googleapis.com/v1", "express mode's base");
        let cfg = load(&[("VERTEX_PROJECT", "p1"), ("VERTEX_LOCATION", "global")]).unwrap();
        assert_eq!(cfg.providers["vertex"].base, "https://aiplatform.googleapis.com/v1/projects/p1/locations/global");
        let cfg = load(&[("VERTEX_CREDENTIALS_2", key_file), ("VERTEX_CREDENTIALS", key_file)]).unwrap();
        let vertex = &cfg.providers["vertex"];
        assert_eq!((cfg.vertex.accounts.len(), vertex.oauth.len()), (1, 1), "one account once");
        assert!(vertex.oauth[0].account.starts_with("keyrelay-test@"));
        let base = cfg.vertex.account_base(&cfg.vertex.accounts[0]);
        assert_eq!(
            base,
            "https://us-central1-aiplatform.googleapis.com/v1/projects/keyrelay-test-project/locations/us-central1"
        );
        let e = load(&[("VERTEX_CREDENTIALS_1", "/nonexistent.json")]).unwrap_err().to_string();
        assert!(e.contains("VERTEX_CREDENTIALS_1"), "{e}");
        assert!(load(&[("VERTEX_LOCATION", "us/../x")]).is_err());
        assert!(load(&[("VERTEX_PROJECT", "a?b")]).is_err());
    }

    #[test]
    fn bedrock_pairs_keys_and_region() {
        let load = |pairs: &[(&str, &str)]| Config::from_env(Path::new("."), &env(pairs), LauncherConfig::default());
        let cfg = load(&[
            ("BEDROCK_AWS_ACCESS_KEY_ID", "AKIA0000"),
            ("BEDROCK_AWS_SECRET_ACCESS_KEY", "s0"),
            ("BEDROCK_AWS_ACCESS_KEY_ID_2", "AKIA2222"),
            ("BEDROCK_AWS_SECRET_ACCESS_KEY_2", "s2"),
            ("BEDROCK_AWS_SESSION_TOKEN_2", "t2"),
            ("BEDROCK_API_KEY_1", "bedrock-api-key"),
            ("BEDROCK_AWS_REGION", "eu-west-3"),
        ])
        .unwrap();
        let bedrock = &cfg.providers["bedrock"];
        assert_eq!((bedrock.family, bedrock.region.as_str()), (Family::Bedrock, "eu-west-3"));
        assert_eq!(bedrock.base, "https://bedrock-runtime.eu-west-3.amazonaws.com");
        let keys: Vec<Vec<&str>> = bedrock.keys.iter().map(|k| k.fields().collect()).collect();
        assert_eq!(keys, [vec!["bedrock-api-key"], vec!["AKIA0000", "s0"], vec!["AKIA2222", "s2", "t2"]]);
        assert_eq!(bedrock.keys[1].masked(), "...0000");
        let e = load(&[("BEDROCK_AWS_ACCESS_KEY_ID_3", "AKIA")]).unwrap_err().to_string();
        assert!(e.contains("BEDROCK_AWS_SECRET_ACCESS_KEY_3"), "{e}");
        let e = load(&[("BEDROCK_AWS_SECRET_ACCESS_KEY", "s")]).unwrap_err().to_string();
        assert!(e.contains("BEDROCK_AWS_ACCESS_KEY_ID is not"), "{e}");
        assert!(load(&[("BEDROCK_AWS_REGION", "us-east-1.evil.com/")]).is_err());
        let cfg = load(&[("BEDROCK_API_BASE", "http://127.0.0.1:9/")]).unwrap();
        assert_eq!(
            (cfg.providers["bedrock"].base.as_str(), cfg.providers["bedrock"].region.as_str()),
            ("http://127.0.0.1:9", "us-east-1")
        );
    }

    #[test]
    fn bad_numbers_are_config_errors() {
        let e = env(&[("GLOBAL_TIMEOUT", "soon")]);
        assert!(Config::from_env(Path::new("."), &e, LauncherConfig::default()).is_err());
        let e = env(&[("TIMEOUT_CONNECT", "0.5")]);
        let cfg = Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap();
        assert_eq!(cfg.settings.timeout_connect, Duration::from_millis(500));
    }

    #[test]
    fn oauth_variables_and_the_skip_flag() {
        let e = env(&[("SKIP_OAUTH_INIT_CHECK", "True"), ("QWEN_CODE_REFRESH_TOKEN", "r"), ("IFLOW_API_KEY", "k")]);
        let cfg = Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap();
        assert!(cfg.skip_oauth_init_check);
        assert_eq!(cfg.oauth.len(), 1);
        assert_eq!(cfg.providers["iflow"].keys.len(), 1, "IFLOW_API_KEY stays a plain API key");
        let e = env(&[("SKIP_OAUTH_INIT_CHECK", "maybe")]);
        assert!(Config::from_env(Path::new("."), &e, LauncherConfig::default()).is_err());
        let e = env(&[]);
        assert!(!Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap().skip_oauth_init_check);
    }

    #[test]
    fn globs_and_filters() {
        assert!(glob_match("gpt-*", "gpt-4o"));
        assert!(glob_match("*mini*", "gpt-4o-mini-2024"));
        assert!(glob_match("gpt-?o", "gpt-4o"));
        assert!(!glob_match("gpt-?o", "gpt-4oo"));
        assert!(glob_match("*", ""));
        let f = ModelFilter::parse(Some("*"), Some("gpt-4o, openai/o3*"));
        assert!(f.allows("openai", "gpt-4o"));
        assert!(f.allows("openai", "o3-mini"));
        assert!(!f.allows("openai", "gpt-3.5"));
        let f = ModelFilter::parse(Some("*-preview"), None);
        assert!(!f.allows("openai", "x-preview") && f.allows("openai", "x"));
    }
}
