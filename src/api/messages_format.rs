//! The Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) over the
//! OpenAI chat hub: Anthropic requests become OpenAI chat bodies, OpenAI completions and chunk
//! streams become Anthropic messages and named SSE events (Anthropic's Messages API and streaming reference).
//! Pure functions: no I/O, no clock; message ids come from the caller.
//!
//! Everything the current Messages API accepts is accepted: top-level fields this module does
//! not translate (`context_management`, `container`, `service_tier`, `top_k`, ...), content
//! block types it does not know, and `cache_control` on any block are left out, never refused
//! (betas come as `anthropic-beta` headers, which only the Anthropic pass-through uses).
//!
//! Choices where the two formats do not line up:
//! - `system` blocks, the text of `system` turns inside `messages` (Claude Code sends them),
//!   and several assistant text blocks are joined with a blank line into one string (many
//!   OpenAI-compatible hosts take only string content there, and only one leading system
//!   message); the system turns join in their order, after the top-level `system`. A user turn
//!   of a single text block becomes a string, any other user turn an array of parts.
//! - `tool_result` blocks become `role: "tool"` messages ahead of the rest of their user turn.
//!   Tool messages carry text only, so a result's images and documents move to the front of the
//!   user message that follows, after a note naming the tool call; `is_error` prefixes the
//!   content with `[tool error]`.
//! - Documents: a base64 PDF becomes an OpenAI `file` part (`file_data` as a data URI, the
//!   title as its file name, its context as a text part before it); a text or content
//!   document becomes text, its title and context first. URL and Files-API sources of
//!   documents, and Files-API images, are refused with a 400: other providers cannot fetch
//!   them, and quietly leaving the document out would change the question.
//! - `thinking` blocks of assistant turns become `reasoning_content`; signatures and
//!   `redacted_thinking` are dropped (only Anthropic can read them).
//! - `thinking: {type: enabled}` becomes `reasoning_effort` by `budget_tokens`: up to 4096
//!   `low`, up to 16384 `medium`, above that `high`. `output_config.effort` wins over the
//!   budget (`max` as `high`). `disabled` sends nothing, nor does `adaptive` without an effort,
//!   so the provider's default applies.
//! - `output_config.format` (structured outputs) becomes `response_format` json_schema.
//! - Tools: Anthropic's server tools and schema-less built-in tools (`web_search`, `bash`, ...)
//!   are left out, and so is a `tool_choice` naming one of them.
//! - Usage and stop reasons go through `providers::anthropic_map`, the tables the Anthropic
//!   provider uses the other way: `input_tokens` is `prompt_tokens` less the cache reads
//!   (`cache_read_input_tokens`) and writes (`cache_creation_input_tokens`), which Anthropic
//!   counts apart. OpenAI does not say which stop sequence matched, so `stop_sequence` is
//!   always null.
//! - Streams: `message_start` gives the prompt count when known (`with_input_tokens`, or usage
//!   on the first chunk), else 0; the final `message_delta` repeats the input count from the
//!   usage chunk beside `output_tokens`, as Anthropic's may. A tool call that streamed no
//!   arguments gets `partial_json: "{}"` before it closes.
//! - A mid-stream error ends the event stream with `event: error` and leaves open blocks open,
//!   as Anthropic's own mid-stream errors do: closing a tool call's block would present its
//!   half-streamed arguments as complete.

use crate::error::ApiError;
use crate::providers::anthropic_map;
use crate::providers::openai::{first_choice, reasoning_text};
use serde_json::{Map, Value, json};

// ---- request -------------------------------------------------------------------------------

/// Anthropic Messages request -> OpenAI chat body. `model` is kept as given (it is
/// `provider/model`). A missing or malformed `model`, `messages` or `max_tokens` (or any field
/// that cannot be translated) is a 400 `invalid_request_error` naming the field.
pub fn to_openai_request(body: &Value) -> Result<Map<String, Value>, ApiError> {
    translate_request(body, true)
}

