//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API served
//! from any provider. For the `anthropic` provider both are passed through to Anthropic: the
//! client's body byte for byte but for the model id, its `anthropic-*` headers, the pool's key,
//! and Anthropic's answer or events back as they come (only the answer's `model` renamed), so
//! prompt caching, thinking signatures, server tools, betas and the real token count survive.
//! For every other provider the request is translated to the OpenAI format, run like any chat
//! request, and the answer (or stream) translated back. Errors use Anthropic's shape.

use super::chat::{self, ChatOutput, EventFramer, FramedEvents};
use super::messages_format::{self, EventWriter};
use super::{Body, Incoming, Reply};
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::json_splice;
use crate::providers::{Family, StreamTranslator, anthropic};
use crate::relay::{self, stream::StreamItem, stream::UpstreamStream};
use crate::sse;
use crate::state::AppState;
use crate::tokens;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse(&req.body)?;
    if goes_to_anthropic(config, &body) {
        return pass_through(state, config, req, &body, "messages");
    }
    let openai = messages_format::to_openai_request(&body)?;
    let asked = openai.get("model").and_then(Value::as_str).unwrap_or_default().trim().to_string();
    // `complete` resolves the model again and refuses what cannot be served.
    let (provider, sent) = super::route_model(config, &asked).map(|(p, id)| (p.name.clone(), id)).unwrap_or_default();
    let id = chat::unique_id("msg_");
    let (output, meta) = chat::complete(state, config, openai)?;
    let body = match output {
        ChatOutput::Whole(completion) => {
            let completion = completion.value;
            let model = messages_format::model_name(&provider, &sent, completion.get("model"));
            Body::Json(messages_format::from_openai_response(&completion, &model, &id).to_string().into_bytes())
        }
        ChatOutput::Stream(stream) => {
            let writer = EventWriter::new(&format!("{provider}/{sent}"), &id).naming(&provider, &sent);
            Body::Sse(Box::new(FramedEvents::new(stream, writer)))
        }
    };
    Ok(Reply { status: 200, headers: Vec::new(), body, meta })
}

/// `{"input_tokens": N}`: Anthropic's own count for `anthropic/*` models, counted exactly for
/// OpenAI models and approximately for others.
pub fn count_tokens(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse(&req.body)?;
    if goes_to_anthropic(config, &body) {
        return pass_through(state, config, req, &body, "messages/count_tokens");
    }
    let (model, messages, tools) = messages_format::count_tokens_input(&body)?;
    let (count, method) = tokens::count_chat(&model, &messages, tools.as_ref());
    Ok(Reply::json(200, &json!({"input_tokens": count, "method": method.name()})))
}

fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::invalid_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid_request(format!("request body is not valid JSON: {e}"))),
    }
}

/// Whether `model` names an Anthropic-family provider (after `MODEL_ALIASES` and
/// `DEFAULT_PROVIDER`). Any other outcome, errors included, is the translated path's to judge.
fn goes_to_anthropic(config: &Config, body: &Value) -> bool {
    let model = body.get("model").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    super::route_model(config, model).is_ok_and(|(provider, _)| provider.family == Family::Anthropic)
}

