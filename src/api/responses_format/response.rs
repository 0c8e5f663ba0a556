//! A whole OpenAI `chat.completion` to a Response object.

use crate::providers::openai::{first_choice, reasoning_text};
use serde_json::{Map, Value, json};

use super::field;

/// What every Response object of one request shares: its id, creation time, model name and
/// the request fields a Response echoes.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    echo: Map<String, Value>,
}

impl Frame {
    /// `id` is `resp_...`; `request` is the client's Responses request.
    pub fn new(id: &str, created_at: u64, model: &str, request: &Map<String, Value>) -> Frame {
        let given = |name: &str, default: Value| field(request, name).cloned().unwrap_or(default);
        let mut echo = Map::new();
        echo.insert("instructions".into(), given("instructions", Value::Null));
        echo.insert("max_output_tokens".into(), given("max_output_tokens", Value::Null));
        echo.insert("metadata".into(), given("metadata", json!({})));
        echo.insert("parallel_tool_calls".into(), given("parallel_tool_calls", json!(true)));
        echo.insert("reasoning".into(), given("reasoning", Value::Null));
        echo.insert("temperature".into(), given("temperature", Value::Null));
        echo.insert("text".into(), given("text", json!({"format": {"type": "text"}})));
        echo.insert("tool_choice".into(), given("tool_choice", json!("auto")));
        echo.insert("tools".into(), given("tools", json!([])));
        echo.insert("top_p".into(), given("top_p", Value::Null));
        echo.insert("truncation".into(), given("truncation", json!("disabled")));
        echo.insert("user".into(), given("user", Value::Null));
        Frame { id: id.to_string(), created_at, model: model.to_string(), echo }
    }

    /// An output item's id: its prefix, the response id's unique part, its output index.
    pub(super) fn item_id(&self, prefix: &str, index: usize) -> String {
        let unique = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{unique}_{index}")
    }

    /// A whole Response object, every field present (null where there is no value): strict
    /// clients refuse one with a field missing.
    pub(super) fn response(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Value,
        incomplete: Value,
        error: Value,
    ) -> Value {
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": error,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": output,
            "previous_response_id": null,
            "store": false,
            "usage": usage,
        });
        let map = response.as_object_mut().expect("an object");
        map.extend(self.echo.iter().map(|(k, v)| (k.clone(), v.clone())));
        response
    }
}

/// The status and `incomplete_details` a chat `finish_reason` means.
pub(super) fn status_of(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// Chat usage as Responses usage; zeros when the upstream gave none (clients read numbers).
pub fn usage(chat: Option<&Value>) -> Value {
    let chat = chat.unwrap_or(&Value::Null);
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(chat.get("prompt_tokens"));
    let output = n(chat.get("completion_tokens"));
    let total = chat.get("total_tokens").and_then(Value::as_u64).unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(chat.pointer("/prompt_tokens_details/cached_tokens"))},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(chat.pointer("/completion_tokens_details/reasoning_tokens"))},
        "total_tokens": total,
    })
}

pub(super) fn reasoning_item(id: String, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]})
}

pub(super) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(super) fn message_item(id: String, status: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": [text_part(text)]})
}

pub(super) fn call_item(id: String, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

/// A tool call's id from the upstream, or one made up when it sent none.
pub(super) fn call_id(call: &Value, frame: &Frame, index: usize) -> String {
    match call.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(id) => id.to_string(),
        None => frame.item_id("call", index),
    }
}

/// A whole `chat.completion` -> a Response object: a reasoning item, a message, then
/// function calls. The message is left out when empty, unless there would be no output.
pub fn from_chat_completion(completion: &Value, frame: &Frame) -> Value {
    let choice = first_choice(completion);
    let message = choice.and_then(|c| c.get("message")).unwrap_or(&Value::Null);
    let (status, incomplete) = status_of(choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str));
    let mut output = Vec::new();
    let reasoning = reasoning_text(message);
    if !reasoning.is_empty() {
        output.push(reasoning_item(frame.item_id("rs", output.len()), reasoning));
    }
    let mut text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    if text.is_empty() {
        text = message.get("refusal").and_then(Value::as_str).unwrap_or_default().to_string();
    }
    let calls = message.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !text.is_empty() || calls.is_empty() {
        let item_status = if status == "completed" { "completed" } else { "incomplete" };
        output.push(message_item(frame.item_id("msg", output.len()), item_status, &text));
    }
    for call in calls {
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = match function.get("arguments") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => "{}".to_string(),
        };
        let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
        let index = output.len();
        output.push(call_item(frame.item_id("fc", index), &call_id(call, frame, index), name, &arguments, "completed"));
    }
    frame.response(status, output, usage(completion.get("usage")), incomplete, Value::Null)
}

/// `error.code` and `error.message` of a Response from an OpenAI error object
/// (`{"error": {message, type, code}}`): the code, else the type, else `server_error`.
pub fn response_error(error: &Value) -> Value {
    let e = error.get("error").filter(|e| e.is_object()).unwrap_or(error);
    let text = |key: &str| match e.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let code = text("code").or_else(|| text("type")).unwrap_or_else(|| "server_error".into());
    let message = text("message").unwrap_or_else(|| format!("upstream error: {e}"));
    json!({"code": code, "message": message})
}
