//! The OpenAI-compatible family (OpenAI, OpenRouter, Groq, ..., any `<NAME>_API_BASE`): the
//! hub format itself, so requests and answers pass through with the model id rewritten. The
//! same four concerns as every family, in order: build, parse_response, translate_event,
//! classify_error.

use crate::error::ApiError;
use crate::providers::think::ThinkSplitter;
use crate::providers::{StreamTranslator, Translated};
use crate::sse;
use crate::upstream::{Method, UpstreamRequest};
use base64::Engine;
use serde_json::{Map, Value, json};

// ---- build ---------------------------------------------------------------------------------

/// The upstream chat request: the client's body with the bare model id, usage requested on
/// streams (so the proxy can count tokens; the usage chunk reaches the client only when it
/// asked for it), and the provider's quirks applied.
pub fn build_chat(
    provider: &str,
    base: &str,
    model: &str,
    mut body: Map<String, Value>,
    stream: bool,
) -> UpstreamRequest {
    body.insert("model".into(), Value::String(model.into()));
    if stream {
        let options = body.entry("stream_options").or_insert_with(|| json!({}));
        if let Some(o) = options.as_object_mut() {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    match provider {
        "openrouter" => openrouter(&mut body, &mut headers),
        "nvidia_nim" if model.to_ascii_lowercase().contains("deepseek") => nim_deepseek_thinking(&mut body),
        "qwen_code" => {
            clean_tool_schemas(&mut body);
            placeholder_tool(&mut body, "do_not_call_me", "Do not call this tool.");
        }
        "iflow" => super::iflow::adapt_body(&mut body),
        "openai" if is_reasoning_model(model) => rename_max_tokens(&mut body),
        // OpenAI refuses `reasoning_effort` on models that do not reason (gpt-4o, gpt-4.1), and
        // translated requests carry one whenever the client asked for thinking (Claude Code
        // always does): a 400 for every such request would be worse than no effort hint.
        "openai" => {
            body.remove("reasoning_effort");
        }
        _ => {}
    }
    UpstreamRequest {
        method: Method::Post,
        url: format!("{base}/chat/completions"),
        headers,
        body: Some(serde_json::to_vec(&body).expect("a JSON map serialises")),
        stream,
    }
}

/// OpenRouter: attribution headers, and `reasoning_effort` as its `reasoning` object.
fn openrouter(body: &mut Map<String, Value>, headers: &mut Vec<(String, String)>) {
    headers.push(("x-title".into(), "keyrelay".into()));
    headers.push(("http-referer".into(), "https://keyrelay.local".into()));
    if let Some(effort) = body.remove("reasoning_effort") {
        body.entry("reasoning").or_insert_with(|| json!({"effort": effort}));
    }
}

/// OpenAI's reasoning models (o1, o3, o4, gpt-5) reject `max_tokens` and want
/// `max_completion_tokens` (OpenAI's Chat Completions reference); clients and translated requests often send
/// the older name.
fn is_reasoning_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.starts_with("gpt-5") || ["o1", "o3", "o4"].iter().any(|p| m == *p || m.starts_with(&format!("{p}-")))
}

fn rename_max_tokens(body: &mut Map<String, Value>) {
    if let Some(n) = body.remove("max_tokens") {
        body.entry("max_completion_tokens").or_insert(n);
    }
}

/// NVIDIA NIM switches DeepSeek's thinking with `chat_template_kwargs.thinking`, not with
/// `reasoning_effort` (OpenRouter's reasoning tokens documentation).
fn nim_deepseek_thinking(body: &mut Map<String, Value>) {
    let Some(effort) = body.remove("reasoning_effort") else { return };
    let on = !matches!(effort.as_str(), Some("none" | "disable" | "off" | "minimal"));
    let kwargs = body.entry("chat_template_kwargs").or_insert_with(|| json!({}));
    if let Some(k) = kwargs.as_object_mut() {
        k.insert("thinking".into(), Value::Bool(on));
    }
}

/// Qwen's and iFlow's endpoints reject `strict` on functions and `additionalProperties` in
/// their schemas.
pub(crate) fn clean_tool_schemas(body: &mut Map<String, Value>) {
    for tool in body.get_mut("tools").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(function) = tool.get_mut("function").and_then(Value::as_object_mut) {
            function.remove("strict");
            if let Some(parameters) = function.get_mut("parameters") {
                remove_key_recursively(parameters, "additionalProperties");
            }
        }
    }
}

