//! Anthropic's named SSE events to OpenAI chunks, and the streamed side of structured output
//! (`json_answer_stream`).

use super::response::{answered_model, error_message};
use crate::providers::{StreamTranslator, Translated, anthropic_map, event_json};
use crate::sse;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Wraps a translator so that the answer tool's streamed arguments come out as content deltas
/// and `finish_reason` `tool_calls` as `stop` (the whole-answer twin is `json_answer`).
pub fn json_answer_stream(inner: Box<dyn StreamTranslator>, tool: &str) -> Box<dyn StreamTranslator> {
    Box::new(JsonAnswerStream { inner, tool: tool.to_string(), answer_index: None })
}

struct JsonAnswerStream {
    inner: Box<dyn StreamTranslator>,
    tool: String,
    /// The OpenAI tool-call index of the answer tool's call, once its first delta went by.
    answer_index: Option<u64>,
}

impl StreamTranslator for JsonAnswerStream {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        let mut steps = Vec::new();
        self.inner.event(event, &mut steps);
        out.extend(steps.into_iter().filter_map(|step| self.step(step)));
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        let mut steps = Vec::new();
        self.inner.finish(&mut steps);
        out.extend(steps.into_iter().filter_map(|step| self.step(step)));
    }
}

impl JsonAnswerStream {
    /// One chunk rewritten; `None` when nothing is left of it (the call's naming delta, text
    /// the model wrote beside the call).
    fn step(&mut self, step: Translated) -> Option<Translated> {
        let Translated::Chunk(mut chunk) = step else { return Some(step) };
        let Some(choice) = chunk.get_mut("choices").and_then(Value::as_array_mut).and_then(|c| c.first_mut()) else {
            return Some(Translated::Chunk(chunk));
        };
        if choice["finish_reason"] == "tool_calls" {
            choice["finish_reason"] = json!("stop");
        }
        let finished = !choice["finish_reason"].is_null();
        let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
            return Some(Translated::Chunk(chunk));
        };
        let first = delta.contains_key("role");
        let text = self.answer_text(delta.remove("tool_calls"));
        if !first {
            delta.remove("content");
        }
        if let Some(text) = text {
            delta.insert("content".into(), json!(text));
        }
        (first || finished || !delta.is_empty()).then_some(Translated::Chunk(chunk))
    }

    /// The answer tool's argument text in a delta's tool calls, if any.
    fn answer_text(&mut self, calls: Option<Value>) -> Option<String> {
        let mut text = String::new();
        for call in calls.as_ref().and_then(Value::as_array).into_iter().flatten() {
            let index = call["index"].as_u64();
            if call.pointer("/function/name").and_then(Value::as_str) == Some(self.tool.as_str()) {
                self.answer_index = index;
            }
            if index.is_some() && index == self.answer_index {
                text.push_str(call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or(""));
            }
        }
        (!text.is_empty()).then_some(text)
    }
}

/// Stream translator for `POST /messages` with `stream: true`. The chunk id is the message id
/// from `message_start`.
pub fn stream_translator(model: &str, created: u64) -> Box<dyn StreamTranslator> {
    Box::new(AnthropicStream {
        model: model.to_string(),
        created,
        id: "msg_unknown".into(),
        started: false,
        usage: Map::new(),
        stop_reason: None,
        open_tools: BTreeMap::new(),
        tool_calls: 0,
        done: false,
    })
}

struct AnthropicStream {
    model: String,
    created: u64,
    id: String,
    /// The first chunk (the one with the role) went out.
    started: bool,
    /// Anthropic's usage fields, as `message_start` and then `message_delta` report them (its
    /// `output_tokens` is cumulative, so the last value is the total).
    usage: Map<String, Value>,
    stop_reason: Option<String>,
    /// `tool_use` blocks still open, by Anthropic block index.
    open_tools: BTreeMap<u64, OpenTool>,
    /// Tool calls so far: the next one's OpenAI `index`.
    tool_calls: u64,
    /// The stream ended (`message_stop`, an error): nothing more.
    done: bool,
}

struct OpenTool {
    index: u64,
    /// Some `partial_json` went out; otherwise the call gets `"{}"` when its block stops.
    sent_arguments: bool,
}

impl StreamTranslator for AnthropicStream {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        // Keep-alives are dropped before parsing (docs/upstream-protocols.md, pitfall 2): their data need not be JSON.
        if self.done || event.name.as_deref() == Some("ping") || event.data.trim().is_empty() {
            return;
        }
        let data = match event_json(event, "anthropic sent a stream event") {
            Ok(data) => data,
            Err(why) => return self.fail(out, "upstream_error", &why),
        };
        // The event name says what the data is; the data's own `type` stands in when it is missing.
        let kind = event.name.as_deref().or_else(|| data.get("type").and_then(Value::as_str)).unwrap_or("");
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => self.message_start(&data, out),
            "content_block_start" => self.block_start(index, data.get("content_block").unwrap_or(&Value::Null), out),
            "content_block_delta" => self.block_delta(index, data.get("delta").unwrap_or(&Value::Null), out),
            "content_block_stop" => self.block_stop(index, out),
            "message_delta" => self.message_delta(&data),
            "message_stop" => self.message_stop(out),
            "error" => {
                out.push(Translated::Error(openai_error(data.get("error").unwrap_or(&data))));
                self.done = true;
            }
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        if !self.done {
            self.fail(out, "stream_interrupted", "upstream closed the stream before it finished");
        }
    }
}

