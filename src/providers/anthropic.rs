//! Anthropic's Messages API, the `anthropic/*` family: OpenAI chat requests become
//! `POST {base}/messages` calls, and Anthropic's messages and event streams come back as
//! OpenAI chat completions and chunks (Anthropic's Messages API reference and OpenAI's Chat Completions reference). Pure functions:
//! no I/O, no clock, no logging. The same four concerns as every family, in order: build,
//! parse_response, translate_event, classify_error (Anthropic's error bodies,
//! `{"type": "error", "error": {"type", "message"}}`, already fit `openai::upstream_error` and
//! `errors::classify`, so there is nothing Anthropic-specific to add).
//!
//! Thinking. Anthropic signs every thinking block and only accepts one back with its
//! signature; an OpenAI history carries at most the text (`reasoning_content`), so assistant
//! reasoning is never sent upstream. Anthropic accepts a history without earlier turns'
//! thinking, except inside an open tool loop: there, with thinking on, the last assistant turn
//! must start with its signed thinking block, which keyrelay cannot rebuild. So a request whose
//! last assistant turn called tools is sent without thinking (the loop finishes unthought and
//! the next user turn thinks again), and so is one whose `tool_choice` forces a tool call,
//! which Anthropic refuses with thinking on.
//!
//! Structured output. Anthropic's documented way to get JSON of a given shape is a tool the
//! model is forced to call: `response_format` (`json_schema`, or `json_object` with a schema
//! that takes any object) becomes one tool whose `input_schema` is the schema, with
//! `tool_choice: {"type": "tool"}`, and `json_answer` (whole) or `json_answer_stream`
//! (streamed) turn that call back into the answer's `content` with `finish_reason: stop`. The
//! client's own tools cannot be offered next to it (the forced call would shut them out), so
//! the two together are a 400 unless the client's `tool_choice` is `none`.

use crate::error::ApiError;
use crate::providers::{StreamTranslator, Translated, anthropic_map};
use crate::sse;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Anthropic requires `max_tokens`; OpenAI clients usually leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// With thinking on, Anthropic takes `top_p` only from this value up to 1.
const THINKING_MIN_TOP_P: f64 = 0.95;

// ---- build ---------------------------------------------------------------------------------