/// Qwen's and iFlow's APIs corrupt streams of requests that define no tool, so a request
/// without tools gets one the model is told never to call (their own CLIs do the same, each
/// with its own name for it).
pub(crate) fn placeholder_tool(body: &mut Map<String, Value>, name: &str, description: &str) {
    let has_tools = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if !has_tools {
        body.insert(
            "tools".into(),
            json!([{"type": "function", "function": {"name": name, "description": description,
                    "parameters": {"type": "object", "properties": {}}}}]),
        );
    }
}

fn remove_key_recursively(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| remove_key_recursively(v, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| remove_key_recursively(v, key)),
        _ => {}
    }
}

/// The upstream embeddings body: floats are always requested (every upstream speaks them);
/// base64 is produced here when the client asked for it.
pub fn embeddings_body(mut body: Map<String, Value>, upstream_model: &str) -> Vec<u8> {
    body.insert("model".into(), Value::String(upstream_model.into()));
    body.remove("encoding_format");
    serde_json::to_vec(&body).expect("a JSON map serialises")
}

// ---- parse_response ------------------------------------------------------------------------

/// Rewrites each `data[i].embedding` into the encoding the client asked for.
pub fn encode_embeddings(response: &mut Value, base64_wanted: bool) -> Result<(), String> {
    let Some(items) = response.get_mut("data").and_then(Value::as_array_mut) else {
        return Err("embeddings response has no data array".into());
    };
    for item in items {
        let Some(embedding) = item.get_mut("embedding") else {
            continue;
        };
        let floats = match embedding {
            Value::Array(values) => values.iter().map(|v| v.as_f64().map(|f| f as f32)).collect::<Option<Vec<f32>>>(),
            Value::String(b64) => decode_f32_base64(b64),
            _ => None,
        }
        .ok_or("embedding is neither a float array nor base64")?;
        *embedding = if base64_wanted {
            Value::String(encode_f32_base64(&floats))
        } else {
            Value::Array(floats.into_iter().map(|f| json!(f)).collect())
        };
    }
    Ok(())
}

/// Little-endian f32s, base64: what the OpenAI SDKs decode.
pub fn encode_f32_base64(floats: &[f32]) -> String {
    let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_f32_base64(text: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// A whole chat.completion, normalised in place: OpenRouter's `reasoning` becomes
/// `reasoning_content`, and a leading `<think>` block in the content moves there too.
/// Returns whether anything changed (when nothing did, the upstream's bytes still say it).
pub fn normalise_chat(completion: &mut Value) -> bool {
    let mut changed = false;
    for choice in completion.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) {
            changed |= rename_reasoning(message);
            let split = message.get("content").and_then(Value::as_str).and_then(ThinkSplitter::split_whole);
            if let Some((reasoning, answer)) = split {
                message.insert("reasoning_content".into(), Value::String(reasoning));
                message.insert("content".into(), Value::String(answer));
                changed = true;
            }
        }
    }
    changed
}

/// OpenRouter names the field `reasoning`; everyone else (and keyrelay's own translations)
/// `reasoning_content`.
/// Returns whether it renamed one.
fn rename_reasoning(message: &mut Map<String, Value>) -> bool {
    if !message.get("reasoning").is_some_and(Value::is_string) {
        return false;
    }
    let reasoning = message.remove("reasoning").expect("checked just above");
    message.entry("reasoning_content").or_insert(reasoning);
    true
}

