//! The providers the environment configures: the built-in ones and those `<NAME>_API_BASE`
//! defines, with their keys (`<PROVIDER>_API_KEY[_<N>]`, Bedrock's AWS key pairs), models,
//! filters, concurrency and rotation, Azure's API version, and Vertex AI's project, location and
//! service accounts; and how OAuth credentials join their provider's key pool.

use super::models::ModelFilter;
use crate::env_vars::{Var, Vars};
use crate::error::{Error, Result};
use crate::oauth::{self, OAuthCredential};
use crate::providers::{self, Family};
use crate::secret::Secret;
use std::collections::BTreeMap;

/// How a provider spreads requests over its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Least used today first, ties at random.
    Balanced,
    /// Stay on the key used last while it is available.
    Sequential,
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

/// Puts each served OAuth credential into its provider's key pool (replacing what an earlier
/// call put there).
pub(super) fn attach_oauth(providers: &mut BTreeMap<String, ProviderConfig>, creds: &[OAuthCredential]) {
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
pub(super) fn vertex_config(env: &BTreeMap<String, String>) -> Result<VertexConfig> {
    let vars = Vars::new(env);
    let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let segment = |name: &str, value: &str| {
        providers::path_segment(value)
            .map(str::to_string)
            .map_err(|_| Error::Config(format!("{name} must be letters, digits, '.', '_' and '-' only, got {value:?}")))
    };
    let project = vars.optional("VERTEX_PROJECT")?.map(|p| segment("VERTEX_PROJECT", p.trim())).transpose()?;
    let location = segment("VERTEX_LOCATION", vars.text("VERTEX_LOCATION")?)?;
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
pub(super) fn attach_vertex(p: &mut ProviderConfig, vertex: &VertexConfig) -> Result<()> {
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
            priority: crate::oauth::tier::DEFAULT_PRIORITY,
        });
    }
    Ok(())
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

pub(super) fn discover_providers(env: &BTreeMap<String, String>) -> Result<BTreeMap<String, ProviderConfig>> {
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
        let sep = crate::secret::FIELD_SEPARATOR;
        let joined = match value(format!("{TOKEN}{tail}")) {
            Some(token) => format!("{id}{sep}{secret}{sep}{token}"),
            None => format!("{id}{sep}{secret}"),
        };
        pairs.push(Secret::new(&joined));
    }
    Ok(pairs)
}

/// One provider's settings; its keys are added by `discover_providers`.
fn provider(env: &BTreeMap<String, String>, name: &str, default_base: &str, family: Family) -> Result<ProviderConfig> {
    let vars = Vars::new(env);
    let upper = name.to_ascii_uppercase();
    let member = |row: &'static str| Var::family(row, &upper);
    let region = match name {
        providers::bedrock::NAME => bedrock_region(vars)?,
        _ => String::new(),
    };
    let default_base = match name {
        providers::bedrock::NAME => providers::bedrock::default_base(&region),
        _ => default_base.to_string(),
    };
    let base_from_env = vars.optional(member("<PROVIDER>_API_BASE"))?;
    let base = base_from_env.unwrap_or(&default_base).trim().trim_end_matches('/').to_string();
    let static_models = match vars.optional(member("<PROVIDER>_MODELS"))? {
        None => Vec::new(),
        Some(raw) => serde_json::from_str::<Vec<String>>(raw)
            .map_err(|_| Error::Config(format!("{upper}_MODELS must be a JSON array of strings, got {raw:?}")))?,
    };
    let filter = ModelFilter::parse(
        vars.optional(member("IGNORE_MODELS_<PROVIDER>"))?,
        vars.optional(member("WHITELIST_MODELS_<PROVIDER>"))?,
    );
    let api_version = match name {
        providers::azure::NAME => azure_api_version(vars)?,
        _ => String::new(),
    };
    Ok(ProviderConfig {
        name: name.to_string(),
        family,
        base,
        keys: Vec::new(),
        static_models,
        filter,
        max_concurrent: max_concurrent(vars, member("MAX_CONCURRENT_REQUESTS_PER_KEY_<PROVIDER>"))?,
        rotation: rotation(vars, member("ROTATION_MODE_<PROVIDER>"))?,
        oauth: Vec::new(),
        base_from_env: base_from_env.is_some(),
        api_version,
        region,
    })
}

/// `MAX_CONCURRENT_REQUESTS_PER_KEY_<P>`: at least 1.
fn max_concurrent(vars: Vars, var: Var) -> Result<u32> {
    let v = vars.text(var.clone())?;
    v.parse::<u32>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| Error::Config(format!("{} must be a whole number of at least 1, got {v:?}", var.name())))
}

/// `ROTATION_MODE_<P>`: balanced or sequential, any case.
fn rotation(vars: Vars, var: Var) -> Result<Rotation> {
    match vars.text(var.clone())?.to_ascii_lowercase().as_str() {
        "balanced" => Ok(Rotation::Balanced),
        "sequential" => Ok(Rotation::Sequential),
        other => Err(Error::Config(format!("{} must be balanced or sequential, got {other:?}", var.name()))),
    }
}

/// `BEDROCK_AWS_REGION`, which goes into a host name and SigV4's scope, so only region-shaped.
fn bedrock_region(vars: Vars) -> Result<String> {
    match vars.text("BEDROCK_AWS_REGION")? {
        r if providers::bedrock::valid_region(r) => Ok(r.to_string()),
        r => Err(Error::Config(format!("BEDROCK_AWS_REGION must look like us-east-1, got {r:?}"))),
    }
}

/// `AZURE_API_VERSION`, which goes into a query string, so only plain characters.
fn azure_api_version(vars: Vars) -> Result<String> {
    match vars.text("AZURE_API_VERSION")? {
        v if providers::azure::valid_api_version(v) => Ok(v.to_string()),
        v => Err(Error::Config(format!(
            "AZURE_API_VERSION must be letters, digits, '.', '_' and '-' (like 2024-10-21), got {v:?}"
        ))),
    }
}
