//! OpenAI chat requests to `generateContent` bodies (contents, tools, generation config,
//! thinking, thought signatures), and embeddings requests to `batchEmbedContents`.

use super::schema::clean_schema;
use super::{SIGNATURE_DELIMITER, UNSIGNED};
use crate::error::ApiError;
use crate::providers::hub::{self, Body, Roles, ToolChoice, bad, post_json};
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value, json};

/// OpenAI chat body (already validated) -> `POST {base}/models/{model}:generateContent`, or
/// `:streamGenerateContent?alt=sse` when `stream` (headers: content-type only; the key is
/// added by `providers::with_key` as `x-goog-api-key`). Fields Gemini has no equivalent for
/// (`presence_penalty`, `logprobs`, `parallel_tool_calls`, `user`, ...) are dropped.
pub fn build_chat(base: &str, model: &str, body: &Body, stream: bool) -> Result<UpstreamRequest, ApiError> {
    let path = model_path(model)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages", "missing required field 'messages' (an array)"))?;
    let (system, contents) = convert_messages(messages)?;
    if contents.is_empty() {
        return Err(bad("messages", "gemini needs at least one user or assistant message besides the system prompt"));
    }
    let mut request = Map::new();
    request.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        // camelCase always: Code Assist silently ignores `system_instruction` (docs/upstream-protocols.md,
        // pitfall 17).
        request.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if let Some(declarations) = function_declarations(body.get("tools"))? {
        request.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
        if let Some(config) = function_calling_config(body)? {
            request.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
        }
    }
    let generation = generation_config(body)?;
    if !generation.is_empty() {
        request.insert("generationConfig".into(), Value::Object(generation));
    }
    let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    Ok(post_json(format!("{base}/{path}:{action}"), &request, stream))
}

/// OpenAI embeddings body -> `POST {base}/models/{model}:batchEmbedContents`, one request per
/// input, `dimensions` as `outputDimensionality`. Token-id inputs are refused: Gemini embeds
/// text only. `encoding_format` is the caller's business (`openai::encode_embeddings`).
pub fn build_embeddings(base: &str, model: &str, body: &Map<String, Value>) -> Result<UpstreamRequest, ApiError> {
    let path = model_path(model)?;
    let texts = hub::embedding_texts(body, "gemini")?;
    let dimensions = hub::dimensions(body)?;
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|text| {
            let mut request = json!({"model": path, "content": {"parts": [{"text": text}]}});
            if let Some(d) = dimensions {
                request["outputDimensionality"] = json!(d);
            }
            request
        })
        .collect();
    Ok(post_json(format!("{base}/{path}:batchEmbedContents"), &json!({"requests": requests}), false))
}

/// `models/<id>`; an id that already names its collection (`models/...`, `tunedModels/...`)
/// keeps it. The id itself must be one plain path segment (`providers::path_segment`): it is
/// followed by `:<method>` in the URL, so `x:countTokens#` would call another method.
fn model_path(model: &str) -> Result<String, ApiError> {
    let (collection, id) = match model.split_once('/') {
        Some((c @ ("models" | "tunedModels"), id)) => (c, id),
        _ => ("models", model),
    };
    Ok(format!("{collection}/{}", crate::providers::path_segment(id)?))
}

/// System and developer text, and the conversation as Gemini contents: roles `user` and
/// `model` only, consecutive turns of one role merged (tool results are user turns).
fn convert_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let system_texts = |content: &Value| system.extend(texts(content).into_iter().map(|text| json!({"text": text})));
    let tool = |i, message: &Value| function_response(message, &messages[..i]);
    let roles = Roles { assistant: "model", user: &user_parts, replay: &model_parts, tool: &tool };
    let turns = hub::turns(messages, "gemini", system_texts, roles)?;
    let contents = turns
        .into_iter()
        .map(|(role, mut parts)| {
            if role == "model" {
                sign_first_call(&mut parts);
            }
            json!({"role": role, "parts": parts})
        })
        .collect();
    Ok((system, contents))
}

/// The non-empty texts of a content: a string, or an array's `text` (and `refusal`) parts.
fn texts(content: &Value) -> Vec<&str> {
    let pieces: Vec<&str> = match content {
        Value::String(text) => vec![text],
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str)).collect()
        }
        _ => Vec::new(),
    };
    // Gemini rejects empty text parts.
    pieces.into_iter().filter(|t| !t.is_empty()).collect()
}

