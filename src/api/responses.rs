//! `POST /v1/responses`: the OpenAI Responses API, stream and not, from any provider. The
//! `openai` provider gets the request passed through to its own `/responses` (only `model`
//! and the key change) and its events relayed as they come; every other provider is served
//! through the chat pipeline (`responses_format` translates both ways). Errors before the
//! first byte are HTTP errors in OpenAI's shape; after it, a `response.failed` event.

use super::chat::{self, ChatOutput, EventFramer, FramedEvents};
use super::responses_format::{self, EventWriter, Frame};
use super::{Body, Incoming, Reply, parse_object, resolve};
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::json_splice;
use crate::providers::{self, Family, StreamTranslator, Translated};
use crate::relay::{self, stream::UpstreamStream};
use crate::sse;
use crate::state::AppState;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    // Translation refuses it too; checked first so the pass-through answers the same.
    if body.get("previous_response_id").is_some_and(|v| !v.is_null()) {
        responses_format::to_chat_request(&body)?;
    }
    let (provider, model) = resolve(config, &body)?;
    if provider.family == Family::OpenAi && provider.name == "openai" {
        return pass_through(state, config, provider, &model, body);
    }
    translate(state, config, provider, &model, body)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---- every provider but openai: through the chat hub ---------------------------------------

fn translate(
    state: &Arc<AppState>,
    config: &Config,
    provider: &ProviderConfig,
    model: &str,
    body: Map<String, Value>,
) -> Result<Reply, ApiError> {
    let chat_body = responses_format::to_chat_request(&body)?;
    let frame = Frame::new(&chat::unique_id("resp_"), now_secs(), &format!("{}/{model}", provider.name), &body);
    let (output, meta) = chat::complete(state, config, chat_body)?;
    let body = match output {
        ChatOutput::Whole(completion) => {
            let completion = completion.value;
            let mut frame = frame;
            frame.model = responses_format::model_name(&provider.name, completion["model"].as_str(), model);
            Body::Json(responses_format::from_chat_completion(&completion, &frame).to_string().into_bytes())
        }
        ChatOutput::Stream(stream) => {
            let framer = ResponsesFramer {
                writer: EventWriter::new(frame),
                provider: provider.name.clone(),
                model: model.to_string(),
            };
            Body::Sse(Box::new(FramedEvents::new(stream, framer)))
        }
    };
    Ok(Reply { status: 200, headers: Vec::new(), body, meta })
}

/// `event: <type>\ndata: <json>\n\n`: the Responses framing (the data repeats the type; no
/// `[DONE]`, the body ends after the terminal event).
fn framed(event: &Value) -> Vec<u8> {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("error");
    format!("event: {kind}\ndata: {event}\n\n").into_bytes()
}

/// Responses events from the hub's chunks; the model is named from the first chunk.
struct ResponsesFramer {
    writer: EventWriter,
    provider: String,
    /// The id sent, for when the upstream names none.
    model: String,
}

impl EventFramer for ResponsesFramer {
    fn chunk(&mut self, chunk: &Value) -> Vec<Vec<u8>> {
        if !self.writer.is_started() {
            let name = responses_format::model_name(&self.provider, chunk["model"].as_str(), &self.model);
            self.writer.set_model(&name);
        }
        self.writer.chunk(chunk).iter().map(framed).collect()
    }

    fn error(&mut self, error: &Value) -> Vec<Vec<u8>> {
        self.writer.error(error).iter().map(framed).collect()
    }

    fn finish(&mut self) -> Vec<Vec<u8>> {
        self.writer.finish().iter().map(framed).collect()
    }
}

// ---- the openai provider: passed through ---------------------------------------------------

/// The body goes to `{base}/responses` as it came, with the upstream model id; the relay
/// attaches the key and rotates before the first byte like any call.
fn pass_through(
    state: &Arc<AppState>,
    config: &Config,
    provider: &ProviderConfig,
    model: &str,
    mut body: Map<String, Value>,
) -> Result<Reply, ApiError> {
    body.insert("model".into(), json!(model));
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let request = UpstreamRequest {
        method: Method::Post,
        url: format!("{}/responses", provider.base),
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: Some(serde_json::to_vec(&body).expect("a JSON map serialises")),
        stream,
    };
    let deadline = Instant::now() + config.settings.global_timeout;
    if !stream {
        let relayed = relay::relay_whole(state, provider, model, &request, deadline)?;
        let meta = relay::meta(&relayed);
        let body = Body::Json(named_response(relayed.body, &provider.name, model));
        return Ok(Reply { status: relayed.status, headers: Vec::new(), body, meta });
    }
    let relayed = relay::relay_stream(state, provider, model, &request, deadline)?;
    let meta = relay::meta(&relayed);
    let relay::Stream { first, rest } = relayed.body;
    let translator = Box::new(Relay { provider: provider.name.clone(), model: model.to_string(), ended: false });
    let idle = config.settings.timeout_read_streaming;
    let stream = UpstreamStream::new(relayed.lease, first, rest, translator, idle);
    let body = Body::Sse(Box::new(RelayedEvents { stream: Box::new(stream), last: None, done: false }));
    Ok(Reply { status: relayed.status, headers: Vec::new(), body, meta })
}