/// OpenAI chat body (already validated: has "messages" array; "model" is replaced by `model`)
/// -> `POST {base}/messages` request (headers: content-type only; the key and
/// `anthropic-version` are added by `providers::with_key`). `response_format` becomes a forced
/// tool (module comment). Fields Anthropic has no equivalent for (`seed`, penalties,
/// `logprobs`, ...) are dropped.
pub fn build_chat(
    base: &str,
    model: &str,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<UpstreamRequest, ApiError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages", "missing required field 'messages' (an array)"))?;
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad("n", "anthropic answers with one choice; 'n' must be 1"));
    }
    let (system, turns) = convert_messages(messages)?;
    if turns.is_empty() {
        return Err(bad(
            "messages",
            "anthropic needs at least one user or assistant message besides the system prompt",
        ));
    }
    let mut request = Map::new();
    request.insert("model".into(), json!(model));
    if let Some(system) = system {
        request.insert("system".into(), system);
    }
    let in_tool_loop = in_tool_loop(&turns);
    request.insert("messages".into(), Value::Array(turns));
    let forced_tool = match answer_tool(body)? {
        Some(tool) => force_answer_tool(body, tool, &mut request)?,
        None => tools(body, &mut request)?,
    };
    // See the module comment: thinking is only sent where Anthropic can accept it.
    let budget = thinking_budget(body)?.filter(|_| !forced_tool && !in_tool_loop);
    request.insert("max_tokens".into(), json!(max_tokens(body, budget)?));
    if let Some(budget) = budget {
        request.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    sampling(body, budget.is_some(), &mut request);
    request.insert("stream".into(), Value::Bool(stream));
    Ok(UpstreamRequest {
        method: Method::Post,
        url: format!("{base}/messages"),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(serde_json::to_vec(&request).expect("a JSON map serialises")),
        stream,
    })
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// System and developer messages as the top-level `system`, and the conversation as
/// alternating `user` / `assistant` turns: consecutive turns of one role are merged, and tool
/// results are user turns.
fn convert_messages(messages: &[Value]) -> Result<(Option<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |why: String| bad("messages", format!("messages[{i}]: {why}"));
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match message.get("role").and_then(Value::as_str) {
            // Anthropic has no system turns: every one of them, wherever it is, is instruction.
            Some("system" | "developer") => {
                system.extend(text_blocks(content));
                continue;
            }
            Some("user") => ("user", user_blocks(content).map_err(at)?),
            Some("assistant") => ("assistant", assistant_blocks(message)),
            Some("tool") => ("user", vec![tool_result(message).map_err(at)?]),
            Some(other) => return Err(at(format!("role '{other}' is not supported by anthropic"))),
            None => return Err(at("missing 'role'".into())),
        };
        match turns.last_mut() {
            _ if blocks.is_empty() => {}
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns =
        turns.into_iter().map(|(role, blocks)| json!({"role": role, "content": turn_content(blocks)})).collect();
    Ok((system_prompt(system), turns))
}

/// Anthropic wants a user turn's `tool_result` blocks before anything else in it; the sort is
/// stable, so results keep their order and so does the rest. A lone plain text block is sent
/// as a string.
fn turn_content(mut blocks: Vec<Value>) -> Value {
    blocks.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
    compact(blocks)
}

fn compact(mut blocks: Vec<Value>) -> Value {
    let plain_text =
        |b: &Value| b.get("type").and_then(Value::as_str) == Some("text") && b.get("cache_control").is_none();
    if blocks.len() == 1 && plain_text(&blocks[0]) {
        return blocks.swap_remove(0)["text"].take();
    }
    Value::Array(blocks)
}

/// One string joined with blank lines, or the blocks themselves when one of them carries a
/// `cache_control` breakpoint (only the block form can hold it).
fn system_prompt(blocks: Vec<Value>) -> Option<Value> {
    if blocks.is_empty() {
        return None;
    }
    if blocks.iter().any(|b| b.get("cache_control").is_some()) {
        return Some(Value::Array(blocks));
    }
    let texts: Vec<&str> = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
    Some(Value::String(texts.join("\n\n")))
}

/// Text blocks from a string, or from an array's `text` (and `refusal`) parts. Empty texts are
/// left out: Anthropic rejects empty text blocks.
fn text_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) => text_block(text, None).into_iter().collect(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                let text = p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str)?;
                text_block(text, Some(p))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn text_block(text: &str, part: Option<&Value>) -> Option<Value> {
    (!text.is_empty()).then(|| with_cache_control(json!({"type": "text", "text": text}), part))
}

/// Clients that know Anthropic put `cache_control` on OpenAI content parts; it is kept.
fn with_cache_control(mut block: Value, part: Option<&Value>) -> Value {
    if let Some(cache) = part.and_then(|p| p.get("cache_control")).filter(|c| c.is_object()) {
        block["cache_control"] = cache.clone();
    }
    block
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, String> {
    let parts = match content {
        Value::Array(parts) => parts,
        Value::String(_) | Value::Null => return Ok(text_blocks(content)),
        _ => return Err("content must be a string or an array of content parts".into()),
    };
    let mut out = Vec::new();
    for part in parts {
        let block = match part.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => part.get("text").and_then(Value::as_str).and_then(|text| text_block(text, Some(part))),
            "image_url" => {
                // `{"url": ...}` per OpenAI's Chat Completions reference; some clients send the URL string itself.
                let image = part.get("image_url").unwrap_or(&Value::Null);
                let url = image.get("url").unwrap_or(image).as_str().ok_or("an image_url part needs a url")?;
                Some(image_block(url)?)
            }
            "file" => Some(file_block(part.get("file").unwrap_or(&Value::Null))?),
            "input_audio" => return Err("anthropic does not take audio input".into()),
            other => return Err(format!("content part type '{other}' is not supported by anthropic")),
        };
        out.extend(block.map(|b| with_cache_control(b, Some(part))));
    }
    Ok(out)
}

/// `data:` URIs as base64 sources, web URLs as URL sources (Anthropic fetches them).
fn image_block(url: &str) -> Result<Value, String> {
    if url.starts_with("data:") {
        let (media_type, data) = data_uri(url)?;
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err("an image URL must be a data: URI or an http(s) URL".into())
}

/// `data:<media type>[;...];base64,<data>` -> (media type, data).
fn data_uri(uri: &str) -> Result<(&str, &str), String> {
    let rest = uri.strip_prefix("data:").unwrap_or(uri);
    let (meta, data) = rest.split_once(',').unwrap_or(("", ""));
    let media_type = meta.strip_suffix(";base64").and_then(|m| m.split(';').next()).unwrap_or("");
    if media_type.is_empty() || data.is_empty() {
        return Err("a data: URI must look like data:<media type>;base64,<data>".into());
    }
    Ok((media_type, data))
}

/// A `file` part with inline `file_data`: PDFs become documents, images images. A `file_id`
/// points into OpenAI's storage, which Anthropic cannot read.
fn file_block(file: &Value) -> Result<Value, String> {
    let data =
        file.get("file_data").and_then(Value::as_str).ok_or("anthropic takes files as file_data, not file_id")?;
    let (media_type, base64) = data_uri(data)?;
    match media_type {
        "application/pdf" => {
            Ok(json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": base64}}))
        }
        image if image.starts_with("image/") => image_block(data),
        other => Err(format!("anthropic takes PDF and image files, not '{other}'")),
    }
}

/// Assistant text, then one `tool_use` block per tool call. `reasoning_content` is dropped:
/// see the module comment.
fn assistant_blocks(message: &Value) -> Vec<Value> {
    let mut blocks = text_blocks(message.get("content").unwrap_or(&Value::Null));
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        blocks.push(json!({
            "type": "tool_use",
            "id": tool_id(call.get("id").and_then(Value::as_str).unwrap_or("")),
            "name": function.get("name").and_then(Value::as_str).unwrap_or(""),
            "input": input_object(function.get("arguments").unwrap_or(&Value::Null)),
        }));
    }
    blocks
}

/// Anthropic takes `input` as an object. History is replayed, not judged: arguments that are
/// empty or not a JSON object become `{}` rather than failing the request.
fn input_object(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => object,
            _ => json!({}),
        },
        _ => json!({}),
    }
}

/// Anthropic's tool ids must match `^[a-zA-Z0-9_-]+$`; ids minted by other providers (a
/// history that switched models) may not. Both sides of a call are mapped the same way, so
/// `tool_use` and `tool_result` still pair up.
fn tool_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// A tool message as a `tool_result` block; its text (or text and images) as the content.
fn tool_result(message: &Value) -> Result<Value, String> {
    let id = message.get("tool_call_id").and_then(Value::as_str).ok_or("a tool message needs a 'tool_call_id'")?;
    let mut block = json!({"type": "tool_result", "tool_use_id": tool_id(id)});
    let content = user_blocks(message.get("content").unwrap_or(&Value::Null))?;
    if !content.is_empty() {
        block["content"] = compact(content);
    }
    Ok(block)
}

