//! Configuration: the data directory, the `.env` files merged with the real environment,
//! `launcher_config.json`, and the providers and settings resolved from them. A `Config` is
//! built once and never mutated; a reload builds a new one.
//!
//! The table of documented variables and the typed reads that take their defaults from it are
//! `crate::env_vars` (below `oauth`, which reads its endpoints' defaults there too);
//! `provider_config.rs` finds the providers and their keys; `models.rs` has
//! the model filters and aliases; this file puts them together into a `Config`.

mod models;
mod provider_config;
mod state_backend;
#[cfg(test)]
mod tests;

pub use crate::env_vars::ENV_VARS;
pub use provider_config::{ProviderConfig, Rotation, is_key_var};

use crate::dotenv;
use crate::env_vars::Vars;
use crate::error::{Context, Error, Result};
use crate::oauth::{self, OAuthCredential};
use crate::redact::Redactor;
use crate::secret::Secret;
use models::ModelAliases;
use provider_config::{VertexConfig, attach_oauth, attach_vertex, discover_providers, vertex_config};
use serde::Deserialize;
pub use state_backend::StateBackend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

impl Settings {
    /// The upstream client's deadlines.
    pub fn timeouts(&self) -> crate::upstream::Timeouts {
        crate::upstream::Timeouts {
            connect: self.timeout_connect,
            non_streaming: self.timeout_read_non_streaming,
            streaming_idle: self.timeout_read_streaming,
        }
    }
}

impl Settings {
    /// Every field from its variable, or that variable's default in `ENV_VARS`.
    fn read(vars: Vars) -> Result<Settings> {
        let at_least_one = |name: &str, n: u64| match n {
            0 => Err(Error::Config(format!("{name} must be at least 1"))),
            n => Ok(n as usize),
        };
        Ok(Settings {
            global_timeout: vars.seconds("GLOBAL_TIMEOUT")?,
            timeout_connect: vars.seconds("TIMEOUT_CONNECT")?,
            timeout_read_non_streaming: vars.seconds("TIMEOUT_READ_NON_STREAMING")?,
            timeout_read_streaming: vars.seconds("TIMEOUT_READ_STREAMING")?,
            max_request_body_bytes: vars.number("MAX_REQUEST_BODY_BYTES")?,
            models_cache: vars.seconds("MODELS_CACHE_SECONDS")?,
            embedding_batch_window: Duration::from_millis(vars.number("EMBEDDING_BATCH_WINDOW_MS")?),
            embedding_batch_max_inputs: at_least_one(
                "EMBEDDING_BATCH_MAX_INPUTS",
                vars.number("EMBEDDING_BATCH_MAX_INPUTS")?,
            )?,
            client: ClientLimits {
                max_connections: at_least_one("MAX_CONNECTIONS", vars.number("MAX_CONNECTIONS")?)?,
                head_timeout: vars.positive_seconds("CLIENT_HEAD_TIMEOUT")?,
                body_timeout: vars.positive_seconds("CLIENT_BODY_TIMEOUT")?,
                body_min_bytes: vars.number("CLIENT_BODY_MIN_BYTES")?,
                idle_timeout: vars.positive_seconds("CLIENT_IDLE_TIMEOUT")?,
                write_timeout: vars.positive_seconds("CLIENT_WRITE_TIMEOUT")?,
            },
            daily_reset_hour: match vars.number("DAILY_RESET_HOUR_UTC")? {
                h @ 0..=23 => h,
                h => return Err(Error::Config(format!("DAILY_RESET_HOUR_UTC must be 0 to 23, got {h}"))),
            },
        })
    }
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
    pub state: StateBackend,
    /// Vertex AI's project, location and service accounts.
    pub vertex: VertexConfig,
}

impl Config {
    /// Every configured secret: each provider's keys, the proxy key, every OAuth
    /// credential's tokens and API key, the body of every Vertex service account's private
    /// key, and the password of the Redis URL (`STATE_BACKEND`).
    pub fn redactor(&self) -> Redactor {
        // Each field of a several-field credential (an AWS key pair: its id, secret access key
        // and session token) on its own: the fields, not their join, are what could leak.
        let keys = self.providers.values().flat_map(|p| p.keys.iter()).flat_map(|k| k.fields());
        let oauth = self.oauth.iter().flat_map(|c| c.secrets());
        let private_keys: Vec<String> = self.vertex.accounts.iter().map(|a| a.key_body()).collect();
        let redis_password = self.state.password();
        let others = self.proxy_api_key.iter().chain(oauth).map(|s| s.expose());
        let mut secrets: Vec<&str> = keys.chain(others).chain(private_keys.iter().map(String::as_str)).collect();
        secrets.extend(redis_password.as_ref().map(Secret::expose));
        Redactor::new(secrets)
    }

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
        let vars = Vars::new(env);
        let settings = Settings::read(vars)?;
        let found = oauth::discovery::from_env_only(env).map_err(Error::Config)?;
        let mut providers = discover_providers(env)?;
        attach_oauth(&mut providers, &found.credentials);
        let vertex = vertex_config(env)?;
        if let Some(p) = providers.get_mut(crate::providers::vertex::NAME) {
            attach_vertex(p, &vertex)?;
        }
        let get = |name: &str| env.get(name).map(String::as_str).filter(|v| !v.trim().is_empty());
        Ok(Config {
            data_dir: data_dir.to_path_buf(),
            log_level: vars.text("KEYRELAY_LOG")?.to_string(),
            proxy_api_key: vars.optional("PROXY_API_KEY")?.map(|k| Secret::new(k.trim())),
            providers,
            settings,
            launcher,
            aliases: ModelAliases::parse(vars.optional("MODEL_ALIASES")?)?,
            default_provider: vars
                .optional("DEFAULT_PROVIDER")?
                .map(|p| p.trim().to_ascii_lowercase().replace('-', "_")),
            oauth: found.credentials,
            oauth_warnings: found.warnings,
            skip_oauth_init_check: vars.flag("SKIP_OAUTH_INIT_CHECK")?,
            // Reads its own variables, with their defaults (not yet from `ENV_VARS`).
            oauth_endpoints: oauth::endpoint::Endpoints::from_env(get),
            oauth_refresh_interval: vars.positive_seconds("OAUTH_REFRESH_INTERVAL")?,
            gemini_cli_project: vars.optional("GEMINI_CLI_PROJECT_ID")?.map(|p| p.trim().to_string()),
            state: StateBackend::parse(
                Some(vars.text("STATE_BACKEND")?),
                vars.positive_seconds("REDIS_LEASE_TTL")?,
                vars.positive_seconds("REDIS_TIMEOUT")?,
                vars.optional("INSTANCE_ID")?,
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
