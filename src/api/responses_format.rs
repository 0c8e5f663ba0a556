//! The OpenAI Responses API (`POST /v1/responses`) over the OpenAI chat hub: Responses
//! requests become chat bodies, `chat.completion`s become Response objects, and chat chunk
//! streams become the Responses event sequence (OpenAI's Responses API reference and its
//! streaming events reference). Pure functions: no I/O, no clock; ids and times come from the
//! caller.
//!
//! Choices where the two formats do not line up:
//! - keyrelay keeps no responses: `previous_response_id` is a 400 that says to send the whole
//!   conversation; `store`, `include`, `truncation`, `metadata` and `prompt_cache_key` have no
//!   chat equivalent and are ignored (`metadata` and `truncation` are echoed in the answer).
//! - `instructions` is the first message, as `system`; `developer` messages become `system`
//!   ones, since many OpenAI-compatible hosts refuse the newer role.
//! - Consecutive `function_call` items (and an assistant message just before them) make one
//!   assistant message with `tool_calls`. A `function_call_output` without `call_id` (some
//!   clients send one) answers the oldest call still unanswered; with no call waiting it
//!   becomes a user message, since a tool message must follow its call. Images in a tool
//!   output move to a user message after the tool messages (tool messages carry text).
//! - `reasoning` items are dropped: they hold a summary (and OpenAI's encrypted content), not
//!   the model's reasoning, and no chat family can take either back as its own thinking.
//! - Only function tools are sent. Built-in and custom tools (`custom`, `local_shell`,
//!   `web_search`, `file_search`, `mcp`, ...) need a server that runs them or a grammar, which
//!   chat-completions upstreams do not have: they are dropped, never refused, so agents that
//!   always offer them still work. Calls to such tools in the history (`custom_tool_call`)
//!   become function calls whose arguments are `{"input": ...}`; `local_shell_call` items and
//!   other built-in history are left out with their outputs.
//! - A `tool_choice` that names a dropped tool becomes the default (`auto`); `allowed_tools`
//!   keeps only the allowed function tools and its mode. With no tool left, `tools`,
//!   `tool_choice` and `parallel_tool_calls` are not sent.
//! - `text.format` becomes `response_format`; `text.verbosity` is dropped (an OpenAI-only
//!   chat field other hosts refuse). `max_output_tokens` becomes `max_tokens`.
//! - Answers: chat `reasoning_content` becomes a reasoning item with one summary part, text a
//!   message with one `output_text` part (a refusal too), tool calls `function_call` items;
//!   `length` and `content_filter` make the response `incomplete`. Item ids are made from the
//!   response id and the item's output index, so they stay the same from `added` to
//!   `completed`.
//! - A mid-stream error ends the events with `response.failed` (carrying `error.code` and the
//!   items finished so far); items still open stay unfinished, as a half-streamed call must
//!   not look complete.

use crate::error::ApiError;
use crate::providers::openai::{first_choice, reasoning_text};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;

