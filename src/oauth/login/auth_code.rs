//! The authorization-code logins: Gemini CLI (with PKCE, S256) and iFlow (without; its token
//! endpoint takes the client secret instead). Both bind the loopback callback server first,
//! print the authorization URL on a line of its own, open a browser when allowed, wait for
//! the callback with their `state`, and exchange its code for tokens. Gemini then names the
//! account by the id_token's email (else the userinfo endpoint's); iFlow fetches the account's
//! API key with the access token, since iFlow's API takes that key, not the token.

use super::callback::{self, CallbackServer};
use super::{
    Answer, Endpoints, IFLOW_CLIENT_ID, IFLOW_CLIENT_SECRET, LoginError, LoginResult, Options, Pkce, call, encode,
    form, get, open_browser, post_form, random_state, take_tokens,
};
use crate::oauth::credential::{ApiKeyField, Expiry, ExpiryForm};
use crate::oauth::{OAuthCredential, Provider, Source, identity};
use crate::secret::Secret;
use crate::upstream::Client;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use std::path::PathBuf;

const GEMINI_SCOPES: &str = "https://www.googleapis.com/auth/cloud-platform \
                             https://www.googleapis.com/auth/userinfo.email \
                             https://www.googleapis.com/auth/userinfo.profile";

/// Gemini CLI's login.
pub fn gemini(ep: &Endpoints, client: &Client, options: &Options) -> LoginResult<OAuthCredential> {
    let server = CallbackServer::bind(ep.gemini_port)?;
    let redirect = format!("http://127.0.0.1:{}{}", ep.gemini_port, callback::PATH);
    let (state, pkce) = (random_state()?, Pkce::new()?);
    let query = form(&[
        ("client_id", &ep.gemini_client_id),
        ("redirect_uri", &redirect),
        ("response_type", "code"),
        ("scope", GEMINI_SCOPES),
        ("access_type", "offline"),
        // Google sends a refresh token only when consent is given, so it is always asked.
        ("prompt", "consent"),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
        ("state", &state),
    ]);
    announce(Provider::GeminiCli, &with_query(&ep.gemini_auth_url, &query), options);
    let code = server.wait(&state, options)?;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &redirect),
        ("client_id", &ep.gemini_client_id),
        ("client_secret", &ep.gemini_client_secret),
        ("code_verifier", &pkce.verifier),
    ]);
    let what = "the Gemini token endpoint";
    let answer = token_answer(call(client, &post_form(&ep.gemini_token_url, &body, &[]), what)?, what)?;
    let mut cred = OAuthCredential::new(Provider::GeminiCli, Source::File(PathBuf::new()));
    take_tokens(&mut cred, &answer.json, what)?;
    cred.client_id = Some(ep.gemini_client_id.clone());
    cred.client_secret = Some(ep.gemini_client_secret.clone());
    cred.token_uri = Some(ep.gemini_token_url.clone());
    cred.email = match identity::claim(cred.id_token.as_ref(), &["email"]) {
        Some(email) => Some(email),
        None => userinfo_email(ep, client, &cred)?.or_else(|| options.label.clone()),
    };
    Ok(cred)
}

/// The email of the userinfo endpoint, asked with the new access token.
fn userinfo_email(ep: &Endpoints, client: &Client, cred: &OAuthCredential) -> LoginResult<Option<String>> {
    let token = cred.access_token.as_ref().map(Secret::expose).unwrap_or_default();
    let req = get(&ep.gemini_userinfo_url, &[("authorization", format!("Bearer {token}"))]);
    let what = "the Gemini userinfo endpoint";
    let answer = call(client, &req, what)?;
    if !(200..300).contains(&answer.status) {
        return Err(LoginError::Failed(answer.describe(what)));
    }
    Ok(answer.json.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()).map(String::from))
}