impl AnthropicStream {
    fn message_start(&mut self, data: &Value, out: &mut Vec<Translated>) {
        let message = data.get("message").unwrap_or(&Value::Null);
        // Every chunk carries one id and names one model: the message's own, unless a chunk
        // already went out (a repeated `message_start` changes neither).
        if !self.started {
            if let Some(id) = message.get("id").and_then(Value::as_str) {
                self.id = id.to_string();
            }
            self.model = answered_model(message, &self.model).to_string();
        }
        self.add_usage(message.get("usage"));
        self.start(out);
    }

    fn block_start(&mut self, index: u64, block: &Value, out: &mut Vec<Translated>) {
        let text = |field: &str| block.get(field).and_then(Value::as_str).unwrap_or("");
        match text("type") {
            "text" => self.text(text("text"), out),
            "thinking" => self.thinking(text("thinking"), out),
            "tool_use" => {
                let tool = OpenTool { index: self.tool_calls, sent_arguments: false };
                self.tool_calls += 1;
                // The only chunk with the call's id, type and name (pitfall 8). The block's `input: {}`
                // is a placeholder, not arguments (docs/upstream-protocols.md, pitfall 7): they come as `input_json_delta`s.
                let function = json!({"name": text("name"), "arguments": ""});
                let call = json!({"index": tool.index, "id": text("id"), "type": "function", "function": function});
                self.push(json!({"tool_calls": [call]}), out);
                self.open_tools.insert(index, tool);
            }
            _ => {}
        }
    }

    fn block_delta(&mut self, index: u64, delta: &Value, out: &mut Vec<Translated>) {
        let text = |field: &str| delta.get(field).and_then(Value::as_str).unwrap_or("");
        match text("type") {
            "text_delta" => self.text(text("text"), out),
            "thinking_delta" => self.thinking(text("thinking"), out),
            "input_json_delta" => {
                let partial = text("partial_json");
                let Some(tool) = self.open_tools.get_mut(&index).filter(|_| !partial.is_empty()) else { return };
                tool.sent_arguments = true;
                let call = json!({"index": tool.index, "function": {"arguments": partial}});
                self.push(json!({"tool_calls": [call]}), out);
            }
            // signature_delta, citations_delta: nothing an OpenAI client can use.
            _ => {}
        }
    }

    fn block_stop(&mut self, index: u64, out: &mut Vec<Translated>) {
        if let Some(tool) = self.open_tools.remove(&index) {
            self.close_tool(tool, out);
        }
    }

    /// A call whose arguments never came has none: `"{}"`, the empty object, not `""`
    /// (docs/upstream-protocols.md, pitfall 7).
    fn close_tool(&mut self, tool: OpenTool, out: &mut Vec<Translated>) {
        if !tool.sent_arguments {
            let call = json!({"index": tool.index, "function": {"arguments": "{}"}});
            self.push(json!({"tool_calls": [call]}), out);
        }
    }

    fn message_delta(&mut self, data: &Value) {
        if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
            self.stop_reason = Some(reason.to_string());
        }
        self.add_usage(data.get("usage"));
    }

    /// The finishing chunk, then the usage-only chunk (docs/upstream-protocols.md, pitfall 6).
    fn message_stop(&mut self, out: &mut Vec<Translated>) {
        for tool in std::mem::take(&mut self.open_tools).into_values() {
            self.close_tool(tool, out);
        }
        self.start(out);
        let reason = anthropic_map::finish_reason(self.stop_reason.as_deref(), self.tool_calls > 0);
        out.push(Translated::Chunk(self.chunk(json!({}), Some(reason))));
        let mut usage = self.envelope(Vec::new());
        usage["usage"] = anthropic_map::openai_usage(&Value::Object(self.usage.clone()));
        out.push(Translated::Chunk(usage));
        self.done = true;
    }

    fn add_usage(&mut self, usage: Option<&Value>) {
        let fields = usage.and_then(Value::as_object).into_iter().flatten();
        for (name, value) in fields.filter(|(_, v)| v.is_u64()) {
            self.usage.insert(name.clone(), value.clone());
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<Translated>) {
        if !text.is_empty() {
            self.push(json!({"content": text}), out);
        }
    }

    fn thinking(&mut self, text: &str, out: &mut Vec<Translated>) {
        if !text.is_empty() {
            self.push(json!({"reasoning_content": text}), out);
        }
    }

    /// The first chunk: the role, once (docs/upstream-protocols.md, pitfall 8), with empty content.
    fn start(&mut self, out: &mut Vec<Translated>) {
        if !self.started {
            self.started = true;
            out.push(Translated::Chunk(self.chunk(json!({"role": "assistant", "content": ""}), None)));
        }
    }

    fn push(&mut self, delta: Value, out: &mut Vec<Translated>) {
        self.start(out);
        out.push(Translated::Chunk(self.chunk(delta, None)));
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.envelope(vec![json!({"index": 0, "delta": delta, "finish_reason": finish_reason})])
    }

    fn envelope(&self, choices: Vec<Value>) -> Value {
        crate::providers::chunk_envelope(&self.id, self.created, &self.model, choices)
    }

    fn fail(&mut self, out: &mut Vec<Translated>, code: &str, message: &str) {
        out.push(Translated::Error(crate::providers::stream_error(code, message)));
        self.done = true;
    }
}

/// Anthropic's `{"type": "overloaded_error", "message"}` as an OpenAI error object: the
/// Anthropic type is the code; server-side types are OpenAI's `api_error`, the others
/// (`invalid_request_error`, `rate_limit_error`, ...) already have OpenAI's names.
fn openai_error(error: &Value) -> Value {
    let code = error.get("type").and_then(Value::as_str).unwrap_or("api_error");
    let kind = match code {
        "overloaded_error" | "api_error" | "" => "api_error",
        other => other,
    };
    json!({"error": {"message": error_message(error), "type": kind, "param": null, "code": code}})
}
