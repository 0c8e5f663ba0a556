//! `POST /v1/chat/completions`, streaming and not, for every provider family: the request is
//! built by the provider's translator, relayed through the key pool, and answered in the
//! OpenAI format. `complete` is shared with the Anthropic-compatible route.

use super::{Body, Incoming, Reply, parse_object, resolve};
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::providers::{Family, Translated, openai};
use crate::relay::{self, stream::UpstreamStream};
use crate::sse;
use crate::state::AppState;
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    let wants_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let (output, meta) = complete(state, config, body)?;
    let body = match output {
        ChatOutput::Whole(bytes) => Body::Json(bytes),
        ChatOutput::Stream(stream) => Body::Sse(Box::new(OpenAiEvents { stream, wants_usage, done: false })),
    };
    Ok(Reply { status: 200, headers: Vec::new(), body, meta })
}

/// A chat answer in the OpenAI format.
pub enum ChatOutput {
    /// A `chat.completion` object, serialised.
    Whole(Vec<u8>),
    Stream(Box<UpstreamStream>),
}

/// Runs an OpenAI-format chat request (`model` is `provider/model`) against its provider.
/// Also returns what the request log should know (the key used, the failed attempts).
pub fn complete(
    state: &Arc<AppState>,
    config: &Config,
    body: Map<String, Value>,
) -> Result<(ChatOutput, Map<String, Value>), ApiError> {
    let (provider, model) = resolve(config, &body)?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::invalid_request("missing required field 'messages' (an array)").with_param("messages"));
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let request = build(provider, &model, body, stream)?;
    let deadline = Instant::now() + config.settings.global_timeout;
    let relayed = relay::relay(state, provider, &model, &request, deadline)?;
    log::debug!("chat {}/{model} key={} attempts={}", provider.name, relayed.lease.masked, relayed.attempts.len() + 1);
    let meta = relay::meta(&relayed);
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let output = match relayed.body {
        relay::Body::Whole(bytes) => ChatOutput::Whole(parse(provider, &model, created, bytes)?),
        relay::Body::Stream { first, rest } => {
            let translator = translator(provider, &model, created);
            let idle = config.settings.timeout_read_streaming;
            ChatOutput::Stream(Box::new(UpstreamStream::new(relayed.lease, first, rest, translator, idle)))
        }
    };
    Ok((output, meta))
}

fn build(
    provider: &ProviderConfig,
    model: &str,
    body: Map<String, Value>,
    stream: bool,
) -> Result<UpstreamRequest, ApiError> {
    match provider.family {
        Family::OpenAi => Ok(openai::build_chat(&provider.name, &provider.base, model, body, stream)),
        other => Err(not_translated(provider, other)),
    }
}

fn parse(provider: &ProviderConfig, _model: &str, _created: u64, bytes: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    match provider.family {
        Family::OpenAi => Ok(openai::parse_chat(bytes)),
        other => Err(not_translated(provider, other)),
    }
}

fn translator(_provider: &ProviderConfig, _model: &str, _created: u64) -> Box<dyn crate::providers::StreamTranslator> {
    Box::new(openai::PassThrough::default())
}

fn not_translated(provider: &ProviderConfig, family: Family) -> ApiError {
    ApiError::new(
        501,
        "invalid_request_error",
        "provider_not_supported",
        format!(
            "provider '{}' speaks the {} protocol, which keyrelay does not translate yet",
            provider.name,
            family.name()
        ),
    )
}

/// An OpenAI-format stream as SSE events: `data: {chunk}` per chunk, the usage-only chunk
/// only when the client asked for it, an error as `data: {"error": ...}`, and `data: [DONE]`
/// always last.
struct OpenAiEvents {
    stream: Box<UpstreamStream>,
    wants_usage: bool,
    done: bool,
}

impl Iterator for OpenAiEvents {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        loop {
            match self.stream.next() {
                Some(Translated::Chunk(chunk)) => {
                    if is_usage_only(&chunk) && !self.wants_usage {
                        continue;
                    }
                    return Some(sse::data_event(&chunk.to_string()));
                }
                Some(Translated::Error(error)) => return Some(sse::data_event(&error.to_string())),
                None => {
                    self.done = true;
                    return Some(sse::data_event("[DONE]"));
                }
            }
        }
    }
}

/// The chunk `stream_options.include_usage` asks for: usage and no choices.
fn is_usage_only(chunk: &Value) -> bool {
    chunk.get("choices").and_then(Value::as_array).is_none_or(|c| c.is_empty())
        && chunk.get("usage").is_some_and(|u| !u.is_null())
}