/// Whether the last assistant turn called tools: the conversation is inside a tool loop.
fn in_tool_loop(turns: &[Value]) -> bool {
    let last_assistant = turns.iter().rev().find(|t| t["role"] == "assistant");
    let blocks = last_assistant.and_then(|t| t["content"].as_array());
    blocks.is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_use"))
}

/// Function tools as Anthropic tools (`parameters` is `input_schema` there), and
/// `tool_choice`. Answers whether the choice forces a tool call.
fn tools(body: &Map<String, Value>, request: &mut Map<String, Value>) -> Result<bool, ApiError> {
    let Some(tools) = body.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) else {
        return Ok(false);
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(bad("tools", format!("tools[{i}]: anthropic takes only function tools")));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(bad("tools", format!("tools[{i}]: a function needs a name")));
        };
        // Anthropic requires a schema; a function without parameters takes an empty object.
        let schema = function.get("parameters").filter(|p| p.is_object()).cloned();
        let schema = schema.unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut converted = json!({"name": name, "input_schema": schema});
        if let Some(description) = function.get("description").filter(|d| d.is_string()) {
            converted["description"] = description.clone();
        }
        out.push(converted);
    }
    request.insert("tools".into(), Value::Array(out));
    let Some(mut choice) = tool_choice(body)? else { return Ok(false) };
    let kind = choice["type"].as_str().unwrap_or("").to_string();
    if kind != "none" && body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    request.insert("tool_choice".into(), choice);
    Ok(kind == "any" || kind == "tool")
}

/// The name of the tool that carries a structured answer, when `response_format` asks for
/// JSON (see the module comment): the client's schema name when Anthropic takes it as a tool
/// name, else `json_answer`. `api::chat` unwraps the call named so.
pub fn answer_tool_name(body: &Map<String, Value>) -> Option<String> {
    answer_tool(body).ok().flatten().map(|tool| tool["name"].as_str().unwrap_or(ANSWER_TOOL).to_string())
}

/// The name of the answer tool when the schema has no usable name of its own.
const ANSWER_TOOL: &str = "json_answer";

/// `response_format` as the Anthropic tool that carries the answer; `None` for `text` or none.
fn answer_tool(body: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = body.get("response_format").filter(|f| !f.is_null()) else { return Ok(None) };
    let description = "Give your answer by calling this tool: its input is your whole answer, as JSON.";
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({
            "name": ANSWER_TOOL,
            "description": description,
            "input_schema": {"type": "object", "additionalProperties": true},
        }))),
        Some("json_schema") => {
            let spec = format.get("json_schema").unwrap_or(&Value::Null);
            let Some(schema) = spec.get("schema").filter(|s| s.is_object()) else {
                return Err(bad("response_format", "response_format.json_schema.schema must be a JSON schema object"));
            };
            let name = spec.get("name").and_then(Value::as_str).filter(|n| is_tool_name(n)).unwrap_or(ANSWER_TOOL);
            let mut tool = json!({"name": name, "description": description, "input_schema": schema});
            if let Some(about) = spec.get("description").and_then(Value::as_str) {
                tool["description"] = json!(format!("{description} {about}"));
            }
            Ok(Some(tool))
        }
        _ => Err(bad("response_format", "response_format.type must be text, json_object or json_schema")),
    }
}

/// Anthropic's rule for tool names: `^[a-zA-Z0-9_-]{1,64}$`.
fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Offers the answer tool and forces it. The client's tools come along only when its
/// `tool_choice` is `none` (they could not be called anyway, and a history that used them
/// still names them); any other choice wants tool calls the forced answer would shut out.
fn force_answer_tool(
    body: &Map<String, Value>,
    tool: Value,
    request: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    let name = tool["name"].as_str().unwrap_or(ANSWER_TOOL).to_string();
    let mut offered = Vec::new();
    if body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        if body.get("tool_choice").and_then(Value::as_str) != Some("none") {
            return Err(bad(
                "response_format",
                "anthropic gets response_format as a forced tool call, which cannot be combined with your own \
                 tools: send tool_choice \"none\", or leave out response_format or tools",
            ));
        }
        let mut own = Map::new();
        tools(body, &mut own)?;
        offered = match own.remove("tools") {
            Some(Value::Array(tools)) => tools,
            _ => Vec::new(),
        };
        if offered.iter().any(|t| t["name"] == name.as_str()) {
            return Err(bad("response_format", format!("a tool of yours is named '{name}' like the response format")));
        }
    }
    offered.push(tool);
    request.insert("tools".into(), Value::Array(offered));
    request.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
    Ok(true)
}

/// auto -> auto, required -> any, a named function -> tool, none -> none. Without a choice but
/// with `parallel_tool_calls: false`, auto: only a choice can carry that switch.
fn tool_choice(body: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    let kind = match body.get("tool_choice") {
        None | Some(Value::Null) => {
            let serial = body.get("parallel_tool_calls") == Some(&Value::Bool(false));
            return Ok(serial.then(|| json!({"type": "auto"})));
        }
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => "auto",
            "required" => "any",
            "none" => "none",
            other => return Err(bad("tool_choice", format!("unknown tool_choice '{other}'"))),
        },
        Some(named) => {
            let Some(name) = named.pointer("/function/name").and_then(Value::as_str) else {
                return Err(bad("tool_choice", "a named tool_choice needs function.name"));
            };
            return Ok(Some(json!({"type": "tool", "name": name})));
        }
    };
    Ok(Some(json!({"type": kind})))
}

