//! The interactive logins of `keyrelay oauth <provider>`: Gemini CLI and iFlow by the
//! authorization-code flow with a loopback callback server (`auth_code`, `callback`), Qwen Code
//! by the device flow (`device`). This module holds what they share: the options, the
//! endpoints (overridable by variables so the flows can run against local servers), PKCE and
//! random values, form encoding, the token endpoint calls, and saving the account through
//! `store` so that a second login of one account updates its file.
//!
//! Tokens never reach a message: errors quote only the endpoint's `error` code and a
//! shortened `error_description`, and what the user sees names the account, never a token.

pub mod auth_code;
pub mod callback;
pub mod device;

use super::{OAuthCredential, Provider, identity, store};
use crate::secret::Secret;
use crate::upstream::{Client, Method, TransportError, UpstreamRequest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How one login ends when it does not save a credential.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// The user said no (`access_denied`) or the device code expired: exit 1.
    Denied(String),
    /// `--timeout` passed first: exit 1.
    TimedOut,
    /// Anything else (an endpoint failed, the port is taken, a bad answer): exit 2.
    Failed(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Denied(why) => write!(f, "login refused: {why}"),
            LoginError::TimedOut => f.write_str("login timed out before it was completed"),
            LoginError::Failed(why) => write!(f, "login failed: {why}"),
        }
    }
}

pub type LoginResult<T> = Result<T, LoginError>;

/// What the command line asks of a login.
#[derive(Debug, Clone)]
pub struct Options {
    /// When the whole login must be over.
    pub deadline: Instant,
    /// Whether a browser may be opened (a display is there and `--no-browser` was not given).
    pub open_browser: bool,
    /// `--label`: the account name to store when the provider names none.
    pub label: Option<String>,
}

impl Options {
    /// Time left before the deadline, or `TimedOut`.
    pub fn remaining(&self) -> LoginResult<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or(LoginError::TimedOut)
    }
}

/// Gemini CLI's public installed-app client (the official CLI ships it; not a secret).
const GEMINI_CLIENT_ID: &str = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
const GEMINI_CLIENT_SECRET: &str = "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";
/// iFlow's public client, as its CLI ships it.
pub const IFLOW_CLIENT_ID: &str = "10009311001";
pub const IFLOW_CLIENT_SECRET: &str = "4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW";
/// Qwen Code's public client.
pub const QWEN_CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";

/// Every endpoint and port of the three logins, from the variables or the built-in values.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub gemini_auth_url: String,
    pub gemini_token_url: String,
    pub gemini_userinfo_url: String,
    pub gemini_client_id: String,
    pub gemini_client_secret: String,
    pub gemini_port: u16,
    /// An origin; the documented paths are appended.
    pub qwen_base: String,
    /// An origin; the documented paths are appended.
    pub iflow_base: String,
    pub iflow_port: u16,
}

impl Endpoints {
    /// Reads `GEMINI_CLI_AUTH_URL`, `GEMINI_CLI_TOKEN_URL`, `GEMINI_CLI_USERINFO_URL`,
    /// `GEMINI_CLI_CLIENT_ID`, `GEMINI_CLI_CLIENT_SECRET`, `GEMINI_CLI_OAUTH_PORT`,
    /// `QWEN_CODE_OAUTH_BASE`, `IFLOW_OAUTH_BASE` and `IFLOW_OAUTH_PORT`.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Endpoints, String> {
        let given = |name: &str| env.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        // Unset: the documented default (`ENV_VARS`), written once.
        let get = |name: &str| -> Result<String, String> {
            given(name)
                .map_or_else(|| crate::env_vars::default_of(name).map(String::from).map_err(|e| e.to_string()), Ok)
        };
        let origin = |name: &str| get(name).map(|v| v.trim_end_matches('/').to_string());
        Ok(Endpoints {
            gemini_auth_url: get("GEMINI_CLI_AUTH_URL")?,
            gemini_token_url: get("GEMINI_CLI_TOKEN_URL")?,
            gemini_userinfo_url: get("GEMINI_CLI_USERINFO_URL")?,
            // The Gemini CLI's own public client (its table row says so in words).
            gemini_client_id: given("GEMINI_CLI_CLIENT_ID").unwrap_or_else(|| GEMINI_CLIENT_ID.to_string()),
            gemini_client_secret: given("GEMINI_CLI_CLIENT_SECRET").unwrap_or_else(|| GEMINI_CLIENT_SECRET.to_string()),
            gemini_port: port(&get("GEMINI_CLI_OAUTH_PORT")?, "GEMINI_CLI_OAUTH_PORT")?,
            qwen_base: origin("QWEN_CODE_OAUTH_BASE")?,
            iflow_base: origin("IFLOW_OAUTH_BASE")?,
            iflow_port: port(&get("IFLOW_OAUTH_PORT")?, "IFLOW_OAUTH_PORT")?,
        })
    }
}

