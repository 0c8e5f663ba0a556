//! Anthropic Messages requests (and `count_tokens` bodies) to OpenAI chat bodies.

use crate::error::ApiError;
use crate::providers::hub::{self, bad};
use serde_json::{Map, Value, json};

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
    hub::stream_fields(body.get("stream"), &mut out)?;
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