/// `reasoning_effort` as an extended-thinking budget. Anthropic's floor is 1024, so minimal
/// and low share it. With the default room for the answer added (`max_tokens`), xhigh and max
/// need a model whose output limit is 64k (Sonnet 4.x, Haiku 4.5, Opus 4.5); Opus 4 and 4.1
/// stop at 32k, and their callers should send `max_tokens` themselves.
fn thinking_budget(body: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    let Some(effort) = body.get("reasoning_effort").filter(|v| !v.is_null()) else { return Ok(None) };
    let effort = effort.as_str().ok_or_else(|| bad("reasoning_effort", "'reasoning_effort' must be a string"))?;
    Ok(match effort {
        "none" => None,
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        "xhigh" => Some(24576),
        "max" => Some(32768),
        other => return Err(bad("reasoning_effort", format!("unknown reasoning_effort '{other}'"))),
    })
}

/// `max_completion_tokens` (the newer name wins) or `max_tokens`, else the default. Anthropic
/// needs `max_tokens` above the thinking budget; a limit that does not clear it is read as the
/// room wanted for the answer, and the budget is added on top.
fn max_tokens(body: &Map<String, Value>, budget: Option<u64>) -> Result<u64, ApiError> {
    let field =
        ["max_completion_tokens", "max_tokens"].into_iter().find(|f| body.get(*f).is_some_and(|v| !v.is_null()));
    let limit = match field {
        None => DEFAULT_MAX_TOKENS,
        Some(field) => {
            body[field].as_u64().ok_or_else(|| bad(field, format!("'{field}' must be a non-negative integer")))?
        }
    };
    Ok(match budget {
        Some(budget) if limit <= budget => budget + limit,
        _ => limit,
    })
}

/// Sampling, stop sequences and the end user. Anthropic's temperature tops out at 1 (OpenAI's
/// at 2), so higher values are clamped. With thinking on, Anthropic rejects `temperature` and
/// `top_k`, and `top_p` below 0.95: they are dropped.
fn sampling(body: &Map<String, Value>, thinking: bool, request: &mut Map<String, Value>) {
    let present = |field: &str| body.get(field).filter(|v| !v.is_null());
    if !thinking {
        if let Some(temperature) = present("temperature") {
            let clamped = temperature.as_f64().filter(|t| *t > 1.0).map(|_| json!(1.0));
            request.insert("temperature".into(), clamped.unwrap_or_else(|| temperature.clone()));
        }
        if let Some(top_k) = present("top_k") {
            request.insert("top_k".into(), top_k.clone());
        }
    }
    if let Some(top_p) = present("top_p").filter(|p| !thinking || p.as_f64().is_some_and(|p| p >= THINKING_MIN_TOP_P)) {
        request.insert("top_p".into(), top_p.clone());
    }
    let stops: Vec<Value> = match present("stop") {
        Some(Value::String(stop)) => vec![json!(stop)],
        Some(Value::Array(stops)) => {
            stops.iter().filter(|s| s.as_str().is_some_and(|s| !s.is_empty())).cloned().collect()
        }
        _ => Vec::new(),
    };
    if !stops.is_empty() {
        request.insert("stop_sequences".into(), Value::Array(stops));
    }
    // `safety_identifier` is OpenAI's newer name for the same thing.
    if let Some(user) = present("user").or_else(|| present("safety_identifier")).filter(|u| u.is_string()) {
        request.insert("metadata".into(), json!({"user_id": user}));
    }
}