// ---- translate_event -----------------------------------------------------------------------

/// OpenAI-format stream events, relayed as they come: `[DONE]` ends the stream, an error
/// object ends it with that error, OpenRouter's `reasoning` is renamed and a leading
/// `<think>` block moves into `reasoning_content` (first choice).
#[derive(Default)]
pub struct PassThrough {
    think: ThinkSplitter,
    /// The last chunk, as the shape of a chunk made up to flush held-back text.
    last: Option<Value>,
    saw_finish: bool,
    done: bool,
}

impl StreamTranslator for PassThrough {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        if self.done {
            return;
        }
        if event.data.trim() == "[DONE]" {
            self.flush(out);
            self.done = true;
            return;
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(&event.data) else {
            log::warn!("dropped a stream event that is not JSON ({} bytes)", event.data.len());
            return;
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) || event.name.as_deref() == Some("error") {
            out.push(Translated::Error(chunk));
            self.done = true;
            return;
        }
        if let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices.iter_mut() {
                self.saw_finish |= choice.get("finish_reason").is_some_and(|f| !f.is_null());
            }
            if let Some(delta) = choices.first_mut().and_then(|c| c.get_mut("delta")).and_then(Value::as_object_mut) {
                rename_reasoning(delta);
                self.split_think(delta);
            }
        }
        self.last = Some(chunk.clone());
        out.push(Translated::Chunk(chunk));
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        if self.done {
            return;
        }
        self.flush(out);
        self.done = true;
        if !self.saw_finish {
            let message = "upstream closed the stream before it finished";
            out.push(Translated::Error(super::stream_error("stream_interrupted", message)));
        }
    }
}

impl PassThrough {
    fn split_think(&mut self, delta: &mut Map<String, Value>) {
        let Some(Value::String(content)) = delta.get("content") else { return };
        let (reasoning, answer) = self.think.push(content);
        if !reasoning.is_empty() {
            let joined = delta.get("reasoning_content").and_then(Value::as_str).unwrap_or("").to_string() + &reasoning;
            delta.insert("reasoning_content".into(), Value::String(joined));
        }
        delta.insert("content".into(), Value::String(answer));
    }

    /// Text still held back (a `<think>` never closed, a partial tag) goes out in a last chunk.
    fn flush(&mut self, out: &mut Vec<Translated>) {
        let (reasoning, answer) = self.think.finish();
        if reasoning.is_empty() && answer.is_empty() {
            return;
        }
        let Some(mut chunk) = self.last.clone() else { return };
        let delta =
            if reasoning.is_empty() { json!({"content": answer}) } else { json!({"reasoning_content": reasoning}) };
        chunk["choices"] = json!([{"index": 0, "delta": delta, "finish_reason": null}]);
        chunk.as_object_mut().map(|c| c.remove("usage"));
        out.push(Translated::Chunk(chunk));
    }
}

/// Model ids from `{"data": [{"id": ...}]}` (or a bare array of such objects).
pub fn model_ids(body: &Value) -> Vec<String> {
    let list = body.get("data").unwrap_or(body);
    list.as_array()
        .map(|items| items.iter().filter_map(|m| m.get("id").and_then(Value::as_str)).map(String::from).collect())
        .unwrap_or_default()
}