// ---- request -------------------------------------------------------------------------------

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// A field's value, with `null` taken as absent.
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

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
    match field(body, "stream") {
        Some(Value::Bool(stream)) => {
            out.insert("stream".into(), Value::Bool(*stream));
            if *stream {
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        Some(_) => return Err(bad("stream", "'stream' must be a boolean")),
        None => {}
    }
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

// ---- response ------------------------------------------------------------------------------

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
    fn item_id(&self, prefix: &str, index: usize) -> String {
        let unique = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{unique}_{index}")
    }

    /// A whole Response object, every field present (null where there is no value): strict
    /// clients refuse one with a field missing.
    fn response(&self, status: &str, output: Vec<Value>, usage: Value, incomplete: Value, error: Value) -> Value {
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
fn status_of(finish: Option<&str>) -> (&'static str, Value) {
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

fn reasoning_item(id: String, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: String, status: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": [text_part(text)]})
}

fn call_item(id: String, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

/// A tool call's id from the upstream, or one made up when it sent none.
fn call_id(call: &Value, frame: &Frame, index: usize) -> String {
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

// ---- stream --------------------------------------------------------------------------------

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
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if chunk.get("error").is_some_and(Value::is_object) && chunk.get("choices").is_none() {
            return self.error(chunk);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        self.start(&mut out);
        let Some(choice) = first_choice(chunk) else { return out };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let reasoning = reasoning_text(delta);
        if !reasoning.is_empty() {
            self.reasoning_delta(reasoning, &mut out);
        }
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.text_delta(text, &mut out);
            }
        }
        for (position, call) in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
            self.call_fragment(position as u64, call, &mut out);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        out
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
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
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
        }
        let Some(Open::Reasoning { index, text: joined }) = &mut self.open else { unreachable!("opened above") };
        joined.push_str(text);
        let index = *index;
        let id = self.frame.item_id("rs", index);
        self.emit(
            "response.reasoning_summary_text.delta",
            json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
            out,
        );
    }

    fn open_message(&mut self, out: &mut Vec<Value>) {
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
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<Value>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.open_message(out);
        }
        let Some(Open::Message { index, text: joined }) = &mut self.open else { unreachable!("opened above") };
        joined.push_str(text);
        let index = *index;
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
        let open_here = matches!(&self.open, Some(Open::Call { chat_index: c, .. }) if *c == chat_index);
        if !open_here {
            if self.calls.contains(&chat_index) {
                return;
            }
            self.calls.push(chat_index);
            self.close(out);
            let index = self.output.len();
            let call_id = call_id(call, &self.frame, index);
            let name = function.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let item = call_item(self.frame.item_id("fc", index), &call_id, &name, "", "in_progress");
            self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
            self.open = Some(Open::Call { index, chat_index, call_id, name, arguments: String::new() });
        }
        if !fragment.is_empty() {
            let Some(Open::Call { index, arguments, .. }) = &mut self.open else { unreachable!("opened above") };
            arguments.push_str(fragment);
            let index = *index;
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

/// The answer's model name (the naming rule of the man page, HTTP API): `provider/` and the
/// id the upstream answered with, or the id sent when it names none. An id the chat
/// pipeline already prefixed is taken as it is.
pub fn model_name(provider: &str, answered: Option<&str>, sent: &str) -> String {
    let id = answered.filter(|a| !a.is_empty()).unwrap_or(sent);
    if id.starts_with(&format!("{provider}/")) { id.to_string() } else { format!("{provider}/{id}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{read_json, read_jsonl};
    use crate::providers::{Translated, openai};
    use std::path::Path;

    fn translate(body: Value) -> Result<Map<String, Value>, ApiError> {
        to_chat_request(body.as_object().expect("an object"))
    }

    #[test]
    fn previous_response_id_is_a_clear_400() {
        let e = translate(json!({"model": "groq/m", "input": "hi", "previous_response_id": "resp_1"})).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("previous_response_id")));
        assert!(e.message.contains("stateless"), "{}", e.message);
        // null is no id at all
        assert!(translate(json!({"model": "groq/m", "input": "hi", "previous_response_id": null})).is_ok());
    }

    #[test]
    fn malformed_input_is_named_by_its_path() {
        let param = |body: Value| translate(body).unwrap_err().param;
        assert_eq!(param(json!({"model": "m"})).as_deref(), Some("input"));
        assert_eq!(param(json!({"model": "m", "input": 3})).as_deref(), Some("input"));
        assert_eq!(param(json!({"model": "m", "input": ["x"]})).as_deref(), Some("input[0]"));
        let role = json!({"model": "m", "input": [{"role": "tool", "content": "x"}]});
        assert_eq!(param(role).as_deref(), Some("input[0].role"));
        let nameless = json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]});
        assert_eq!(param(nameless).as_deref(), Some("input[0].name"));
        let file_id = json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]});
        assert_eq!(param(file_id).as_deref(), Some("input[0].content[0]"));
        let tokens = json!({"model": "m", "input": "x", "max_output_tokens": 0});
        assert_eq!(param(tokens).as_deref(), Some("max_output_tokens"));
        let format = json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}});
        assert_eq!(param(format).as_deref(), Some("text.format.schema"));
    }

    #[test]
    fn an_output_without_a_waiting_call_is_a_user_message() {
        let body = json!({"model": "m", "input": [{"type": "function_call_output", "output": "42"}]});
        let messages = translate(body).unwrap()["messages"].clone();
        assert_eq!(messages, json!([{"role": "user", "content": "Tool output:\n42"}]));
    }

    #[test]
    fn model_names_follow_the_rule() {
        assert_eq!(model_name("groq", Some("llama-3"), "sent"), "groq/llama-3");
        assert_eq!(model_name("groq", None, "sent"), "groq/sent");
        assert_eq!(model_name("groq", Some(""), "sent"), "groq/sent");
        assert_eq!(model_name("groq", Some("groq/llama-3"), "sent"), "groq/llama-3");
        assert_eq!(model_name("openrouter", Some("openai/gpt-4o"), "x"), "openrouter/openai/gpt-4o");
    }

    #[test]
    fn nothing_follows_the_terminal_event() {
        let mut writer = EventWriter::new(frame(&Map::new()));
        let first = writer.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "a"}}]}));
        assert_eq!(first.len(), 5, "created, in_progress, item added, part added, delta");
        let failed = writer.error(&json!({"error": {"message": "boom", "type": "api_error", "code": null}}));
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["response"]["error"], json!({"code": "api_error", "message": "boom"}));
        assert!(writer.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "b"}}]})).is_empty());
        assert!(writer.finish().is_empty());
    }

    // ---- golden cases: tests/data/responses/<case>/ (README.md there) ----

    const ID: &str = "resp_0123456789abcdef01234567";
    const CREATED: u64 = 1741476542;
    const MODEL: &str = "groq/llama-3.3-70b";

    fn frame(request: &Map<String, Value>) -> Frame {
        Frame::new(ID, CREATED, MODEL, request)
    }

    /// `UPDATE_EXPECT=1` rewrites the expected files instead of comparing (review the diff!).
    fn updating() -> bool {
        std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1")
    }

    fn check(name: &str, path: &Path, got: Value) {
        if updating() {
            let text = match &got {
                Value::Array(lines) if path.extension().is_some_and(|e| e == "jsonl") => {
                    lines.iter().map(|l| l.to_string() + "\n").collect::<String>()
                }
                _ => serde_json::to_string_pretty(&got).unwrap() + "\n",
            };
            std::fs::write(path, text).unwrap();
            return;
        }
        let want = if path.extension().is_some_and(|e| e == "jsonl") {
            Value::Array(read_jsonl(path))
        } else {
            read_json(path)
        };
        assert_eq!(got, want, "{name}: {}\n got: {got}\nwant: {want}", path.display());
    }

    /// A chat SSE body through the OpenAI family's stream translator (`piece` bytes per read),
    /// then through the writer: a `Translated::Error` ends it as `error`, else `finish`.
    fn stream_case(frame: Frame, sse: &[u8], piece: usize) -> Vec<Value> {
        let steps = crate::golden::replay(Box::new(openai::PassThrough::default()), sse, piece);
        let mut writer = EventWriter::new(frame);
        let mut out = Vec::new();
        for step in steps {
            match step {
                Translated::Chunk(chunk) => out.extend(writer.chunk(&chunk)),
                Translated::Error(error) => {
                    out.extend(writer.error(&error));
                    return out;
                }
            }
        }
        out.extend(writer.finish());
        out
    }

    #[test]
    fn golden_cases() {
        let mut checked = 0;
        for case in crate::golden::cases("responses") {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            let has = |file: &str| case.join(file).exists();
            let request = if has("request.json") {
                crate::golden::object(read_json(&case.join("request.json")))
            } else {
                Map::new()
            };
            for (input, expected) in [
                ("request.json", "expected_chat_request.json"),
                ("chat_response.json", "expected_response.json"),
                ("chat_stream.sse", "expected_events.jsonl"),
            ] {
                if !has(input) {
                    continue;
                }
                let got = match input {
                    "request.json" => {
                        Value::Object(to_chat_request(&request).unwrap_or_else(|e| panic!("{name}: {e}")))
                    }
                    "chat_response.json" => from_chat_completion(&read_json(&case.join(input)), &frame(&request)),
                    _ => {
                        let sse = std::fs::read(case.join(input)).unwrap();
                        let whole = stream_case(frame(&request), &sse, sse.len());
                        for piece in [1, 7] {
                            let split = stream_case(frame(&request), &sse, piece);
                            assert_eq!(split, whole, "{name}: {piece}-byte reads differ from one whole read");
                        }
                        Value::Array(whole)
                    }
                };
                check(&name, &case.join(expected), got);
                checked += 1;
            }
        }
        assert!(checked >= 14, "only {checked} golden pairs found");
    }

    /// The rules clients rely on (OpenAI's streaming events reference, and what the official
    /// SDK's stream helper and Codex check): sequence numbers 0, 1, 2...; `response.created`
    /// then `response.in_progress` first; one constant response id; content events only for
    /// the open item, after its `output_item.added`, with its id; items at increasing output
    /// indices, each done before the next is added; exactly one terminal event, last, whose
    /// `output` repeats every finished item (all of them, unless it is `response.failed`).
    fn check_events(events: &[Value]) -> Result<(), String> {
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
        if kinds.len() < 3 || kinds[0] != "response.created" || kinds[1] != "response.in_progress" {
            return Err(format!("must start with response.created, response.in_progress: {kinds:?}"));
        }
        let id = &events[0]["response"]["id"];
        let mut open: Option<(u64, String)> = None;
        let mut done: Vec<Value> = Vec::new();
        for (i, (event, kind)) in events.iter().zip(&kinds).enumerate() {
            if event["sequence_number"] != json!(i) {
                return Err(format!("event {i} has sequence_number {}", event["sequence_number"]));
            }
            let terminal = matches!(*kind, "response.completed" | "response.incomplete" | "response.failed");
            if terminal != (i == events.len() - 1) {
                return Err(format!("event {i} ({kind}): one terminal event, last"));
            }
            if let Some(response) = event.get("response") {
                if &response["id"] != id {
                    return Err(format!("event {i}: the response id changed"));
                }
            }
            match *kind {
                "response.output_item.added" => {
                    if open.is_some() || event["output_index"] != json!(done.len()) {
                        return Err(format!("event {i}: an item opened while another is open or out of order"));
                    }
                    let item_id = event["item"]["id"].as_str().ok_or(format!("event {i}: item without id"))?;
                    open = Some((done.len() as u64, item_id.to_string()));
                }
                "response.output_item.done" => {
                    let Some((index, item_id)) = open.take() else { return Err(format!("event {i}: nothing open")) };
                    if event["output_index"] != json!(index) || event["item"]["id"] != json!(item_id) {
                        return Err(format!("event {i}: done for another item"));
                    }
                    done.push(event["item"].clone());
                }
                _ if terminal => {
                    let output = event["response"]["output"].as_array().ok_or(format!("event {i}: no output"))?;
                    if output != &done || (*kind != "response.failed" && open.is_some()) {
                        return Err(format!("event {i}: output must repeat the finished items, none left open"));
                    }
                }
                "response.created" | "response.in_progress" => {}
                _ => {
                    let Some((index, item_id)) = &open else { return Err(format!("event {i} ({kind}): no open item")) };
                    if event["output_index"] != json!(index) || event["item_id"] != json!(item_id) {
                        return Err(format!("event {i} ({kind}): not for the open item"));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn every_expected_event_file_follows_the_rules() {
        let mut files = 0;
        for case in crate::golden::cases("responses") {
            let path = case.join("expected_events.jsonl");
            if path.exists() {
                check_events(&read_jsonl(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                files += 1;
            }
        }
        assert!(files >= 5, "only {files} expected_events.jsonl files");
    }

    #[test]
    fn the_rule_checker_catches_mistakes() {
        let mut writer = EventWriter::new(frame(&Map::new()));
        let mut good = writer.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "a"}}]}));
        good.extend(writer.finish());
        check_events(&good).unwrap();
        type Mutation = Box<dyn Fn(&mut Vec<Value>)>;
        let mutations: Vec<Mutation> = vec![
            Box::new(|e| e[3]["sequence_number"] = json!(9)),
            Box::new(|e| e.swap(0, 1)),
            Box::new(|e| e[4]["item_id"] = json!("msg_other")),
            Box::new(|e| {
                e.remove(2);
            }),
            Box::new(|e| {
                let last = e.len() - 1;
                e[last]["response"]["id"] = json!("resp_other");
            }),
            Box::new(|e| {
                let last = e.len() - 1;
                e[last]["response"]["output"] = json!([]);
            }),
        ];
        for mutate in mutations {
            let mut bad = good.clone();
            mutate(&mut bad);
            for (i, e) in bad.iter_mut().enumerate() {
                if e["sequence_number"] != json!(9) {
                    e["sequence_number"] = json!(i);
                }
            }
            assert!(check_events(&bad).is_err(), "{bad:?}");
        }
    }
}