// ---- parse_response ------------------------------------------------------------------------

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
fn answered_model<'a>(message: &'a Value, sent: &'a str) -> &'a str {
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

fn error_message(error: &Value) -> String {
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

// ---- translate_event -----------------------------------------------------------------------

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
        // Keep-alives are dropped before parsing (docs/wire-formats.md, pitfall 2): their data need not be JSON.
        if self.done || event.name.as_deref() == Some("ping") || event.data.trim().is_empty() {
            return;
        }
        let data = match serde_json::from_str::<Value>(&event.data) {
            Ok(data) => data,
            Err(e) => {
                return self.fail(
                    out,
                    "upstream_error",
                    &format!("anthropic sent a stream event that is not JSON: {e}"),
                );
            }
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
                // is a placeholder, not arguments (docs/wire-formats.md, pitfall 7): they come as `input_json_delta`s.
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
    /// (docs/wire-formats.md, pitfall 7).
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

    /// The finishing chunk, then the usage-only chunk (docs/wire-formats.md, pitfall 6).
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

    /// The first chunk: the role, once (docs/wire-formats.md, pitfall 8), with empty content.
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
        super::chunk_envelope(&self.id, self.created, &self.model, choices)
    }

    fn fail(&mut self, out: &mut Vec<Translated>, code: &str, message: &str) {
        out.push(Translated::Error(super::stream_error(code, message)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{body_of, cases, object, read_json, replay, step_json};
    use crate::providers::errors::{ErrorClass, classify};

    const BASE: &str = "https://api.anthropic.com/v1";

    fn build(value: Value) -> Result<Value, ApiError> {
        build_chat(BASE, "claude-sonnet-4-5", &object(value), false).map(|r| body_of(&r))
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    /// Feeds SSE bytes in pieces of `piece` bytes, then ends the stream.
    fn translate(input: &[u8], piece: usize) -> Vec<Translated> {
        replay(stream_translator(MODEL, CREATED), input, piece)
    }

    fn sse_of(events: &[(&str, Value)]) -> Vec<u8> {
        events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect::<String>().into_bytes()
    }

    #[test]
    fn url_headers_and_stream_flag() {
        let body = object(json!({"model": "anthropic/claude-sonnet-4-5", "messages": [user("hi")]}));
        let r = build_chat(BASE, "claude-sonnet-4-5", &body, false).unwrap();
        assert_eq!(r.url, format!("{BASE}/messages"));
        assert_eq!((r.method, r.stream), (Method::Post, false));
        assert_eq!(r.headers, [("content-type".to_string(), "application/json".to_string())]);
        let sent = body_of(&r);
        assert_eq!(sent["model"], "claude-sonnet-4-5");
        assert_eq!(sent["max_tokens"], 4096);
        assert_eq!(sent["stream"], false);
        let r = build_chat(BASE, "claude-sonnet-4-5", &body, true).unwrap();
        assert!(r.stream && body_of(&r)["stream"] == true);
    }

    #[test]
    fn refuses_what_anthropic_cannot_take() {
        let param = |r: Result<Value, ApiError>| r.unwrap_err().param;
        assert_eq!(
            param(build(json!({"messages": [{"role": "system", "content": "x"}]}))).as_deref(),
            Some("messages")
        );
        let audio = json!({"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}});
        let audio = json!({"messages": [{"role": "user", "content": [audio]}]});
        assert!(build(audio).unwrap_err().message.contains("messages[0]"));
        let by_id = json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}]}]});
        assert_eq!(param(build(by_id)).as_deref(), Some("messages"));
        let role = json!({"messages": [{"role": "function", "name": "f", "content": "1"}]});
        assert!(build(role).unwrap_err().message.contains("role 'function'"));
        let plain_uri = json!({"type": "image_url", "image_url": {"url": "data:,hi"}});
        let plain_uri = json!({"messages": [{"role": "user", "content": [plain_uri]}]});
        assert!(build(plain_uri).is_err());
        let no_id = json!({"messages": [user("x"), {"role": "tool", "content": "1"}]});
        assert!(build(no_id).unwrap_err().message.contains("messages[1]"));
        let effort = json!({"messages": [user("x")], "reasoning_effort": "extreme"});
        assert_eq!(param(build(effort)).as_deref(), Some("reasoning_effort"));
        let custom = json!({"messages": [user("x")], "tools": [{"type": "custom", "custom": {"name": "x"}}]});
        assert_eq!(param(build(custom)).as_deref(), Some("tools"));
        assert_eq!(param(build(json!({"messages": [user("x")], "n": 2}))).as_deref(), Some("n"));
        assert_eq!(param(build(json!({"messages": [user("x")], "max_tokens": "9"}))).as_deref(), Some("max_tokens"));
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let choice = json!({"messages": [user("x")], "tools": tools, "tool_choice": "sometimes"});
        assert_eq!(param(build(choice)).as_deref(), Some("tool_choice"));
    }

    #[test]
    fn response_formats_that_cannot_be_a_forced_tool_are_refused() {
        let tools = json!([{"type": "function", "function": {"name": "json_answer"}}]);
        let param = |body: Value| build(body).unwrap_err().param;
        let object = json!({"type": "json_object"});
        for choice in [json!(null), json!("auto"), json!("required")] {
            let body =
                json!({"messages": [user("x")], "tools": tools, "tool_choice": choice, "response_format": object});
            assert_eq!(param(body).as_deref(), Some("response_format"));
        }
        let clash = json!({"messages": [user("x")], "tools": tools, "tool_choice": "none", "response_format": object});
        assert!(build(clash).unwrap_err().message.contains("json_answer"));
        for format in [json!({"type": "yaml"}), json!({"type": "json_schema", "json_schema": {"name": "x"}})] {
            assert_eq!(
                param(json!({"messages": [user("x")], "response_format": format})).as_deref(),
                Some("response_format")
            );
        }
        let text = build(json!({"messages": [user("x")], "response_format": {"type": "text"}})).unwrap();
        assert!(text.get("tools").is_none() && text.get("tool_choice").is_none());
        // A schema name Anthropic would refuse as a tool name gives way to json_answer.
        let spaced = json!({"type": "json_schema", "json_schema": {"name": "my schema", "schema": {"type": "object"}}});
        let sent = build(json!({"messages": [user("x")], "response_format": spaced})).unwrap();
        assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "json_answer"}));
        assert_eq!(
            answer_tool_name(&crate::golden::object(json!({"response_format": spaced}))).as_deref(),
            Some("json_answer")
        );
    }

    #[test]
    fn a_whole_answer_keeps_only_the_answer_tool_call() {
        let completion = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "Sure.", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "Person", "arguments": "{\"a\":1}"}}]}}]});
        let answered = json_answer(completion.clone(), "Person");
        assert_eq!(answered["choices"][0]["message"], json!({"role": "assistant", "content": "{\"a\":1}"}));
        assert_eq!(answered["choices"][0]["finish_reason"], "stop");
        // Cut short: the partial JSON is what there is, and `length` says so.
        let mut cut = completion.clone();
        cut["choices"][0]["finish_reason"] = json!("length");
        assert_eq!(json_answer(cut, "Person")["choices"][0]["finish_reason"], "length");
        // No call of the answer tool: left as it came.
        assert_eq!(json_answer(completion.clone(), "Other"), completion);
    }

    #[test]
    fn tool_choice_and_parallel_calls() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let with = |extra: Value| {
            let mut body = json!({"messages": [user("x")], "tools": tools});
            body.as_object_mut().unwrap().extend(object(extra));
            build(body).unwrap()
        };
        let sent = with(json!({}));
        assert_eq!(sent["tools"], json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}]));
        assert!(sent.get("tool_choice").is_none());
        assert_eq!(with(json!({"tool_choice": "auto"}))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!({"tool_choice": "required"}))["tool_choice"], json!({"type": "any"}));
        assert_eq!(with(json!({"tool_choice": "none"}))["tool_choice"], json!({"type": "none"}));
        let named = json!({"type": "function", "function": {"name": "f"}});
        assert_eq!(with(json!({"tool_choice": named}))["tool_choice"], json!({"type": "tool", "name": "f"}));
        let serial = json!({"type": "auto", "disable_parallel_tool_use": true});
        assert_eq!(with(json!({"parallel_tool_calls": false}))["tool_choice"], serial);
        let none = with(json!({"parallel_tool_calls": false, "tool_choice": "none"}));
        assert_eq!(none["tool_choice"], json!({"type": "none"}));
        // No tools, no tool_choice, whatever the client says.
        let bare = build(json!({"messages": [user("x")], "tool_choice": "required"})).unwrap();
        assert!(bare.get("tools").is_none() && bare.get("tool_choice").is_none());
    }

    #[test]
    fn thinking_budgets_limits_and_sampling() {
        let with = |extra: Value| {
            let mut body = json!({"messages": [user("x")]});
            body.as_object_mut().unwrap().extend(object(extra));
            build(body).unwrap()
        };
        let budget = |effort: &str| with(json!({"reasoning_effort": effort}))["thinking"]["budget_tokens"].clone();
        assert_eq!(budget("minimal"), 1024);
        assert_eq!(budget("low"), 1024);
        assert_eq!(budget("medium"), 4096);
        assert_eq!(budget("high"), 16384);
        assert_eq!(budget("xhigh"), 24576);
        assert_eq!(budget("max"), 32768);
        assert!(with(json!({"reasoning_effort": "none"})).get("thinking").is_none());
        // max_tokens always clears the budget.
        assert_eq!(with(json!({"reasoning_effort": "low"}))["max_tokens"], 4096);
        assert_eq!(with(json!({"reasoning_effort": "high"}))["max_tokens"], 16384 + 4096);
        assert_eq!(with(json!({"reasoning_effort": "high", "max_tokens": 20000}))["max_tokens"], 20000);
        assert_eq!(with(json!({"reasoning_effort": "medium", "max_completion_tokens": 500}))["max_tokens"], 4596);
        assert_eq!(with(json!({"max_tokens": 10, "max_completion_tokens": 20}))["max_tokens"], 20);
        // Sampling: thinking drops what Anthropic refuses next to it.
        let sampled = json!({"temperature": 0.3, "top_p": 0.9, "top_k": 40});
        let plain = with(sampled.clone());
        assert_eq!(
            (plain["temperature"].clone(), plain["top_p"].clone(), plain["top_k"].clone()),
            (json!(0.3), json!(0.9), json!(40))
        );
        let mut thinking = object(sampled);
        thinking.insert("reasoning_effort".into(), json!("low"));
        let thought = with(Value::Object(thinking));
        assert!(
            thought.get("temperature").is_none() && thought.get("top_k").is_none() && thought.get("top_p").is_none()
        );
        let kept = with(json!({"reasoning_effort": "low", "top_p": 0.95}));
        assert_eq!(kept["top_p"], 0.95);
        assert_eq!(with(json!({"temperature": 1.7}))["temperature"], 1.0);
        assert_eq!(with(json!({"stop": "END"}))["stop_sequences"], json!(["END"]));
        assert_eq!(with(json!({"stop": ["a", "", "b"]}))["stop_sequences"], json!(["a", "b"]));
        assert_eq!(with(json!({"user": "u-1"}))["metadata"], json!({"user_id": "u-1"}));
    }

    #[test]
    fn thinking_is_left_out_where_anthropic_would_refuse_it() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let forced = build(
            json!({"messages": [user("x")], "tools": tools, "tool_choice": "required", "reasoning_effort": "high"}),
        );
        let forced = forced.unwrap();
        assert!(forced.get("thinking").is_none());
        assert_eq!(forced["max_tokens"], 4096);
        let call = json!({"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let looping = json!({"messages": [user("x"), {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "1"}], "tools": tools, "reasoning_effort": "high"});
        assert!(build(looping).unwrap().get("thinking").is_none());
        let answered = json!({"messages": [user("x"), {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "1"}, {"role": "assistant", "content": "done"},
            user("again")], "tools": tools, "reasoning_effort": "high"});
        assert_eq!(build(answered).unwrap()["thinking"]["budget_tokens"], 16384);
    }

    #[test]
    fn turns_alternate_and_tool_results_come_first() {
        let sent = build(json!({"messages": [
            user("a"),
            user("b"),
            {"role": "assistant", "content": "", "reasoning_content": "hmm",
             "tool_calls": [{"id": "call.1/x", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
            user("stray text before the result"),
            {"role": "tool", "tool_call_id": "call.1/x", "content": [{"type": "text", "text": "42"}]},
            {"role": "assistant", "content": null},
        ]}))
        .unwrap();
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1_x", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1_x", "content": "42"},
                    {"type": "text", "text": "stray text before the result"},
                ]},
            ])
        );
    }

    #[test]
    fn cache_control_is_kept() {
        let cache = json!({"type": "ephemeral"});
        let sent = build(json!({"messages": [
            {"role": "system", "content": [{"type": "text", "text": "long", "cache_control": cache}]},
            {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": cache}]},
        ]}))
        .unwrap();
        assert_eq!(sent["system"], json!([{"type": "text", "text": "long", "cache_control": cache}]));
        assert_eq!(sent["messages"][0]["content"], json!([{"type": "text", "text": "q", "cache_control": cache}]));
    }

    #[test]
    fn pdf_files_become_documents() {
        let pdf =
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}});
        let sent = build(json!({"messages": [{"role": "user", "content": [pdf]}]})).unwrap();
        let document = json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}});
        assert_eq!(sent["messages"][0]["content"], json!([document]));
        let zip = json!({"type": "file", "file": {"file_data": "data:application/zip;base64,UEs="}});
        assert!(build(json!({"messages": [{"role": "user", "content": [zip]}]})).is_err());
    }

    #[test]
    fn parse_failures_and_odd_answers() {
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert!(parse_chat(MODEL, CREATED, &error).unwrap_err().contains("Overloaded"));
        assert!(parse_chat(MODEL, CREATED, &json!({"id": "msg_1"})).is_err());
        let refused = json!({"id": "msg_1", "content": [], "stop_reason": "refusal", "usage": {"input_tokens": 3, "output_tokens": 0}});
        let parsed = parse_chat(MODEL, CREATED, &refused).unwrap();
        assert_eq!(parsed["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(parsed["choices"][0]["message"]["content"], "");
        assert_eq!(parsed["usage"], json!({"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}));
    }

    #[test]
    fn stream_edge_cases() {
        // Ended without message_stop.
        let cut = sse_of(&[(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_x", "usage": {"input_tokens": 1}}}),
        )]);
        let out = translate(&cut, usize::MAX);
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[1], Translated::Error(e) if e["error"]["code"] == "stream_interrupted"));
        // Not JSON.
        let garbage = b"event: content_block_delta\ndata: {nope\n\n";
        let out = translate(garbage, usize::MAX);
        assert!(matches!(&out[..], [Translated::Error(e)] if e["error"]["code"] == "upstream_error"));
        // Nothing after the end; pings without JSON are fine.
        let mut done = sse_of(&[("message_stop", json!({"type": "message_stop"}))]);
        done.extend_from_slice(b"event: ping\ndata: \n\nevent: content_block_delta\ndata: {}\n\n");
        let out = translate(&done, usize::MAX);
        assert_eq!(out.len(), 3, "role chunk, finish chunk, usage chunk: {out:?}");
        let Translated::Chunk(last) = &out[2] else { panic!("{out:?}") };
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["id"], "msg_unknown");
    }

    #[test]
    fn anthropic_errors_fit_the_shared_classifier() {
        let body =
            |kind: &str| json!({"type": "error", "error": {"type": kind, "message": "m"}, "request_id": "req_1"});
        assert_eq!(classify(529, &body("overloaded_error")), ErrorClass::Transient);
        assert_eq!(classify(401, &body("authentication_error")), ErrorClass::Auth);
        assert_eq!(classify(429, &body("rate_limit_error")), ErrorClass::RateLimit);
        assert_eq!(classify(400, &body("invalid_request_error")), ErrorClass::Request);
        let e = crate::providers::openai::upstream_error(529, body("overloaded_error").to_string().as_bytes());
        assert_eq!((e.error_type.as_str(), e.message.as_str()), ("overloaded_error", "m"));
    }

    #[test]
    fn model_list() {
        let body = json!({"data": [{"type": "model", "id": "claude-sonnet-4-5"}, {"id": "claude-haiku-4-5"}], "has_more": false});
        assert_eq!(model_ids(&body), ["claude-sonnet-4-5", "claude-haiku-4-5"]);
        assert!(model_ids(&json!({})).is_empty());
    }

    // ---- golden cases: tests/data/providers/anthropic/<case>/ (README.md there) -------------

    const MODEL: &str = "claude-sonnet-4-5";
    const CREATED: u64 = 1_760_000_000;

    /// `UPDATE_EXPECT=1` rewrites the expected files instead of comparing (review the diff!).
    fn update_expect() -> bool {
        std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1")
    }

    #[test]
    fn golden_cases() {
        let cases = cases("providers/anthropic");
        let mut checked = 0;
        for case in &cases {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            let has = |file: &str| case.join(file).exists();
            for (input, expected) in [
                ("openai_request.json", "expected_upstream_request.json"),
                ("upstream_response.json", "expected_openai_response.json"),
                ("upstream.sse", "expected_openai_chunks.jsonl"),
            ] {
                assert!(has(input) == has(expected) || update_expect(), "{name}: {input} and {expected} come in pairs");
                if !has(input) {
                    continue;
                }
                match input {
                    "openai_request.json" => golden_request(case, &name),
                    "upstream_response.json" => golden_response(case, &name),
                    _ => golden_stream(case, &name),
                }
                checked += 1;
            }
        }
        assert!(checked >= 28, "only {checked} golden pairs found under tests/data/providers/anthropic");
    }

    fn golden_request(case: &std::path::Path, name: &str) {
        let request = read_json(&case.join("openai_request.json"));
        let body = request.as_object().expect("a request object");
        let (provider, model) = crate::providers::split_model(body["model"].as_str().unwrap()).unwrap();
        assert_eq!(provider, "anthropic", "{name}");
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let built = build_chat(BASE, model, body, stream).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(built.headers, [("content-type".to_string(), "application/json".to_string())], "{name}");
        assert_eq!(built.stream, stream, "{name}");
        let got = json!({"url": built.url, "body": body_of(&built)});
        check_json(&case.join("expected_upstream_request.json"), &got, name);
    }

    /// The answer tool of a case whose request asks for a `response_format`.
    fn case_answer_tool(case: &std::path::Path) -> Option<String> {
        let request = case.join("openai_request.json");
        request.exists().then(|| answer_tool_name(read_json(&request).as_object()?)).flatten()
    }

    fn golden_response(case: &std::path::Path, name: &str) {
        let upstream = read_json(&case.join("upstream_response.json"));
        let mut got = parse_chat(MODEL, CREATED, &upstream).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(tool) = case_answer_tool(case) {
            got = json_answer(got, &tool);
        }
        check_json(&case.join("expected_openai_response.json"), &got, name);
    }

    fn check_json(path: &std::path::Path, got: &Value, name: &str) {
        if update_expect() {
            std::fs::write(path, serde_json::to_string_pretty(got).unwrap() + "\n").unwrap();
            return;
        }
        let expected = read_json(path);
        assert_eq!(*got, expected, "{name}: {}\n got: {got}\nwant: {expected}", path.display());
    }

    fn golden_stream(case: &std::path::Path, name: &str) {
        let input = std::fs::read(case.join("upstream.sse")).unwrap();
        let path = case.join("expected_openai_chunks.jsonl");
        let tool = case_answer_tool(case);
        let translate = |input: &[u8], piece: usize| match &tool {
            Some(tool) => replay(json_answer_stream(stream_translator(MODEL, CREATED), tool), input, piece),
            None => translate(input, piece),
        };
        let whole: Vec<Value> = translate(&input, input.len()).iter().map(step_json).cloned().collect();
        if update_expect() {
            let lines: String = whole.iter().map(|v| format!("{v}\n")).collect();
            std::fs::write(&path, lines).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
            .collect();
        // Splitting the bytes anywhere (inside events, inside UTF-8 characters) changes nothing.
        for piece in [1, 7, input.len()] {
            let got: Vec<Value> = translate(&input, piece).iter().map(step_json).cloned().collect();
            let (g, w) = (Value::Array(got.clone()), Value::Array(expected.clone()));
            assert_eq!(got, expected, "{name}: chunks with {piece}-byte reads\n got: {g}\nwant: {w}");
        }
        check_stream_rules(&expected, name);
    }

    /// The rules every translator keeps (providers::StreamTranslator): one id/created/model,
    /// the role once, a tool call's id/type/name once, finish_reason only on the last choice
    /// chunk, and nothing after an error.
    fn check_stream_rules(steps: &[Value], name: &str) {
        let chunks: Vec<&Value> = steps.iter().filter(|s| s.get("error").is_none()).collect();
        if let Some(error) = steps.iter().position(|s| s.get("error").is_some()) {
            assert_eq!(error, steps.len() - 1, "{name}: an error is the last step");
        }
        let Some(first) = chunks.first() else { return };
        let mut roles = 0;
        let mut named = std::collections::HashSet::new();
        let mut finishes = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            for field in ["id", "created", "model"] {
                assert_eq!(chunk[field], first[field], "{name}: chunk {i} {field}");
            }
            assert_eq!(chunk["object"], "chat.completion.chunk", "{name}: chunk {i}");
            let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else { continue };
            assert_eq!(choice["index"], 0, "{name}: chunk {i}");
            roles += usize::from(choice["delta"].get("role").is_some());
            if !choice["finish_reason"].is_null() {
                finishes.push(i);
            }
            for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
                if call.get("id").is_some() {
                    assert!(named.insert(call["index"].as_u64().unwrap()), "{name}: tool call id sent twice");
                    assert!(call["type"] == "function" && call["function"]["name"].is_string(), "{name}: chunk {i}");
                } else {
                    assert!(call.get("type").is_none() && call["function"].get("name").is_none(), "{name}: chunk {i}");
                }
            }
        }
        assert_eq!(roles, 1, "{name}: the role goes out once");
        let last_choice = chunks.iter().rposition(|c| c["choices"].as_array().is_some_and(|c| !c.is_empty()));
        assert!(
            finishes.is_empty() || (finishes.len() == 1 && Some(finishes[0]) == last_choice),
            "{name}: finish_reason"
        );
    }
}