/// Rebuilds a `chat.completion` from a stream's chunks (first choice): for the request log and
/// for the usage the stream reported.
#[derive(Debug, Default)]
pub struct StreamSummary {
    first: Option<Value>,
    content: String,
    reasoning: String,
    /// By tool-call index: id, name, joined arguments.
    tool_calls: std::collections::BTreeMap<u64, (String, String, String)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl StreamSummary {
    pub fn add(&mut self, chunk: &Value) {
        if self.first.is_none() {
            self.first = Some(chunk.clone());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = chunk.get("choices").and_then(Value::as_array).and_then(|c| c.first()) else { return };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        let Some(delta) = choice.get("delta") else { return };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        self.content.push_str(&text(delta.get("content")));
        self.reasoning.push_str(&text(delta.get("reasoning_content").or(delta.get("reasoning"))));
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let entry = self.tool_calls.entry(index).or_default();
            entry.0.push_str(&text(call.get("id")));
            let function = call.get("function");
            entry.1.push_str(&text(function.and_then(|f| f.get("name"))));
            entry.2.push_str(&text(function.and_then(|f| f.get("arguments"))));
        }
    }

    pub fn usage(&self) -> Option<&Value> {
        self.usage.as_ref()
    }

    pub fn completion(&self) -> Value {
        let first = self.first.as_ref();
        let field = |name: &str| first.and_then(|f| f.get(name)).cloned().unwrap_or(Value::Null);
        let mut message = json!({"role": "assistant", "content": self.content});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .values()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": if args.is_empty() { "{}" } else { args }}}))
                .collect();
            message["tool_calls"] = json!(calls);
        }
        json!({"id": field("id"), "object": "chat.completion", "created": field("created"), "model": field("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage})
    }
}

// ---- classify_error (the classes themselves are in `errors`) -------------------------------

/// The upstream's error in the OpenAI shape. The body came through the redacting reader; the
/// message is redacted once more since it reaches clients, logs and `key_usage.json`. Codes
/// may be numbers (OpenRouter); they become strings.
pub fn upstream_error(status: u16, body: &[u8]) -> ApiError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = parsed.get("error").unwrap_or(&parsed);
    let field = |name: &str| match error.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let detail = parsed.get("detail").and_then(Value::as_str).map(String::from);
    let message = match (error, field("message").or(detail)) {
        (_, Some(m)) => m,
        (Value::String(s), None) => s.clone(),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("upstream answered {status} with an empty body")
            } else {
                truncate(text, 2000)
            }
        }
    };
    let default_kind = if status >= 500 { "api_error" } else { "invalid_request_error" };
    let kind = field("type").unwrap_or_else(|| default_kind.to_string());
    let message = crate::redact::text(&message).into_owned();
    let mut error = ApiError::upstream(status, kind, field("code").or_else(|| field("status")), message);
    error.param = field("param");
    error
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// The choice a translation reads in a hub answer or chunk: index 0, else the first.
pub fn first_choice(value: &Value) -> Option<&Value> {
    let choices = value.get("choices").and_then(Value::as_array)?;
    choices.iter().find(|c| c.get("index").and_then(Value::as_u64) == Some(0)).or_else(|| choices.first())
}

/// A hub message's or delta's reasoning: `reasoning_content`, or OpenRouter's `reasoning`
/// when a provider passes it through.
pub fn reasoning_text(message: &Value) -> &str {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| message.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quirks_per_provider() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let sent = |r: UpstreamRequest| serde_json::from_slice::<Value>(&r.body.unwrap()).unwrap();
        let o3 = sent(build_chat("openai", "b", "o3-mini", body(json!({"messages": [], "max_tokens": 9})), false));
        assert_eq!((o3.get("max_tokens"), o3["max_completion_tokens"].clone()), (None, json!(9)));
        let gpt4 = sent(build_chat(
            "openai",
            "b",
            "gpt-4o",
            body(json!({"messages": [], "max_tokens": 9, "reasoning_effort": "high"})),
            false,
        ));
        assert_eq!((gpt4["max_tokens"].clone(), gpt4.get("reasoning_effort")), (json!(9), None));
        let gpt5 =
            sent(build_chat("openai", "b", "gpt-5", body(json!({"messages": [], "reasoning_effort": "high"})), false));
        assert_eq!(gpt5["reasoning_effort"], "high", "reasoning models keep it");
        let nim = sent(build_chat(
            "nvidia_nim",
            "b",
            "deepseek-ai/deepseek-v3.1",
            body(json!({"messages": [], "reasoning_effort": "high"})),
            false,
        ));
        assert_eq!((nim.get("reasoning_effort"), nim["chat_template_kwargs"]["thinking"].clone()), (None, json!(true)));
        let tools = json!([{"type": "function", "function": {"name": "f", "strict": true, "parameters": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "object", "additionalProperties": false}}}}}]);
        let qwen =
            sent(build_chat("qwen_code", "b", "qwen3-coder", body(json!({"messages": [], "tools": tools})), true));
        assert!(!qwen.to_string().contains("additionalProperties") && !qwen.to_string().contains("strict"), "{qwen}");
        assert_eq!(qwen["stream_options"]["include_usage"], true);
        assert_eq!(qwen["tools"].as_array().unwrap().len(), 1, "the client's tools, no placeholder");
        let bare = sent(build_chat("qwen_code", "b", "qwen3-coder", body(json!({"messages": []})), false));
        assert_eq!(bare["tools"][0]["function"]["name"], "do_not_call_me");
        let or = build_chat("openrouter", "b", "x", body(json!({"messages": [], "reasoning_effort": "low"})), false);
        assert!(or.headers.iter().any(|(n, _)| n == "x-title"));
        assert_eq!(sent(or)["reasoning"], json!({"effort": "low"}));
    }

    #[test]
    fn think_blocks_and_openrouter_reasoning_move_to_reasoning_content() {
        let whole = json!({"choices": [{"message": {"content": "<think>hmm</think>\nYes.", "reasoning": null}}]});
        let mut out = whole;
        assert!(normalise_chat(&mut out));
        assert_eq!(
            (
                out["choices"][0]["message"]["content"].clone(),
                out["choices"][0]["message"]["reasoning_content"].clone()
            ),
            (json!("Yes."), json!("hmm"))
        );
        let mut t = PassThrough::default();
        let mut out = Vec::new();
        for piece in ["<thi", "nk>a", "b</th", "ink>c"] {
            let chunk =
                json!({"id": "x", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
            t.event(&sse::Event { name: None, data: chunk.to_string() }, &mut out);
        }
        let field = |f: &str| -> String {
            out.iter()
                .filter_map(|o| match o {
                    Translated::Chunk(c) => c["choices"][0]["delta"][f].as_str().map(String::from),
                    _ => None,
                })
                .collect()
        };
        assert_eq!((field("reasoning_content"), field("content")), ("ab".to_string(), "c".to_string()));
    }

    #[test]
    fn normalises_errors() {
        let e = upstream_error(
            400,
            br#"{"error":{"message":"bad model","type":"invalid_request_error","code":400,"param":"model"}}"#,
        );
        assert_eq!(e.message, "bad model");
        assert_eq!(e.code.as_deref(), Some("400"));
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = upstream_error(502, b"<html>bad gateway</html>");
        assert_eq!((e.error_type.as_str(), e.message.as_str()), ("api_error", "<html>bad gateway</html>"));
    }

    #[test]
    fn stream_summary_joins_content_and_tool_calls_by_index() {
        let mut s = StreamSummary::default();
        let chunks = [
            json!({"id": "c1", "model": "m", "created": 1, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"total_tokens": 9}}),
        ];
        chunks.iter().for_each(|c| s.add(c));
        let done = s.completion();
        assert_eq!(done["id"], "c1");
        assert_eq!(done["choices"][0]["message"]["content"], "Hi");
        assert_eq!(done["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(done["choices"][0]["message"]["tool_calls"][0]["id"], "call_1");
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(s.usage(), Some(&json!({"total_tokens": 9})));
    }

    #[test]
    fn embeddings_round_trip_through_base64() {
        let mut v = json!({"data": [{"embedding": [0.5, -1.25, 3.0]}]});
        encode_embeddings(&mut v, true).unwrap();
        let b64 = v["data"][0]["embedding"].as_str().unwrap().to_string();
        assert_eq!(decode_f32_base64(&b64).unwrap(), [0.5, -1.25, 3.0]);
        encode_embeddings(&mut v, false).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, -1.25, 3.0]));
    }
}
