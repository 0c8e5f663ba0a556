//! The device login of Qwen Code (RFC 8628, with PKCE S256): ask for a device code, print the
//! complete verification URL on one line and the user code alone on the next, then poll the
//! token endpoint until the user approves, refuses, or the code or `--timeout` runs out.
//!
//! Polling follows the server: it waits the `interval` the device code answer gave (2 seconds,
//! Qwen Code's own pace, when it gives none) before each poll. On `slow_down` the interval
//! grows by 5 seconds, as RFC 8628 section 3.5 says, unless that answer names a new
//! `interval`, which is then taken as the server's word. So a real server that only says
//! `slow_down` gets the RFC's back-off, and a test server can ask for a short one without the
//! test racing against a sleep.

use super::{
    Endpoints, LoginError, LoginResult, Options, Pkce, QWEN_CLIENT_ID, call, form, open_browser, post_form,
    random_bytes, take_tokens,
};
use crate::oauth::{OAuthCredential, Provider, Source};
use crate::upstream::Client;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const SCOPE: &str = "openid profile email model.completion";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// What the device code endpoint handed out.
struct DeviceCode {
    device_code: String,
    user_code: String,
    url: String,
    interval: Duration,
}

/// Qwen Code's login.
pub fn qwen(ep: &Endpoints, client: &Client, options: &Options) -> LoginResult<OAuthCredential> {
    let pkce = Pkce::new()?;
    let device = device_code(ep, client, &pkce)?;
    eprintln!("To log in to qwen_code, open this URL in a browser and approve the code below it:");
    eprintln!("{}", device.url);
    eprintln!("{}", device.user_code);
    eprintln!("Waiting for the approval...");
    open_browser(&device.url, options);
    let token = poll(ep, client, options, &device, &pkce)?;
    let mut cred = OAuthCredential::new(Provider::QwenCode, Source::File(PathBuf::new()));
    take_tokens(&mut cred, &token, "the Qwen token endpoint")?;
    cred.resource_url = token.get("resource_url").and_then(Value::as_str).map(String::from);
    // Qwen's answer names no account: the label does, else `identity` finds one.
    cred.email = options.label.clone();
    Ok(cred)
}

fn device_code(ep: &Endpoints, client: &Client, pkce: &Pkce) -> LoginResult<DeviceCode> {
    let body = form(&[
        ("client_id", QWEN_CLIENT_ID),
        ("scope", SCOPE),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ]);
    let url = format!("{}/api/v1/oauth2/device/code", ep.qwen_base);
    let what = "the Qwen device code endpoint";
    let answer = call(client, &post_form(&url, &body, &[("x-request-id", request_id()?)]), what)?;
    let text = |name: &str| answer.json.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (Some(device_code), Some(user_code)) = (text("device_code"), text("user_code")) else {
        return Err(LoginError::Failed(answer.describe(what)));
    };
    let Some(url) = text("verification_uri_complete").or(text("verification_uri")) else {
        return Err(LoginError::Failed(format!("{what} gave no verification URL")));
    };
    let interval = answer.json.get("interval").and_then(Value::as_u64).map(Duration::from_secs);
    Ok(DeviceCode {
        device_code: device_code.into(),
        user_code: user_code.into(),
        url: url.into(),
        interval: interval.unwrap_or(DEFAULT_INTERVAL),
    })
}

/// Polls until the token answer comes; returns its JSON.
fn poll(ep: &Endpoints, client: &Client, options: &Options, device: &DeviceCode, pkce: &Pkce) -> LoginResult<Value> {
    let url = format!("{}/api/v1/oauth2/token", ep.qwen_base);
    let body = form(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", QWEN_CLIENT_ID),
        ("device_code", &device.device_code),
        ("code_verifier", &pkce.verifier),
    ]);
    let what = "the Qwen token endpoint";
    let mut interval = device.interval;
    loop {
        wait(interval, options)?;
        let answer = call(client, &post_form(&url, &body, &[]), what)?;
        if (200..300).contains(&answer.status) && answer.json.get("access_token").is_some() {
            return Ok(answer.json);
        }
        match answer.error_code() {
            Some("authorization_pending") => {}
            Some("slow_down") => {
                let named = answer.json.get("interval").and_then(Value::as_u64).map(Duration::from_secs);
                interval = named.unwrap_or(interval + SLOW_DOWN_STEP);
            }
            Some("access_denied") => return Err(LoginError::Denied("access was denied".into())),
            Some("expired_token") => return Err(LoginError::Denied("the device code expired".into())),
            _ => return Err(LoginError::Failed(answer.describe(what))),
        }
    }
}

/// Sleeps `interval`, or times out when the deadline comes first.
fn wait(interval: Duration, options: &Options) -> LoginResult<()> {
    let left = options.remaining()?;
    if interval >= left {
        std::thread::sleep(left);
        return Err(LoginError::TimedOut);
    }
    std::thread::sleep(interval);
    Ok(())
}

/// A random UUID (version 4) for `x-request-id`.
fn request_id() -> LoginResult<String> {
    let mut b = random_bytes(16)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}