// ---- pass-through --------------------------------------------------------------------------

/// The Anthropic Messages API passed through to Anthropic (`path` is `messages` or
/// `messages/count_tokens`): the client's body as it came but for the model id (the caller
/// swaps it in), and the client's `anthropic-*` headers (`anthropic-beta` above all), except
/// `anthropic-version`, which `providers::with_key` sets with the key. Every other client
/// header stays here: the proxy key, hop-by-hop and encoding headers are the proxy's own.
/// The `oauth-*` betas say the request carries an OAuth token; it carries a pool API key
/// instead, so they are left out.
pub fn build_passthrough(
    base: &str,
    path: &str,
    body: Vec<u8>,
    client_headers: &[(String, String)],
    stream: bool,
) -> UpstreamRequest {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    for (name, value) in client_headers {
        if !name.starts_with("anthropic-") || name == "anthropic-version" {
            continue;
        }
        let value = match name.as_str() {
            "anthropic-beta" => {
                let kept: Vec<&str> =
                    value.split(',').map(str::trim).filter(|b| !b.is_empty() && !b.starts_with("oauth-")).collect();
                kept.join(",")
            }
            _ => value.clone(),
        };
        if !value.is_empty() {
            headers.push((name.clone(), value));
        }
    }
    UpstreamRequest { method: Method::Post, url: format!("{base}/{path}"), headers, body: Some(body), stream }
}

