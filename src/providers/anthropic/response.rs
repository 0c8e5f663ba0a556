//! Whole Anthropic messages (and model lists) to the OpenAI format, and the whole-answer side
//! of structured output (`json_answer`).

use crate::providers::anthropic_map;
use serde_json::{Value, json};

/// Anthropic Message JSON -> OpenAI `chat.completion`: text blocks joined as the content,
/// thinking as `reasoning_content`, `tool_use` blocks as tool calls. Redacted thinking and
/// server-side tool blocks have no OpenAI form and are skipped. The model is the one the
/// message names (`model`, the id sent, when it names none).
pub fn parse_chat(model: &str, created: u64, body: &Value) -> Result<Value, String> {
    if let Some(error) = body.get("error").filter(|e| !e.is_null()) {
        return Err(format!("anthropic answered an error: {}", error_message(error)));
    }
    let blocks = body.get("content").and_then(Value::as_array).ok_or("anthropic answered no content array")?;
    let (mut content, mut reasoning, mut tool_calls) = (String::new(), String::new(), Vec::new());
    for block in blocks {
        let text = |field: &str| block.get(field).and_then(Value::as_str).unwrap_or("");
        match text("type") {
            "text" => content.push_str(text("text")),
            "thinking" => reasoning.push_str(text("thinking")),
            "tool_use" => tool_calls.push(json!({
                "id": text("id"),
                "type": "function",
                "function": {"name": text("name"), "arguments": arguments(block.get("input"))},
            })),
            _ => {}
        }
    }
    // OpenAI leaves content null on a turn that only calls tools.
    let content = if content.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(content) };
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    let called = !tool_calls.is_empty();
    if called {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let stop_reason = body.get("stop_reason").and_then(Value::as_str);
    Ok(json!({
        "id": body.get("id").and_then(Value::as_str).unwrap_or("msg_unknown"),
        "object": "chat.completion",
        "created": created,
        "model": answered_model(body, model),
        "choices": [{"index": 0, "message": message, "finish_reason": anthropic_map::finish_reason(stop_reason, called)}],
        "usage": anthropic_map::openai_usage(body.get("usage").unwrap_or(&Value::Null)),
    }))
}

/// The model id a message names, else `sent`.
pub(super) fn answered_model<'a>(message: &'a Value, sent: &'a str) -> &'a str {
    message.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(sent)
}

/// Model ids from `GET {base}/models` (`{"data": [{"id": ...}]}`).
pub fn model_ids(body: &Value) -> Vec<String> {
    crate::providers::openai::model_ids(body)
}

/// A tool's `input` object as an OpenAI arguments string; none at all is `"{}"`, never `""`.
fn arguments(input: Option<&Value>) -> String {
    match input {
        None | Some(Value::Null) => "{}".into(),
        Some(input) => input.to_string(),
    }
}

pub(super) fn error_message(error: &Value) -> String {
    let inner = error.get("error").unwrap_or(error);
    match inner.get("message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    }
}

/// A `chat.completion` whose answer came as a call of the answer tool `tool` (see the module
/// comment), with that call's arguments as the content and `finish_reason: stop` (`length`
/// stays). Other text is left out: the content must be the JSON alone.
pub fn json_answer(mut completion: Value, tool: &str) -> Value {
    for choice in completion.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) else { continue };
        let calls = message.get("tool_calls").and_then(Value::as_array).into_iter().flatten();
        let Some(answer) =
            calls.into_iter().find(|c| c.pointer("/function/name").and_then(Value::as_str) == Some(tool))
        else {
            continue;
        };
        let text = answer.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}").to_string();
        message.insert("content".into(), json!(text));
        message.remove("tool_calls");
        if choice["finish_reason"] == "tool_calls" {
            choice["finish_reason"] = json!("stop");
        }
    }
    completion
}