/// An Anthropic count_tokens request (a messages request without `max_tokens`) -> the model,
/// the OpenAI messages and the OpenAI tools to count, translated as `to_openai_request` does.
pub fn count_tokens_input(body: &Value) -> Result<(String, Value, Option<Value>), ApiError> {
    let mut openai = translate_request(body, false)?;
    let model = openai.get("model").and_then(Value::as_str).unwrap_or_default().to_string();
    let messages = openai.remove("messages").unwrap_or_else(|| json!([]));
    Ok((model, messages, openai.remove("tools")))
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// A field's value, with `null` taken as absent.
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

fn translate_request(body: &Value, needs_max_tokens: bool) -> Result<Map<String, Value>, ApiError> {
    let Some(body) = body.as_object() else {
        return Err(ApiError::invalid_request("request body must be a JSON object"));
    };
    let model = match field(body, "model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(_) => return Err(bad("model", "'model' must be a non-empty string")),
        None => return Err(bad("model", "missing required field 'model'")),
    };
    let turns = match field(body, "messages") {
        Some(Value::Array(turns)) if !turns.is_empty() => turns,
        Some(Value::Array(_)) => return Err(bad("messages", "'messages' must hold at least one message")),
        Some(_) => return Err(bad("messages", "'messages' must be an array of messages")),
        None => return Err(bad("messages", "missing required field 'messages'")),
    };
    let max_tokens = match field(body, "max_tokens") {
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => return Err(bad("max_tokens", "'max_tokens' must be a positive integer")),
        },
        None if needs_max_tokens => return Err(bad("max_tokens", "missing required field 'max_tokens'")),
        None => None,
    };

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    let mut system = system_texts("system", field(body, "system"))?;
    let mut messages = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        convert_turn(i, turn, &mut system, &mut messages)?;
    }
    system.retain(|t| !t.is_empty());
    if !system.is_empty() {
        messages.insert(0, json!({"role": "system", "content": system.join("\n\n")}));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = max_tokens {
        out.insert("max_tokens".into(), json!(n));
    }
    if let Some(tools) = tools(field(body, "tools"))? {
        tool_choice(field(body, "tool_choice"), &tools, &mut out)?;
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(stop) = field(body, "stop_sequences") {
        let Some(list) = stop.as_array().filter(|l| l.iter().all(Value::is_string)) else {
            return Err(bad("stop_sequences", "'stop_sequences' must be an array of strings"));
        };
        if !list.is_empty() {
            out.insert("stop".into(), stop.clone());
        }
    }
    for name in ["temperature", "top_p"] {
        if let Some(v) = field(body, name) {
            if !v.is_number() {
                return Err(bad(name, format!("'{name}' must be a number")));
            }
            out.insert(name.into(), v.clone());
        }
    }
    let output_config = field(body, "output_config");
    let effort = output_config.and_then(|c| c.get("effort"));
    if let Some(effort) = reasoning_effort(field(body, "thinking"), effort)? {
        out.insert("reasoning_effort".into(), json!(effort));
    }
    // `output_format` is the structured-outputs beta's name for `output_config.format`.
    let format = output_config.and_then(|c| c.get("format")).or_else(|| field(body, "output_format"));
    if let Some(format) = response_format(format.filter(|f| !f.is_null()))? {
        out.insert("response_format".into(), format);
    }
    if let Some(user) = field(body, "metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
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

/// The texts of a `system` field or of a `system` message's content: a string, or text
/// blocks (other block types carry no instruction text and are skipped).
fn system_texts(at: &str, system: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match system {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .filter(|(_, block)| block_type(block) == "text")
            .map(|(i, block)| string_at(block, "text", &format!("{at}[{i}]")).map(str::to_string))
            .collect(),
        Some(_) => Err(bad(at, format!("'{at}' must be a string or an array of text blocks"))),
    }
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// One turn. A `system` turn (Claude Code sends them inside `messages`) adds its text to the
/// system prompt, in order, instead of becoming a message (see the module comment).
fn convert_turn(i: usize, turn: &Value, system: &mut Vec<String>, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let at = format!("messages[{i}]");
    let role = match turn.get("role").and_then(Value::as_str) {
        Some("system") => {
            system.extend(system_texts(&format!("{at}.content"), turn.get("content").filter(|c| !c.is_null()))?);
            return Ok(());
        }
        Some(role @ ("user" | "assistant")) => role,
        _ => return Err(bad(&format!("{at}.role"), format!("{at}.role must be 'user', 'assistant' or 'system'"))),
    };
    match turn.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            Ok(())
        }
        Some(Value::Array(blocks)) if role == "user" => user_turn(&at, blocks, out),
        Some(Value::Array(blocks)) => assistant_turn(&at, blocks, out),
        _ => Err(bad(&format!("{at}.content"), format!("{at}.content must be a string or an array of content blocks"))),
    }
}

/// Tool results first, as `tool` messages in order, then one user message with the rest.
fn user_turn(at: &str, blocks: &[Value], out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    let mut attachments = Vec::new();
    let mut had_results = false;
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block_type(block) {
            "text" => parts.push(text_part(&at, block)?),
            "image" => parts.push(image_part(&at, block)?),
            "document" => parts.extend(document_parts(&at, block)?),
            "tool_result" => {
                out.push(tool_message(&at, block, &mut attachments)?);
                had_results = true;
            }
            // Blocks with no meaning for other providers (`search_result`, `container_upload`,
            // types newer than this code, ...) are left out.
            _ => {}
        }
    }
    attachments.append(&mut parts);
    let parts = attachments;
    if parts.is_empty() && had_results {
        return Ok(());
    }
    let content = match &parts[..] {
        [] => json!(""),
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

fn text_part(at: &str, block: &Value) -> Result<Value, ApiError> {
    match block.get("text").and_then(Value::as_str) {
        Some(text) => Ok(json!({"type": "text", "text": text})),
        None => Err(bad(&format!("{at}.text"), format!("{at}.text must be a string"))),
    }
}

fn source<'a>(at: &str, block: &'a Value) -> Result<(&'a Value, &'a str), ApiError> {
    let source = block.get("source").filter(|s| s.is_object());
    match source {
        Some(s) => Ok((s, block_type(s))),
        None => Err(bad(&format!("{at}.source"), format!("{at}.source must be an object"))),
    }
}

fn string_at<'a>(value: &'a Value, key: &str, at: &str) -> Result<&'a str, ApiError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("{at}.{key}"), format!("{at}.{key} must be a string")))
}

