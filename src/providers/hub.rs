//! Readers of the OpenAI chat hub body that every translating family (anthropic, bedrock,
//! gemini and, through them, vertex and code_assist) shares: the turn walk with its role
//! rules, the `image_url` part, `tool_choice`, the output limit, embeddings inputs, and the
//! JSON `POST` they all send; and the walk of a hub stream chunk that the api event writers
//! share (`write_chunk`). What a family turns these into stays in the family.

use super::openai::{first_choice, reasoning_text};
use crate::error::ApiError;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::{Map, Value};

/// An OpenAI request body, already validated, as every family's `build_chat` reads it.
pub type Body = Map<String, Value>;

/// A 400 `invalid_request` naming the body field at fault.
pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// `POST url` with a JSON body.
pub fn post_json(url: String, body: &impl serde::Serialize, stream: bool) -> UpstreamRequest {
    UpstreamRequest {
        method: Method::Post,
        url,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(serde_json::to_vec(body).expect("a JSON value serialises")),
        stream,
    }
}

/// A conversation as the family's turns, each `(role, blocks)`.
pub type Turns = Vec<(&'static str, Vec<Value>)>;

/// How a family turns each kind of message into blocks, and what it calls the assistant.
pub struct Roles<'f> {
    /// The assistant's role name upstream (`assistant`, Gemini's `model`).
    pub assistant: &'static str,
    /// A user message's content.
    pub user: &'f dyn Fn(&Value) -> Result<Vec<Value>, String>,
    /// An assistant message (content and tool calls).
    pub replay: &'f dyn Fn(&Value) -> Vec<Value>,
    /// A tool message and its index (a user turn upstream).
    pub tool: &'f dyn Fn(usize, &Value) -> Result<Value, String>,
}

/// Walks `messages`: `system` and `developer` content goes to `system` (the families have no
/// system turns: every one of them, wherever it is, is instruction); `user`, `assistant` and
/// `tool` messages become turns as `roles` says. Consecutive turns of one role are merged,
/// since the families want them alternating; empty ones are dropped. Errors name the message
/// (`messages[i]: ...`); other roles are refused for `provider`.
pub fn turns(
    messages: &[Value],
    provider: &str,
    mut system: impl FnMut(&Value),
    roles: Roles,
) -> Result<Turns, ApiError> {
    let mut turns: Turns = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |why: String| bad("messages", format!("messages[{i}]: {why}"));
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                system(content);
                continue;
            }
            Some("user") => ("user", (roles.user)(content).map_err(at)?),
            Some("assistant") => (roles.assistant, (roles.replay)(message)),
            Some("tool") => ("user", vec![(roles.tool)(i, message).map_err(at)?]),
            Some(other) => return Err(at(format!("role '{other}' is not supported by {provider}"))),
            None => return Err(at("missing 'role'".into())),
        };
        match turns.last_mut() {
            _ if blocks.is_empty() => {}
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(turns)
}

/// The URL of an `image_url` content part: `{"url": ...}` per OpenAI's Chat Completions
/// reference; some clients send the URL string itself.
pub fn image_url(part: &Value) -> Result<&str, String> {
    let image = part.get("image_url").unwrap_or(&Value::Null);
    image.get("url").unwrap_or(image).as_str().ok_or_else(|| "an image_url part needs a url".into())
}

/// A user message's content as `{"text": ...}` blocks: a string as one, an array part by part,
/// empty texts left out (the families reject them). Any other part is what `other(type,
/// part)` makes of it; `None` there refuses the type for `provider`.
pub fn user_parts(
    content: &Value,
    provider: &str,
    other: impl Fn(&str, &Value) -> Option<Result<Value, String>>,
) -> Result<Vec<Value>, String> {
    let text = |text: Option<&Value>| {
        text.and_then(Value::as_str).filter(|t| !t.is_empty()).map(|t| serde_json::json!({"text": t}))
    };
    let Value::Array(parts) = content else { return Ok(text(Some(content)).into_iter().collect()) };
    let mut out = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => out.extend(text(part.get("text"))),
            kind => match other(kind, part) {
                Some(block) => out.push(block?),
                None => return Err(format!("content part type '{kind}' is not supported by {provider}")),
            },
        }
    }
    Ok(out)
}

/// A client's `tool_choice`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    /// `{"type": "function", "function": {"name": ...}}`.
    Named(&'a str),
}

/// `tool_choice`, or `None` when unset (absent or null).
pub fn tool_choice(body: &Map<String, Value>) -> Result<Option<ToolChoice<'_>>, ApiError> {
    Ok(Some(match body.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(bad("tool_choice", format!("unknown tool_choice '{other}'"))),
        },
        Some(named) => match named.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Named(name),
            None => return Err(bad("tool_choice", "a named tool_choice needs function.name")),
        },
    }))
}