fn port(text: &str, name: &str) -> Result<u16, String> {
    text.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{name} must be a port from 1 to 65535"))
}

/// Runs the login of `provider` and saves the account. Returns the account and its file.
pub fn login(
    data_dir: &Path,
    provider: Provider,
    endpoints: &Endpoints,
    client: &Client,
    options: &Options,
) -> LoginResult<(String, PathBuf)> {
    let cred = match provider {
        Provider::GeminiCli => auth_code::gemini(endpoints, client, options)?,
        Provider::Iflow => auth_code::iflow(endpoints, client, options)?,
        Provider::QwenCode => device::qwen(endpoints, client, options)?,
    };
    save(data_dir, cred).map_err(|e| LoginError::Failed(format!("saving the {provider} account: {e}")))
}

/// Stores a fresh login: over the stored file of the same account (keeping what the file
/// holds that the login does not bring), else as a new file.
pub fn save(data_dir: &Path, fresh: OAuthCredential) -> std::io::Result<(String, PathBuf)> {
    let account = identity::account(&fresh);
    let key = identity::duplicate_key(&fresh);
    let (files, _) = store::list(data_dir)?;
    for file in files.iter().filter(|f| f.provider == fresh.provider) {
        let Ok(stored) = store::read(file.provider, &file.path) else { continue };
        if identity::duplicate_key(&stored) == key {
            let merged = merge(stored, fresh);
            store::rewrite(&merged)?;
            return Ok((account, file.path.clone()));
        }
    }
    let path = store::create(data_dir, fresh.provider, &fresh.to_file_text())?;
    Ok((account, path))
}

/// The stored credential with every value the login brought; `needs_login` cleared. The
/// expiry keeps the form (and field name) the file used, so its other readers still read it.
fn merge(mut stored: OAuthCredential, fresh: OAuthCredential) -> OAuthCredential {
    let keep_form = stored.expiry.as_ref().map(|e| e.form.clone());
    stored.access_token = fresh.access_token;
    stored.refresh_token = fresh.refresh_token.or(stored.refresh_token);
    stored.id_token = fresh.id_token.or(stored.id_token);
    stored.expiry = fresh.expiry.map(|mut e| {
        if let Some(form) = keep_form {
            e.form = match form {
                super::credential::ExpiryForm::Millis => super::credential::ExpiryForm::Millis,
                super::credential::ExpiryForm::Iso(_) => {
                    super::credential::ExpiryForm::Iso(crate::clock::rfc3339(e.at_ms))
                }
            };
        }
        e
    });
    let texts = [
        (&mut stored.token_type, fresh.token_type),
        (&mut stored.scope, fresh.scope),
        (&mut stored.client_id, fresh.client_id),
        (&mut stored.client_secret, fresh.client_secret),
        (&mut stored.token_uri, fresh.token_uri),
        (&mut stored.email, fresh.email),
        (&mut stored.resource_url, fresh.resource_url),
    ];
    for (slot, value) in texts {
        if value.is_some() {
            *slot = value;
        }
    }
    if fresh.api_key.is_some() {
        stored.api_key = fresh.api_key;
    }
    for (name, value) in fresh.extra {
        stored.extra.insert(name, value);
    }
    stored.needs_login = false;
    stored
}

