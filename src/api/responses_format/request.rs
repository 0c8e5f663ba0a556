//! Responses API requests to OpenAI chat bodies.

use crate::error::ApiError;
use crate::providers::hub::{self, bad};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;

use super::field;

fn kind(value: &Value) -> &str {
    value.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Responses request -> OpenAI chat body. `model` is kept as given (the chat pipeline
/// resolves it). A malformed `input` item is a 400 naming its path.
pub fn to_chat_request(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    if let Some(id) = field(body, "previous_response_id") {
        return Err(bad(
            "previous_response_id",
            format!(
                "previous_response_id ({id}) is not supported: keyrelay is stateless and keeps no responses; send the whole conversation in 'input'"
            ),
        ));
    }
    let mut out = Map::new();
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut history = History::default();
    match field(body, "instructions") {
        Some(Value::String(text)) if !text.is_empty() => history.push(json!({"role": "system", "content": text})),
        Some(Value::String(_)) | None => {}
        Some(_) => return Err(bad("instructions", "'instructions' must be a string")),
    }
    match field(body, "input") {
        Some(Value::String(text)) => history.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                history.item(&format!("input[{i}]"), item)?;
            }
        }
        Some(_) => return Err(bad("input", "'input' must be a string or an array of items")),
        None => return Err(bad("input", "missing required field 'input'")),
    }
    out.insert("messages".into(), Value::Array(history.finish()));
    tools_and_choice(body, &mut out);
    if let Some(format) = response_format(field(body, "text").and_then(|t| t.get("format")))? {
        out.insert("response_format".into(), format);
    }
    if let Some(n) = field(body, "max_output_tokens") {
        let n = n.as_u64().filter(|n| *n >= 1);
        let n = n.ok_or_else(|| bad("max_output_tokens", "'max_output_tokens' must be a positive integer"))?;
        out.insert("max_tokens".into(), json!(n));
    }
    for name in ["temperature", "top_p"] {
        if let Some(v) = field(body, name) {
            if !v.is_number() {
                return Err(bad(name, format!("'{name}' must be a number")));
            }
            out.insert(name.into(), v.clone());
        }
    }
    if let Some(effort) = field(body, "reasoning").and_then(|r| r.get("effort")).filter(|e| !e.is_null()) {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(user) = field(body, "user").filter(|u| u.is_string()) {
        out.insert("user".into(), user.clone());
    }
    hub::stream_fields(body.get("stream"), &mut out)?;
    Ok(out)
}

/// The chat messages being built from `input` items.
#[derive(Default)]
struct History {
    messages: Vec<Value>,
    /// Call ids of function calls not answered yet, oldest first.
    waiting: VecDeque<String>,
    /// Image parts of tool outputs, for a user message after the tool messages.
    attachments: Vec<Value>,
}

impl History {
    /// A message other than a tool result: pending tool-output images go first.
    fn push(&mut self, message: Value) {
        self.flush_attachments();
        self.messages.push(message);
    }

    fn flush_attachments(&mut self) {
        if self.attachments.is_empty() {
            return;
        }
        let mut content = vec![json!({"type": "text", "text": "Images returned by the tool calls above:"})];
        content.append(&mut self.attachments);
        self.messages.push(json!({"role": "user", "content": content}));
    }

    fn finish(mut self) -> Vec<Value> {
        self.flush_attachments();
        self.messages
    }

    fn item(&mut self, at: &str, item: &Value) -> Result<(), ApiError> {
        if !item.is_object() {
            return Err(bad(at, format!("{at} must be an object")));
        }
        match item.get("type").and_then(Value::as_str) {
            Some("message") => self.message(at, item),
            None if item.get("role").is_some() => self.message(at, item),
            Some("function_call") => {
                let arguments = match item.get("arguments") {
                    Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => "{}".to_string(),
                };
                self.call(at, item, arguments)
            }
            Some("custom_tool_call") => {
                let input = item.get("input").and_then(Value::as_str).unwrap_or_default();
                self.call(at, item, json!({"input": input}).to_string())
            }
            Some("function_call_output" | "custom_tool_call_output") => self.output(at, item),
            // Reasoning, item references, built-in tool calls and anything newer: no chat
            // equivalent (module doc).
            _ => Ok(()),
        }
    }

    fn message(&mut self, at: &str, item: &Value) -> Result<(), ApiError> {
        let role = match item.get("role").and_then(Value::as_str) {
            Some("developer" | "system") => "system",
            Some(role @ ("user" | "assistant")) => role,
            _ => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("{at}.role must be user, assistant, system or developer"),
                ));
            }
        };
        let parts = match item.get("content") {
            Some(Value::String(text)) => {
                self.push(json!({"role": role, "content": text}));
                return Ok(());
            }
            Some(Value::Array(parts)) => parts,
            _ => return Err(bad(&format!("{at}.content"), format!("{at}.content must be a string or an array"))),
        };
        let mut converted = Vec::new();
        for (j, part) in parts.iter().enumerate() {
            converted.extend(content_part(&format!("{at}.content[{j}]"), part)?);
        }
        let texts = || converted.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>();
        let content = match role {
            "system" => json!(texts().join("\n\n")),
            "assistant" => json!(texts().concat()),
            _ if converted.len() == 1 && kind(&converted[0]) == "text" => converted[0]["text"].clone(),
            _ => Value::Array(converted),
        };
        self.push(json!({"role": role, "content": content}));
        Ok(())
    }

    /// A tool call joins the assistant message just before it, or starts one.
    fn call(&mut self, at: &str, item: &Value, arguments: String) -> Result<(), ApiError> {
        let Some(name) = item.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return Err(bad(&format!("{at}.name"), format!("{at}.name must be a non-empty string")));
        };
        let id = ["call_id", "id"]
            .iter()
            .find_map(|k| item.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .map_or_else(|| format!("call_{}", self.messages.len()), String::from);
        self.waiting.push_back(id.clone());
        let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}});
        if self.attachments.is_empty() {
            if let Some(last) = self.messages.last_mut().filter(|m| m["role"] == "assistant") {
                match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    Some(calls) => calls.push(call),
                    None => last["tool_calls"] = json!([call]),
                }
                if last["content"] == "" {
                    last["content"] = Value::Null;
                }
                return Ok(());
            }
        }
        self.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        Ok(())
    }

    fn output(&mut self, at: &str, item: &Value) -> Result<(), ApiError> {
        let (text, images) = match item.get("output") {
            Some(Value::String(s)) => (s.clone(), Vec::new()),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                let mut images = Vec::new();
                for (j, part) in parts.iter().enumerate() {
                    for part in content_part(&format!("{at}.output[{j}]"), part)? {
                        match part.get("text").and_then(Value::as_str) {
                            Some(text) => texts.push(text.to_string()),
                            None => images.push(part),
                        }
                    }
                }
                (texts.join("\n"), images)
            }
            None | Some(Value::Null) => (String::new(), Vec::new()),
            Some(v) => (v.to_string(), Vec::new()),
        };
        let given = item.get("call_id").and_then(Value::as_str).filter(|s| !s.is_empty());
        let id = match given {
            Some(id) => {
                self.waiting.retain(|w| w != id);
                Some(id.to_string())
            }
            None => self.waiting.pop_front(),
        };
        let Some(id) = id else {
            self.push(json!({"role": "user", "content": format!("Tool output:\n{text}")}));
            self.attachments.extend(images);
            return Ok(());
        };
        self.messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
        self.attachments.extend(images);
        Ok(())
    }
}

