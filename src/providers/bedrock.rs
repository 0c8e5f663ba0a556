//! AWS Bedrock Runtime's Converse and ConverseStream APIs (the "Amazon Bedrock API Reference":
//! `POST /model/{modelId}/converse` and `/converse-stream`), translated to and from the OpenAI
//! chat hub:
//!
//! - messages: system and developer turns become `system` text blocks; user, assistant and
//!   tool turns become `messages` with `text`, `image` (base64 `data:` URLs only: Converse
//!   takes image bytes, not URLs), `toolUse` and `toolResult` blocks, consecutive turns of one
//!   role merged (Converse wants them alternating);
//! - `tools` and `tool_choice` become `toolConfig` (`auto`, `any`, `tool`; `none` sends no
//!   tools unless the history already has tool blocks, which Converse then requires);
//! - `max_tokens`, `temperature`, `top_p`, `stop` become `inferenceConfig`;
//! - `reasoning_effort` becomes `additionalModelRequestFields.thinking` for Claude models
//!   (the Anthropic budget), and `reasoningContent` blocks come back as `reasoning_content`;
//! - stop reasons and usage (`inputTokens`, `outputTokens`, `cacheReadInputTokens`,
//!   `cacheWriteInputTokens`) come back in OpenAI's names.
//!
//! The model id goes into the URL as one path segment, percent-encoded (`:` and `/` of
//! versioned ids and inference-profile ARNs included); SigV4 encodes it once more when it
//! signs (`sigv4`). A credential is an access-key pair, signed with SigV4 (service `bedrock`),
//! or a Bedrock API key sent as a bearer. Errors carry their type in `x-amzn-errortype`
//! and/or `__type`, which `error_body` puts where `errors::classify` reads it. Bedrock has no
//! OpenAI-style model list on this host, so the models listed are `BEDROCK_MODELS` only.

use super::hub::{self, Body, Roles, ToolChoice, bad, post_json};
use super::{StreamTranslator, Translated, anthropic_map, chunk_envelope, event_json, sigv4, stream_error};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::sse;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The provider's name.
pub const NAME: &str = "bedrock";
/// The service name SigV4 signs for.
pub const SERVICE: &str = "bedrock";
/// `BEDROCK_AWS_REGION` when unset.
pub const DEFAULT_REGION: &str = "us-east-1";
/// `maxTokens` when the client sets none: some models' defaults are very small.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The runtime endpoint of `region`.
pub fn default_base(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// Whether `region` can go into a host name as it is (`us-east-1`, `eu-central-2`).
pub fn valid_region(region: &str) -> bool {
    !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The model id as one URL path segment: every byte but `A-Z a-z 0-9 - . _ ~` percent-encoded,
/// so `anthropic.claude-3-5-sonnet-20240620-v1:0` and inference-profile ARNs stay one segment.
/// Empty, `.` and `..` are refused (a 400 on `model`).
pub fn model_segment(id: &str) -> Result<String, ApiError> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(bad("model", format!("model id '{id}' cannot be sent to bedrock")));
    }
    Ok(sigv4::uri_encode(id.as_bytes()))
}

/// OpenAI chat body -> `POST {base}/model/{id}/converse` (or `/converse-stream`).
pub fn build_chat(base: &str, model: &str, body: &Body, stream: bool) -> Result<UpstreamRequest, ApiError> {
    let messages =
        body.get("messages").and_then(Value::as_array).ok_or_else(|| bad("messages", "missing 'messages'"))?;
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad("n", "bedrock answers with one choice; 'n' must be 1"));
    }
    if let Some(kind) = body.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str) {
        if kind != "text" {
            return Err(bad("response_format", "bedrock's Converse API has no response_format; use a tool instead"));
        }
    }
    let (system, turns) = convert_messages(messages)?;
    if turns.is_empty() {
        return Err(bad("messages", "bedrock needs at least one user or assistant message"));
    }
    let has_tool_blocks = turns.iter().any(|t| {
        t["content"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some())
    });
    let mut request = Map::new();
    request.insert("messages".into(), Value::Array(turns));
    if !system.is_empty() {
        request.insert("system".into(), Value::Array(system));
    }
    if let Some(config) = tool_config(body, has_tool_blocks)? {
        request.insert("toolConfig".into(), config);
    }
    let budget = if is_claude(model) { anthropic_map::thinking_budget(body)? } else { None };
    request.insert("inferenceConfig".into(), Value::Object(inference_config(body, budget)?));
    if let Some(budget) = budget {
        request.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        );
    }
    let operation = if stream { "converse-stream" } else { "converse" };
    Ok(post_json(format!("{base}/model/{}/{operation}", model_segment(model)?), &request, stream))
}

