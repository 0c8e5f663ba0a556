//! A whole OpenAI `chat.completion` to an Anthropic message.

use crate::providers::anthropic_map;
use crate::providers::openai::{first_choice, reasoning_text};
use serde_json::{Value, json};

/// OpenAI `chat.completion` -> Anthropic message: thinking, then text, then `tool_use` blocks.
/// The text block is left out when empty, unless the message would have no block at all.
pub fn from_openai_response(openai: &Value, model: &str, id: &str) -> Value {
    let choice = first_choice(openai);
    let message = choice.and_then(|c| c.get("message")).unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let reasoning = reasoning_text(message);
    if !reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    let mut text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    let refusal = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty());
    if let (true, Some(refusal)) = (text.is_empty(), refusal) {
        text = refusal.to_string();
    }
    let calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, call)| {
            let function = call.get("function").unwrap_or(&Value::Null);
            json!({
                "type": "tool_use",
                "id": tool_id(call.get("id"), id, i as u64),
                "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
                "input": tool_input(function.get("arguments")),
            })
        })
        .collect();
    let called = !calls.is_empty();
    if !text.is_empty() || (content.is_empty() && !called) {
        content.push(json!({"type": "text", "text": text}));
    }
    content.extend(calls);
    let finish = choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str);
    let finish = if refusal.is_some() && finish != Some("length") { Some("content_filter") } else { finish };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": anthropic_map::stop_reason(finish, called),
        "stop_sequence": null,
        "usage": anthropic_map::token_counts(openai.get("usage").unwrap_or(&Value::Null)).to_anthropic(),
    })
}

/// The call's own id, or one made from the message id when the upstream sent none.
pub(super) fn tool_id(id: Option<&Value>, message_id: &str, index: u64) -> String {
    match id.and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("toolu_{message_id}_{index}"),
    }
}

/// Arguments (a JSON string, or an object from lenient upstreams) as an input object; `{}`
/// when they are missing or not a JSON object.
fn tool_input(arguments: Option<&Value>) -> Value {
    let parsed = match arguments {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    parsed.filter(Value::is_object).unwrap_or_else(|| json!({}))
}