/// One Responses content part as chat parts (none for parts with no chat meaning).
fn content_part(at: &str, part: &Value) -> Result<Vec<Value>, ApiError> {
    let text_of = |key: &str| part.get(key).and_then(Value::as_str).unwrap_or_default();
    Ok(match kind(part) {
        "input_text" | "output_text" | "text" | "summary_text" => {
            vec![json!({"type": "text", "text": text_of("text")})]
        }
        "refusal" => vec![json!({"type": "text", "text": text_of("refusal")})],
        "input_image" => {
            let url = match part.get("image_url") {
                Some(Value::String(url)) => url.clone(),
                Some(Value::Object(o)) => o.get("url").and_then(Value::as_str).unwrap_or_default().to_string(),
                _ => String::new(),
            };
            if url.is_empty() {
                return Err(files_api(at, "input_image", "image_url (a URL or a data: URI)"));
            }
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                image["detail"] = detail.clone();
            }
            vec![json!({"type": "image_url", "image_url": image})]
        }
        "input_file" => {
            let Some(data) = part.get("file_data").and_then(Value::as_str) else {
                return Err(files_api(at, "input_file", "file_data (a base64 data: URI)"));
            };
            let mut file = json!({"file_data": data});
            if let Some(name) = part.get("filename").filter(|n| n.is_string()) {
                file["filename"] = name.clone();
            }
            vec![json!({"type": "file", "file": file})]
        }
        _ => Vec::new(),
    })
}

/// Files-API ids and file URLs need OpenAI's servers; the translated families cannot fetch
/// them, and leaving the file out would change the question.
fn files_api(at: &str, what: &str, instead: &str) -> ApiError {
    bad(
        at,
        format!(
            "{at}: this {what} names a file by id or URL, which only the openai provider can read; send {instead} instead"
        ),
    )
}

/// Function tools, nested the chat way, and the matching `tool_choice` and
/// `parallel_tool_calls`; nothing when no function tool is left.
fn tools_and_choice(body: &Map<String, Value>, out: &mut Map<String, Value>) {
    let mut tools: Vec<Value> = field(body, "tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| kind(t) == "function" && t.get("name").is_some_and(Value::is_string))
        .map(|t| {
            let mut function = Map::new();
            for key in ["name", "description", "parameters", "strict"] {
                if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                    function.insert(key.into(), v.clone());
                }
            }
            json!({"type": "function", "function": function})
        })
        .collect();
    let choice = match field(body, "tool_choice") {
        Some(Value::String(mode)) if matches!(mode.as_str(), "none" | "auto" | "required") => Some(json!(mode)),
        Some(choice) if kind(choice) == "function" => {
            choice.get("name").map(|name| json!({"type": "function", "function": {"name": name}}))
        }
        Some(choice) if kind(choice) == "allowed_tools" => {
            let allowed: Vec<&str> = choice
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect();
            tools.retain(|t| t["function"]["name"].as_str().is_some_and(|n| allowed.contains(&n)));
            Some(json!(if choice.get("mode").and_then(Value::as_str) == Some("required") {
                "required"
            } else {
                "auto"
            }))
        }
        _ => None,
    };
    if tools.is_empty() {
        return;
    }
    out.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(parallel) = field(body, "parallel_tool_calls").filter(|p| p.is_boolean()) {
        out.insert("parallel_tool_calls".into(), parallel.clone());
    }
}

/// `text.format` as a chat `response_format`; `None` for plain text.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else { return Ok(None) };
    match kind(format) {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let Some(schema) = format.get("schema").filter(|s| s.is_object()) else {
                return Err(bad("text.format.schema", "'text.format.schema' must be a JSON schema object"));
            };
            let mut spec = json!({
                "name": format.get("name").and_then(Value::as_str).unwrap_or("response"),
                "schema": schema,
            });
            for key in ["strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    spec[key] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": spec})))
        }
        other => Err(bad("text.format.type", format!("unknown text.format type '{other}'"))),
    }
}