#[cfg(test)]
mod passthrough_tests {
    use super::*;

    #[test]
    fn passthrough_forwards_anthropic_headers_but_not_the_proxy_key_version_or_oauth_betas() {
        let client = [
            ("x-api-key", "proxy-key"),
            ("authorization", "Bearer proxy-key"),
            ("anthropic-version", "2023-01-01"),
            ("anthropic-beta", "context-management-2025-06-27"),
            ("anthropic-beta", "oauth-2025-04-20, interleaved-thinking-2025-05-14"),
            ("anthropic-beta", "oauth-2025-04-20"),
            ("anthropic-dangerous-direct-browser-access", "true"),
            ("accept-encoding", "gzip"),
            ("content-length", "12"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()));
        let req =
            build_passthrough("https://api.anthropic.com/v1", "messages/count_tokens", b"{}".to_vec(), &client, false);
        assert_eq!(req.url, "https://api.anthropic.com/v1/messages/count_tokens");
        assert_eq!(req.body.as_deref(), Some(&b"{}"[..]));
        let names: Vec<(&str, &str)> = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            names,
            [
                ("content-type", "application/json"),
                ("anthropic-beta", "context-management-2025-06-27"),
                ("anthropic-beta", "interleaved-thinking-2025-05-14"),
                ("anthropic-dangerous-direct-browser-access", "true")
            ]
        );
    }
}
