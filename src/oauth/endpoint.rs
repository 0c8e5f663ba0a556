//! The token endpoints: one refresh call per provider, over the shared upstream client.
//! Qwen: a form POST of `grant_type=refresh_token`, `refresh_token` and the public client id to
//! `<QWEN_CODE_OAUTH_BASE>/api/v1/oauth2/token`. Gemini CLI: the same form with the client id
//! and secret to `GEMINI_CLI_TOKEN_URL`, else the credential's `token_uri`, else Google's.
//! iFlow: the same form with the client id and secret in the form and in a Basic header to
//! `<IFLOW_OAUTH_BASE>/oauth/token`, then `getUserInfo` for the API key, which may have
//! changed. A 400 or 401 (or an `invalid_grant` error) is a refusal: the refresh token is dead.

use super::{OAuthCredential, Provider};
use crate::secret::Secret;
use crate::upstream::{self, Client, Method, UpstreamRequest};
use base64::Engine;
use serde_json::Value;

const QWEN_CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";
const QWEN_TOKEN_PATH: &str = "/api/v1/oauth2/token";
const GEMINI_CLIENT_ID: &str = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
const GEMINI_CLIENT_SECRET: &str = "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";
const IFLOW_CLIENT_ID: &str = "10009311001";
const IFLOW_CLIENT_SECRET: &str = "4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW";

/// Where tokens are refreshed; each has a variable so tests can point it at a local server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub qwen_oauth_base: String,
    /// `GEMINI_CLI_TOKEN_URL`, which wins over a credential's `token_uri`.
    pub gemini_token_url: Option<String>,
    pub iflow_oauth_base: String,
}

impl Endpoints {
    pub fn from_env<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Endpoints {
        // The defaults are the documented ones (`ENV_VARS`), written once.
        let default = |name: &str| crate::env_vars::default_of(name).unwrap_or_default();
        let origin = |name: &str| get(name).unwrap_or(default(name)).trim().trim_end_matches('/').to_string();
        Endpoints {
            qwen_oauth_base: origin("QWEN_CODE_OAUTH_BASE"),
            gemini_token_url: get("GEMINI_CLI_TOKEN_URL").map(|u| u.trim().to_string()),
            iflow_oauth_base: origin("IFLOW_OAUTH_BASE"),
        }
    }
}

impl Default for Endpoints {
    fn default() -> Endpoints {
        Endpoints::from_env(|_| None)
    }
}

/// What a successful refresh brought.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub access_token: Option<Secret>,
    /// A new refresh token when the provider rotates them (Qwen does).
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub expires_in: Option<u64>,
    pub resource_url: Option<String>,
    pub api_key: Option<Secret>,
}

/// Why a refresh did not bring tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// The token endpoint refused the refresh token: only a new login helps.
    Refused(String),
    /// Anything else (network, 5xx, 429, an answer without a token): try again later.
    Failed(String),
}

/// The call that turns a refresh token into new tokens; a trait so the single-flight and
/// file rules of `refresh` are tested without a network.
pub trait TokenEndpoint: Sync {
    fn refresh(&self, cred: &OAuthCredential) -> Result<Tokens, RefreshError>;
}

/// The real endpoints, over the upstream client.
pub struct Http<'a> {
    pub client: &'a Client,
    pub endpoints: &'a Endpoints,
}

impl TokenEndpoint for Http<'_> {
    fn refresh(&self, cred: &OAuthCredential) -> Result<Tokens, RefreshError> {
        let refresh = cred.refresh_token.as_ref().ok_or_else(|| RefreshError::Refused("no refresh token".into()))?;
        let refresh = refresh.expose();
        let (url, form, basic) = match cred.provider {
            Provider::QwenCode => (
                format!("{}{QWEN_TOKEN_PATH}", self.endpoints.qwen_oauth_base),
                vec![("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", QWEN_CLIENT_ID)],
                None,
            ),
            Provider::GeminiCli => {
                let url = self.endpoints.gemini_token_url.clone().or_else(|| cred.token_uri.clone());
                let client_id = cred.client_id.as_deref().unwrap_or(GEMINI_CLIENT_ID);
                let secret = cred.client_secret.as_deref().unwrap_or(GEMINI_CLIENT_SECRET);
                (
                    url.unwrap_or_else(|| {
                        crate::env_vars::default_of("GEMINI_CLI_TOKEN_URL").unwrap_or_default().into()
                    }),
                    vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh),
                        ("client_id", client_id),
                        ("client_secret", secret),
                    ],
                    None,
                )
            }
            Provider::Iflow => (
                format!("{}/oauth/token", self.endpoints.iflow_oauth_base),
                vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", IFLOW_CLIENT_ID),
                    ("client_secret", IFLOW_CLIENT_SECRET),
                ],
                Some(format!("{IFLOW_CLIENT_ID}:{IFLOW_CLIENT_SECRET}")),
            ),
        };
        let mut headers = vec![
            ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if let Some(basic) = basic {
            let encoded = base64::engine::general_purpose::STANDARD.encode(basic);
            headers.push(("authorization".into(), format!("Basic {encoded}")));
        }
        let request = UpstreamRequest {
            method: Method::Post,
            url,
            headers,
            body: Some(form_encode(&form).into_bytes()),
            stream: false,
        };
        let answer = self.call(&request)?;
        let mut tokens = read_tokens(&answer)?;
        if cred.provider == Provider::Iflow {
            tokens.api_key = Some(self.iflow_api_key(tokens.access_token.as_ref().unwrap_or(&Secret::new("")))?);
        }
        Ok(tokens)
    }
}