/// Claude on Bedrock (`anthropic.claude-*`, or an inference profile such as
/// `us.anthropic.claude-*` or an ARN naming one): the models that take `thinking`.
fn is_claude(model: &str) -> bool {
    model.contains("anthropic.claude")
}

fn convert_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let roles =
        Roles { assistant: "assistant", user: &user_blocks, replay: &assistant_blocks, tool: &|_, m| tool_result(m) };
    let system_texts = |content: &Value| system.extend(texts(content).into_iter().map(|t| json!({"text": t})));
    let turns = hub::turns(messages, NAME, system_texts, roles)?;
    let turns = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok((system, turns))
}

/// The non-empty texts of a string or of an array's text parts.
fn texts(content: &Value) -> Vec<String> {
    let all: Vec<String> = match content {
        Value::String(text) => vec![text.clone()],
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(String::from).collect()
        }
        _ => Vec::new(),
    };
    all.into_iter().filter(|t| !t.is_empty()).collect()
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, String> {
    hub::user_parts(content, NAME, |kind, part| match kind {
        "image_url" => Some(hub::image_url(part).and_then(image_block)),
        _ => None,
    })
}

/// `data:image/<format>;base64,<bytes>` as an `image` block; Converse takes no image URLs.
fn image_block(url: &str) -> Result<Value, String> {
    let rest = url.strip_prefix("data:").ok_or("bedrock takes images as base64 data: URLs only")?;
    let (meta, data) = rest.split_once(',').ok_or("a data: URL must look like data:image/png;base64,<data>")?;
    let media_type = meta.strip_suffix(";base64").ok_or("a data: URL must be base64")?;
    let format = match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => return Err(format!("bedrock takes png, jpeg, gif and webp images, not '{other}'")),
    };
    if data.is_empty() {
        return Err("an image data: URL has no data".into());
    }
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// Assistant text, then a `toolUse` block per tool call. `reasoning_content` is dropped: a
/// replayed reasoning block would need the signature the client did not keep.
fn assistant_blocks(message: &Value) -> Vec<Value> {
    let mut blocks: Vec<Value> =
        texts(message.get("content").unwrap_or(&Value::Null)).into_iter().map(|t| json!({"text": t})).collect();
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        let input = match function.get("arguments") {
            Some(Value::String(text)) => serde_json::from_str::<Value>(text).ok().filter(Value::is_object),
            Some(object @ Value::Object(_)) => Some(object.clone()),
            _ => None,
        };
        blocks.push(json!({"toolUse": {
            "toolUseId": call.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": function.get("name").and_then(Value::as_str).unwrap_or(""),
            "input": input.unwrap_or_else(|| json!({})),
        }}));
    }
    blocks
}

fn tool_result(message: &Value) -> Result<Value, String> {
    let id = message.get("tool_call_id").and_then(Value::as_str).ok_or("a tool message needs a 'tool_call_id'")?;
    let mut content = user_blocks(message.get("content").unwrap_or(&Value::Null))?;
    if content.is_empty() {
        content.push(json!({"text": ""}));
    }
    Ok(json!({"toolResult": {"toolUseId": id, "content": content}}))
}

fn tool_config(body: &Map<String, Value>, has_tool_blocks: bool) -> Result<Option<Value>, ApiError> {
    let Some(tools) = body.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut specs = Vec::new();
    for tool in tools {
        let function = tool.get("function").ok_or_else(|| bad("tools", "bedrock takes function tools only"))?;
        let name = function.get("name").and_then(Value::as_str).ok_or_else(|| bad("tools", "a tool needs a name"))?;
        let mut spec = json!({"name": name, "inputSchema": {"json": function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}))}});
        if let Some(description) = function.get("description").and_then(Value::as_str) {
            spec["description"] = json!(description);
        }
        specs.push(json!({"toolSpec": spec}));
    }
    let choice = match hub::tool_choice(body)? {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::None) if has_tool_blocks => None,
        Some(ToolChoice::None) => return Ok(None),
        Some(ToolChoice::Named(name)) => Some(json!({"tool": {"name": name}})),
    };
    let mut config = json!({"tools": specs});
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