/// iFlow's login.
pub fn iflow(ep: &Endpoints, client: &Client, options: &Options) -> LoginResult<OAuthCredential> {
    let server = CallbackServer::bind(ep.iflow_port)?;
    // `localhost`, as iFlow's own CLI registers it; browsers reach it at 127.0.0.1.
    let redirect = format!("http://localhost:{}{}", ep.iflow_port, callback::PATH);
    let state = random_state()?;
    let query = form(&[
        ("loginMethod", "phone"),
        ("type", "phone"),
        ("redirect", &redirect),
        ("state", &state),
        ("client_id", IFLOW_CLIENT_ID),
    ]);
    announce(Provider::Iflow, &format!("{}/oauth?{query}", ep.iflow_base), options);
    let code = server.wait(&state, options)?;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &redirect),
        ("client_id", IFLOW_CLIENT_ID),
        ("client_secret", IFLOW_CLIENT_SECRET),
    ]);
    let basic = STANDARD.encode(format!("{IFLOW_CLIENT_ID}:{IFLOW_CLIENT_SECRET}"));
    let req =
        post_form(&format!("{}/oauth/token", ep.iflow_base), &body, &[("authorization", format!("Basic {basic}"))]);
    let what = "the iFlow token endpoint";
    let answer = token_answer(call(client, &req, what)?, what)?;
    let mut cred = OAuthCredential::new(Provider::Iflow, Source::File(PathBuf::new()));
    take_tokens(&mut cred, &answer.json, what)?;
    // New iFlow files carry an ISO 8601 UTC expiry, as the iFlow CLI writes it.
    if let Some(at_ms) = cred.expiry.as_ref().map(|e| e.at_ms) {
        cred.expiry = Some(Expiry { at_ms, form: ExpiryForm::Iso(crate::clock::rfc3339(at_ms)) });
    }
    iflow_user_info(ep, client, &mut cred, options)?;
    Ok(cred)
}

/// getUserInfo: the account's API key, and its email or phone as the account's name.
fn iflow_user_info(ep: &Endpoints, client: &Client, cred: &mut OAuthCredential, options: &Options) -> LoginResult<()> {
    let token = cred.access_token.as_ref().map(Secret::expose).unwrap_or_default();
    let url = format!("{}/api/oauth/getUserInfo?accessToken={}", ep.iflow_base, encode(token));
    let what = "the iFlow user info endpoint";
    let answer = call(client, &get(&url, &[]), what)?;
    let data = answer.json.get("data").filter(|_| answer.json.get("success") == Some(&Value::Bool(true)));
    let text =
        |name: &str| data.and_then(|d| d.get(name)).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let Some(api_key) = text("apiKey") else {
        let status = answer.status;
        return Err(LoginError::Failed(format!("{what} answered HTTP {status} without the account's API key")));
    };
    cred.api_key = Some(Secret::new(api_key));
    cred.api_key_field = ApiKeyField::Camel;
    if let Some(phone) = text("phone") {
        cred.extra.insert("phone".into(), Value::String(phone.into()));
    }
    // The phone, when there is no email, names the account through `identity` already.
    cred.email = match (text("email"), text("phone")) {
        (Some(email), _) => Some(email.to_string()),
        (None, Some(_)) => None,
        (None, None) => options.label.clone(),
    };
    Ok(())
}

/// A token answer that carries tokens, or why not: the user refused (exit 1) or it failed.
fn token_answer(answer: Answer, what: &str) -> LoginResult<Answer> {
    match answer.error_code() {
        Some("access_denied") => Err(LoginError::Denied(answer.describe(what))),
        _ if (200..300).contains(&answer.status) && answer.json.get("access_token").is_some() => Ok(answer),
        _ => Err(LoginError::Failed(answer.describe(what))),
    }
}

/// `url` with `query` appended (after `&` when it has a query already).
fn with_query(url: &str, query: &str) -> String {
    let joint = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joint}{query}")
}

/// Prints the authorization URL on a line of its own (on stderr, since stdout is the
/// command's output) and opens a browser when allowed.
fn announce(provider: Provider, url: &str, options: &Options) {
    eprintln!("To log in to {provider}, open this URL in a browser:");
    eprintln!("{url}");
    eprintln!("Waiting for the browser to come back...");
    open_browser(url, options);
}