/// The output limit: `max_completion_tokens` (the newer name wins) or `max_tokens`, else
/// `default`. Claude needs it above its thinking `budget`; a limit that does not clear it is
/// read as the room wanted for the answer, and the budget is added on top.
pub fn max_tokens(body: &Map<String, Value>, default: u64, budget: Option<u64>) -> Result<u64, ApiError> {
    let field =
        ["max_completion_tokens", "max_tokens"].into_iter().find(|f| body.get(*f).is_some_and(|v| !v.is_null()));
    let limit = match field {
        None => default,
        Some(field) => {
            body[field].as_u64().ok_or_else(|| bad(field, format!("'{field}' must be a non-negative integer")))?
        }
    };
    Ok(match budget {
        Some(budget) if limit <= budget => budget + limit,
        _ => limit,
    })
}

/// An embeddings body's `input` as texts; token-id inputs are refused, since `provider`
/// embeds text only.
pub fn embedding_texts<'a>(body: &'a Map<String, Value>, provider: &str) -> Result<Vec<&'a str>, ApiError> {
    match body.get("input") {
        Some(Value::String(text)) => Ok(vec![text.as_str()]),
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(Value::as_str).collect::<Option<_>>().ok_or_else(|| {
                bad("input", format!("{provider} embeds text only: 'input' must be a string or an array of strings"))
            })
        }
        _ => Err(bad("input", "'input' must be a string or a non-empty array of strings")),
    }
}

/// An embeddings body's `dimensions`, when set: a positive integer.
pub fn dimensions(body: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    match body.get("dimensions") {
        None | Some(Value::Null) => Ok(None),
        Some(d) => d
            .as_u64()
            .filter(|&d| d > 0)
            .map(Some)
            .ok_or_else(|| bad("dimensions", "'dimensions' must be a positive integer")),
    }
}

/// The body's function tools as `(name, function)`, `None` when there are none; any other
/// kind of tool, or a function without a name, is refused for `provider`.
pub fn function_tools<'a>(
    tools: Option<&'a Value>,
    provider: &str,
) -> Result<Option<Vec<(&'a str, &'a Value)>>, ApiError> {
    let Some(tools) = tools.and_then(Value::as_array).filter(|t| !t.is_empty()) else { return Ok(None) };
    let mut functions = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(bad("tools", format!("tools[{i}]: {provider} takes only function tools")));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(bad("tools", format!("tools[{i}]: a function needs a name")));
        };
        functions.push((name, function));
    }
    Ok(Some(functions))
}

/// A writer that turns a hub chat stream into another format's events (`api::messages_format`,
/// `api::responses_format`); `write_chunk` walks each chunk and calls it back per piece.
pub trait ChunkWriter {
    type Event;
    /// The terminal event is out: nothing more is written.
    fn is_done(&self) -> bool;
    /// A chunk that is an OpenAI error object.
    fn error(&mut self, error: &Value) -> Vec<Self::Event>;
    /// Any other chunk, before its pieces: its usage (on any chunk) kept for the end, and the
    /// opening events out.
    fn begin(&mut self, chunk: &Value, usage: Option<&Value>, out: &mut Vec<Self::Event>);
    fn reasoning(&mut self, text: &str, out: &mut Vec<Self::Event>);
    /// Content text, or a refusal.
    fn text(&mut self, text: &str, refusal: bool, out: &mut Vec<Self::Event>);
    /// One `delta.tool_calls[]` fragment and its position there.
    fn tool_call(&mut self, position: u64, call: &Value, out: &mut Vec<Self::Event>);
    fn finish_reason(&mut self, reason: &str);
}

/// One OpenAI `chat.completion.chunk` through `writer`: only the first choice counts, read
/// as reasoning, then content and refusal text (empty pieces skipped), then tool-call
/// fragments, then its `finish_reason`.
pub fn write_chunk<W: ChunkWriter>(writer: &mut W, chunk: &Value) -> Vec<W::Event> {
    let mut out = Vec::new();
    if writer.is_done() {
        return out;
    }
    if chunk.get("error").is_some_and(Value::is_object) && chunk.get("choices").is_none() {
        return writer.error(chunk);
    }
    writer.begin(chunk, chunk.get("usage").filter(|u| u.is_object()), &mut out);
    let Some(choice) = first_choice(chunk) else { return out };
    let delta = choice.get("delta").unwrap_or(&Value::Null);
    let reasoning = reasoning_text(delta);
    if !reasoning.is_empty() {
        writer.reasoning(reasoning, &mut out);
    }
    for key in ["content", "refusal"] {
        if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
            writer.text(text, key == "refusal", &mut out);
        }
    }
    for (position, call) in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        writer.tool_call(position as u64, call, &mut out);
    }
    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
        writer.finish_reason(reason);
    }
    out
}

/// A client's `stream` (null taken as absent) into the hub body it builds: a boolean, and on
/// streams usage asked for, so the last chunk carries the counts the translators report.
pub fn stream_fields(stream: Option<&Value>, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    match stream.filter(|v| !v.is_null()) {
        Some(Value::Bool(stream)) => {
            out.insert("stream".into(), Value::Bool(*stream));
            if *stream {
                out.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
            }
            Ok(())
        }
        Some(_) => Err(bad("stream", "'stream' must be a boolean")),
        None => Ok(()),
    }
}
