//! `POST /v1/embeddings`, with `encoding_format` honoured whatever the upstream returns.

use super::{Incoming, Reply, parse_object, resolve};
use crate::config::Config;
use crate::error::ApiError;
use crate::providers::openai;
use crate::relay;
use crate::state::AppState;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    let (provider, model) = resolve(config, &body)?;
    check_input(body.get("input"))?;
    let base64_wanted = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(ApiError::invalid_request("'encoding_format' must be \"float\" or \"base64\"")
                .with_param("encoding_format"));
        }
    };
    let request = UpstreamRequest {
        method: Method::Post,
        url: format!("{}/embeddings", provider.base),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(openai::embeddings_body(body, &model)),
        stream: false,
    };
    let relayed = relay::relay(state, provider, &model, &request, Instant::now() + config.settings.global_timeout)?;
    log::debug!(
        "embeddings {}/{model} key={} attempts={}",
        provider.name,
        relayed.lease.masked,
        relayed.attempts.len() + 1
    );
    let meta = relay::meta(&relayed);
    let relay::Body::Whole(bytes) = relayed.body else { unreachable!("a non-streaming call returns a whole body") };
    let mut response: Value = serde_json::from_slice(&bytes).expect("relay checked the body is JSON");
    openai::encode_embeddings(&mut response, base64_wanted).map_err(|why| {
        ApiError::new(
            502,
            "api_error",
            "upstream_error",
            format!("{} answered an unusable embeddings response: {why}", provider.name),
        )
    })?;
    let mut reply = Reply::json(200, &response);
    reply.meta = meta;
    Ok(reply)
}

/// `input`: a non-empty string, or a non-empty array of strings, token ids or token-id arrays.
fn check_input(input: Option<&Value>) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::invalid_request(why).with_param("input"));
    match input {
        None => bad("missing required field 'input'"),
        Some(Value::String(s)) if s.is_empty() => bad("'input' must not be empty"),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => bad("'input' must not be an empty array"),
        Some(Value::Array(items)) if items.iter().all(|i| i.is_string() || i.is_u64() || i.is_array()) => Ok(()),
        Some(_) => bad("'input' must be a string or an array of strings or token ids"),
    }
}