/// A whole Response with its model named by the naming rule: the upstream's bytes with that
/// one string replaced, or, when the answer has no `model` string, the value named and
/// serialised.
fn named_response(answer: relay::Json, provider: &str, sent: &str) -> Vec<u8> {
    let relay::Json { mut value, bytes } = answer;
    let name = responses_format::model_name(provider, value.get("model").and_then(Value::as_str), sent);
    if let Some(renamed) = json_splice::replace_string(&bytes, &["model"], &name) {
        return renamed;
    }
    rename_model(&mut value, provider, sent);
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// The model of a Response named by the naming rule.
fn rename_model(response: &mut Value, provider: &str, sent: &str) {
    if let Some(object) = response.as_object_mut() {
        let name = responses_format::model_name(provider, object.get("model").and_then(Value::as_str), sent);
        object.insert("model".into(), json!(name));
    }
}

/// What the client last saw of a passed-through stream, for a `response.failed` made up when
/// the upstream breaks: the response (id, model) and the last sequence number.
#[derive(Clone)]
struct Seen {
    response: Value,
    seq: u64,
}

/// Passes Responses events through as `Translated::Chunk({"event", "data", ...})`, the data
/// as the upstream sent it (re-serialised only for lifecycle events, whose `response.model`
/// is renamed). `usage` in chat terms feeds the key's counters; `response.failed` and
/// `error` events are `Translated::Error` so the key's outcome records the failure.
struct Relay {
    provider: String,
    model: String,
    ended: bool,
}

impl StreamTranslator for Relay {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        if self.ended || event.data.trim() == "[DONE]" {
            return;
        }
        let Ok(mut data) = serde_json::from_str::<Value>(&event.data) else {
            log::warn!("dropped a Responses stream event that is not JSON ({} bytes)", event.data.len());
            return;
        };
        let kind = data.get("type").and_then(Value::as_str).or(event.name.as_deref()).unwrap_or_default().to_string();
        let mut raw = event.data.clone();
        let mut step = json!({"event": kind, "seq": data.get("sequence_number")});
        if let Some(response) = data.get_mut("response").filter(|r| r.is_object()) {
            rename_model(response, &self.provider, &self.model);
            step["response"] = response.clone();
            if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
                let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
                step["usage"] = json!({"prompt_tokens": n("input_tokens"), "completion_tokens": n("output_tokens")});
            }
            raw = data.to_string();
        }
        step["data"] = json!(raw);
        match kind.as_str() {
            "response.completed" | "response.incomplete" => {
                self.ended = true;
                out.push(Translated::Chunk(step));
            }
            "response.failed" | "error" => {
                self.ended = true;
                let error = data.pointer("/response/error").or_else(|| data.get("error")).unwrap_or(&data);
                step["error"] = responses_format::response_error(error);
                out.push(Translated::Error(step));
            }
            _ => out.push(Translated::Chunk(step)),
        }
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        if !self.ended {
            self.ended = true;
            let message = "upstream closed the stream before response.completed";
            out.push(Translated::Error(providers::stream_error("stream_interrupted", message)));
        }
    }
}

/// The passed-through events, framed; a failure of keyrelay's own (the upstream broke or
/// stalled) becomes a `response.failed` for the response the client has seen.
struct RelayedEvents {
    stream: Box<UpstreamStream>,
    last: Option<Seen>,
    done: bool,
}

impl RelayedEvents {
    fn relay(&mut self, step: &Value) -> Vec<u8> {
        if let Some(response) = step.get("response") {
            self.last = Some(Seen { response: response.clone(), seq: 0 });
        }
        if let (Some(last), Some(seq)) = (self.last.as_mut(), step["seq"].as_u64()) {
            last.seq = seq;
        }
        let kind = step["event"].as_str().unwrap_or_default();
        let data = step["data"].as_str().unwrap_or_default();
        if kind.is_empty() { format!("data: {data}\n\n") } else { format!("event: {kind}\ndata: {data}\n\n") }
            .into_bytes()
    }

    /// `response.failed` after the last event the client saw.
    fn failed(&self, error: &Value) -> Vec<u8> {
        let Seen { mut response, seq } =
            self.last.clone().unwrap_or(Seen { response: json!({"object": "response", "output": []}), seq: 0 });
        response["status"] = json!("failed");
        response["error"] = responses_format::response_error(error);
        let next = if self.last.is_some() { seq + 1 } else { 0 };
        framed(&json!({"type": "response.failed", "sequence_number": next, "response": response}))
    }
}

impl Iterator for RelayedEvents {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        match self.stream.next() {
            Some(Translated::Chunk(step)) => Some(self.relay(&step)),
            Some(Translated::Error(step)) => {
                self.done = true;
                Some(if step.get("data").is_some() { self.relay(&step) } else { self.failed(&step) })
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> relay::Json {
        relay::Json { value: serde_json::from_str(text).unwrap(), bytes: text.as_bytes().to_vec() }
    }

    #[test]
    fn a_passed_through_response_keeps_its_bytes_but_the_model_name() {
        let named = named_response(answer(r#"{"id": "resp_1", "model": "gpt-5", "output": []}"#), "openai", "x");
        assert_eq!(named, br#"{"id": "resp_1", "model": "openai/gpt-5", "output": []}"#.to_vec());
        let unnamed = named_response(answer(r#"{"id": "resp_1"}"#), "openai", "gpt-5");
        assert_eq!(
            serde_json::from_slice::<Value>(&unnamed).unwrap(),
            json!({"id": "resp_1", "model": "openai/gpt-5"})
        );
    }
}
