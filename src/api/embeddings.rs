//! `POST /v1/embeddings`, with `encoding_format` honoured whatever the upstream returns.

use super::{Incoming, Reply, parse_object, resolve};
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::providers::{Family, gemini, openai};
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
    let request = match provider.family {
        Family::OpenAi => UpstreamRequest {
            method: Method::Post,
            url: format!("{}/embeddings", provider.base),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(openai::embeddings_body(body, &model)),
            stream: false,
        },
        Family::Gemini => gemini::build_embeddings(&provider.base, &model, &body)?,
        Family::Anthropic | Family::CodeAssist => {
            let message = format!("provider '{}' has no embeddings API", provider.name);
            return Err(ApiError::invalid_request(message).with_param("model"));
        }
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
    let upstream: Value = serde_json::from_slice(&bytes).expect("relay checked the body is JSON");
    let mut response = match provider.family {
        Family::Gemini => gemini::parse_embeddings(&model, &upstream).map_err(|why| unusable(provider, &why))?,
        _ => upstream,
    };
    openai::encode_embeddings(&mut response, base64_wanted).map_err(|why| unusable(provider, &why))?;
    let mut reply = Reply::json(200, &response);
    reply.meta = meta;
    Ok(reply)
}

fn unusable(provider: &ProviderConfig, why: &str) -> ApiError {
    let message = format!("{} answered an unusable embeddings response: {why}", provider.name);
    ApiError::new(502, "api_error", "upstream_error", message)
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
