//! OpenAI chunk streams to Anthropic's named SSE events (`EventWriter`), and the model naming
//! rule every route shares (`model_name`).

use super::response::tool_id;
use crate::providers::anthropic_map;
use crate::providers::hub::{self, ChunkWriter};
use serde_json::{Value, json};

/// The model as answers name it on every route: `provider/` + the id the upstream answered
/// with, or the id sent when it names none. An answer that already carries the provider
/// prefix keeps it once.
pub fn model_name(provider: &str, sent: &str, answered: Option<&Value>) -> String {
    let id = answered.and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(sent);
    match id.strip_prefix(provider).and_then(|rest| rest.strip_prefix('/')) {
        Some(_) => id.to_string(),
        None => format!("{provider}/{id}"),
    }
}

/// One Anthropic SSE event: its name and its data (whose `type` is the name).
pub type Event = (&'static str, Value);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
    /// A tool call, by its OpenAI index; `args` is whether any argument text was sent.
    Tool {
        call: u64,
        args: bool,
    },
}

/// Turns a stream of OpenAI chunks (and errors) into Anthropic SSE events (Anthropic's
/// streaming reference): `message_start` first; then blocks at indices 0, 1, 2..., each
/// `content_block_start`, deltas, `content_block_stop`, a new kind of content (or a new tool
/// call) closing the open block; `message_delta` and `message_stop` at the end, or `error`.
/// Nothing is emitted after `message_stop` or `error`.
pub struct EventWriter {
    model: String,
    /// `(provider, id sent)`: name the model from the first chunk's (see `naming`).
    naming: Option<(String, String)>,
    id: String,
    /// A prompt count known before the stream, for `message_start`.
    input_tokens: Option<u64>,
    started: bool,
    done: bool,
    /// The open block and its Anthropic index.
    open: Option<(Block, u64)>,
    next_index: u64,
    /// OpenAI tool-call indices that have had a block.
    calls: Vec<u64>,
    finish_reason: Option<String>,
    /// A `refusal` delta came: the stop reason is `refusal` (as for a whole message).
    refused: bool,
    usage: Option<Value>,
}

impl EventWriter {
    pub fn new(model: &str, id: &str) -> EventWriter {
        EventWriter {
            model: model.to_string(),
            naming: None,
            id: id.to_string(),
            input_tokens: None,
            started: false,
            done: false,
            open: None,
            next_index: 0,
            calls: Vec::new(),
            finish_reason: None,
            refused: false,
            usage: None,
        }
    }

    /// Names the model in `message_start` by `model_name` from the first chunk's `model`
    /// (the upstream's id), instead of the name given to `new`.
    pub fn naming(mut self, provider: &str, sent: &str) -> EventWriter {
        self.naming = Some((provider.to_string(), sent.to_string()));
        self
    }

    /// The prompt's token count when it is known before the stream (for `message_start`,
    /// which otherwise says 0 unless the first chunk carries usage).
    #[cfg(test)]
    pub fn with_input_tokens(mut self, tokens: u64) -> EventWriter {
        self.input_tokens = Some(tokens);
        self
    }

    /// One OpenAI `chat.completion.chunk`. Usage (on a usage-only chunk or any other) is
    /// recorded for the end; only the first choice counts. A chunk that is an error object
    /// is handled as `error`.
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Event> {
        hub::write_chunk(self, chunk)
    }

    /// An OpenAI error object (`{"error": {message, type, code}}`) in the stream: `event:
    /// error` with the Anthropic error type, after `message_start` if nothing came before.
    pub fn error(&mut self, error: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start(&mut out);
        out.push(("error", anthropic_error(error)));
        self.done = true;
        out
    }

