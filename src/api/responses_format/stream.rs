//! OpenAI chunk streams to the Responses API's event sequence (`EventWriter`).

use crate::providers::hub::{self, ChunkWriter};
use serde_json::{Value, json};

use super::response::{
    Frame, call_id, call_item, message_item, reasoning_item, response_error, status_of, text_part, usage,
};

/// The open output item of a stream, with its output index.
#[derive(Debug)]
enum Open {
    Reasoning {
        index: usize,
        text: String,
    },
    Message {
        index: usize,
        text: String,
    },
    /// A function call, by its chat tool-call index.
    Call {
        index: usize,
        chat_index: u64,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Turns a stream of OpenAI chunks (and errors) into the Responses events (OpenAI's streaming
/// events reference): `response.created` and `response.in_progress` first; then the output
/// items, each `output_item.added`, its parts and deltas, its `done` events and
/// `output_item.done`, one item closed before the next opens; last exactly one of
/// `response.completed`, `response.incomplete` or `response.failed`. Every event carries its
/// `type` and a `sequence_number` from 0. Nothing is emitted after the terminal event.
pub struct EventWriter {
    frame: Frame,
    seq: u64,
    started: bool,
    done: bool,
    open: Option<Open>,
    /// Finished items, in output order.
    output: Vec<Value>,
    /// Chat tool-call indices that have had an item.
    calls: Vec<u64>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl EventWriter {
    pub fn new(frame: Frame) -> EventWriter {
        EventWriter {
            frame,
            seq: 0,
            started: false,
            done: false,
            open: None,
            output: Vec::new(),
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// The model named in the events, until the first event is out (the route learns the
    /// upstream's own model id from the first chunk).
    pub fn set_model(&mut self, model: &str) {
        if !self.started {
            self.frame.model = model.to_string();
        }
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// One OpenAI `chat.completion.chunk`; only the first choice counts, and usage (on any
    /// chunk) is kept for the end. A chunk that is an error object is handled as `error`.
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Value> {
        hub::write_chunk(self, chunk)
    }

    /// An OpenAI error object in the stream: `response.failed` with its code and message.
    pub fn error(&mut self, error: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start(&mut out);
        let usage = self.usage.as_ref().map_or(Value::Null, |u| usage(Some(u)));
        let response = self.frame.response("failed", self.output.clone(), usage, Value::Null, response_error(error));
        self.emit("response.failed", json!({"response": response}), &mut out);
        self.done = true;
        out
    }

    /// The chat stream ended normally: the open item closes (an empty message when there was
    /// no output at all), then `response.completed` or `response.incomplete` with usage.
    pub fn finish(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start(&mut out);
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        if self.open.is_none() && self.output.is_empty() {
            self.open_message(&mut out);
        }
        self.close(&mut out);
        let response =
            self.frame.response(status, self.output.clone(), usage(self.usage.as_ref()), incomplete, Value::Null);
        let name = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(name, json!({"response": response}), &mut out);
        self.done = true;
        out
    }

    fn emit(&mut self, kind: &str, mut data: Value, out: &mut Vec<Value>) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(data);
    }

    fn start(&mut self, out: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.frame.response("in_progress", Vec::new(), Value::Null, Value::Null, Value::Null);
        self.emit("response.created", json!({"response": response.clone()}), out);
        self.emit("response.in_progress", json!({"response": response}), out);
    }

    fn reasoning_delta(&mut self, text: &str, out: &mut Vec<Value>) {
        let index = match self.open {
            Some(Open::Reasoning { index, .. }) => index,
            _ => self.open_reasoning(out),
        };
        self.append(text);
        let id = self.frame.item_id("rs", index);
        self.emit(
            "response.reasoning_summary_text.delta",
            json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
            out,
        );
    }

    /// Opens a reasoning item; returns its output index.
    fn open_reasoning(&mut self, out: &mut Vec<Value>) -> usize {
        self.close(out);
        let index = self.output.len();
        let id = self.frame.item_id("rs", index);
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": {"type": "reasoning", "id": id, "summary": []}}),
            out,
        );
        self.emit(
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}}),
            out,
        );
        self.open = Some(Open::Reasoning { index, text: String::new() });
        index
    }

    /// Adds to the open item's text (a reasoning summary, a message, a call's arguments).
    fn append(&mut self, more: &str) {
        match &mut self.open {
            Some(Open::Reasoning { text, .. } | Open::Message { text, .. }) => text.push_str(more),
            Some(Open::Call { arguments, .. }) => arguments.push_str(more),
            None => {}
        }
    }

    /// Opens a message item; returns its output index.
    fn open_message(&mut self, out: &mut Vec<Value>) -> usize {
        self.close(out);
        let index = self.output.len();
        let id = self.frame.item_id("msg", index);
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": {"type": "message", "id": id, "status": "in_progress",
                "role": "assistant", "content": []}}),
            out,
        );
        self.emit(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            out,
        );
        self.open = Some(Open::Message { index, text: String::new() });
        index
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<Value>) {
        let index = match self.open {
            Some(Open::Message { index, .. }) => index,
            _ => self.open_message(out),
        };
        self.append(text);
        let id = self.frame.item_id("msg", index);
        self.emit(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
            out,
        );
    }

    /// One `delta.tool_calls[]` entry: a new call index opens a `function_call` item, argument
    /// text becomes `function_call_arguments.delta`. A fragment for a call already closed
    /// (interleaved calls, which OpenAI does not send) cannot be placed and is dropped.
    fn call_fragment(&mut self, position: u64, call: &Value, out: &mut Vec<Value>) {
        let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(position);
        let function = call.get("function").unwrap_or(&Value::Null);
        let fragment = function.get("arguments").and_then(Value::as_str).unwrap_or_default();
        let index = match &self.open {
            Some(Open::Call { index, chat_index: c, .. }) if *c == chat_index => *index,
            _ if self.calls.contains(&chat_index) => return,
            _ => {
                self.calls.push(chat_index);
                self.close(out);
                let index = self.output.len();
                let call_id = call_id(call, &self.frame, index);
                let name = function.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let item = call_item(self.frame.item_id("fc", index), &call_id, &name, "", "in_progress");
                self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
                self.open = Some(Open::Call { index, chat_index, call_id, name, arguments: String::new() });
                index
            }
        };
        if !fragment.is_empty() {
            self.append(fragment);
            let id = self.frame.item_id("fc", index);
            self.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": fragment}),
                out,
            );
        }
    }

    /// Closes the open item with its `done` events. A call that streamed no arguments gets
    /// `{}`, so clients that parse the joined fragments see an object.
    fn close(&mut self, out: &mut Vec<Value>) {
        let Some(open) = self.open.take() else { return };
        let item = match open {
            Open::Reasoning { index, text } => {
                let id = self.frame.item_id("rs", index);
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                self.emit("response.reasoning_summary_text.done", done, out);
                let mut part = at;
                part["part"] = json!({"type": "summary_text", "text": text});
                self.emit("response.reasoning_summary_part.done", part, out);
                (index, reasoning_item(id, &text))
            }
            Open::Message { index, text } => {
                let id = self.frame.item_id("msg", index);
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.emit("response.output_text.done", done, out);
                let mut part = at;
                part["part"] = text_part(&text);
                self.emit("response.content_part.done", part, out);
                let status =
                    if status_of(self.finish_reason.as_deref()).0 == "completed" { "completed" } else { "incomplete" };
                (index, message_item(id, status, &text))
            }
            Open::Call { index, call_id, name, mut arguments, .. } => {
                let id = self.frame.item_id("fc", index);
                if arguments.is_empty() {
                    arguments = "{}".into();
                    self.emit(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": arguments}),
                        out,
                    );
                }
                self.emit(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
                    out,
                );
                (index, call_item(id, &call_id, &name, &arguments, "completed"))
            }
        };
        let (index, item) = item;
        self.emit("response.output_item.done", json!({"output_index": index, "item": item.clone()}), out);
        self.output.push(item);
    }
}