/// `n` bytes from the kernel's random source.
pub fn random_bytes(n: usize) -> LoginResult<Vec<u8>> {
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| LoginError::Failed(format!("reading /dev/urandom: {e}")))?;
    Ok(bytes)
}

/// 32 random bytes in hex: the `state` of an authorization request.
pub fn random_state() -> LoginResult<String> {
    Ok(random_bytes(32)?.iter().map(|b| format!("{b:02x}")).collect())
}

/// A PKCE pair (RFC 7636, S256): the verifier (32 random bytes, base64url) and its challenge.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> LoginResult<Pkce> {
        let verifier = URL_SAFE_NO_PAD.encode(random_bytes(32)?);
        Ok(Pkce { challenge: challenge(&verifier), verifier })
    }
}

/// base64url(SHA-256(verifier)), without padding.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `a=1&b=2`, each name and value percent-encoded (a query string or a form body).
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect::<Vec<_>>().join("&")
}

/// An endpoint's answer: its status and its body as JSON (`Null` when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

impl Answer {
    /// The OAuth `error` code of an error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.json.get("error").and_then(Value::as_str)
    }

    /// What went wrong, for a message: the `error` code and a short description, never the
    /// whole body (which could echo what was sent).
    pub fn describe(&self, what: &str) -> String {
        let code = self.error_code().unwrap_or("no error code");
        let description = self.json.get("error_description").and_then(Value::as_str).unwrap_or_default();
        let description: String = description.chars().take(200).collect();
        match description.is_empty() {
            true => format!("{what} answered HTTP {} ({code})", self.status),
            false => format!("{what} answered HTTP {} ({code}: {description})", self.status),
        }
    }
}

/// Login answers are small; a bigger one is not an OAuth endpoint's.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Sends one request to a login endpoint and reads its JSON answer. `what` names the
/// endpoint in messages (the URL may carry a token in its query, so it is never quoted).
pub fn call(client: &Client, req: &UpstreamRequest, what: &str) -> LoginResult<Answer> {
    let mut response = client.send_unredacted(req).map_err(|e| {
        let why = match e {
            TransportError::Connect(_) => "could not connect",
            TransportError::Timeout(_) => "timed out",
            TransportError::Other(_) => "the connection failed",
        };
        LoginError::Failed(format!("{what}: {why}"))
    })?;
    let mut body = Vec::new();
    (&mut response.body)
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut body)
        .map_err(|_| LoginError::Failed(format!("{what}: the answer could not be read")))?;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(Answer { status: response.status, json })
}

/// A form POST with `Accept: application/json`, plus `headers`.
pub fn post_form(url: &str, body: &str, headers: &[(&str, String)]) -> UpstreamRequest {
    let mut all = vec![
        ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.clone())));
    UpstreamRequest { method: Method::Post, url: url.into(), headers: all, body: Some(body.into()), stream: false }
}

/// A GET with `Accept: application/json`, plus `headers`.
pub fn get(url: &str, headers: &[(&str, String)]) -> UpstreamRequest {
    let mut all = vec![("accept".to_string(), "application/json".to_string())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.clone())));
    UpstreamRequest { method: Method::Get, url: url.into(), headers: all, body: None, stream: false }
}