fn user_parts(content: &Value) -> Result<Vec<Value>, String> {
    hub::user_parts(content, "gemini", |kind, part| match kind {
        "image_url" => Some(hub::image_url(part).and_then(|url| media_part(url, "image/jpeg"))),
        "input_audio" => Some(audio_part(part.get("input_audio").unwrap_or(&Value::Null))),
        "file" => Some(file_part(part.get("file").unwrap_or(&Value::Null))),
        _ => None,
    })
}

/// `data:` URIs go inline; web URLs as `fileData` with a media type guessed from the path.
fn media_part(url: &str, default_type: &str) -> Result<Value, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or(("", ""));
        let mime = meta.strip_suffix(";base64").map(|m| m.split(';').next().unwrap_or("")).unwrap_or("");
        if mime.is_empty() {
            return Err("a data: URI must look like data:<media type>;base64,<data>".into());
        }
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if ["https://", "http://", "gs://"].iter().any(|scheme| url.starts_with(scheme)) {
        let mime = guess_mime(url).unwrap_or(default_type);
        if mime.is_empty() {
            return Err(format!("cannot tell the media type of '{url}'"));
        }
        return Ok(json!({"fileData": {"fileUri": url, "mimeType": mime}}));
    }
    Err("a URL must be a data: URI or an http(s) URL".into())
}

fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// `file_data` as a data: URI, or bare base64 typed by its `filename`. A `file_id` points into
/// OpenAI's storage, which Gemini cannot read.
fn file_part(file: &Value) -> Result<Value, String> {
    let data = file.get("file_data").and_then(Value::as_str).ok_or("gemini takes files as file_data, not file_id")?;
    if data.starts_with("data:") {
        return media_part(data, "");
    }
    let filename = file.get("filename").and_then(Value::as_str).unwrap_or("");
    let mime = guess_mime(filename).ok_or("file_data needs a data: URI, or a filename that tells its type")?;
    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
}

fn audio_part(audio: &Value) -> Result<Value, String> {
    let data = audio.get("data").and_then(Value::as_str).ok_or("an input_audio part needs data")?;
    let format = audio.get("format").and_then(Value::as_str).ok_or("an input_audio part needs a format")?;
    Ok(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}))
}

/// Assistant text, then one `functionCall` part per tool call, signed when its id says so.
/// `reasoning_content` is not sent back: the signatures are what Gemini needs.
fn model_parts(message: &Value) -> Vec<Value> {
    let content = message.get("content").unwrap_or(&Value::Null);
    let mut parts: Vec<Value> = texts(content).into_iter().map(|text| json!({"text": text})).collect();
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        let args = args_object(function.get("arguments").unwrap_or(&Value::Null));
        let mut part = json!({"functionCall": {"name": name, "args": args}});
        if let Some(signature) = call.get("id").and_then(Value::as_str).and_then(|id| split_call_id(id).1) {
            part["thoughtSignature"] = json!(signature);
        }
        parts.push(part);
    }
    parts
}

/// Gemini takes `args` as an object. History is replayed, not judged: arguments that are not
/// a JSON object are kept as a string under `"arguments"` rather than failing the request.
pub(super) fn args_object(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(text) if text.trim().is_empty() => json!({}),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(args)) => Value::Object(args),
            _ => json!({"arguments": text}),
        },
        _ => json!({}),
    }
}

/// Google's validator looks at the first `functionCall` of each model turn; one without a
/// signature of its own gets the documented placeholder.
fn sign_first_call(parts: &mut [Value]) {
    if let Some(Value::Object(part)) = parts.iter_mut().find(|p| p.get("functionCall").is_some()) {
        part.entry("thoughtSignature").or_insert_with(|| json!(UNSIGNED));
    }
}

/// A tool message as a `functionResponse` part, named after the earlier call it answers.
fn function_response(message: &Value, earlier: &[Value]) -> Result<Value, String> {
    let id = message.get("tool_call_id").and_then(Value::as_str).ok_or("a tool message needs a 'tool_call_id'")?;
    let wanted = split_call_id(id).0;
    let name = earlier
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .flat_map(|m| m.get("tool_calls").and_then(Value::as_array).into_iter().flatten())
        .find(|call| call.get("id").and_then(Value::as_str).is_some_and(|c| split_call_id(c).0 == wanted))
        .and_then(|call| call.pointer("/function/name").and_then(Value::as_str))
        .ok_or_else(|| format!("tool_call_id '{wanted}' answers no earlier assistant tool call"))?;
    let text = texts(message.get("content").unwrap_or(&Value::Null)).concat();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Value::Object(object),
        _ => json!({"content": text}),
    };
    Ok(json!({"functionResponse": {"name": name, "response": response}}))
}

