//! OpenAI chat requests to `POST {base}/messages` bodies: turns, content blocks, tools and
//! the forced answer tool for `response_format`, thinking budgets, sampling.

use crate::error::ApiError;
use crate::providers::anthropic_map;
use crate::providers::hub::{self, Body, Roles, ToolChoice, bad, post_json};
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value, json};

/// Anthropic requires `max_tokens`; OpenAI clients usually leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// With thinking on, Anthropic takes `top_p` only from this value up to 1.
const THINKING_MIN_TOP_P: f64 = 0.95;

/// OpenAI chat body (already validated: has "messages" array; "model" is replaced by `model`)
/// -> `POST {base}/messages` request (headers: content-type only; the key and
/// `anthropic-version` are added by `providers::with_key`). `response_format` becomes a forced
/// tool (module comment). Fields Anthropic has no equivalent for (`seed`, penalties,
/// `logprobs`, ...) are dropped.
pub fn build_chat(base: &str, model: &str, body: &Body, stream: bool) -> Result<UpstreamRequest, ApiError> {
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
    let budget = anthropic_map::thinking_budget(body)?.filter(|_| !forced_tool && !in_tool_loop);
    request.insert("max_tokens".into(), json!(hub::max_tokens(body, DEFAULT_MAX_TOKENS, budget)?));
    if let Some(budget) = budget {
        request.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    sampling(body, budget.is_some(), &mut request);
    request.insert("stream".into(), Value::Bool(stream));
    Ok(post_json(format!("{base}/messages"), &request, stream))
}

/// System and developer messages as the top-level `system`, and the conversation as
/// alternating `user` / `assistant` turns: consecutive turns of one role are merged, and tool
/// results are user turns.
fn convert_messages(messages: &[Value]) -> Result<(Option<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let roles =
        Roles { assistant: "assistant", user: &user_blocks, replay: &assistant_blocks, tool: &|_, m| tool_result(m) };
    let turns = hub::turns(messages, "anthropic", |content| system.extend(text_blocks(content)), roles)?;
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
            "image_url" => Some(image_block(hub::image_url(part)?)?),
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
    let Some(functions) = hub::function_tools(body.get("tools"), "anthropic")? else { return Ok(false) };
    let mut out = Vec::with_capacity(functions.len());
    for (name, function) in functions {
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
    let kind = match hub::tool_choice(body)? {
        None => {
            let serial = body.get("parallel_tool_calls") == Some(&Value::Bool(false));
            return Ok(serial.then(|| json!({"type": "auto"})));
        }
        Some(ToolChoice::Auto) => "auto",
        Some(ToolChoice::Required) => "any",
        Some(ToolChoice::None) => "none",
        Some(ToolChoice::Named(name)) => return Ok(Some(json!({"type": "tool", "name": name}))),
    };
    Ok(Some(json!({"type": kind})))
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