/// `maxTokens` (above the thinking budget, as Claude needs), sampling and stop sequences.
/// Claude refuses `temperature` and `topP` with thinking on, so they are left out then.
fn inference_config(body: &Map<String, Value>, budget: Option<u64>) -> Result<Map<String, Value>, ApiError> {
    let mut config = Map::new();
    let limit = hub::max_tokens(body, DEFAULT_MAX_TOKENS, budget)?;
    config.insert("maxTokens".into(), json!(limit));
    if budget.is_none() {
        for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
            if let Some(v) = body.get(from).filter(|v| v.is_number()) {
                config.insert(to.into(), v.clone());
            }
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            config.insert("stopSequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    Ok(config)
}

/// A Converse answer as a `chat.completion` (Converse names no id: `id` is ours).
pub fn parse_chat(model: &str, id: &str, created: u64, body: &Value) -> Result<Value, String> {
    let blocks = body
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or("bedrock answered no output.message.content")?;
    let (mut content, mut reasoning, mut tool_calls) = (String::new(), String::new(), Vec::new());
    for block in blocks {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            content.push_str(text);
        } else if let Some(text) = block.pointer("/reasoningContent/reasoningText/text").and_then(Value::as_str) {
            reasoning.push_str(text);
        } else if let Some(call) = block.get("toolUse") {
            tool_calls.push(json!({
                "id": call.get("toolUseId").and_then(Value::as_str).unwrap_or(""),
                "type": "function",
                "function": {
                    "name": call.get("name").and_then(Value::as_str).unwrap_or(""),
                    "arguments": call.get("input").filter(|i| !i.is_null()).map_or_else(|| "{}".into(), Value::to_string),
                },
            }));
        }
    }
    let called = !tool_calls.is_empty();
    let content = if content.is_empty() && called { Value::Null } else { Value::String(content) };
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if called {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = finish_reason(body.get("stopReason").and_then(Value::as_str), called);
    Ok(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": openai_usage(body.get("usage").unwrap_or(&Value::Null)),
    }))
}

/// Converse's `stopReason` as OpenAI's `finish_reason`.
fn finish_reason(stop_reason: Option<&str>, called: bool) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        None if called => "tool_calls",
        _ => "stop",
    }
}

/// Converse usage as OpenAI usage; like Anthropic's, `inputTokens` leaves out the tokens read
/// from or written to the prompt cache.
pub fn openai_usage(usage: &Value) -> Value {
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cacheReadInputTokens");
    let prompt = count("inputTokens").saturating_add(cached).saturating_add(count("cacheWriteInputTokens"));
    let completion = count("outputTokens");
    let mut out = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)});
    if cached > 0 {
        out["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    out
}

/// The HTTP status Bedrock gives an exception type (its API reference's "Errors" sections),
/// for exceptions that arrive inside a stream.
pub fn exception_status(kind: &str) -> u16 {
    match kind.to_ascii_lowercase().trim_end_matches("exception") {
        "throttling" | "modelnotready" => 429,
        "validation" | "servicequotaexceeded" => 400,
        "accessdenied" | "unrecognizedclient" | "invalidsignature" | "expiredtoken" => 403,
        "resourcenotfound" => 404,
        "modeltimeout" => 408,
        "modelerror" | "modelstreamerror" => 424,
        "serviceunavailable" => 503,
        _ => 500,
    }
}

/// Whether a stream event is an exception or error message (`eventstream` names it so).
pub fn is_exception(event: &sse::Event) -> bool {
    event.name.as_deref().is_some_and(|n| n == "error" || n.to_ascii_lowercase().ends_with("exception"))
}

/// An error answer as `{"error": {"type", "message"}}`, the shape `errors::classify` and
/// `openai::upstream_error` read: the type from `x-amzn-errortype` (`ThrottlingException:http://...`)
/// or the body's `__type` (`com.amazon...#ThrottlingException`), the message from `message`
/// or `Message`.
pub fn error_body(headers: &[(String, String)], bytes: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let header = headers.iter().find(|(n, _)| n == "x-amzn-errortype").map(|(_, v)| v.as_str());
    let typed = header.or_else(|| parsed.get("__type").and_then(Value::as_str)).unwrap_or("");
    let kind = typed.split(':').next().unwrap_or("").rsplit('#').next().unwrap_or("");
    let message = ["message", "Message"].iter().find_map(|f| parsed.get(*f).and_then(Value::as_str));
    let message = message.map(String::from).unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_string());
    error_value(kind, &message)
}

