//! The documented variables (`ENV_VARS`: name, default, meaning) and the typed reads of the
//! merged environment. A setting's default is written once, in the table: when a variable is
//! unset (or blank) the read parses the table's default with the same parser as a given value,
//! and a read of a name the table lacks is a load error, so the table, the loader and the man
//! page (checked by `tests/it/man.rs`) cannot drift apart.

use crate::error::{Error, Result};
use crate::providers;
use std::collections::BTreeMap;
use std::time::Duration;

/// One documented environment variable. `man/keyrelay.1` lists every name here with its default
/// (a test checks); the loader reads every default it uses from here (`Vars`).
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
        default: providers::azure::DEFAULT_API_VERSION,
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
    EnvVar {
        name: "VERTEX_LOCATION",
        default: providers::vertex::DEFAULT_LOCATION,
        doc: "Vertex AI location (region, or global)",
    },
    EnvVar {
        name: "VERTEX_CREDENTIALS_<N>",
        default: "unset",
        doc: "a Google service account key file for Vertex AI: its path, or its JSON itself (also VERTEX_CREDENTIALS)",
    },
    EnvVar {
        name: "BEDROCK_AWS_REGION",
        default: providers::bedrock::DEFAULT_REGION,
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

/// A variable to read: its name in the environment and its row of `ENV_VARS`, the name itself
/// or, for a family, the pattern (`ROTATION_MODE_<PROVIDER>` for `ROTATION_MODE_OPENAI`).
#[derive(Debug, Clone)]
pub struct Var {
    name: String,
    row: &'static str,
}

impl Var {
    /// A member of a family: `row`'s placeholder (`<PROVIDER>`, `<N>`) replaced by `member`.
    pub fn family(row: &'static str, member: &str) -> Var {
        let name = match (row.find('<'), row.find('>')) {
            (Some(start), Some(end)) if start < end => format!("{}{member}{}", &row[..start], &row[end + 1..]),
            _ => row.to_string(),
        };
        Var { name, row }
    }

    /// The variable's name in the environment, for error messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl From<&'static str> for Var {
    fn from(name: &'static str) -> Var {
        Var { name: name.to_string(), row: name }
    }
}

/// The default `ENV_VARS` gives `row`; a row the table lacks is an error, so an undocumented
/// read fails the first load (and the unit test that loads an empty environment).
pub fn default_of(row: &str) -> Result<&'static str> {
    ENV_VARS
        .iter()
        .find(|v| v.name == row)
        .map(|v| v.default)
        .ok_or_else(|| Error::Config(format!("{row} is read but missing from ENV_VARS")))
}

/// The merged environment, read through `ENV_VARS`. A variable set to blanks counts as unset.
#[derive(Clone, Copy)]
pub struct Vars<'a> {
    env: &'a BTreeMap<String, String>,
}

impl<'a> Vars<'a> {
    pub fn new(env: &'a BTreeMap<String, String>) -> Vars<'a> {
        Vars { env }
    }

    /// The value as given (untrimmed), if set and not blank: for variables whose table default
    /// is a description ("unset", "-", "hostname-pid") rather than a value.
    pub fn optional(&self, var: impl Into<Var>) -> Result<Option<&'a str>> {
        let var = var.into();
        default_of(var.row)?;
        Ok(self.env.get(&var.name).map(String::as_str).filter(|v| !v.trim().is_empty()))
    }

    /// The value, else the table's default, trimmed.
    pub fn text(&self, var: impl Into<Var>) -> Result<&'a str> {
        Ok(self.given_or_default(&var.into())?.trim())
    }

    /// The value as given, else the table's default (error messages quote what was given).
    fn given_or_default(&self, var: &Var) -> Result<&'a str> {
        let default = default_of(var.row)?;
        Ok(self.env.get(&var.name).map(String::as_str).filter(|v| !v.trim().is_empty()).unwrap_or(default))
    }

    /// Seconds, fractions allowed, from 0 up to a billion.
    pub fn seconds(&self, var: impl Into<Var>) -> Result<Duration> {
        let var = var.into();
        let raw = self.given_or_default(&var)?;
        match raw.trim().parse::<f64>() {
            Ok(v) if (0.0..1e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
            _ => Err(Error::Config(format!("{} must be a number of seconds, got {raw:?}", var.name))),
        }
    }

    /// Like `seconds`, but zero is refused: a socket timeout of zero would mean "never".
    pub fn positive_seconds(&self, var: impl Into<Var>) -> Result<Duration> {
        let var = var.into();
        match self.seconds(var.clone())? {
            d if d.is_zero() => Err(Error::Config(format!("{} must be more than 0 seconds", var.name))),
            d => Ok(d),
        }
    }

    /// A whole number.
    pub fn number(&self, var: impl Into<Var>) -> Result<u64> {
        let var = var.into();
        let raw = self.given_or_default(&var)?;
        raw.trim().parse().map_err(|_| Error::Config(format!("{} must be a whole number, got {raw:?}", var.name)))
    }

    /// A true/false setting: `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off` (any case).
    pub fn flag(&self, var: impl Into<Var>) -> Result<bool> {
        let var = var.into();
        match self.given_or_default(&var)?.trim().to_ascii_lowercase().as_str() {
            "false" | "0" | "no" | "off" => Ok(false),
            "true" | "1" | "yes" | "on" => Ok(true),
            other => Err(Error::Config(format!("{} must be true or false, got {other:?}", var.name))),
        }
    }
}
