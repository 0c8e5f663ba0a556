//! The seam between a client request and the upstream: choose a key, call the upstream,
//! report the outcome, and rotate to the next key when the failure is the key's. Streams are
//! committed to a key once their first body bytes are in hand; before that they rotate like
//! any other call.

use crate::config::ProviderConfig;
use crate::error::ApiError;
use crate::providers::{self, openai::ErrorClass};
use crate::state::{AppState, lock};
use crate::upstream::{self, TransportError, UpstreamRequest};
use serde_json::Value;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

/// A key in use. Dropping it gives the key's slot back, on every path.
pub struct Lease {
    state: Arc<AppState>,
    provider: String,
    pub key_id: String,
    pub masked: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.state.pool).release(&self.provider, &self.key_id);
    }
}

/// A failed attempt, for error messages and logs (masked key, never the key).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: String,
    pub what: String,
}

pub enum Body {
    /// A non-streaming answer, read whole and checked to be JSON.
    Whole(Vec<u8>),
    /// A stream: the first bytes read, and the rest still to come.
    Stream { first: Vec<u8>, rest: Box<dyn Read + Send> },
}

pub struct Relayed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub lease: Lease,
    pub attempts: Vec<Attempt>,
}

/// The key used and the failed attempts, for the request log.
pub fn meta(relayed: &Relayed) -> serde_json::Map<String, Value> {
    let attempts: Vec<Value> =
        relayed.attempts.iter().map(|a| serde_json::json!({"key": a.key, "error": a.what})).collect();
    let mut meta = serde_json::Map::new();
    meta.insert("key".into(), Value::String(relayed.lease.masked.clone()));
    meta.insert("attempts".into(), Value::Array(attempts));
    meta
}

/// Sends `request` with the provider's keys in turn until one succeeds. A request error (the
/// upstream rejects the request itself) comes back at once; key failures rotate; when every
/// key failed the error names each key and why.
pub fn relay(
    state: &Arc<AppState>,
    provider: &ProviderConfig,
    request: &UpstreamRequest,
    deadline: Instant,
) -> Result<Relayed, ApiError> {
    let candidates = lock(&state.pool).rotation(&provider.name);
    if candidates.is_empty() {
        return Err(no_credentials(&provider.name));
    }
    let mut attempts = Vec::new();
    for candidate in candidates {
        if Instant::now() >= deadline {
            return Err(deadline_passed(provider, &attempts));
        }
        if !lock(&state.pool).acquire(&provider.name, &candidate.id) {
            continue;
        }
        let lease = Lease {
            state: state.clone(),
            provider: provider.name.clone(),
            key_id: candidate.id.clone(),
            masked: candidate.secret.masked(),
        };
        let keyed = providers::with_key(provider.family, request.clone(), &candidate.secret);
        let failure = match state.client.send(&keyed) {
            Err(e) => transport_failure(&e),
            Ok(mut response) if (200..300).contains(&response.status) => {
                match take_body(&mut response.body, request.stream) {
                    Ok(body) => {
                        return Ok(Relayed {
                            status: response.status,
                            headers: response.headers,
                            body,
                            lease,
                            attempts,
                        });
                    }
                    Err(why) => why,
                }
            }
            Ok(mut response) => {
                let body = upstream::read_all(&mut response.body).unwrap_or_default();
                let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let class = providers::openai::classify_error(response.status, &parsed);
                let error = providers::openai::upstream_error(response.status, &body, &candidate.secret);
                if class == ErrorClass::Request {
                    return Err(error);
                }
                format!("{} ({}: {})", class.describe(), response.status, error.message)
            }
        };
        log::warn!("{} key {} failed: {failure}", provider.name, lease.masked);
        attempts.push(Attempt { key: lease.masked.clone(), what: failure });
    }
    Err(all_failed(provider, &attempts))
}

/// Reads what a successful answer must have before it is accepted: the whole JSON body, or
/// the first bytes of a stream. A failure here is the upstream's, so the next key is tried.
fn take_body(body: &mut Box<dyn Read + Send>, stream: bool) -> Result<Body, String> {
    if stream {
        let mut first = vec![0u8; 16 * 1024];
        loop {
            match body.read(&mut first) {
                Ok(0) => return Err("stream closed before its first byte".into()),
                Ok(n) => {
                    first.truncate(n);
                    let rest = std::mem::replace(body, Box::new(std::io::empty()));
                    return Ok(Body::Stream { first, rest });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if upstream::is_timeout(&e) => {
                    return Err("timed out waiting for the first byte of the stream".into());
                }
                Err(e) => return Err(format!("stream failed before its first byte: {e}")),
            }
        }
    }
    let bytes = match upstream::read_all(body) {
        Ok(bytes) => bytes,
        Err(e) if upstream::is_timeout(&e) => return Err("timed out reading the response".into()),
        Err(e) => return Err(format!("response body cut off: {e}")),
    };
    if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return Err("upstream answered 2xx with a body that is not JSON".into());
    }
    Ok(Body::Whole(bytes))
}

fn transport_failure(e: &TransportError) -> String {
    format!("upstream error ({e})")
}

pub fn no_credentials(provider: &str) -> ApiError {
    ApiError::new(
        400,
        "invalid_request_error",
        "no_credentials",
        format!("no credentials for provider '{provider}': set {}_API_KEY in .env", provider.to_ascii_uppercase()),
    )
}

fn list(attempts: &[Attempt]) -> String {
    attempts.iter().map(|a| format!("{} {}", a.key, a.what)).collect::<Vec<_>>().join("; ")
}

fn all_failed(provider: &ProviderConfig, attempts: &[Attempt]) -> ApiError {
    let n = attempts.len();
    let keys = if n == 1 { "key" } else { "keys" };
    ApiError::new(
        502,
        "api_error",
        "upstream_error",
        format!("all {n} {keys} of {} failed: {}", provider.name, list(attempts)),
    )
}

fn deadline_passed(provider: &ProviderConfig, attempts: &[Attempt]) -> ApiError {
    ApiError::new(
        504,
        "api_error",
        "timeout",
        format!("GLOBAL_TIMEOUT passed while rotating the keys of {}: {}", provider.name, list(attempts)),
    )
}