/// `{"error": {"type": kind, "message": message}}` (no `type` when `kind` is empty).
pub fn error_value(kind: &str, message: &str) -> Value {
    let mut error = json!({"message": message});
    if !kind.is_empty() {
        error["type"] = json!(kind);
    }
    json!({"error": error})
}

/// The credential attached to a call: a Bedrock API key as a bearer, or an access-key pair
/// (`keys::Secret` fields: id, secret, optional session token) signing the request with SigV4
/// at `now_ms`. The `host` header is set to what is signed, so the transport sends the same.
pub fn with_key(mut request: UpstreamRequest, key: &Secret, region: &str, now_ms: u64) -> UpstreamRequest {
    let fields: Vec<&str> = key.fields().collect();
    let [access_key_id, secret_access_key, rest @ ..] = fields.as_slice() else {
        request.headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
        return request;
    };
    let session_token = rest.first().copied();
    let (host, path, query) = split_url(&request.url);
    let amz_date = sigv4::amz_date(now_ms);
    request.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
    request.headers.push(("host".into(), host.to_string()));
    request.headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(token) = session_token {
        request.headers.push(("x-amz-security-token".into(), token.to_string()));
    }
    let credentials = sigv4::Credentials { access_key_id, secret_access_key };
    let scope = sigv4::Scope { region, service: SERVICE, amz_date: &amz_date };
    let signed = sigv4::sign(
        &credentials,
        &scope,
        &sigv4::Request {
            method: match request.method {
                Method::Get => "GET",
                Method::Post => "POST",
            },
            path,
            query,
            headers: &request.headers,
            payload: request.body.as_deref().unwrap_or(b""),
        },
    );
    request.headers.push(("authorization".into(), signed.authorization));
    request
}

