//! Whole `generateContent` answers (and embeddings and model lists) to the OpenAI format.

use super::SIGNATURE_DELIMITER;
use serde_json::{Value, json};

/// generateContent response -> OpenAI `chat.completion`, one choice per candidate. A prompt
/// blocked before any candidate answers `""` with `content_filter`. The model is the one the
/// response names (`modelVersion`; the id sent, when it names none).
pub fn parse_chat(model: &str, id: &str, created: u64, body: &Value) -> Result<Value, String> {
    if let Some(error) = body.get("error").filter(|e| !e.is_null()) {
        return Err(format!("generateContent answered an error: {}", error_message(error)));
    }
    let stem = call_id_stem(id);
    let mut calls = 0;
    let choices: Vec<Value> = match body.get("candidates").and_then(Value::as_array).filter(|c| !c.is_empty()) {
        Some(candidates) => candidates.iter().enumerate().map(|(i, c)| choice(c, i, &stem, &mut calls)).collect(),
        None if prompt_blocked(body) => {
            vec![
                json!({"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}),
            ]
        }
        None => return Err("generateContent answered no candidates and no block reason".into()),
    };
    Ok(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": answered_model(body, model),
        "choices": choices,
        "usage": openai_usage(body.get("usageMetadata").unwrap_or(&Value::Null)),
    }))
}

/// The model id a response names (`modelVersion`), else `sent`.
pub(super) fn answered_model<'a>(response: &'a Value, sent: &'a str) -> &'a str {
    response.get("modelVersion").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(sent)
}

/// batchEmbedContents response -> OpenAI embeddings list, floats as Gemini sent them. The
/// Gemini API reports no token counts for embeddings, so usage is 0 unless a
/// `usageMetadata.promptTokenCount` is there.
pub fn parse_embeddings(model: &str, body: &Value) -> Result<Value, String> {
    let embeddings =
        body.get("embeddings").and_then(Value::as_array).ok_or("batchEmbedContents answered no embeddings")?;
    let mut data = Vec::with_capacity(embeddings.len());
    for (index, embedding) in embeddings.iter().enumerate() {
        let values = embedding
            .get("values")
            .and_then(Value::as_array)
            .filter(|v| v.iter().all(Value::is_number))
            .ok_or_else(|| format!("embeddings[{index}] has no float values"))?;
        data.push(json!({"object": "embedding", "index": index, "embedding": values}));
    }
    let tokens = body.pointer("/usageMetadata/promptTokenCount").and_then(Value::as_u64).unwrap_or(0);
    Ok(json!({
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// Model ids from `{"models": [{"name": "models/gemini-2.5-flash", ...}]}`, prefix stripped.
pub fn model_ids(body: &Value) -> Vec<String> {
    let models = body.get("models").and_then(Value::as_array).into_iter().flatten();
    models
        .filter_map(|m| m.get("name").and_then(Value::as_str))
        .map(|name| name.strip_prefix("models/").unwrap_or(name).to_string())
        .collect()
}

/// One candidate as an OpenAI choice.
fn choice(candidate: &Value, position: usize, stem: &str, calls: &mut usize) -> Value {
    let (mut content, mut reasoning, mut tool_calls) = (String::new(), String::new(), Vec::new());
    for piece in pieces(candidate) {
        match piece {
            Piece::Text(text) => content.push_str(text),
            Piece::Thought(text) => reasoning.push_str(text),
            Piece::Call { name, arguments, signature } => {
                let id = call_id(stem, *calls, signature);
                *calls += 1;
                tool_calls
                    .push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
            }
        }
    }
    // OpenAI leaves content null on a turn that only calls tools.
    let content = if content.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(content) };
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    let finish = finish_reason(candidate.get("finishReason").and_then(Value::as_str), !tool_calls.is_empty());
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    json!({"index": candidate_index(candidate, position), "message": message, "finish_reason": finish})
}

pub(super) fn candidate_index(candidate: &Value, position: usize) -> u64 {
    candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64)
}

/// What a response part means to an OpenAI client. Other parts (executable code, inline
/// images, empty text carrying only a signature) have no OpenAI form and are skipped.
pub(super) enum Piece<'a> {
    Text(&'a str),
    Thought(&'a str),
    Call { name: &'a str, arguments: String, signature: Option<&'a str> },
}

pub(super) fn pieces(candidate: &Value) -> impl Iterator<Item = Piece<'_>> {
    let parts = candidate.pointer("/content/parts").and_then(Value::as_array);
    parts.into_iter().flatten().filter_map(piece)
}

fn piece(part: &Value) -> Option<Piece<'_>> {
    if let Some(call) = part.get("functionCall") {
        // Gemini sends the whole args object at once (docs/upstream-protocols.md, pitfall 7); no args
        // means "{}", never "".
        let arguments = match call.get("args") {
            None | Some(Value::Null) => "{}".to_string(),
            Some(args) => args.to_string(),
        };
        return Some(Piece::Call {
            name: call.get("name").and_then(Value::as_str).unwrap_or(""),
            arguments,
            signature: part.get("thoughtSignature").and_then(Value::as_str).filter(|s| !s.is_empty()),
        });
    }
    let text = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty())?;
    Some(if part.get("thought") == Some(&Value::Bool(true)) { Piece::Thought(text) } else { Piece::Text(text) })
}

