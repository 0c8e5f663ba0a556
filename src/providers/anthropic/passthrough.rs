//! The Anthropic Messages API passed through to Anthropic, for `/v1/messages` on an
//! `anthropic/*` model.

use crate::upstream::{Method, UpstreamRequest};

/// The Anthropic Messages API passed through to Anthropic (`path` is `messages` or
/// `messages/count_tokens`): the client's body as it came but for the model id (the caller
/// swaps it in), and the client's `anthropic-*` headers (`anthropic-beta` above all), except
/// `anthropic-version`, which `providers::with_key` sets with the key. Every other client
/// header stays here: the proxy key, hop-by-hop and encoding headers are the proxy's own.
/// The `oauth-*` betas say the request carries an OAuth token; it carries a pool API key
/// instead, so they are left out.
pub fn build_passthrough(
    base: &str,
    path: &str,
    body: Vec<u8>,
    client_headers: &[(String, String)],
    stream: bool,
) -> UpstreamRequest {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    for (name, value) in client_headers {
        if !name.starts_with("anthropic-") || name == "anthropic-version" {
            continue;
        }
        let value = match name.as_str() {
            "anthropic-beta" => {
                let kept: Vec<&str> =
                    value.split(',').map(str::trim).filter(|b| !b.is_empty() && !b.starts_with("oauth-")).collect();
                kept.join(",")
            }
            _ => value.clone(),
        };
        if !value.is_empty() {
            headers.push((name.clone(), value));
        }
    }
    UpstreamRequest { method: Method::Post, url: format!("{base}/{path}"), headers, body: Some(body), stream }
}