/// (host as sent, path, query) of an absolute URL; the host keeps a port that is not the
/// scheme's default, as HTTP clients send it.
fn split_url(url: &str) -> (&str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (authority, target) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    let host = match (scheme, authority.rsplit_once(':')) {
        ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host,
        _ => authority,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (host, path, query)
}

/// Stream translator for ConverseStream's events (`eventstream` gives them as named events).
pub fn stream_translator(model: &str, id: &str, created: u64) -> Box<dyn StreamTranslator> {
    Box::new(BedrockStream {
        model: model.to_string(),
        id: id.to_string(),
        created,
        started: false,
        tools: BTreeMap::new(),
        tool_calls: 0,
        stopped: false,
        failed: false,
    })
}

struct BedrockStream {
    model: String,
    id: String,
    created: u64,
    started: bool,
    /// Tool-use content blocks by `contentBlockIndex`: their OpenAI tool-call index.
    tools: BTreeMap<u64, u64>,
    tool_calls: u64,
    /// `messageStop` came: only `metadata` (the usage) may follow.
    stopped: bool,
    failed: bool,
}

impl StreamTranslator for BedrockStream {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        if self.failed {
            return;
        }
        let data = match event_json(event, "bedrock sent an event") {
            Ok(data) => data,
            Err(why) => return self.fail(out, stream_error("upstream_error", &why)),
        };
        if is_exception(event) {
            let kind = event.name.as_deref().unwrap_or("");
            let message = data.get("message").and_then(Value::as_str).unwrap_or("error in the stream");
            let error = json!({"error": {"message": message, "type": "api_error", "param": null, "code": kind}});
            return self.fail(out, error);
        }
        let index = data.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event.name.as_deref().unwrap_or("") {
            "messageStart" => self.start(out),
            "contentBlockStart" => self.block_start(index, data.pointer("/start/toolUse"), out),
            "contentBlockDelta" => self.block_delta(index, data.get("delta").unwrap_or(&Value::Null), out),
            "messageStop" => self.message_stop(data.get("stopReason").and_then(Value::as_str), out),
            "metadata" => {
                if let Some(usage) = data.get("usage") {
                    let mut chunk = chunk_envelope(&self.id, self.created, &self.model, Vec::new());
                    chunk["usage"] = openai_usage(usage);
                    out.push(Translated::Chunk(chunk));
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        if !self.stopped && !self.failed {
            self.fail(out, stream_error("stream_interrupted", "upstream closed the stream before messageStop"));
        }
    }
}

impl BedrockStream {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Translated {
        let choice = json!({"index": 0, "delta": delta, "finish_reason": finish});
        Translated::Chunk(chunk_envelope(&self.id, self.created, &self.model, vec![choice]))
    }

    /// The first chunk, with the role, once.
    fn start(&mut self, out: &mut Vec<Translated>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    fn block_start(&mut self, index: u64, tool: Option<&Value>, out: &mut Vec<Translated>) {
        let Some(tool) = tool else { return };
        self.start(out);
        let call = self.tool_calls;
        self.tool_calls += 1;
        self.tools.insert(index, call);
        let text = |f: &str| tool.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        out.push(self.chunk(
            json!({"tool_calls": [{"index": call, "id": text("toolUseId"), "type": "function", "function": {"name": text("name"), "arguments": ""}}]}),
            None,
        ));
    }

    fn block_delta(&mut self, index: u64, delta: &Value, out: &mut Vec<Translated>) {
        self.start(out);
        if let Some(text) = delta.get("text").and_then(Value::as_str) {
            out.push(self.chunk(json!({"content": text}), None));
        } else if let Some(text) = delta.pointer("/reasoningContent/text").and_then(Value::as_str) {
            out.push(self.chunk(json!({"reasoning_content": text}), None));
        } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str) {
            if let Some(&call) = self.tools.get(&index) {
                out.push(self.chunk(json!({"tool_calls": [{"index": call, "function": {"arguments": input}}]}), None));
            }
        }
    }

    fn message_stop(&mut self, stop_reason: Option<&str>, out: &mut Vec<Translated>) {
        if self.stopped {
            return;
        }
        self.start(out);
        self.stopped = true;
        let finish = finish_reason(stop_reason, self.tool_calls > 0);
        out.push(self.chunk(json!({}), Some(finish)));
    }

    fn fail(&mut self, out: &mut Vec<Translated>, error: Value) {
        self.failed = true;
        out.push(Translated::Error(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{self, read_json};
    use crate::providers::eventstream::{Decoder, encode};
    use std::path::Path;

    const BASE: &str = "https://bedrock-runtime.us-east-1.amazonaws.com";
    const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
    const CREATED: u64 = 1_760_000_000;

    #[test]
    fn model_ids_are_one_encoded_segment() {
        assert_eq!(model_segment(MODEL).unwrap(), "anthropic.claude-3-5-sonnet-20240620-v1%3A0");
        assert_eq!(model_segment("a/../b?x#y").unwrap(), "a%2F..%2Fb%3Fx%23y");
        for bad in ["", ".", ".."] {
            let e = model_segment(bad).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("model")));
        }
    }

    #[test]
    fn images_must_be_data_urls() {
        assert!(image_block("https://example.com/cat.png").is_err());
        assert!(image_block("data:image/bmp;base64,AAAA").is_err());
        assert!(image_block("data:image/png;base64,").is_err());
    }

    #[test]
    fn an_api_key_is_a_bearer() {
        let request = build_chat(
            BASE,
            MODEL,
            &json!({"messages": [{"role": "user", "content": "hi"}]}).as_object().unwrap().clone(),
            false,
        )
        .unwrap();
        let keyed = with_key(request, &Secret::new("bedrock-api-key-1"), "us-east-1", 0);
        assert_eq!(
            keyed.headers.last().unwrap(),
            &("authorization".to_string(), "Bearer bedrock-api-key-1".to_string())
        );
    }

    #[test]
    fn a_key_pair_signs_with_sigv4() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}]});
        let request = build_chat("http://127.0.0.1:8123", MODEL, body.as_object().unwrap(), false).unwrap();
        let payload = request.body.clone().unwrap();
        let key = Secret::new("AKIDEXAMPLE\nwJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\nsession-token-1");
        let keyed = with_key(request, &key, "eu-west-1", 1_440_938_160_000);
        let header = |name: &str| keyed.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(header("host"), "127.0.0.1:8123");
        assert_eq!(header("x-amz-date"), "20150830T123600Z");
        assert_eq!(header("x-amz-security-token"), "session-token-1");
        let authorization = header("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{authorization}"
        );
        assert!(!authorization.contains("wJalr"));
        // The same signature, computed from the parts a server sees.
        let signed = sigv4::sign(
            &sigv4::Credentials {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            },
            &sigv4::Scope { region: "eu-west-1", service: "bedrock", amz_date: "20150830T123600Z" },
            &sigv4::Request {
                method: "POST",
                path: "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
                query: "",
                headers: &[
                    ("content-type".into(), "application/json".into()),
                    ("host".into(), "127.0.0.1:8123".into()),
                    ("x-amz-date".into(), "20150830T123600Z".into()),
                    ("x-amz-security-token".into(), "session-token-1".into()),
                ],
                payload: &payload,
            },
        );
        assert_eq!(authorization, signed.authorization);
        assert!(signed.canonical_request.contains("\n/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse\n"));
    }

    #[test]
    fn default_ports_are_not_part_of_the_host() {
        assert_eq!(split_url("https://h.example:443/a?b=c"), ("h.example", "/a", "b=c"));
        assert_eq!(split_url("http://h:80/x"), ("h", "/x", ""));
        assert_eq!(split_url("http://h:8080"), ("h:8080", "", ""));
    }

    #[test]
    fn error_types_from_header_or_body() {
        let throttled = error_body(
            &[(
                "x-amzn-errortype".into(),
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/".into(),
            )],
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(throttled["error"]["type"], "ThrottlingException");
        assert_eq!(throttled["error"]["message"], "Too many requests, please wait before trying again.");
        let denied =
            error_body(&[], br#"{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"no access"}"#);
        assert_eq!(
            (denied["error"]["type"].as_str(), denied["error"]["message"].as_str()),
            (Some("AccessDeniedException"), Some("no access"))
        );
        let plain = error_body(&[], b"gateway broke");
        assert_eq!(plain, json!({"error": {"message": "gateway broke"}}));
    }

    #[test]
    fn exception_statuses() {
        assert_eq!(exception_status("throttlingException"), 429);
        assert_eq!(exception_status("ValidationException"), 400);
        assert_eq!(exception_status("modelStreamErrorException"), 424);
        assert_eq!(exception_status("internalServerException"), 500);
    }

    // ---- golden cases: tests/data/providers/bedrock/<case>/ (README.md there) ---------------

    #[test]
    fn golden_cases() {
        let pairs = golden::provider_pairs(&golden_request, &golden_response, "upstream.eventstream", &golden_stream);
        golden::run("providers/bedrock", &pairs, 14);
    }

    fn golden_request(input: &Path, name: &str) -> Value {
        let built =
            golden::build_request(input, name, NAME, |model, body, stream| build_chat(BASE, model, body, stream));
        golden::json_request_json(&built, name)
    }

    fn golden_response(input: &Path, name: &str) -> Value {
        let upstream = read_json(input);
        parse_chat(MODEL, "chatcmpl-golden", CREATED, &upstream).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// As the stream relay does it: the decoder's events through the translator, `piece`
    /// bytes at a time, and a decoding error as the in-band `stream_interrupted` error.
    fn replay(input: &[u8], piece: usize) -> Vec<Value> {
        let mut translator = stream_translator(MODEL, "chatcmpl-golden", CREATED);
        let mut decoder = Decoder::new();
        let (mut events, mut out) = (Vec::new(), Vec::new());
        for bytes in input.chunks(piece.max(1)) {
            let result = decoder.feed(bytes, &mut events);
            events.drain(..).for_each(|e| translator.event(&e, &mut out));
            if let Err(e) = result {
                if !out.iter().any(|s| matches!(s, Translated::Error(_))) {
                    out.push(Translated::Error(stream_error("stream_interrupted", &e.0)));
                }
                return golden::steps_json(&out);
            }
        }
        translator.finish(&mut out);
        golden::steps_json(&out)
    }

    /// Binary event-stream frames, read in pieces like the SSE cases.
    fn golden_stream(input: &Path, name: &str) -> Value {
        golden::same_in_pieces(&golden::read_bytes(input), name, replay)
    }

    #[test]
    fn a_stream_cut_before_message_stop_is_an_error() {
        let bytes = encode(&[(":event-type", "messageStart")], br#"{"role":"assistant"}"#);
        let steps = replay(&bytes, 3);
        assert_eq!(steps.last().unwrap()["error"]["code"], "stream_interrupted");
    }
}