/// The tokens of a successful token answer, into `cred`. The expiry is `now + expires_in`.
pub fn take_tokens(cred: &mut OAuthCredential, json: &Value, what: &str) -> LoginResult<()> {
    let text = |name: &str| json.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access = text("access_token").ok_or_else(|| LoginError::Failed(format!("{what} sent no access_token")))?;
    let refresh = text("refresh_token").ok_or_else(|| LoginError::Failed(format!("{what} sent no refresh_token")))?;
    cred.access_token = Some(Secret::new(access));
    cred.refresh_token = Some(Secret::new(refresh));
    cred.id_token = text("id_token").map(Secret::new);
    cred.token_type = Some(text("token_type").unwrap_or("Bearer").to_string());
    cred.scope = text("scope").map(String::from);
    let expires_in = json.get("expires_in").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    cred.expiry = Some(super::credential::Expiry::millis(crate::clock::now_ms() + expires_in.unwrap_or(3600) * 1000));
    Ok(())
}

/// Opens `url` in the desktop's browser when allowed; failures are ignored, since the URL has
/// been printed anyway.
pub fn open_browser(url: &str, options: &Options) {
    if !options.open_browser {
        return;
    }
    let spawned = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        // Reaped on a thread of its own, so no zombie is left and the login never waits for it.
        std::thread::spawn(move || child.wait());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Source;
    use crate::oauth::store::tests::Scratch;

    #[test]
    fn the_challenge_is_rfc_7636_s256() {
        // SHA-256 of "abc" is the FIPS 180-2 example ba7816bf...15ad, here in base64url.
        assert_eq!(challenge("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        let pkce = Pkce::new().unwrap();
        assert_eq!(pkce.verifier.len(), 43);
        assert_eq!(challenge(&pkce.verifier), pkce.challenge);
        assert_ne!(Pkce::new().unwrap().verifier, pkce.verifier);
    }

    #[test]
    fn forms_encode_everything_but_unreserved_characters() {
        assert_eq!(form(&[("a b", "x/y?z=1&w"), ("k", "-._~")]), "a%20b=x%2Fy%3Fz%3D1%26w&k=-._~");
        assert_eq!(random_state().unwrap().len(), 64);
    }

    #[test]
    fn endpoints_default_and_ports_are_checked() {
        let mut env = BTreeMap::new();
        let e = Endpoints::from_env(&env).unwrap();
        assert_eq!((e.gemini_port, e.iflow_port, e.qwen_base.as_str()), (8085, 11451, "https://chat.qwen.ai"));
        env.insert("IFLOW_OAUTH_BASE".to_string(), "http://127.0.0.1:9/".to_string());
        env.insert("GEMINI_CLI_OAUTH_PORT".to_string(), "0".to_string());
        assert!(Endpoints::from_env(&env).unwrap_err().contains("GEMINI_CLI_OAUTH_PORT"));
        env.remove("GEMINI_CLI_OAUTH_PORT");
        assert_eq!(Endpoints::from_env(&env).unwrap().iflow_base, "http://127.0.0.1:9");
    }

    fn qwen(label: &str, refresh: &str) -> OAuthCredential {
        let mut c = OAuthCredential::new(Provider::QwenCode, Source::File(PathBuf::new()));
        c.email = Some(label.into());
        c.access_token = Some(Secret::new("at"));
        c.refresh_token = Some(Secret::new(refresh));
        c
    }

    #[test]
    fn a_second_login_of_an_account_updates_its_file_and_clears_needs_login() {
        let scratch = Scratch::new("login-save");
        let (_, first) = save(&scratch.0, qwen("work", "rt-1")).unwrap();
        let mut stored = store::read(Provider::QwenCode, &first).unwrap();
        stored.needs_login = true;
        stored.extra.insert("kept".into(), Value::Bool(true));
        store::rewrite(&stored).unwrap();
        let (account, again) = save(&scratch.0, qwen("Work", "rt-2")).unwrap();
        assert_eq!((account.as_str(), &again), ("Work", &first));
        let updated = store::read(Provider::QwenCode, &again).unwrap();
        assert_eq!(updated.refresh_token.unwrap().expose(), "rt-2");
        assert!(!updated.needs_login);
        assert_eq!(updated.extra.get("kept"), Some(&Value::Bool(true)));
        let (_, other) = save(&scratch.0, qwen("home", "rt-3")).unwrap();
        assert_ne!(other, first);
    }
}