fn image_part(at: &str, block: &Value) -> Result<Value, ApiError> {
    let (source, kind) = source(at, block)?;
    let at = format!("{at}.source");
    let url = match kind {
        "base64" => {
            let media_type = string_at(source, "media_type", &at)?;
            format!("data:{media_type};base64,{}", string_at(source, "data", &at)?)
        }
        "url" => string_at(source, "url", &at)?.to_string(),
        other => return Err(unsupported_source(&at, other, "an image", "base64 or url")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn unsupported_source(at: &str, kind: &str, what: &str, instead: &str) -> ApiError {
    bad(
        &format!("{at}.type"),
        format!("{at}: source type '{kind}' is not supported for {what} on other providers; send it as {instead}"),
    )
}

/// A base64 PDF as an OpenAI `file` part; text and content documents as text (and images).
fn document_parts(at: &str, block: &Value) -> Result<Vec<Value>, ApiError> {
    let (source, kind) = source(at, block)?;
    let title = block.get("title").and_then(Value::as_str).filter(|t| !t.is_empty());
    let context = block.get("context").and_then(Value::as_str).filter(|c| !c.is_empty());
    let header: Vec<String> =
        title.map(|t| format!("Document: {t}")).into_iter().chain(context.map(|c| format!("Context: {c}"))).collect();
    let src = format!("{at}.source");
    match kind {
        "base64" => {
            let media_type = source.get("media_type").and_then(Value::as_str).unwrap_or("application/pdf");
            let data = string_at(source, "data", &src)?;
            let filename = title.unwrap_or("document.pdf");
            let file_data = format!("data:{media_type};base64,{data}");
            let file = json!({"type": "file", "file": {"filename": filename, "file_data": file_data}});
            let context = context.map(|c| json!({"type": "text", "text": format!("Context: {c}")}));
            Ok(context.into_iter().chain([file]).collect())
        }
        "text" => {
            let data = string_at(source, "data", &src)?;
            let text = header.into_iter().chain([data.to_string()]).collect::<Vec<_>>().join("\n\n");
            Ok(vec![json!({"type": "text", "text": text})])
        }
        "content" => {
            let mut parts: Vec<Value> = header.into_iter().map(|h| json!({"type": "text", "text": h})).collect();
            match source.get("content") {
                Some(Value::String(text)) => parts.push(json!({"type": "text", "text": text})),
                Some(Value::Array(blocks)) => {
                    for (k, inner) in blocks.iter().enumerate() {
                        let at = format!("{src}.content[{k}]");
                        match block_type(inner) {
                            "text" => parts.push(text_part(&at, inner)?),
                            "image" => parts.push(image_part(&at, inner)?),
                            _ => {}
                        }
                    }
                }
                _ => return Err(bad(&format!("{src}.content"), format!("{src}.content must be a string or an array"))),
            }
            Ok(parts)
        }
        other => Err(unsupported_source(&src, other, "a document", "base64 (PDF) or text")),
    }
}

/// A `tool_result` block as a `tool` message. Its images and documents go to `attachments`,
/// which open the user message that follows the tool messages.
fn tool_message(at: &str, block: &Value, attachments: &mut Vec<Value>) -> Result<Value, ApiError> {
    let id = string_at(block, "tool_use_id", at)?;
    let mut texts = Vec::new();
    let mut files = Vec::new();
    match block.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => texts.push(text.clone()),
        Some(Value::Array(blocks)) => {
            for (k, inner) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                match block_type(inner) {
                    "text" => texts.push(string_at(inner, "text", &at)?.to_string()),
                    "image" => files.push(image_part(&at, inner)?),
                    "document" => files.extend(document_parts(&at, inner)?),
                    _ => {}
                }
            }
        }
        Some(_) => {
            return Err(bad(&format!("{at}.content"), format!("{at}.content must be a string or an array of blocks")));
        }
    }
    if !files.is_empty() {
        texts.push(format!("[{} attachment(s) follow in the next user message]", files.len()));
        attachments.push(json!({"type": "text", "text": format!("Attachments of tool result {id}:")}));
        attachments.append(&mut files);
    }
    let mut content = texts.join("\n");
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        content = if content.is_empty() { "[tool error]".into() } else { format!("[tool error] {content}") };
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// Text blocks joined into `content`, thinking into `reasoning_content`, `tool_use` into
/// `tool_calls`.
fn assistant_turn(at: &str, blocks: &[Value], out: &mut Vec<Value>) -> Result<(), ApiError> {
    let (mut texts, mut reasoning, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block_type(block) {
            "text" => texts.push(string_at(block, "text", &at)?),
            "thinking" => reasoning.push(string_at(block, "thinking", &at)?),
            "tool_use" => {
                let input = block.get("input").filter(|i| !i.is_null()).cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": string_at(block, "id", &at)?,
                    "type": "function",
                    "function": {"name": string_at(block, "name", &at)?, "arguments": input.to_string()},
                }));
            }
            // `redacted_thinking` and the blocks of Anthropic's server tools (`server_tool_use`,
            // `web_search_tool_result`, ...) only Anthropic can read.
            _ => {}
        }
    }
    texts.retain(|t| !t.is_empty());
    reasoning.retain(|t| !t.is_empty());
    let content = match (texts.is_empty(), calls.is_empty()) {
        (false, _) => json!(texts.join("\n\n")),
        (true, false) => Value::Null,
        (true, true) => json!(""),
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning.join("\n\n"));
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    out.push(message);
    Ok(())
}

/// Anthropic tools as OpenAI function tools; `None` for none. A tool with an `input_schema`
/// is a function, whatever its `type`. Anthropic's own tools without one (server tools such as
/// `web_search`, and the schema-less `bash`, `text_editor`, ...) run or are defined on
/// Anthropic's side only: on other providers they are left out, and the model answers without
/// them (a 400 would stop agents that always offer them).
fn tools(tools: Option<&Value>) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(tools) = tools else { return Ok(None) };
    let Some(list) = tools.as_array() else {
        return Err(bad("tools", "'tools' must be an array of tools"));
    };
    let mut out = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        let kind = block_type(tool);
        let Some(schema) = tool.get("input_schema").filter(|s| s.is_object()) else {
            if !kind.is_empty() && kind != "custom" {
                continue;
            }
            return Err(bad(&format!("{at}.input_schema"), format!("{at}.input_schema must be a JSON Schema object")));
        };
        let mut function = json!({"name": string_at(tool, "name", &at)?});
        if let Some(description) = tool.get("description").and_then(Value::as_str) {
            function["description"] = json!(description);
        }
        function["parameters"] = schema.clone();
        if let Some(strict) = tool.get("strict").and_then(Value::as_bool) {
            function["strict"] = json!(strict);
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `tool_choice` (only sent with tools: OpenAI refuses it without them) and
/// `disable_parallel_tool_use` as `parallel_tool_calls: false`. A choice of a tool that was
/// left out (see `tools`), or of a kind this code does not know, is left out too: the
/// provider's default (auto) applies.
fn tool_choice(choice: Option<&Value>, tools: &[Value], out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Some(choice) = choice else { return Ok(()) };
    let openai = match block_type(choice) {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = string_at(choice, "name", "tool_choice")?;
            if !tools.iter().any(|t| t["function"]["name"] == name) {
                return Ok(());
            }
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Ok(()),
    };
    out.insert("tool_choice".into(), openai);
    if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

/// `reasoning_effort` from `output_config.effort` when given (Anthropic's `max` is sent as
/// `high`, the highest level every reasoning host takes), else from `thinking.budget_tokens`
/// (see the module comment). `thinking: disabled` sends none, whatever the effort;
/// `adaptive` alone, or a `thinking` type this code does not know, leaves the provider's
/// default.
fn reasoning_effort(thinking: Option<&Value>, effort: Option<&Value>) -> Result<Option<&'static str>, ApiError> {
    let kind = thinking.map(block_type);
    if kind == Some("disabled") {
        return Ok(None);
    }
    if let Some(effort) = effort.filter(|e| !e.is_null()) {
        return match effort.as_str() {
            Some("low") => Ok(Some("low")),
            Some("medium") => Ok(Some("medium")),
            Some("high" | "xhigh" | "max") => Ok(Some("high")),
            _ => Err(bad("output_config.effort", "'output_config.effort' must be low, medium, high or max")),
        };
    }
    match (kind, thinking.and_then(|t| t.get("budget_tokens"))) {
        (Some("enabled"), Some(budget)) => match budget.as_u64() {
            Some(budget) if budget <= 4096 => Ok(Some("low")),
            Some(budget) if budget <= 16384 => Ok(Some("medium")),
            Some(_) => Ok(Some("high")),
            None => Err(bad("thinking.budget_tokens", "'thinking.budget_tokens' must be a positive integer")),
        },
        (Some("enabled"), None) => {
            Err(bad("thinking.budget_tokens", "'thinking.budget_tokens' must be a positive integer"))
        }
        _ => Ok(None),
    }
}

/// `output_config.format` (structured outputs, `{"type": "json_schema", "schema"}`) as
/// OpenAI's `response_format` json_schema, strict as Anthropic's always is.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = format else { return Ok(None) };
    if block_type(format) != "json_schema" {
        return Err(bad("output_config.format.type", "'output_config.format.type' must be json_schema"));
    }
    let Some(schema) = format.get("schema").filter(|s| s.is_object()) else {
        return Err(bad("output_config.format.schema", "'output_config.format.schema' must be a JSON Schema object"));
    };
    Ok(Some(json!({
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": true},
    })))
}

