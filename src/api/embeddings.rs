//! `POST /v1/embeddings`, with `encoding_format` honoured whatever the upstream returns.
//! Token-id inputs (`[1, 2, 3]` or `[[1, 2], [3]]`, as LangChain's `OpenAIEmbeddings` sends)
//! go unchanged to OpenAI-compatible upstreams, and are decoded to text for Gemini, which
//! embeds text only. The answer names the model `provider/` + the id the upstream answered
//! with, as every route does. Concurrent requests are batched (`embed_batch`).

use super::{Incoming, Reply, parse_object, resolve};
use crate::config::{Config, ProviderConfig};
use crate::embed_batch;
use crate::error::ApiError;
use crate::providers::{Family, azure, gemini, openai, vertex};
use crate::relay;
use crate::state::AppState;
use crate::tokens;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    let (provider, model) = resolve(config, &body)?;
    let (items, kind) = input_items(body.get("input"))?;
    let base64_wanted = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(ApiError::invalid_request("'encoding_format' must be \"float\" or \"base64\"")
                .with_param("encoding_format"));
        }
    };
    // Bedrock's Converse API has no embeddings (Titan's are another API, `invoke`).
    if matches!(provider.family, Family::Anthropic | Family::CodeAssist | Family::Bedrock) {
        let message = format!("provider '{}' has no embeddings API", provider.name);
        return Err(ApiError::invalid_request(message).with_param("model"));
    }
    // Requests batch together only when everything but their inputs is the same.
    let mut shared = body.clone();
    shared.remove("input");
    let key = format!("{}/{model} {kind} {}", provider.name, Value::Object(shared));
    let settings = &config.settings;
    let (mut response, meta) = state.embedding_batches.run(
        key,
        items,
        settings.embedding_batch_window,
        settings.embedding_batch_max_inputs,
        |items| embed(state, config, provider, &model, &body, items),
    )?;
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

/// One upstream embeddings call for `items` (one request's inputs, or a batch's): the answer
/// in OpenAI's shape, and the request log's metadata.
fn embed(
    state: &Arc<AppState>,
    config: &Config,
    provider: &ProviderConfig,
    model: &str,
    body: &Map<String, Value>,
    items: Vec<Value>,
) -> embed_batch::Answer {
    let mut body = body.clone();
    body.insert("input".into(), Value::Array(items));
    let request = match provider.family {
        Family::Gemini => {
            let named = body.get("model").and_then(Value::as_str).unwrap_or(model).to_string();
            if let Some(input) = body.get_mut("input") {
                *input = texts_of(&named, input)?;
            }
            gemini::build_embeddings(&provider.base, model, &body)?
        }
        Family::Vertex => {
            let named = body.get("model").and_then(Value::as_str).unwrap_or(model).to_string();
            if let Some(input) = body.get_mut("input") {
                *input = texts_of(&named, input)?;
            }
            vertex::build_embeddings(&provider.base, model, &body)?
        }
        _ => {
            let request = UpstreamRequest {
                method: Method::Post,
                url: format!("{}/embeddings", provider.base),
                headers: vec![("content-type".into(), "application/json".into())],
                body: Some(openai::embeddings_body(body, model)),
                stream: false,
            };
            if provider.name == azure::NAME {
                azure::on_azure(request, &provider.base, &provider.api_version, model, "embeddings")?
            } else {
                request
            }
        }
    };
    let deadline = Instant::now() + config.settings.global_timeout;
    let relayed = relay::relay_whole(state, provider, model, &request, deadline)?;
    log::debug!(
        "embeddings {}/{model} key={} attempts={}",
        provider.name,
        relayed.lease.masked,
        relayed.attempts.len() + 1
    );
    let meta = relay::meta(&relayed);
    let upstream = relayed.body.value;
    let response = match provider.family {
        Family::Gemini => gemini::parse_embeddings(model, &upstream).map_err(|why| unusable(provider, &why))?,
        Family::Vertex => vertex::parse_embeddings(model, &upstream).map_err(|why| unusable(provider, &why))?,
        _ => upstream,
    };
    Ok((response, meta))
}

fn unusable(provider: &ProviderConfig, why: &str) -> ApiError {
    let message = format!("{} answered an unusable embeddings response: {why}", provider.name);
    ApiError::unusable_answer(message)
}

/// `input` as a list of items (a string, or one token-id list, is one item) and their kind
/// (`text`, `tokens` or `mixed`): a non-empty string, or a non-empty array of strings, token
/// ids or token-id arrays.
fn input_items(input: Option<&Value>) -> Result<(Vec<Value>, &'static str), ApiError> {
    let bad = |why: &str| Err(ApiError::invalid_request(why).with_param("input"));
    let items = match input {
        None => return bad("missing required field 'input'"),
        Some(Value::String(s)) if s.is_empty() => return bad("'input' must not be empty"),
        Some(text @ Value::String(_)) => vec![text.clone()],
        Some(Value::Array(items)) if items.is_empty() => return bad("'input' must not be an empty array"),
        Some(ids @ Value::Array(items)) if items.iter().all(Value::is_u64) => vec![ids.clone()],
        Some(Value::Array(items)) if items.iter().all(|i| i.is_string() || i.is_array()) => items.clone(),
        Some(_) => return bad("'input' must be a string or an array of strings or token ids"),
    };
    let kind = if items.iter().all(Value::is_string) {
        "text"
    } else if items.iter().all(Value::is_array) {
        "tokens"
    } else {
        "mixed"
    };
    Ok((items, kind))
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
    if ids.is_empty() {
        return Err(bad("a token-id list must not be empty".into()));
    }
    tokens::decode_json_ids(model, ids).map_err(bad)
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