/// `call_` plus up to 12 trailing letters and digits of the completion id, then `_`.
pub(super) fn call_id_stem(completion_id: &str) -> String {
    let id = completion_id.strip_prefix("chatcmpl-").unwrap_or(completion_id);
    let chars: Vec<char> = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let tail: String = chars[chars.len().saturating_sub(12)..].iter().collect();
    if tail.is_empty() { "call_".into() } else { format!("call_{tail}_") }
}

pub(super) fn call_id(stem: &str, n: usize, signature: Option<&str>) -> String {
    match signature {
        Some(signature) => format!("{stem}{n}{SIGNATURE_DELIMITER}{signature}"),
        None => format!("{stem}{n}"),
    }
}

/// Gemini ends a function-calling turn with STOP; OpenAI clients wait for `tool_calls`
/// (docs/upstream-protocols.md, pitfall 17).
/// Reasons with no OpenAI counterpart (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, ...) are
/// "stop".
pub(super) fn finish_reason(reason: Option<&str>, called: bool) -> &'static str {
    let mapped = match reason.unwrap_or("STOP") {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ => "stop",
    };
    if mapped == "stop" && called { "tool_calls" } else { mapped }
}

pub(super) fn prompt_blocked(body: &Value) -> bool {
    body.pointer("/promptFeedback/blockReason").is_some_and(|r| !r.is_null())
}

/// `usageMetadata` as OpenAI usage. Thinking tokens are output tokens to OpenAI, so they
/// count in `completion_tokens` and again in `reasoning_tokens`; `total_tokens` is Gemini's
/// own total (it also counts tool-use prompt tokens).
pub(super) fn openai_usage(metadata: &Value) -> Value {
    let count = |field: &str| metadata.get(field).and_then(Value::as_u64);
    let prompt = count("promptTokenCount").unwrap_or(0);
    let thoughts = count("thoughtsTokenCount").unwrap_or(0);
    // Saturating: a careless upstream's counts near u64::MAX must not overflow.
    let completion = count("candidatesTokenCount").unwrap_or(0).saturating_add(thoughts);
    let total = count("totalTokenCount").unwrap_or(prompt.saturating_add(completion));
    let mut usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total});
    if let Some(cached) = count("cachedContentTokenCount") {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    if thoughts > 0 {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": thoughts});
    }
    usage
}

pub(super) fn error_message(error: &Value) -> String {
    match error.get("message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    }
}
