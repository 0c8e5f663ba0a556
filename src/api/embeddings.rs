//! `POST /v1/embeddings`, with `encoding_format` honoured whatever the upstream returns.
//! Token-id inputs (`[1, 2, 3]` or `[[1, 2], [3]]`, as LangChain's `OpenAIEmbeddings` sends)
//! go unchanged to OpenAI-compatible upstreams, and are decoded to text for Gemini, which
//! embeds text only. The answer names the model `provider/` + the id the upstream answered
//! with, as every route does.

use super::{Incoming, Reply, parse_object, resolve};
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::providers::{Family, gemini, openai};
use crate::relay;
use crate::state::AppState;
use crate::tokens;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let mut body = parse_object(&req.body)?;
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
        Family::Gemini => {
            let named = body.get("model").and_then(Value::as_str).unwrap_or(&model).to_string();
            if let Some(input) = body.get_mut("input") {
                *input = texts_of(&named, input)?;
            }
            gemini::build_embeddings(&provider.base, &model, &body)?
        }
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
    if let Some(object) = response.as_object_mut() {
        let answered = object.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(&model);
        let named = super::chat::answer_model(&provider.name, answered);
        object.insert("model".into(), Value::String(named));
    }
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

/// `input` with every token-id list decoded to its text, in the encoding the client's model
/// name implies (`tokens::decode`); strings stay as they are.
fn texts_of(model: &str, input: &Value) -> Result<Value, ApiError> {
    let Value::Array(items) = input else { return Ok(input.clone()) };
    if items.iter().all(Value::is_u64) {
        return Ok(Value::String(decode(model, items, "input")?));
    }
    let mut texts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        texts.push(match item {
            Value::Array(ids) => Value::String(decode(model, ids, &format!("input[{i}]"))?),
            other => other.clone(),
        });
    }
    Ok(Value::Array(texts))
}

fn decode(model: &str, ids: &[Value], at: &str) -> Result<String, ApiError> {
    let bad = |why: String| ApiError::invalid_request(format!("{at}: {why}")).with_param("input");
    let ids: Vec<u32> = ids
        .iter()
        .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a token-id list holds integers only".into()))?;
    if ids.is_empty() {
        return Err(bad("a token-id list must not be empty".into()));
    }
    tokens::decode(model, &ids).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_ids_become_text() {
        let hello = json!([9906, 11, 1917, 0]);
        assert_eq!(texts_of("gemini/text-embedding-004", &hello).unwrap(), json!("Hello, world!"));
        let several = json!([[9906, 11], [1917, 0], "as is"]);
        assert_eq!(texts_of("text-embedding-004", &several).unwrap(), json!(["Hello,", " world!", "as is"]));
        assert_eq!(texts_of("m", &json!(["a", "b"])).unwrap(), json!(["a", "b"]));
        assert_eq!(texts_of("m", &json!("a")).unwrap(), json!("a"));
        let e = texts_of("m", &json!([[1], [-1]])).unwrap_err();
        assert_eq!((e.param.as_deref(), e.message.starts_with("input[1]")), (Some("input"), true));
        assert!(texts_of("m", &json!([[]])).is_err());
        assert!(texts_of("m", &json!([4_000_000_000_u64])).is_err());
    }
}
