//! `streamGenerateContent` events to OpenAI chunks.

use super::response::{
    Piece, answered_model, call_id, call_id_stem, candidate_index, error_message, finish_reason, openai_usage, pieces,
    prompt_blocked,
};
use crate::providers::{StreamTranslator, Translated, event_json};
use crate::sse;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Stream translator: each SSE data event is a whole GenerateContentResponse.
pub fn stream_translator(model: &str, id: &str, created: u64) -> Box<dyn StreamTranslator> {
    Box::new(GeminiStream {
        model: model.to_string(),
        id: id.to_string(),
        created,
        stem: call_id_stem(id),
        calls: 0,
        choices: BTreeMap::new(),
        usage: None,
        done: false,
    })
}

struct GeminiStream {
    model: String,
    id: String,
    created: u64,
    stem: String,
    /// Tool calls so far over all choices, for their ids.
    calls: usize,
    /// By candidate index.
    choices: BTreeMap<u64, ChoiceState>,
    /// The last `usageMetadata`, translated: sent as the usage-only chunk at the end.
    usage: Option<Value>,
    /// An error went out, or the stream was finished: nothing more.
    done: bool,
}

#[derive(Default)]
struct ChoiceState {
    role_sent: bool,
    /// Tool calls in this choice: the next one's `index`.
    tool_calls: u64,
    finished: bool,
}

impl StreamTranslator for GeminiStream {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        if self.done || event.data.trim().is_empty() {
            return;
        }
        let response = match event_json(event, "gemini sent a stream event") {
            // Some Google stacks wrap a response (or an error) in an array.
            Ok(Value::Array(mut items)) if !items.is_empty() => items.swap_remove(0),
            Ok(response) => response,
            Err(why) => return self.fail(out, "upstream_error", &why),
        };
        if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
            out.push(Translated::Error(openai_error(error)));
            self.done = true;
            return;
        }
        if let Some(metadata) = response.get("usageMetadata").filter(|m| m.is_object()) {
            self.usage = Some(openai_usage(metadata));
        }
        // Every chunk names one model: the upstream's own, unless a chunk already went out.
        if self.choices.is_empty() {
            self.model = answered_model(&response, &self.model).to_string();
        }
        match response.get("candidates").and_then(Value::as_array) {
            Some(candidates) => {
                for (position, candidate) in candidates.iter().enumerate() {
                    self.candidate(candidate, candidate_index(candidate, position), out);
                }
            }
            None if prompt_blocked(&response) => {
                let delta = json!({"content": ""});
                self.push(0, delta, Some("content_filter"), out);
                self.choices.entry(0).or_default().finished = true;
            }
            None => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        if self.done {
            return;
        }
        let finished = !self.choices.is_empty() && self.choices.values().all(|c| c.finished);
        if !finished {
            return self.fail(out, "stream_interrupted", "upstream closed the stream before it finished");
        }
        self.done = true;
        if let Some(usage) = self.usage.take() {
            let mut chunk = self.chunk(Vec::new());
            chunk["usage"] = usage;
            out.push(Translated::Chunk(chunk));
        }
    }
}

impl GeminiStream {
    fn candidate(&mut self, candidate: &Value, index: u64, out: &mut Vec<Translated>) {
        if self.choices.get(&index).is_some_and(|c| c.finished) {
            return;
        }
        for piece in pieces(candidate) {
            let delta = match piece {
                Piece::Text(text) => json!({"content": text}),
                Piece::Thought(text) => json!({"reasoning_content": text}),
                Piece::Call { name, arguments, signature } => {
                    let state = self.choices.entry(index).or_default();
                    let call_index = state.tool_calls;
                    state.tool_calls += 1;
                    let id = call_id(&self.stem, self.calls, signature);
                    self.calls += 1;
                    let function = json!({"name": name, "arguments": arguments});
                    json!({"tool_calls": [{"index": call_index, "id": id, "type": "function", "function": function}]})
                }
            };
            self.push(index, delta, None, out);
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            let state = self.choices.entry(index).or_default();
            let reason = finish_reason(Some(reason), state.tool_calls > 0);
            self.push(index, json!({}), Some(reason), out);
            self.choices.entry(index).or_default().finished = true;
        }
    }

    /// One choice's delta as a chunk; the choice's first chunk also carries the role.
    fn push(&mut self, index: u64, mut delta: Value, finish_reason: Option<&str>, out: &mut Vec<Translated>) {
        let state = self.choices.entry(index).or_default();
        if !state.role_sent {
            state.role_sent = true;
            delta["role"] = json!("assistant");
        }
        let chunk = self.chunk(vec![json!({"index": index, "delta": delta, "finish_reason": finish_reason})]);
        out.push(Translated::Chunk(chunk));
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        crate::providers::chunk_envelope(&self.id, self.created, &self.model, choices)
    }

    fn fail(&mut self, out: &mut Vec<Translated>, code: &str, message: &str) {
        out.push(Translated::Error(crate::providers::stream_error(code, message)));
        self.done = true;
    }
}

/// Gemini's `{"code": 503, "message", "status": "UNAVAILABLE"}` as an OpenAI error object.
fn openai_error(error: &Value) -> Value {
    let status = error.get("code").and_then(Value::as_u64);
    let kind = match status {
        Some(429) => "rate_limit_error",
        Some(400..=499) => "invalid_request_error",
        _ => "api_error",
    };
    let code = match (error.get("status").and_then(Value::as_str), status) {
        (Some(name), _) => json!(name),
        (None, Some(status)) => json!(status.to_string()),
        (None, None) => Value::Null,
    };
    json!({"error": {"message": error_message(error), "type": kind, "param": null, "code": code}})
}