/// `POST {base}/{path}` with the client's body, the upstream model id swapped in, through the
/// key pool like every call (rotation before the first byte, cooldowns, the error classes).
fn pass_through(
    state: &Arc<AppState>,
    config: &Config,
    req: &Incoming,
    body: &Value,
    path: &str,
) -> Result<Reply, ApiError> {
    let map = body.as_object().cloned().unwrap_or_default();
    let (provider, model) = super::resolve(config, &map)?;
    let bytes = json_splice::replace_string(&req.body, &["model"], &model)
        .ok_or_else(|| ApiError::invalid_request("'model' must be a string").with_param("model"))?;
    let stream = path == "messages" && body.get("stream") == Some(&Value::Bool(true));
    let request = anthropic::build_passthrough(&provider.base, path, bytes, &req.headers, stream);
    let deadline = Instant::now() + config.settings.global_timeout;
    let log = |masked: &str| log::debug!("messages {}/{model} passed through, key={masked}", provider.name);
    let (body, meta) = if stream {
        let relayed = relay::relay_stream(state, provider, &model, &request, deadline)?;
        log(&relayed.lease.masked);
        let meta = relay::meta(&relayed);
        let relay::Stream { first, rest } = relayed.body;
        let events: Box<dyn StreamTranslator<AnthropicEvent>> = Box::new(PassedEvents::new(&provider.name, &model));
        let idle = config.settings.timeout_read_streaming;
        let stream = UpstreamStream::new(relayed.lease, first, rest, events, idle);
        (Body::Sse(Box::new(stream.map(|event| event.bytes))), meta)
    } else {
        let relayed = relay::relay_whole(state, provider, &model, &request, deadline)?;
        log(&relayed.lease.masked);
        let meta = relay::meta(&relayed);
        (Body::Json(named_answer(relayed.body, provider, &model)), meta)
    };
    Ok(Reply { status: 200, headers: Vec::new(), body, meta })
}

/// Anthropic's answer with its `model` renamed, every other byte as it came (a count_tokens
/// answer has no model and is passed as it is).
fn named_answer(answer: relay::Json, provider: &ProviderConfig, sent: &str) -> Vec<u8> {
    let relay::Json { value, bytes } = answer;
    let Some(answered) = value.get("model") else { return bytes };
    let name = messages_format::model_name(&provider.name, sent, Some(answered));
    json_splice::replace_string(&bytes, &["model"], &name).unwrap_or(bytes)
}

/// One of Anthropic's events, framed for the client, with what the key's report needs.
struct AnthropicEvent {
    bytes: Vec<u8>,
    /// The stream's usage so far (Anthropic's names), after `message_start` and `message_delta`.
    usage: Option<Value>,
    failure: Option<String>,
}

impl StreamItem for AnthropicEvent {
    fn usage(&self) -> Option<&Value> {
        self.usage.as_ref()
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn broken(code: &str, message: &str) -> AnthropicEvent {
        let data = json!({"type": "error", "error": {"type": "api_error", "message": format!("{message} ({code})")}});
        AnthropicEvent { bytes: frame(Some("error"), &data.to_string()), usage: None, failure: Some(message.into()) }
    }
}

/// `event: <name>` and the data as it came, one `data:` line per line of it.
fn frame(name: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.into_bytes()
}

/// Anthropic's events passed to the client as they come, each one's data untouched but for
/// `message_start`'s model (renamed as answers name it). Usage is gathered from
/// `message_start` and `message_delta` for the key's counters; a stream that ends before
/// `message_stop` (or an `error` event) gets an `error` event, so the client knows.
struct PassedEvents {
    provider: String,
    sent: String,
    usage: Map<String, Value>,
    ended: bool,
}

impl PassedEvents {
    fn new(provider: &str, sent: &str) -> PassedEvents {
        PassedEvents { provider: provider.into(), sent: sent.into(), usage: Map::new(), ended: false }
    }

    /// Numbers of `usage` over the ones seen before (`message_delta`'s are totals).
    fn add_usage(&mut self, usage: Option<&Value>) -> Option<Value> {
        for (key, value) in usage?.as_object()? {
            if value.is_u64() {
                self.usage.insert(key.clone(), value.clone());
            }
        }
        Some(Value::Object(self.usage.clone()))
    }
}

impl StreamTranslator<AnthropicEvent> for PassedEvents {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<AnthropicEvent>) {
        if self.ended {
            return;
        }
        let name = event.name.as_deref();
        let parsed = || serde_json::from_str::<Value>(&event.data).unwrap_or(Value::Null);
        let (mut usage, mut failure, mut renamed) = (None, None, None);
        match name {
            Some("message_start") => {
                let data = parsed();
                usage = self.add_usage(data.pointer("/message/usage"));
                let model = messages_format::model_name(&self.provider, &self.sent, data.pointer("/message/model"));
                renamed = json_splice::replace_string(event.data.as_bytes(), &["message", "model"], &model)
                    .and_then(|b| String::from_utf8(b).ok());
            }
            Some("message_delta") => usage = self.add_usage(parsed().get("usage")),
            Some("message_stop") => self.ended = true,
            Some("error") => {
                let data = parsed();
                let message = data.pointer("/error/message").and_then(Value::as_str).unwrap_or("error in the stream");
                failure = Some(message.to_string());
                self.ended = true;
            }
            _ => {}
        }
        let bytes = frame(name, renamed.as_deref().unwrap_or(&event.data));
        out.push(AnthropicEvent { bytes, usage, failure });
    }