/// `call_x_0__thought__SIG` -> (`call_x_0`, Some(`SIG`)); an id without one -> (id, None).
pub(super) fn split_call_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_DELIMITER) {
        Some((base, signature)) if !signature.is_empty() => (base, Some(signature)),
        Some((base, _)) => (base, None),
        None => (id, None),
    }
}

/// OpenAI function tools -> Gemini function declarations (None when there are none).
fn function_declarations(tools: Option<&Value>) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(functions) = hub::function_tools(tools, "gemini")? else { return Ok(None) };
    let mut declarations = Vec::new();
    for (name, function) in functions {
        let mut declaration = json!({"name": name});
        if let Some(description) = function.get("description").filter(|d| d.is_string()) {
            declaration["description"] = description.clone();
        }
        if let Some(parameters) = function.get("parameters").filter(|p| !p.is_null()) {
            let schema = clean_schema(parameters);
            // A function without arguments is declared without parameters: Gemini rejects an
            // OBJECT whose properties are empty.
            let no_arguments = !schema.contains_key("properties")
                && !schema.contains_key("anyOf")
                && matches!(schema.get("type").and_then(Value::as_str), None | Some("OBJECT"));
            if !no_arguments {
                declaration["parameters"] = Value::Object(schema);
            }
        }
        declarations.push(declaration);
    }
    Ok(Some(declarations))
}

/// `tool_choice` -> `functionCallingConfig`: auto AUTO, none NONE, required ANY, a named
/// function ANY restricted to it.
fn function_calling_config(body: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    Ok(hub::tool_choice(body)?.map(|choice| match choice {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Named(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    }))
}

/// Sampling, limits, JSON mode and thinking, as `generationConfig`.
fn generation_config(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut config = Map::new();
    let present = |field: &str| body.get(field).filter(|v| !v.is_null());
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("n", "candidateCount"),
        ("seed", "seed"),
    ] {
        if let Some(value) = present(from) {
            config.insert(to.into(), value.clone());
        }
    }
    // `max_completion_tokens` is the newer name; it wins when both are sent.
    if let Some(max) = present("max_completion_tokens").or_else(|| present("max_tokens")) {
        config.insert("maxOutputTokens".into(), max.clone());
    }
    match present("stop") {
        Some(Value::String(stop)) => _ = config.insert("stopSequences".into(), json!([stop])),
        Some(stops @ Value::Array(_)) => _ = config.insert("stopSequences".into(), stops.clone()),
        _ => {}
    }
    if let Some(format) = present("response_format") {
        response_format(format, &mut config)?;
    }
    if let Some(effort) = present("reasoning_effort") {
        let effort = effort.as_str().ok_or_else(|| bad("reasoning_effort", "'reasoning_effort' must be a string"))?;
        config.insert("thinkingConfig".into(), thinking_config(effort)?);
    }
    Ok(config)
}

fn response_format(format: &Value, config: &mut Map<String, Value>) -> Result<(), ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => _ = config.insert("responseMimeType".into(), json!("application/json")),
        Some("json_schema") => {
            config.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = format.pointer("/json_schema/schema").filter(|s| s.is_object()) {
                config.insert("responseSchema".into(), Value::Object(clean_schema(schema)));
            }
        }
        _ => return Err(bad("response_format", "response_format.type must be text, json_object or json_schema")),
    }
    Ok(())
}

/// `reasoning_effort` as a thinking budget that every Gemini 2.5 model accepts (Flash-Lite's
/// floor is 512, Flash's ceiling 24576); thoughts are returned so they can become
/// `reasoning_content`. "none" turns thinking off where the model allows it.
fn thinking_config(effort: &str) -> Result<Value, ApiError> {
    let budget = match effort {
        "none" => return Ok(json!({"thinkingBudget": 0})),
        "minimal" => 512,
        "low" => 1024,
        "medium" => 8192,
        "high" | "xhigh" | "max" => 24576,
        other => return Err(bad("reasoning_effort", format!("unknown reasoning_effort '{other}'"))),
    };
    Ok(json!({"thinkingBudget": budget, "includeThoughts": true}))
}