impl Http<'_> {
    /// Sends `request` and reads its JSON answer; the body is not redacted, since it holds the
    /// credential's own tokens, and never reaches a message.
    fn call(&self, request: &UpstreamRequest) -> Result<Value, RefreshError> {
        let mut response = self
            .client
            .send_unredacted(request)
            .map_err(|e| RefreshError::Failed(format!("token endpoint unreachable: {e}")))?;
        let bytes = upstream::read_all(&mut response.body)
            .map_err(|e| RefreshError::Failed(format!("token endpoint answer cut off: {e}")))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error = body.get("error").and_then(|e| e.as_str().or_else(|| e.get("code").and_then(Value::as_str)));
        let status = response.status;
        // Only the error code is quoted: an error description may echo what was sent.
        let code = error.map(|e| format!(" ({})", e.chars().take(60).collect::<String>())).unwrap_or_default();
        if status == 400 || status == 401 || error == Some("invalid_grant") {
            return Err(RefreshError::Refused(format!("the token endpoint refused the refresh: {status}{code}")));
        }
        if !(200..300).contains(&status) {
            return Err(RefreshError::Failed(format!("the token endpoint answered {status}{code}")));
        }
        Ok(body)
    }

    fn iflow_api_key(&self, access: &Secret) -> Result<Secret, RefreshError> {
        let url = format!(
            "{}/api/oauth/getUserInfo?{}",
            self.endpoints.iflow_oauth_base,
            form_encode(&[("accessToken", access.expose())])
        );
        let request = UpstreamRequest {
            method: Method::Get,
            url,
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
            stream: false,
        };
        let body = self.call(&request)?;
        body.pointer("/data/apiKey")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(Secret::new)
            .ok_or_else(|| RefreshError::Failed("iFlow's getUserInfo answered without an API key".into()))
    }
}

fn read_tokens(body: &Value) -> Result<Tokens, RefreshError> {
    let text = |name: &str| body.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access =
        text("access_token").ok_or_else(|| RefreshError::Failed("the token answer has no access_token".into()))?;
    let expires_in = body.get("expires_in").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    Ok(Tokens {
        access_token: Some(Secret::new(access)),
        refresh_token: text("refresh_token").map(Secret::new),
        id_token: text("id_token").map(Secret::new),
        expires_in,
        resource_url: text("resource_url").map(String::from),
        api_key: None,
    })
}

/// `application/x-www-form-urlencoded`: unreserved bytes as they are, every other byte `%XX`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_encode_every_reserved_byte() {
        assert_eq!(form_encode(&[("a b", "1/2+3=é"), ("k", "v-._~")]), "a%20b=1%2F2%2B3%3D%C3%A9&k=v-._~");
    }

    #[test]
    fn endpoints_take_origins_without_a_trailing_slash() {
        let env = [("QWEN_CODE_OAUTH_BASE", "http://127.0.0.1:9/"), ("GEMINI_CLI_TOKEN_URL", "http://127.0.0.1:9/t")];
        let e = Endpoints::from_env(|n| env.iter().find(|(k, _)| *k == n).map(|(_, v)| *v));
        assert_eq!(e.qwen_oauth_base, "http://127.0.0.1:9");
        assert_eq!(e.gemini_token_url.as_deref(), Some("http://127.0.0.1:9/t"));
        assert_eq!(e.iflow_oauth_base, "https://iflow.cn");
    }

    #[test]
    fn a_token_answer_needs_an_access_token() {
        let t =
            read_tokens(&serde_json::json!({"access_token": "a", "expires_in": "60", "refresh_token": "r"})).unwrap();
        assert_eq!((t.expires_in, t.refresh_token.unwrap().expose()), (Some(60), "r"));
        assert!(matches!(read_tokens(&serde_json::json!({"expires_in": 5})), Err(RefreshError::Failed(_))));
    }
}