// ---- response ------------------------------------------------------------------------------

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
fn tool_id(id: Option<&Value>, message_id: &str, index: u64) -> String {
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

// ---- stream --------------------------------------------------------------------------------

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
        if let (false, Some((provider, sent))) = (self.started, &self.naming) {
            self.model = model_name(provider, sent, chunk.get("model"));
        }
        self.start(&mut out);
        let Some(choice) = first_choice(chunk) else { return out };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let reasoning = reasoning_text(delta);
        if !reasoning.is_empty() {
            self.open_block(Block::Thinking, &mut out);
            out.push(self.delta(json!({"type": "thinking_delta", "thinking": reasoning})));
        }
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.open_block(Block::Text, &mut out);
                out.push(self.delta(json!({"type": "text_delta", "text": text})));
                self.refused |= key == "refusal";
            }
        }
        for (position, call) in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
            self.tool_fragment(position as u64, call, &mut out);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        out
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

/// An OpenAI error object as Anthropic's `{"type": "error", "error": {"type", "message"}}`.
/// Mid-stream errors carry no HTTP status, so one is inferred from `code` and `type`
/// (`error::status_of_openai_error`), and mapped by the one table of `error::anthropic_type_of`.
fn anthropic_error(error: &Value) -> Value {
    let e = error.get("error").filter(|e| e.is_object()).unwrap_or(error);
    let text = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or_default();
    let message = match text("message") {
        "" => format!("upstream error: {e}"),
        m => m.to_string(),
    };
    let status = crate::error::status_of_openai_error(e.get("code"), text("type"));
    json!({"type": "error", "error": {"type": crate::error::anthropic_type_of(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{read_json, read_jsonl};
    use std::path::Path;

    fn request(extra: Value) -> Value {
        let mut body =
            json!({"model": "openai/gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    fn translate(extra: Value) -> Value {
        Value::Object(to_openai_request(&request(extra)).unwrap_or_else(|e| panic!("{e}")))
    }

    fn refused(body: Value) -> ApiError {
        to_openai_request(&body).expect_err("a 400")
    }

    // ---- request ----

    #[test]
    fn required_fields_are_named() {
        let param = |body: Value| refused(body).param;
        assert_eq!(
            param(json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]})).as_deref(),
            Some("model")
        );
        assert_eq!(param(json!({"model": "a/b", "max_tokens": 1})).as_deref(), Some("messages"));
        assert_eq!(param(json!({"model": "a/b", "max_tokens": 1, "messages": []})).as_deref(), Some("messages"));
        assert_eq!(
            param(json!({"model": "a/b", "messages": [{"role": "user", "content": "x"}]})).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(param(request(json!({"max_tokens": "10"}))).as_deref(), Some("max_tokens"));
        assert_eq!(param(request(json!({"model": ""}))).as_deref(), Some("model"));
        let e = refused(json!({"model": "a/b", "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!((e.status, e.error_type.as_str()), (400, "invalid_request_error"));
        assert!(e.message.contains("max_tokens"), "{}", e.message);
        assert_eq!(e.to_anthropic_json()["error"]["type"], "invalid_request_error");
        assert_eq!(refused(json!("text")).status, 400);
    }

    #[test]
    fn malformed_turns_and_blocks_are_refused_with_their_path() {
        let param = |messages: Value| refused(request(json!({"messages": messages}))).param.unwrap();
        assert_eq!(param(json!([{"role": "tool", "content": "x"}])), "messages[0].role");
        assert_eq!(param(json!([{"role": "user", "content": 3}])), "messages[0].content");
        assert_eq!(param(json!([{"role": "user", "content": [{"type": "text"}]}])), "messages[0].content[0].text");
        assert_eq!(param(json!([{"role": "system", "content": 3}])), "messages[0].content");
        let url_doc = json!([{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]);
        assert_eq!(param(url_doc), "messages[0].content[0].source.type");
        let file_image =
            json!([{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]);
        assert_eq!(param(file_image), "messages[0].content[0].source.type");
        assert_eq!(
            refused(request(json!({"thinking": {"type": "enabled"}}))).param.as_deref(),
            Some("thinking.budget_tokens")
        );
        assert_eq!(
            refused(request(json!({"output_config": {"effort": "extreme"}}))).param.as_deref(),
            Some("output_config.effort")
        );
        assert_eq!(
            refused(request(json!({"output_config": {"format": {"type": "json_schema"}}}))).param.as_deref(),
            Some("output_config.format.schema")
        );
    }

    #[test]
    fn unknown_fields_blocks_and_server_tools_are_left_out() {
        let got = translate(json!({
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "container": "c-1", "mcp_servers": [], "service_tier": "auto", "inference_geo": "us",
            "thinking": {"type": "something_new"},
            "tools": [
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                {"type": "bash_20250124", "name": "bash"},
                {"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "tool", "name": "web_search"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "search_result", "source": "s", "title": "t", "content": []},
                    {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
                {"role": "assistant", "content": [
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}},
                    {"type": "text", "text": "Found it."}]}]
        }));
        assert_eq!(
            got["messages"],
            json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Found it."}])
        );
        assert_eq!(got["tools"].as_array().map(Vec::len), Some(1));
        assert!(got.get("tool_choice").is_none() && got.get("reasoning_effort").is_none());
        for dropped in ["context_management", "container", "mcp_servers", "service_tier", "inference_geo"] {
            assert!(got.get(dropped).is_none(), "{dropped}");
        }
        // Only server tools: no tools, and no choice without them.
        let none = translate(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any"}}));
        assert!(none.get("tools").is_none() && none.get("tool_choice").is_none());
    }

    #[test]
    fn system_messages_anywhere_join_the_system_prompt_in_order() {
        let got = translate(json!({
            "system": [{"type": "text", "text": "First.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "system", "content": "Second."},
                {"role": "user", "content": "Hi"},
                {"role": "system", "content": [{"type": "text", "text": "Third."}, {"type": "image"}]},
                {"role": "assistant", "content": "Hello."},
                {"role": "system", "content": ""},
                {"role": "user", "content": "Bye"}]
        }));
        assert_eq!(
            got["messages"],
            json!([
                {"role": "system", "content": "First.\n\nSecond.\n\nThird."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"}])
        );
        let only_inside = translate(json!({"messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}));
        assert_eq!(only_inside["messages"][0], json!({"role": "system", "content": "Be brief."}));
    }

    #[test]
    fn output_config_gives_effort_and_structured_output() {
        let effort = |extra: Value| translate(extra).get("reasoning_effort").cloned();
        assert_eq!(effort(json!({"output_config": {"effort": "low"}})), Some(json!("low")));
        assert_eq!(effort(json!({"output_config": {"effort": "max"}})), Some(json!("high")));
        assert_eq!(
            effort(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"}})),
            Some(json!("medium"))
        );
        // The effort wins over a budget; disabled thinking wins over both.
        assert_eq!(
            effort(
                json!({"thinking": {"type": "enabled", "budget_tokens": 30000}, "output_config": {"effort": "low"}})
            ),
            Some(json!("low"))
        );
        assert_eq!(effort(json!({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}})), None);
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
            "additionalProperties": false});
        let want = json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}});
        let format = json!({"type": "json_schema", "schema": schema});
        assert_eq!(translate(json!({"output_config": {"format": format}}))["response_format"], want);
        assert_eq!(translate(json!({"output_format": format}))["response_format"], want);
        assert!(translate(json!({"output_config": {}})).get("response_format").is_none());
    }

    #[test]
    fn sampling_stop_metadata_and_stream() {
        let got = translate(json!({
            "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"}, "stream": true, "service_tier": "auto"
        }));
        assert_eq!(got["temperature"], 0.2);
        assert_eq!(got["top_p"], 0.9);
        assert!(got.get("top_k").is_none() && got.get("service_tier").is_none());
        assert_eq!(got["stop"], json!(["END"]));
        assert_eq!(got["user"], "u-1");
        assert_eq!(got["max_tokens"], 100);
        assert_eq!(got["stream"], true);
        assert_eq!(got["stream_options"], json!({"include_usage": true}));
        let plain = translate(json!({"stream": false, "stop_sequences": []}));
        assert_eq!(plain["stream"], false);
        assert!(plain.get("stream_options").is_none() && plain.get("stop").is_none());
    }

    #[test]
    fn thinking_budget_maps_to_effort() {
        let effort = |thinking: Value| translate(json!({"thinking": thinking})).get("reasoning_effort").cloned();
        let enabled = |budget: u64| effort(json!({"type": "enabled", "budget_tokens": budget}));
        assert_eq!(enabled(1024), Some(json!("low")));
        assert_eq!(enabled(4096), Some(json!("low")));
        assert_eq!(enabled(4097), Some(json!("medium")));
        assert_eq!(enabled(16384), Some(json!("medium")));
        assert_eq!(enabled(16385), Some(json!("high")));
        assert_eq!(effort(json!({"type": "disabled"})), None);
        assert_eq!(effort(json!({"type": "adaptive"})), None);
    }

    #[test]
    fn tool_choice_variants() {
        let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
        let choice = |c: Value| {
            let got = translate(json!({"tools": tools, "tool_choice": c}));
            (got["tool_choice"].clone(), got.get("parallel_tool_calls").cloned())
        };
        assert_eq!(choice(json!({"type": "auto"})), (json!("auto"), None));
        assert_eq!(
            choice(json!({"type": "any", "disable_parallel_tool_use": true})),
            (json!("required"), Some(json!(false)))
        );
        assert_eq!(choice(json!({"type": "none"})), (json!("none"), None));
        assert_eq!(
            choice(json!({"type": "tool", "name": "f"})).0,
            json!({"type": "function", "function": {"name": "f"}})
        );
        // OpenAI refuses tool_choice without tools, and an empty tools array.
        let bare = translate(json!({"tools": [], "tool_choice": {"type": "auto"}}));
        assert!(bare.get("tools").is_none() && bare.get("tool_choice").is_none());
    }

    #[test]
    fn tool_results_come_first_and_carry_errors_and_attachments() {
        let got = translate(json!({"messages": [
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "run", "input": {"cmd": "ls"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Here you go."},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "Screenshot taken."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true, "content": "command not found"}]}
        ]}));
        let messages = got["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0]["tool_calls"][1]["function"]["arguments"], r#"{"cmd":"ls"}"#);
        assert_eq!(messages[0]["content"], Value::Null);
        assert_eq!(
            messages[1],
            json!({"role": "tool", "tool_call_id": "toolu_1",
                "content": "Screenshot taken.\n[1 attachment(s) follow in the next user message]"})
        );
        assert_eq!(
            messages[2],
            json!({"role": "tool", "tool_call_id": "toolu_2", "content": "[tool error] command not found"})
        );
        assert_eq!(
            messages[3],
            json!({"role": "user", "content": [
                {"type": "text", "text": "Attachments of tool result toolu_1:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "text", "text": "Here you go."}]})
        );
    }

    #[test]
    fn documents_become_files_or_text() {
        let got = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "document", "title": "report.pdf",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            {"type": "document", "title": "Notes", "context": "from the wiki",
                "source": {"type": "text", "media_type": "text/plain", "data": "Line one."}},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Chunk A"}]}},
            {"type": "text", "text": "Summarise."}]}]}));
        assert_eq!(
            got["messages"][0]["content"],
            json!([
                {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBER"}},
                {"type": "text", "text": "Document: Notes\n\nContext: from the wiki\n\nLine one."},
                {"type": "text", "text": "Chunk A"},
                {"type": "text", "text": "Summarise."}])
        );
    }

    #[test]
    fn count_tokens_needs_no_max_tokens() {
        let body = json!({"model": "openai/gpt-4o", "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]});
        let (model, messages, tools) = count_tokens_input(&body).unwrap();
        assert_eq!(model, "openai/gpt-4o");
        assert_eq!(messages, json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]));
        let function = json!({"name": "f", "description": "d", "parameters": {"type": "object"}});
        assert_eq!(tools, Some(json!([{"type": "function", "function": function}])));
        let (_, _, none) =
            count_tokens_input(&json!({"model": "a/b", "messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert_eq!(none, None);
        assert_eq!(count_tokens_input(&json!({"model": "a/b"})).unwrap_err().param.as_deref(), Some("messages"));
    }

    // ---- response ----

    fn completion(message: Value, finish: &str) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
    }

    #[test]
    fn stop_reasons() {
        let stop = |finish: &str, message: Value| {
            from_openai_response(&completion(message, finish), "m", "msg_1")["stop_reason"].clone()
        };
        let text = json!({"role": "assistant", "content": "x"});
        let call = json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
        assert_eq!(stop("stop", text.clone()), "end_turn");
        assert_eq!(stop("length", text.clone()), "max_tokens");
        assert_eq!(stop("content_filter", text.clone()), "refusal");
        assert_eq!(stop("tool_calls", call.clone()), "tool_use");
        assert_eq!(stop("stop", call.clone()), "tool_use"); // hosts that say stop after a call
        assert_eq!(stop("length", call), "max_tokens"); // a cut-off call is not a call to run
        assert_eq!(stop("tool_calls", text), "end_turn"); // no block to answer
    }

    #[test]
    fn bad_arguments_empty_content_refusal_and_cached_usage() {
        let message = json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}},
            {"type": "function", "function": {"name": "g", "arguments": "[1]"}}]});
        let got = from_openai_response(&completion(message, "tool_calls"), "openai/x", "msg_1");
        assert_eq!(
            got["content"],
            json!([{"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                   {"type": "tool_use", "id": "toolu_msg_1_1", "name": "g", "input": {}}])
        );
        let empty =
            from_openai_response(&completion(json!({"role": "assistant", "content": null}), "stop"), "m", "msg_2");
        assert_eq!(empty["content"], json!([{"type": "text", "text": ""}]));
        let refusal = json!({"role": "assistant", "content": null, "refusal": "I can't help with that."});
        let got = from_openai_response(&completion(refusal, "stop"), "m", "msg_3");
        assert_eq!(got["content"], json!([{"type": "text", "text": "I can't help with that."}]));
        assert_eq!(got["stop_reason"], "refusal");
        let mut cached = completion(json!({"role": "assistant", "content": "x"}), "stop");
        cached["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 4});
        assert_eq!(
            from_openai_response(&cached, "m", "msg_4")["usage"],
            json!({"input_tokens": 6, "output_tokens": 5, "cache_read_input_tokens": 4})
        );
        let nothing = from_openai_response(&json!({}), "m", "msg_5");
        assert_eq!(nothing["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
        assert_eq!(nothing["stop_reason"], "end_turn");
    }

    // ---- stream ----

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|(n, _)| *n).collect()
    }

    fn run(chunks: &[Value]) -> Vec<Event> {
        let mut writer = EventWriter::new("openai/gpt-4o-mini", "msg_1");
        let mut out = Vec::new();
        for c in chunks {
            out.extend(writer.chunk(c));
        }
        out.extend(writer.finish());
        check_grammar(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        out
    }

    #[test]
    fn an_empty_stream_is_still_a_message() {
        let mut writer = EventWriter::new("m", "msg_1");
        let out = writer.finish();
        assert_eq!(names(&out), ["message_start", "message_delta", "message_stop"]);
        assert_eq!(out[1].1["delta"]["stop_reason"], "end_turn");
        assert_eq!(out[1].1["usage"], json!({"output_tokens": 0}));
        assert!(writer.finish().is_empty() && writer.chunk(&chunk(json!({"content": "late"}), None)).is_empty());
    }

    #[test]
    fn empty_deltas_emit_nothing() {
        let mut writer = EventWriter::new("m", "msg_1");
        assert_eq!(names(&writer.chunk(&chunk(json!({"role": "assistant", "content": ""}), None))), ["message_start"]);
        assert!(writer.chunk(&chunk(json!({}), None)).is_empty());
        assert!(writer.chunk(&chunk(json!({"content": null, "reasoning_content": ""}), None)).is_empty());
        assert!(
            writer.chunk(&json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}})).is_empty()
        );
    }

    #[test]
    fn known_prompt_count_goes_into_message_start() {
        let mut writer = EventWriter::new("m", "msg_1").with_input_tokens(42);
        assert_eq!(
            writer.chunk(&chunk(json!({"role": "assistant"}), None))[0].1["message"]["usage"]["input_tokens"],
            42
        );
        let mut writer = EventWriter::new("m", "msg_1");
        let mut first = chunk(json!({"role": "assistant"}), None);
        first["usage"] = json!({"prompt_tokens": 7, "completion_tokens": 0});
        assert_eq!(writer.chunk(&first)[0].1["message"]["usage"]["input_tokens"], 7);
    }

    #[test]
    fn tool_call_without_arguments_gets_an_empty_object() {
        let out = run(&[chunk(
            json!({"tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}]}),
            Some("tool_calls"),
        )]);
        assert_eq!(out[2].1["delta"], json!({"type": "input_json_delta", "partial_json": "{}"}));
        assert_eq!(out[4].1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn parallel_calls_in_one_chunk_and_late_fragments() {
        let out = run(&[
            chunk(
                json!({"tool_calls": [
                {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}),
                None,
            ),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ignored"}}]}), None),
            chunk(json!({}), Some("stop")),
        ]);
        assert_eq!(
            names(&out),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(out[4].1["content_block"]["id"], "b");
        assert_eq!(out[7].1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn a_streamed_refusal_is_text_with_stop_reason_refusal() {
        let out = run(&[
            chunk(json!({"role": "assistant", "refusal": "I can't help."}), None),
            chunk(json!({}), Some("stop")),
        ]);
        assert_eq!(out[2].1["delta"], json!({"type": "text_delta", "text": "I can't help."}));
        assert_eq!(out[4].1["delta"]["stop_reason"], "refusal");
    }

    #[test]
    fn text_after_a_tool_call_opens_a_new_block() {
        let out = run(&[
            chunk(json!({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}]}), None),
            chunk(json!({"content": "done"}), None),
        ]);
        assert_eq!(out[4].1["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(out[4].1["index"], 1);
    }

    #[test]
    fn errors_end_the_stream() {
        let mut writer = EventWriter::new("m", "msg_1");
        let mut out = writer.chunk(&chunk(json!({"content": "Hel"}), None));
        out.extend(
            writer.error(&json!({"error": {"message": "Overloaded", "type": "api_error", "code": "overloaded_error"}})),
        );
        assert_eq!(names(&out), ["message_start", "content_block_start", "content_block_delta", "error"]);
        assert_eq!(out[3].1, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        check_grammar(&out).unwrap();
        assert!(writer.finish().is_empty() && writer.error(&json!({})).is_empty());

        // An error before anything else still follows message_start.
        let mut writer = EventWriter::new("m", "msg_1");
        let out = writer.error(
            &json!({"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        );
        assert_eq!(names(&out), ["message_start", "error"]);
        assert_eq!(out[1].1["error"]["type"], "authentication_error");

        // An error object arriving as a chunk (no choices) is an error, not an empty message.
        let mut writer = EventWriter::new("m", "msg_1");
        let out = writer
            .chunk(&json!({"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}}));
        assert_eq!(names(&out), ["message_start", "error"]);
        assert_eq!(out[1].1["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn error_types() {
        let kind = |e: Value| anthropic_error(&json!({"error": e}))["error"]["type"].clone();
        assert_eq!(kind(json!({"message": "m", "type": "api_error", "code": "stream_interrupted"})), "api_error");
        assert_eq!(kind(json!({"message": "m", "type": "server_error", "code": null})), "api_error");
        assert_eq!(
            kind(json!({"message": "m", "type": "rate_limit_error", "code": "all_keys_cooling_down"})),
            "rate_limit_error"
        );
        assert_eq!(kind(json!({"message": "m", "type": "tokens", "code": "rate_limit_exceeded"})), "rate_limit_error");
        assert_eq!(kind(json!({"message": "m", "type": "api_error", "code": "keys_busy"})), "overloaded_error");
        assert_eq!(
            kind(json!({"message": "m", "type": "invalid_request_error", "code": "model_not_found"})),
            "not_found_error"
        );
        assert_eq!(
            kind(json!({"message": "m", "type": "invalid_request_error", "code": "context_length_exceeded"})),
            "invalid_request_error"
        );
        assert_eq!(kind(json!({"message": "m", "code": 402})), "invalid_request_error");
        assert_eq!(kind(json!({"message": "m", "code": 502})), "api_error");
        assert_eq!(kind(json!({"message": "m", "type": "permission_error"})), "permission_error");
        let message = anthropic_error(&json!({"error": {"code": "x"}}))["error"]["message"].clone();
        assert!(message.as_str().unwrap().starts_with("upstream error: "), "{message}");
    }

    // ---- the event grammar (Anthropic's streaming reference) ----

    /// `message_start` first; blocks at indices 0, 1, 2... each started, given deltas of its
    /// kind and stopped before the next starts; `message_delta` then `message_stop` last, or
    /// `error` last (open blocks may stay open then). Every data `type` is its event name.
    fn check_grammar(events: &[Event]) -> Result<(), String> {
        let owned: Vec<(String, Value)> = events.iter().map(|(n, d)| (n.to_string(), d.clone())).collect();
        check_owned(&owned)
    }

    fn check_owned(events: &[(String, Value)]) -> Result<(), String> {
        let Some((first, _)) = events.first() else { return Err("no events".into()) };
        if first != "message_start" {
            return Err(format!("first event is {first}, not message_start"));
        }
        let mut open: Option<(u64, String)> = None;
        let mut next = 0;
        for (i, (name, data)) in events.iter().enumerate() {
            let last = i + 1 == events.len();
            if data["type"] != name.as_str() {
                return Err(format!("event {i}: {name} carries type {}", data["type"]));
            }
            let index = data["index"].as_u64();
            match name.as_str() {
                "message_start" if i == 0 => {
                    let m = &data["message"];
                    if m["content"] != json!([]) || !m["usage"]["input_tokens"].is_u64() || m["role"] != "assistant" {
                        return Err(format!("bad message_start {data}"));
                    }
                }
                "content_block_start" => {
                    if let Some((o, _)) = &open {
                        return Err(format!("event {i}: block {next} starts while block {o} is open"));
                    }
                    if index != Some(next) {
                        return Err(format!("event {i}: block index {index:?}, expected {next}"));
                    }
                    let kind = data["content_block"]["type"].as_str().unwrap_or_default().to_string();
                    if !["text", "thinking", "tool_use"].contains(&kind.as_str()) {
                        return Err(format!("event {i}: block type {kind}"));
                    }
                    open = Some((next, kind));
                    next += 1;
                }
                "content_block_delta" => {
                    let Some((o, kind)) = &open else { return Err(format!("event {i}: delta with no open block")) };
                    let want = match kind.as_str() {
                        "text" => "text_delta",
                        "thinking" => "thinking_delta",
                        _ => "input_json_delta",
                    };
                    if index != Some(*o) || data["delta"]["type"] != want {
                        return Err(format!("event {i}: delta {data} for open {kind} block {o}"));
                    }
                }
                "content_block_stop" => match &open {
                    Some((o, _)) if index == Some(*o) => open = None,
                    _ => return Err(format!("event {i}: stop {index:?} but open is {open:?}")),
                },
                "message_delta" => {
                    if open.is_some() || i + 2 != events.len() || events[i + 1].0 != "message_stop" {
                        return Err(format!("event {i}: message_delta must close the stream before message_stop"));
                    }
                    if !data["delta"]["stop_reason"].is_string() || !data["usage"]["output_tokens"].is_u64() {
                        return Err(format!("bad message_delta {data}"));
                    }
                }
                "message_stop" if last => {}
                "error" if last => {
                    if !data["error"]["type"].is_string() || !data["error"]["message"].is_string() {
                        return Err(format!("bad error {data}"));
                    }
                }
                other => return Err(format!("event {i}: unexpected {other}")),
            }
        }
        match events.last().map(|(n, _)| n.as_str()) {
            Some("message_stop" | "error") => Ok(()),
            other => Err(format!("last event is {other:?}")),
        }
    }

    #[test]
    fn the_grammar_checker_catches_mistakes() {
        let start = (
            "message_start".to_string(),
            json!({"type": "message_start",
                "message": {"role": "assistant", "content": [], "usage": {"input_tokens": 0}}}),
        );
        let ev = |name: &str, data: Value| (name.to_string(), data);
        let block = |i: u64| {
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
            )
        };
        let stop = |i: u64| ev("content_block_stop", json!({"type": "content_block_stop", "index": i}));
        let end = [
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 0}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ];
        let good: Vec<_> = [start.clone(), block(0), stop(0)].into_iter().chain(end.clone()).collect();
        assert_eq!(check_owned(&good), Ok(()));
        for bad in [
            vec![block(0), stop(0)],
            [start.clone(), block(1), stop(1)].into_iter().chain(end.clone()).collect(),
            [start.clone(), block(0), block(1), stop(1)].into_iter().chain(end.clone()).collect(),
            [start.clone(), block(0)].into_iter().chain(end.clone()).collect(),
            vec![start.clone(), block(0), stop(0)],
            [start.clone()].into_iter().chain(end.clone()).chain([block(0)]).collect(),
        ] {
            assert!(check_owned(&bad).is_err(), "{bad:?}");
        }
    }

    // ---- golden cases: tests/data/messages/<case>/ (README.md there) ----

    const MODEL: &str = "openai/gpt-4o-mini";
    const ID: &str = "msg_0123456789abcdef01234567";

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/messages")
    }

    #[test]
    fn golden_cases() {
        let mut checked = 0;
        for case in crate::golden::cases("messages") {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            let has = |file: &str| case.join(file).exists();
            for (input, expected) in [
                ("anthropic_request.json", "expected_openai_request.json"),
                ("openai_response.json", "expected_anthropic_response.json"),
                ("openai_chunks.jsonl", "expected_events.jsonl"),
            ] {
                assert_eq!(has(input), has(expected), "{name}: {input} and {expected} come in pairs");
                if !has(input) {
                    continue;
                }
                let (got, want) = match input {
                    "anthropic_request.json" => {
                        let got =
                            to_openai_request(&read_json(&case.join(input))).unwrap_or_else(|e| panic!("{name}: {e}"));
                        (Value::Object(got), read_json(&case.join(expected)))
                    }
                    "openai_response.json" => (
                        from_openai_response(&read_json(&case.join(input)), MODEL, ID),
                        read_json(&case.join(expected)),
                    ),
                    _ => {
                        let events = stream_case(&read_jsonl(&case.join(input)));
                        let got = events.iter().map(|(n, d)| json!({"event": n, "data": d})).collect();
                        (Value::Array(got), Value::Array(read_jsonl(&case.join(expected))))
                    }
                };
                assert_eq!(got, want, "{name}: {expected}\n got: {got}\nwant: {want}");
                checked += 1;
            }
        }
        assert!(checked >= 14, "only {checked} golden pairs found under {}", root().display());
    }

    /// Feeds a case's chunks: an `{"error": ...}` line goes to `error` (and ends the case),
    /// otherwise `finish` follows the last line.
    fn stream_case(lines: &[Value]) -> Vec<Event> {
        let mut writer = EventWriter::new(MODEL, ID);
        let mut out = Vec::new();
        for line in lines {
            if line.get("error").is_some() {
                out.extend(writer.error(line));
                return out;
            }
            out.extend(writer.chunk(line));
        }
        out.extend(writer.finish());
        out
    }

    #[test]
    fn every_expected_event_file_follows_the_grammar() {
        let mut files = 0;
        for case in crate::golden::cases("messages") {
            let path = case.join("expected_events.jsonl");
            if !path.exists() {
                continue;
            }
            let events: Vec<(String, Value)> = read_jsonl(&path)
                .into_iter()
                .map(|line| (line["event"].as_str().expect("an event name").to_string(), line["data"].clone()))
                .collect();
            check_owned(&events).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files += 1;
        }
        assert!(files >= 5, "only {files} expected_events.jsonl files");
    }

    #[test]
    fn answers_name_the_model_provider_slash_upstream_id() {
        assert_eq!(model_name("anthropic", "claude-x", Some(&json!("claude-x-2025"))), "anthropic/claude-x-2025");
        assert_eq!(model_name("anthropic", "claude-x", None), "anthropic/claude-x");
        assert_eq!(model_name("anthropic", "claude-x", Some(&json!(""))), "anthropic/claude-x");
        assert_eq!(model_name("openai", "m", Some(&json!("openai/m-1"))), "openai/m-1");
        assert_eq!(model_name("nvidia_nim", "a/b", Some(&json!("a/b"))), "nvidia_nim/a/b");
        let mut writer = EventWriter::new("groq/llama", "msg_1").naming("groq", "llama");
        let mut first = chunk(json!({"role": "assistant"}), None);
        first["model"] = json!("llama-3.3-70b");
        assert_eq!(writer.chunk(&first)[0].1["message"]["model"], "groq/llama-3.3-70b");
        let mut silent = EventWriter::new("groq/llama", "msg_1").naming("groq", "llama");
        assert_eq!(silent.finish()[0].1["message"]["model"], "groq/llama");
    }
}