    /// The OpenAI stream ended normally (`[DONE]`): the open block closes, then
    /// `message_delta` (stop reason, usage) and `message_stop`.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start(&mut out);
        self.close(&mut out);
        let called = !self.calls.is_empty();
        let finish = match self.finish_reason.as_deref() {
            Some("length") => Some("length"),
            _ if self.refused => Some("content_filter"),
            other => other,
        };
        let mut usage = json!({"output_tokens": 0});
        if let Some(recorded) = &self.usage {
            usage = anthropic_map::token_counts(recorded).to_anthropic();
        }
        out.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": anthropic_map::stop_reason(finish, called), "stop_sequence": null},
                "usage": usage,
            }),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
        self.done = true;
        out
    }

    fn start(&mut self, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        let input = self
            .input_tokens
            .or_else(|| self.usage.as_ref().map(|u| anthropic_map::token_counts(u).input))
            .unwrap_or(0);
        out.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": 0},
            }}),
        ));
    }

    /// Makes a thinking or text block the open block, closing another one first; a no-op
    /// when that kind is already open.
    fn open_block(&mut self, block: Block, out: &mut Vec<Event>) {
        if self.open.is_some_and(|(open, _)| open == block) {
            return;
        }
        let content_block = match block {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        self.start_block(block, content_block, out);
    }

    /// Closes the open block and starts `block` at the next index.
    fn start_block(&mut self, block: Block, content_block: Value, out: &mut Vec<Event>) {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((block, index));
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        ));
    }

    /// One `delta.tool_calls[]` entry: a new call index opens a `tool_use` block, argument
    /// text becomes `input_json_delta`. A fragment for a call whose block is already closed
    /// (interleaved calls, which OpenAI does not send) cannot be placed and is dropped.
    fn tool_fragment(&mut self, position: u64, call: &Value, out: &mut Vec<Event>) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(position);
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or_default();
        let open_here = matches!(self.open, Some((Block::Tool { call, .. }, _)) if call == index);
        if !open_here {
            if self.calls.contains(&index) {
                return;
            }
            self.calls.push(index);
            let content_block = json!({
                "type": "tool_use",
                "id": tool_id(call.get("id"), &self.id, index),
                "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
                "input": {},
            });
            self.start_block(Block::Tool { call: index, args: false }, content_block, out);
        }
        if !arguments.is_empty() {
            if let Some((Block::Tool { args, .. }, _)) = &mut self.open {
                *args = true;
            }
            out.push(self.delta(json!({"type": "input_json_delta", "partial_json": arguments})));
        }
    }

    /// A `content_block_delta` for the open block.
    fn delta(&self, delta: Value) -> Event {
        let index = self.open.map(|(_, i)| i).unwrap_or_default();
        ("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}))
    }

    /// Closes the open block. A tool call that streamed no arguments gets `{}`, so clients
    /// that parse the joined fragments see an object, not an empty string.
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some((Block::Tool { args: false, .. }, _)) = self.open {
            out.push(self.delta(json!({"type": "input_json_delta", "partial_json": "{}"})));
        }
        if let Some((_, index)) = self.open.take() {
            out.push(("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        }
    }
}

impl ChunkWriter for EventWriter {
    type Event = Event;

    fn is_done(&self) -> bool {
        self.done
    }

    fn error(&mut self, error: &Value) -> Vec<Event> {
        EventWriter::error(self, error)
    }

    fn begin(&mut self, chunk: &Value, usage: Option<&Value>, out: &mut Vec<Event>) {
        if let Some(usage) = usage {
            self.usage = Some(usage.clone());
        }
        if let (false, Some((provider, sent))) = (self.started, &self.naming) {
            self.model = model_name(provider, sent, chunk.get("model"));
        }
        self.start(out);
    }

    fn reasoning(&mut self, text: &str, out: &mut Vec<Event>) {
        self.open_block(Block::Thinking, out);
        out.push(self.delta(json!({"type": "thinking_delta", "thinking": text})));
    }

    fn text(&mut self, text: &str, refusal: bool, out: &mut Vec<Event>) {
        self.open_block(Block::Text, out);
        out.push(self.delta(json!({"type": "text_delta", "text": text})));
        self.refused |= refusal;
    }

    fn tool_call(&mut self, position: u64, call: &Value, out: &mut Vec<Event>) {
        self.tool_fragment(position, call, out);
    }

    fn finish_reason(&mut self, reason: &str) {
        self.finish_reason = Some(reason.to_string());
    }
}

/// An OpenAI error object as Anthropic's `{"type": "error", "error": {"type", "message"}}`.
/// Mid-stream errors carry no HTTP status, so one is inferred from `code` and `type`
/// (`error::status_of_openai_error`), and mapped by the one table of `error::anthropic_type_of`.
pub(super) fn anthropic_error(error: &Value) -> Value {
    let e = error.get("error").filter(|e| e.is_object()).unwrap_or(error);
    let text = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or_default();
    let message = match text("message") {
        "" => format!("upstream error: {e}"),
        m => m.to_string(),
    };
    let status = crate::error::status_of_openai_error(e.get("code"), text("type"));
    json!({"type": "error", "error": {"type": crate::error::anthropic_type_of(status), "message": message}})
}