impl ChunkWriter for EventWriter {
    type Event = Value;

    fn is_done(&self) -> bool {
        self.done
    }

    fn error(&mut self, error: &Value) -> Vec<Value> {
        EventWriter::error(self, error)
    }

    fn begin(&mut self, _chunk: &Value, usage: Option<&Value>, out: &mut Vec<Value>) {
        if let Some(usage) = usage {
            self.usage = Some(usage.clone());
        }
        self.start(out);
    }

    fn reasoning(&mut self, text: &str, out: &mut Vec<Value>) {
        self.reasoning_delta(text, out);
    }

    fn text(&mut self, text: &str, _refusal: bool, out: &mut Vec<Value>) {
        self.text_delta(text, out);
    }

    fn tool_call(&mut self, position: u64, call: &Value, out: &mut Vec<Value>) {
        self.call_fragment(position, call, out);
    }

    fn finish_reason(&mut self, reason: &str) {
        self.finish_reason = Some(reason.to_string());
    }
}

/// The answer's model name (the naming rule of the man page, HTTP API): `provider/` and the
/// id the upstream answered with, or the id sent when it names none. An id the chat
/// pipeline already prefixed is taken as it is.
pub fn model_name(provider: &str, answered: Option<&str>, sent: &str) -> String {
    let id = answered.filter(|a| !a.is_empty()).unwrap_or(sent);
    if id.starts_with(&format!("{provider}/")) { id.to_string() } else { format!("{provider}/{id}") }
}