    fn finish(&mut self, out: &mut Vec<AnthropicEvent>) {
        if !self.ended {
            self.ended = true;
            out.push(AnthropicEvent::broken("stream_interrupted", "the upstream stream ended before message_stop"));
        }
    }
}

/// Anthropic SSE events (`event: <name>\ndata: <json>\n\n`) from the hub's chunks.
impl EventFramer for EventWriter {
    fn chunk(&mut self, chunk: &Value) -> Vec<Vec<u8>> {
        anthropic_events(EventWriter::chunk(self, chunk))
    }

    fn error(&mut self, error: &Value) -> Vec<Vec<u8>> {
        anthropic_events(EventWriter::error(self, error))
    }

    fn finish(&mut self) -> Vec<Vec<u8>> {
        anthropic_events(EventWriter::finish(self))
    }
}

fn anthropic_events(events: Vec<messages_format::Event>) -> Vec<Vec<u8>> {
    events.into_iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n").into_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::replay;
    use std::path::Path;

    fn passed(input: &[u8], piece: usize) -> Vec<AnthropicEvent> {
        replay(Box::new(PassedEvents::new("anthropic", "claude-sonnet-4-5")), input, piece)
    }

    #[test]
    fn passthrough_golden() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/messages/passthrough_stream");
        let input = std::fs::read(dir.join("upstream.sse")).unwrap();
        let want = std::fs::read_to_string(dir.join("expected_client.sse")).unwrap();
        for piece in [1, 7, input.len()] {
            let events = passed(&input, piece);
            let got: Vec<u8> = events.iter().flat_map(|e| e.bytes.clone()).collect();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{piece}-byte reads");
            assert!(events.iter().all(|e| e.failure.is_none()));
            let usage = events.iter().rev().find_map(|e| e.usage.clone()).unwrap();
            assert_eq!(
                usage,
                json!({"input_tokens": 12, "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 30000,
                    "output_tokens": 87})
            );
            assert!(matches!(
                relay::usage_outcome(&usage),
                crate::keys::pool::Outcome::Success { prompt_tokens: 32060, completion_tokens: 87 }
            ));
        }
    }

    #[test]
    fn a_cut_stream_ends_with_an_error_event_and_an_error_stops_it() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\n";
        let events = passed(start.as_bytes(), 5);
        assert_eq!(events.len(), 2);
        let last = String::from_utf8(events[1].bytes.clone()).unwrap();
        assert!(last.starts_with("event: error\ndata: {"), "{last}");
        assert!(last.contains("\"type\":\"api_error\"") && last.contains("stream_interrupted"), "{last}");
        assert!(events[1].failure.is_some());

        let overloaded = format!(
            "{start}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\nevent: ping\ndata: {{}}\n\n"
        );
        let events = passed(overloaded.as_bytes(), 3);
        assert_eq!(events.len(), 2, "nothing after the error, and no second error");
        assert_eq!(events[1].failure.as_deref(), Some("Overloaded"));
    }

    #[test]
    fn events_are_framed_line_by_line() {
        assert_eq!(frame(None, "a\nb"), b"data: a\ndata: b\n\n".to_vec());
        assert_eq!(frame(Some("ping"), "{}"), b"event: ping\ndata: {}\n\n".to_vec());
    }
}
