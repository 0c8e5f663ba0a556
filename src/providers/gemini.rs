//! Google's Generative Language API (v1beta), the `gemini/*` family: OpenAI chat requests
//! become `generateContent` calls, and Gemini's answers and streams come back as OpenAI chat
//! completions and chunks (the Gemini API reference for generateContent and streamGenerateContent). Pure functions: no I/O, no
//! clock, no logging. The same four concerns as every family, in order: build,
//! parse_response, translate_event, classify_error (Gemini's error bodies,
//! `{"error": {"code", "message", "status"}}`, already fit `openai::upstream_error` and
//! `errors::classify`, so there is nothing Gemini-specific to add).
//!
//! Thought signatures (docs/wire-formats.md, pitfall 17). Gemini 3 rejects a history whose `functionCall` parts lack
//! the `thoughtSignature` it produced, and an OpenAI client has nowhere to keep one except the
//! tool-call id it echoes back. So a signed call gets the id `call_<stem>_<n>__thought__<sig>`
//! (the `__thought__` delimiter is litellm's too), and a request puts the signature back on
//! its `functionCall` part. The first call of a model turn that has no signature gets Google's
//! documented placeholder `skip_thought_signature_validator` instead, so histories from other
//! models or clients that rewrote ids still pass. Ids are deterministic: `<stem>` is the
//! letters and digits of the completion id (at most 12), `<n>` counts calls in the answer.

use crate::error::ApiError;
use crate::providers::{StreamTranslator, Translated};
use crate::sse;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Separates a tool-call id from the thought signature it carries. The id before it is
/// `call_` plus ASCII letters, digits and single underscores, so the first occurrence splits.
const SIGNATURE_DELIMITER: &str = "__thought__";

/// The signature Google documents for function calls Gemini did not sign itself.
const UNSIGNED: &str = "skip_thought_signature_validator";

// ---- build ---------------------------------------------------------------------------------

/// OpenAI chat body (already validated) -> `POST {base}/models/{model}:generateContent`, or
/// `:streamGenerateContent?alt=sse` when `stream` (headers: content-type only; the key is
/// added by `providers::with_key` as `x-goog-api-key`). Fields Gemini has no equivalent for
/// (`presence_penalty`, `logprobs`, `parallel_tool_calls`, `user`, ...) are dropped.
pub fn build_chat(
    base: &str,
    model: &str,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<UpstreamRequest, ApiError> {
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
        // camelCase always: Code Assist silently ignores `system_instruction` (docs/wire-formats.md, pitfall 17).
        request.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if let Some(declarations) = function_declarations(body.get("tools"))? {
        request.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
        if let Some(config) = function_calling_config(body.get("tool_choice"))? {
            request.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
        }
    }
    let generation = generation_config(body)?;
    if !generation.is_empty() {
        request.insert("generationConfig".into(), Value::Object(generation));
    }
    let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    Ok(UpstreamRequest {
        method: Method::Post,
        url: format!("{base}/{path}:{action}"),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(serde_json::to_vec(&request).expect("a JSON map serialises")),
        stream,
    })
}

/// OpenAI embeddings body -> `POST {base}/models/{model}:batchEmbedContents`, one request per
/// input, `dimensions` as `outputDimensionality`. Token-id inputs are refused: Gemini embeds
/// text only. `encoding_format` is the caller's business (`openai::encode_embeddings`).
pub fn build_embeddings(base: &str, model: &str, body: &Map<String, Value>) -> Result<UpstreamRequest, ApiError> {
    let path = model_path(model)?;
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(Value::as_str).collect::<Option<_>>().ok_or_else(|| {
                bad("input", "gemini embeds text only: 'input' must be a string or an array of strings")
            })?
        }
        _ => return Err(bad("input", "'input' must be a string or a non-empty array of strings")),
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) => Some(
            d.as_u64()
                .filter(|&d| d > 0)
                .ok_or_else(|| bad("dimensions", "'dimensions' must be a positive integer"))?,
        ),
    };
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
    Ok(UpstreamRequest {
        method: Method::Post,
        url: format!("{base}/{path}:batchEmbedContents"),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(serde_json::to_vec(&json!({"requests": requests})).expect("a JSON value serialises")),
        stream: false,
    })
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
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
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |why: String| bad("messages", format!("messages[{i}]: {why}"));
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, parts) = match message.get("role").and_then(Value::as_str) {
            // Gemini has no system turns: every one of them, wherever it is, is instruction.
            Some("system" | "developer") => {
                system.extend(texts(content).into_iter().map(|text| json!({"text": text})));
                continue;
            }
            Some("user") => ("user", user_parts(content).map_err(at)?),
            Some("assistant") => ("model", model_parts(message)),
            Some("tool") => ("user", vec![function_response(message, &messages[..i]).map_err(at)?]),
            Some(other) => return Err(at(format!("role '{other}' is not supported by gemini"))),
            None => return Err(at("missing 'role'".into())),
        };
        match turns.last_mut() {
            _ if parts.is_empty() => {}
            Some((last, previous)) if *last == role => previous.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
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
    let Value::Array(parts) = content else {
        return Ok(texts(content).into_iter().map(|text| json!({"text": text})).collect());
    };
    let mut out = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {
                if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(json!({"text": text}));
                }
            }
            "image_url" => {
                // `{"url": ...}` per OpenAI's Chat Completions reference; some clients send the URL string itself.
                let image = part.get("image_url").unwrap_or(&Value::Null);
                let url = image.get("url").unwrap_or(image).as_str().ok_or("an image_url part needs a url")?;
                out.push(media_part(url, "image/jpeg")?);
            }
            "input_audio" => out.push(audio_part(part.get("input_audio").unwrap_or(&Value::Null))?),
            "file" => out.push(file_part(part.get("file").unwrap_or(&Value::Null))?),
            other => return Err(format!("content part type '{other}' is not supported by gemini")),
        }
    }
    Ok(out)
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
fn args_object(arguments: &Value) -> Value {
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
fn split_call_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_DELIMITER) {
        Some((base, signature)) if !signature.is_empty() => (base, Some(signature)),
        Some((base, _)) => (base, None),
        None => (id, None),
    }
}

/// OpenAI function tools -> Gemini function declarations (None when there are none).
fn function_declarations(tools: Option<&Value>) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(tools) = tools.and_then(Value::as_array).filter(|t| !t.is_empty()) else { return Ok(None) };
    let mut declarations = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(bad("tools", format!("tools[{i}]: gemini takes only function tools")));
        }
        let function = tool.get("function").unwrap_or(&Value::Null);
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(bad("tools", format!("tools[{i}]: a function needs a name")));
        };
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
fn function_calling_config(choice: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let mode = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => "AUTO",
            "none" => "NONE",
            "required" => "ANY",
            other => return Err(bad("tool_choice", format!("unknown tool_choice '{other}'"))),
        },
        Some(named) => {
            let Some(name) = named.pointer("/function/name").and_then(Value::as_str) else {
                return Err(bad("tool_choice", "a named tool_choice needs function.name"));
            };
            return Ok(Some(json!({"mode": "ANY", "allowedFunctionNames": [name]})));
        }
    };
    Ok(Some(json!({"mode": mode})))
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

// ---- build: JSON Schema -> Gemini Schema ---------------------------------------------------

/// The fields of Gemini's `Schema` (a subset of OpenAPI 3.0). The API answers 400 "Unknown
/// name" for any other field, so after translation everything else is dropped:
/// `additionalProperties`, `$schema`, `$id`, `$defs`/`definitions`, `strict`, `examples`,
/// `not`, `patternProperties`, `exclusiveMinimum`, ...
const SCHEMA_FIELDS: &[&str] = &[
    "anyOf",
    "default",
    "description",
    "enum",
    "example",
    "format",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "nullable",
    "pattern",
    "properties",
    "propertyOrdering",
    "required",
    "title",
    "type",
];

/// A JSON Schema as a Gemini Schema. Translated rather than dropped: local `$ref`s are
/// inlined (a recursive one becomes `{}`), `allOf` is merged, `oneOf` becomes `anyOf`, `const`
/// a one-value `enum`, `type: [T, "null"]` and `anyOf` with a null member `nullable: true`,
/// and types are upper-cased. Then what Gemini would reject goes: non-string `enum`s, formats
/// other than enum/date-time (strings) and float/double/int32/int64 (numbers), `required`
/// names that are not properties, and empty `properties`.
fn clean_schema(schema: &Value) -> Map<String, Value> {
    clean_node(schema, schema, &mut Vec::new())
}

fn clean_node(node: &Value, root: &Value, refs: &mut Vec<String>) -> Map<String, Value> {
    // `true`/`false` schemas and anything else that is not an object: no constraint.
    let Some(source) = node.as_object() else { return Map::new() };
    let mut out = Map::new();
    if let Some(reference) = source.get("$ref").and_then(Value::as_str) {
        out = resolve_ref(reference, root, refs);
    }
    for member in source.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        let member = clean_node(member, root, refs);
        merge_schema(&mut out, member);
    }
    let own = own_fields(source, root, refs);
    merge_schema(&mut out, own);
    normalise(&mut out);
    out
}

/// Local references only (`#/$defs/X`, `#/definitions/X`, any JSON pointer into the root).
fn resolve_ref(reference: &str, root: &Value, refs: &mut Vec<String>) -> Map<String, Value> {
    let target = reference.strip_prefix('#').and_then(|pointer| root.pointer(pointer));
    let Some(target) = target.filter(|_| !refs.iter().any(|r| r == reference)) else { return Map::new() };
    refs.push(reference.to_string());
    let out = clean_node(target, root, refs);
    refs.pop();
    out
}

/// The node's own fields, translated; sub-schemas cleaned recursively.
fn own_fields(source: &Map<String, Value>, root: &Value, refs: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in source {
        match key.as_str() {
            "type" => put_type(&mut out, value),
            "properties" => {
                let properties = value.as_object().into_iter().flatten();
                let cleaned =
                    properties.map(|(name, schema)| (name.clone(), Value::Object(clean_node(schema, root, refs))));
                out.insert("properties".into(), Value::Object(cleaned.collect()));
            }
            // A tuple-style `items` array keeps its first schema.
            "items" => {
                let items = value.as_array().and_then(|a| a.first()).unwrap_or(value);
                out.insert("items".into(), Value::Object(clean_node(items, root, refs)));
            }
            "anyOf" | "oneOf" => {
                let members = value.as_array().into_iter().flatten();
                let cleaned: Vec<Value> = members.map(|m| Value::Object(clean_node(m, root, refs))).collect();
                out.insert("anyOf".into(), Value::Array(cleaned));
            }
            "const" => _ = out.insert("enum".into(), json!([value])),
            _ if SCHEMA_FIELDS.contains(&key.as_str()) => _ = out.insert(key.clone(), value.clone()),
            _ => {}
        }
    }
    out
}

/// `"string"` -> `"STRING"`; `["string", "null"]` -> `"STRING"` plus `nullable`; several
/// non-null types -> `anyOf` of each.
fn put_type(out: &mut Map<String, Value>, value: &Value) {
    let names: Vec<&str> = match value {
        Value::String(name) => vec![name],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => return,
    };
    if names.contains(&"null") {
        out.insert("nullable".into(), Value::Bool(true));
    }
    let types: Vec<String> = names.iter().filter(|n| **n != "null").map(|n| n.to_ascii_uppercase()).collect();
    match types.as_slice() {
        [] => {}
        [one] => _ = out.insert("type".into(), json!(one)),
        many => _ = out.insert("anyOf".into(), many.iter().map(|t| json!({"type": t})).collect()),
    }
}

/// `over` onto `base`: `over`'s fields win, except that properties and required names add up.
fn merge_schema(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (key.as_str(), base.get_mut(&key), value) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => mine.extend(theirs),
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                mine.extend(theirs.into_iter().filter(|name| !mine.contains(name)).collect::<Vec<_>>())
            }
            (_, _, value) => _ = base.insert(key, value),
        }
    }
}

/// What Gemini would reject, made acceptable (see `clean_schema`).
fn normalise(out: &mut Map<String, Value>) {
    collapse_any_of(out);
    if let Some(Value::Array(values)) = out.remove("enum") {
        if values.iter().any(Value::is_null) {
            out.insert("nullable".into(), Value::Bool(true));
        }
        let strings: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
        if !strings.is_empty() && strings.iter().all(Value::is_string) {
            out.entry("type").or_insert_with(|| json!("STRING"));
            out.insert("enum".into(), Value::Array(strings));
        }
    }
    let formats: &[&str] = match out.get("type").and_then(Value::as_str) {
        Some("STRING") => &["enum", "date-time"],
        Some("NUMBER") => &["float", "double"],
        Some("INTEGER") => &["int32", "int64"],
        _ => &[],
    };
    if out.get("format").and_then(Value::as_str).is_none_or(|f| !formats.contains(&f)) {
        out.remove("format");
    }
    if out.get("properties").and_then(Value::as_object).is_some_and(Map::is_empty) {
        out.remove("properties");
    }
    let properties = out.get("properties").and_then(Value::as_object);
    let required: Vec<Value> = out
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|name| name.as_str().is_some_and(|n| properties.is_some_and(|p| p.contains_key(n))))
        .cloned()
        .collect();
    if required.is_empty() {
        out.remove("required");
    } else {
        out.insert("required".into(), Value::Array(required));
    }
}

/// Pydantic's `Optional[X]` is `anyOf: [X, {"type": "null"}]`: the null member becomes
/// `nullable`, and a single remaining member is folded into the schema itself.
fn collapse_any_of(out: &mut Map<String, Value>) {
    let Some(Value::Array(members)) = out.remove("anyOf") else { return };
    let is_null = |m: &Value| {
        m.get("nullable") == Some(&Value::Bool(true)) && m.get("type").is_none() && m.get("anyOf").is_none()
    };
    let (nulls, mut rest): (Vec<Value>, Vec<Value>) = members.into_iter().partition(is_null);
    if !nulls.is_empty() {
        out.insert("nullable".into(), Value::Bool(true));
    }
    match rest.len() {
        0 => {}
        1 => {
            let Some(Value::Object(only)) = rest.pop() else { return };
            for (key, value) in only {
                out.entry(key).or_insert(value);
            }
        }
        _ => _ = out.insert("anyOf".into(), Value::Array(rest)),
    }
}

// ---- parse_response ------------------------------------------------------------------------

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
fn answered_model<'a>(response: &'a Value, sent: &'a str) -> &'a str {
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

fn candidate_index(candidate: &Value, position: usize) -> u64 {
    candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64)
}

/// What a response part means to an OpenAI client. Other parts (executable code, inline
/// images, empty text carrying only a signature) have no OpenAI form and are skipped.
enum Piece<'a> {
    Text(&'a str),
    Thought(&'a str),
    Call { name: &'a str, arguments: String, signature: Option<&'a str> },
}

fn pieces(candidate: &Value) -> impl Iterator<Item = Piece<'_>> {
    let parts = candidate.pointer("/content/parts").and_then(Value::as_array);
    parts.into_iter().flatten().filter_map(piece)
}

fn piece(part: &Value) -> Option<Piece<'_>> {
    if let Some(call) = part.get("functionCall") {
        // Gemini sends the whole args object at once (docs/wire-formats.md, pitfall 7); no args means "{}", never "".
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
fn call_id_stem(completion_id: &str) -> String {
    let id = completion_id.strip_prefix("chatcmpl-").unwrap_or(completion_id);
    let chars: Vec<char> = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let tail: String = chars[chars.len().saturating_sub(12)..].iter().collect();
    if tail.is_empty() { "call_".into() } else { format!("call_{tail}_") }
}

fn call_id(stem: &str, n: usize, signature: Option<&str>) -> String {
    match signature {
        Some(signature) => format!("{stem}{n}{SIGNATURE_DELIMITER}{signature}"),
        None => format!("{stem}{n}"),
    }
}

/// Gemini ends a function-calling turn with STOP; OpenAI clients wait for `tool_calls`
/// (docs/wire-formats.md, pitfall 17).
/// Reasons with no OpenAI counterpart (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, ...) are
/// "stop".
fn finish_reason(reason: Option<&str>, called: bool) -> &'static str {
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

fn prompt_blocked(body: &Value) -> bool {
    body.pointer("/promptFeedback/blockReason").is_some_and(|r| !r.is_null())
}

/// `usageMetadata` as OpenAI usage. Thinking tokens are output tokens to OpenAI, so they
/// count in `completion_tokens` and again in `reasoning_tokens`; `total_tokens` is Gemini's
/// own total (it also counts tool-use prompt tokens).
fn openai_usage(metadata: &Value) -> Value {
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

fn error_message(error: &Value) -> String {
    match error.get("message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    }
}

// ---- translate_event -----------------------------------------------------------------------

/// Stream translator: each SSE data event is a whole GenerateContentResponse.
pub fn stream_translator(model: &str, id: &str, created: u64) -> Box<dyn StreamTranslator> {
    Box::new(GeminiStream {
        model: model.to_string(),
        id: id.to_string(),
        created,
        stem: call_id_stem(id),
        calls: 0,
        choices: BTreeMap::new(),
        usage: None,
        done: false,
    })
}

struct GeminiStream {
    model: String,
    id: String,
    created: u64,
    stem: String,
    /// Tool calls so far over all choices, for their ids.
    calls: usize,
    /// By candidate index.
    choices: BTreeMap<u64, ChoiceState>,
    /// The last `usageMetadata`, translated: sent as the usage-only chunk at the end.
    usage: Option<Value>,
    /// An error went out, or the stream was finished: nothing more.
    done: bool,
}

#[derive(Default)]
struct ChoiceState {
    role_sent: bool,
    /// Tool calls in this choice: the next one's `index`.
    tool_calls: u64,
    finished: bool,
}

impl StreamTranslator for GeminiStream {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        if self.done || event.data.trim().is_empty() {
            return;
        }
        let response = match serde_json::from_str::<Value>(&event.data) {
            // Some Google stacks wrap a response (or an error) in an array.
            Ok(Value::Array(mut items)) if !items.is_empty() => items.swap_remove(0),
            Ok(response) => response,
            Err(e) => {
                return self.fail(out, "upstream_error", &format!("gemini sent a stream event that is not JSON: {e}"));
            }
        };
        if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
            out.push(Translated::Error(openai_error(error)));
            self.done = true;
            return;
        }
        if let Some(metadata) = response.get("usageMetadata").filter(|m| m.is_object()) {
            self.usage = Some(openai_usage(metadata));
        }
        // Every chunk names one model: the upstream's own, unless a chunk already went out.
        if self.choices.is_empty() {
            self.model = answered_model(&response, &self.model).to_string();
        }
        match response.get("candidates").and_then(Value::as_array) {
            Some(candidates) => {
                for (position, candidate) in candidates.iter().enumerate() {
                    self.candidate(candidate, candidate_index(candidate, position), out);
                }
            }
            None if prompt_blocked(&response) => {
                let delta = json!({"content": ""});
                self.push(0, delta, Some("content_filter"), out);
                self.choices.entry(0).or_default().finished = true;
            }
            None => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        if self.done {
            return;
        }
        let finished = !self.choices.is_empty() && self.choices.values().all(|c| c.finished);
        if !finished {
            return self.fail(out, "stream_interrupted", "upstream closed the stream before it finished");
        }
        self.done = true;
        if let Some(usage) = self.usage.take() {
            let mut chunk = self.chunk(Vec::new());
            chunk["usage"] = usage;
            out.push(Translated::Chunk(chunk));
        }
    }
}

impl GeminiStream {
    fn candidate(&mut self, candidate: &Value, index: u64, out: &mut Vec<Translated>) {
        if self.choices.get(&index).is_some_and(|c| c.finished) {
            return;
        }
        for piece in pieces(candidate) {
            let delta = match piece {
                Piece::Text(text) => json!({"content": text}),
                Piece::Thought(text) => json!({"reasoning_content": text}),
                Piece::Call { name, arguments, signature } => {
                    let state = self.choices.entry(index).or_default();
                    let call_index = state.tool_calls;
                    state.tool_calls += 1;
                    let id = call_id(&self.stem, self.calls, signature);
                    self.calls += 1;
                    let function = json!({"name": name, "arguments": arguments});
                    json!({"tool_calls": [{"index": call_index, "id": id, "type": "function", "function": function}]})
                }
            };
            self.push(index, delta, None, out);
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            let state = self.choices.entry(index).or_default();
            let reason = finish_reason(Some(reason), state.tool_calls > 0);
            self.push(index, json!({}), Some(reason), out);
            self.choices.entry(index).or_default().finished = true;
        }
    }

    /// One choice's delta as a chunk; the choice's first chunk also carries the role.
    fn push(&mut self, index: u64, mut delta: Value, finish_reason: Option<&str>, out: &mut Vec<Translated>) {
        let state = self.choices.entry(index).or_default();
        if !state.role_sent {
            state.role_sent = true;
            delta["role"] = json!("assistant");
        }
        let chunk = self.chunk(vec![json!({"index": index, "delta": delta, "finish_reason": finish_reason})]);
        out.push(Translated::Chunk(chunk));
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        super::chunk_envelope(&self.id, self.created, &self.model, choices)
    }

    fn fail(&mut self, out: &mut Vec<Translated>, code: &str, message: &str) {
        out.push(Translated::Error(super::stream_error(code, message)));
        self.done = true;
    }
}

/// Gemini's `{"code": 503, "message", "status": "UNAVAILABLE"}` as an OpenAI error object.
fn openai_error(error: &Value) -> Value {
    let status = error.get("code").and_then(Value::as_u64);
    let kind = match status {
        Some(429) => "rate_limit_error",
        Some(400..=499) => "invalid_request_error",
        _ => "api_error",
    };
    let code = match (error.get("status").and_then(Value::as_str), status) {
        (Some(name), _) => json!(name),
        (None, Some(status)) => json!(status.to_string()),
        (None, None) => Value::Null,
    };
    json!({"error": {"message": error_message(error), "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{body_of, object, read_json, replay, step_json};

    const BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

    fn build(value: Value) -> Result<Value, ApiError> {
        build_chat(BASE, "gemini-2.5-flash", &object(value), false).map(|r| body_of(&r))
    }

    /// Feeds SSE bytes in pieces of `piece` bytes, then ends the stream.
    fn translate(input: &[u8], piece: usize) -> Vec<Translated> {
        replay(stream_translator("gemini-2.5-flash", "chatcmpl-gm1", 1_760_000_000), input, piece)
    }

    #[test]
    fn urls_headers_and_stream_flag() {
        let body = object(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let r = build_chat(BASE, "gemini-2.5-flash", &body, false).unwrap();
        assert_eq!(r.url, format!("{BASE}/models/gemini-2.5-flash:generateContent"));
        assert_eq!((r.method, r.stream), (Method::Post, false));
        assert_eq!(r.headers, [("content-type".to_string(), "application/json".to_string())]);
        let r = build_chat(BASE, "models/gemini-2.5-pro", &body, true).unwrap();
        assert_eq!(r.url, format!("{BASE}/models/gemini-2.5-pro:streamGenerateContent?alt=sse"));
        assert!(r.stream);
        let r = build_chat(BASE, "tunedModels/mine", &body, false).unwrap();
        assert_eq!(r.url, format!("{BASE}/tunedModels/mine:generateContent"));
    }

    #[test]
    fn model_ids_that_would_change_the_url_are_refused() {
        let body = object(json!({"messages": [{"role": "user", "content": "hi"}], "input": "x"}));
        for bad in ["gemini-2.5-flash:countTokens#", "../x", "..", "a%2Fb", "models/a/b", "tunedModels/", "x?y"] {
            let e = build_chat(BASE, bad, &body, false).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("model")), "{bad}");
            let e = build_embeddings(BASE, bad, &body).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("model")), "{bad}");
        }
    }

    #[test]
    fn refuses_what_gemini_cannot_take() {
        let param = |r: Result<Value, ApiError>| r.unwrap_err().param;
        let only_system = json!({"messages": [{"role": "system", "content": "x"}]});
        assert_eq!(param(build(only_system)).as_deref(), Some("messages"));
        let orphan = json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_9", "content": "1"}]});
        let e = build(orphan).unwrap_err();
        assert!(e.message.contains("messages[1]") && e.message.contains("call_9"), "{}", e.message);
        let by_id = json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}]}]});
        assert_eq!(param(build(by_id)).as_deref(), Some("messages"));
        let untyped =
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "AAAA"}}]}]});
        assert_eq!(param(build(untyped)).as_deref(), Some("messages"));
        let role = json!({"messages": [{"role": "function", "name": "f", "content": "1"}]});
        assert!(build(role).unwrap_err().message.contains("role 'function'"));
        let plain_uri = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,hi"}}]}]});
        assert!(build(plain_uri).is_err());
        let effort = json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"});
        assert_eq!(param(build(effort)).as_deref(), Some("reasoning_effort"));
        let custom = json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {"name": "x"}}]});
        assert_eq!(param(build(custom)).as_deref(), Some("tools"));
        let tokens = object(json!({"input": [[1, 2, 3]]}));
        assert_eq!(build_embeddings(BASE, "e", &tokens).unwrap_err().param.as_deref(), Some("input"));
        let dims = object(json!({"input": "x", "dimensions": "3"}));
        assert_eq!(build_embeddings(BASE, "e", &dims).unwrap_err().param.as_deref(), Some("dimensions"));
    }

    #[test]
    fn tool_choice_and_reasoning_effort() {
        let parameters = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": parameters}}]);
        let with = |choice: Value| {
            let body =
                build(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}))
                    .unwrap();
            body["toolConfig"]["functionCallingConfig"].clone()
        };
        assert_eq!(with(json!("auto")), json!({"mode": "AUTO"}));
        assert_eq!(with(json!("none")), json!({"mode": "NONE"}));
        assert_eq!(with(json!("required")), json!({"mode": "ANY"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}})),
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]})
        );
        assert_eq!(with(Value::Null), Value::Null);
        // No tools, no toolConfig, whatever tool_choice says.
        let body = build(json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none"})).unwrap();
        assert!(body.get("toolConfig").is_none() && body.get("tools").is_none());
        let thinking = |effort: &str| {
            let body =
                build(json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort})).unwrap();
            body["generationConfig"]["thinkingConfig"].clone()
        };
        assert_eq!(thinking("none"), json!({"thinkingBudget": 0}));
        assert_eq!(thinking("minimal"), json!({"thinkingBudget": 512, "includeThoughts": true}));
        assert_eq!(thinking("low"), json!({"thinkingBudget": 1024, "includeThoughts": true}));
        assert_eq!(thinking("medium"), json!({"thinkingBudget": 8192, "includeThoughts": true}));
        assert_eq!(thinking("high"), json!({"thinkingBudget": 24576, "includeThoughts": true}));
    }

    #[test]
    fn response_formats() {
        let format =
            |f: Value| build(json!({"messages": [{"role": "user", "content": "x"}], "response_format": f})).unwrap();
        assert!(format(json!({"type": "text"})).get("generationConfig").is_none());
        assert_eq!(
            format(json!({"type": "json_object"}))["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
            "additionalProperties": false});
        let schema = json!({"type": "json_schema", "json_schema": {"name": "n", "strict": true, "schema": schema}});
        assert_eq!(
            format(schema)["generationConfig"],
            json!({"responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}, "required": ["a"]}})
        );
    }

    #[test]
    fn schema_cleaning() {
        let clean = |schema: Value| Value::Object(clean_schema(&schema));
        // Recursive references stop as an unconstrained schema instead of looping.
        let node = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}});
        let tree = json!({"$ref": "#/$defs/Node", "$defs": {"Node": node}});
        assert_eq!(
            clean(tree),
            json!({"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "children": {"type": "ARRAY", "items": {}}}})
        );
        // allOf merges; oneOf becomes anyOf; several types become anyOf; integer enums go.
        let mixed = json!({
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}, "required": ["b"]}],
            "properties": {
                "c": {"type": ["string", "integer", "null"]},
                "d": {"type": "integer", "enum": [1, 2]},
                "e": {"type": "number", "format": "double", "exclusiveMaximum": 5}}});
        assert_eq!(
            clean(mixed),
            json!({"type": "OBJECT", "required": ["a", "b"], "properties": {
                "a": {"type": "STRING"},
                "b": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
                "c": {"nullable": true, "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
                "d": {"type": "INTEGER"},
                "e": {"type": "NUMBER", "format": "double"}}})
        );
        // Boolean schemas and unresolvable references: no constraint.
        assert_eq!(
            clean(json!({"properties": {"x": true, "y": {"$ref": "other.json#/a"}}})),
            json!({"properties": {"x": {}, "y": {}}})
        );
        // A function without arguments is declared without parameters.
        let parameters = json!({"type": "object", "properties": {}, "additionalProperties": false});
        let tools = json!([{"type": "function", "function": {"name": "now", "parameters": parameters}}]);
        let body = build(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools})).unwrap();
        assert_eq!(body["tools"], json!([{"functionDeclarations": [{"name": "now"}]}]));
    }

    #[test]
    fn call_ids_carry_signatures() {
        assert_eq!(call_id_stem("chatcmpl-abc123"), "call_abc123_");
        assert_eq!(call_id_stem("chatcmpl-0123456789abcdef-XYZ"), "call_789abcdefXYZ_");
        assert_eq!(call_id_stem(""), "call_");
        assert_eq!(call_id("call_", 3, None), "call_3");
        let id = call_id("call_x_", 0, Some("Ab+/c=="));
        assert_eq!(id, "call_x_0__thought__Ab+/c==");
        assert_eq!(split_call_id(&id), ("call_x_0", Some("Ab+/c==")));
        // A signature that itself contains the delimiter still splits at the first one.
        assert_eq!(split_call_id("call_1__thought__a__thought__b"), ("call_1", Some("a__thought__b")));
        assert_eq!(split_call_id("call_1__thought__"), ("call_1", None));
        assert_eq!(split_call_id("toolu_01"), ("toolu_01", None));
    }

    #[test]
    fn signature_round_trip_through_a_client() {
        let response = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "read", "args": {"path": "a"}}, "thoughtSignature": "U0lHX0E="},
            {"functionCall": {"name": "read", "args": {"path": "b"}}}]}, "finishReason": "STOP"}]});
        let completion = parse_chat("gemini-3-pro-preview", "chatcmpl-r1", 1, &response).unwrap();
        let message = completion["choices"][0]["message"].clone();
        let ids: Vec<&str> =
            message["tool_calls"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["call_r1_0__thought__U0lHX0E=", "call_r1_1"]);
        let next = json!({"messages": [
            {"role": "user", "content": "read a and b"},
            message,
            {"role": "tool", "tool_call_id": ids[0], "content": "A"},
            {"role": "tool", "tool_call_id": ids[1], "content": "B"}]});
        let body = build(next).unwrap();
        assert_eq!(
            body["contents"][1]["parts"],
            json!([{"functionCall": {"name": "read", "args": {"path": "a"}}, "thoughtSignature": "U0lHX0E="},
                   {"functionCall": {"name": "read", "args": {"path": "b"}}}])
        );
        assert_eq!(
            body["contents"][2]["parts"],
            json!([{"functionResponse": {"name": "read", "response": {"content": "A"}}},
                   {"functionResponse": {"name": "read", "response": {"content": "B"}}}])
        );
    }

    #[test]
    fn odd_arguments_are_replayed_not_refused() {
        assert_eq!(args_object(&json!("")), json!({}));
        assert_eq!(args_object(&json!("{\"a\":1}")), json!({"a": 1}));
        assert_eq!(args_object(&json!("[1]")), json!({"arguments": "[1]"}));
        assert_eq!(args_object(&json!("{broken")), json!({"arguments": "{broken"}));
        assert_eq!(args_object(&json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn several_candidates_become_several_choices() {
        let response = json!({"candidates": [
            {"index": 0, "content": {"parts": [{"text": "A"}]}, "finishReason": "STOP"},
            {"index": 1, "content": {"parts": [{"functionCall": {"name": "f"}}]}, "finishReason": "STOP"}]});
        let completion = parse_chat("m", "chatcmpl-x", 1, &response).unwrap();
        assert_eq!(completion["choices"][1]["index"], 1);
        assert_eq!(completion["choices"][1]["finish_reason"], "tool_calls");
        assert_eq!(completion["choices"][1]["message"]["tool_calls"][0]["id"], "call_x_0");
        assert_eq!(completion["usage"], json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
        let sse = concat!(
            r#"data: {"candidates":[{"index":0,"content":{"parts":[{"text":"A"}]}},"#,
            r#"{"index":1,"content":{"parts":[{"text":"B"}]},"finishReason":"STOP"}]}"#,
            "\r\n\r\n"
        );
        let out = translate(sse.as_bytes(), usize::MAX);
        // Choice 0 never finished: the stream did not end properly.
        assert!(matches!(out.last(), Some(Translated::Error(e)) if e["error"]["code"] == "stream_interrupted"));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn parse_failures() {
        assert!(
            parse_chat("m", "i", 1, &json!({"error": {"code": 500, "message": "boom"}})).unwrap_err().contains("boom")
        );
        assert!(parse_chat("m", "i", 1, &json!({"candidates": []})).is_err());
        assert!(parse_embeddings("m", &json!({"embeddings": [{"values": ["x"]}]})).is_err());
        assert!(parse_embeddings("m", &json!({})).is_err());
    }

    #[test]
    fn stream_edge_cases() {
        // A prompt blocked before any candidate: one content_filter chunk, then usage.
        let blocked = concat!(
            r#"data: {"promptFeedback":{"blockReason":"SAFETY"},"#,
            r#""usageMetadata":{"promptTokenCount":3,"totalTokenCount":3}}"#,
            "\r\n\r\n"
        );
        let out = translate(blocked.as_bytes(), usize::MAX);
        let Translated::Chunk(first) = &out[0] else { panic!("{out:?}") };
        assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(first["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(out.len(), 2);
        // Nothing at all, and garbage.
        assert!(matches!(&translate(b"", 1)[..], [Translated::Error(e)] if e["error"]["code"] == "stream_interrupted"));
        let out = translate(b"data: {nope\r\n\r\n", usize::MAX);
        assert!(matches!(&out[..], [Translated::Error(e)] if e["error"]["code"] == "upstream_error"));
        // An error wrapped in an array, as some Google stacks send it.
        let wrapped =
            "data: [{\"error\":{\"code\":429,\"message\":\"slow down\",\"status\":\"RESOURCE_EXHAUSTED\"}}]\r\n\r\n";
        let out = translate(wrapped.as_bytes(), 3);
        assert_eq!(
            out,
            [Translated::Error(
                json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "RESOURCE_EXHAUSTED"}})
            )]
        );
    }

    #[test]
    fn model_list() {
        let body = json!({"models": [
            {"name": "models/gemini-2.5-flash", "supportedGenerationMethods": ["generateContent"]},
            {"name": "models/gemini-embedding-001"},
            {"displayName": "no name"}]});
        assert_eq!(model_ids(&body), ["gemini-2.5-flash", "gemini-embedding-001"]);
        assert!(model_ids(&json!({})).is_empty());
    }

    // ---- golden cases: tests/data/providers/gemini/<case>/ (README.md there) ----------------

    const MODEL: &str = "gemini-2.5-flash";
    const EMBEDDING_MODEL: &str = "gemini-embedding-001";
    const ID: &str = "chatcmpl-gm1";
    const CREATED: u64 = 1_760_000_000;

    #[test]
    fn golden_cases() {
        let cases = crate::golden::cases("providers/gemini");
        let mut checked = 0;
        for case in &cases {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            let embeddings = name.starts_with("embeddings");
            let has = |file: &str| case.join(file).exists();
            for (input, expected) in [
                ("openai_request.json", "expected_upstream_request.json"),
                ("upstream_response.json", "expected_openai_response.json"),
                ("upstream.sse", "expected_openai_chunks.jsonl"),
            ] {
                assert_eq!(has(input), has(expected), "{name}: {input} and {expected} come in pairs");
                if !has(input) {
                    continue;
                }
                match input {
                    "openai_request.json" => golden_request(case, &name, embeddings),
                    "upstream_response.json" => golden_response(case, &name, embeddings),
                    _ => golden_stream(case, &name),
                }
                checked += 1;
            }
        }
        assert!(checked >= 25, "only {checked} golden pairs found under tests/data/providers/gemini");
    }

    fn golden_request(case: &std::path::Path, name: &str, embeddings: bool) {
        let request = read_json(&case.join("openai_request.json"));
        let body = request.as_object().expect("a request object");
        let (provider, model) = crate::providers::split_model(body["model"].as_str().unwrap()).unwrap();
        assert_eq!(provider, "gemini", "{name}");
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let built =
            if embeddings { build_embeddings(BASE, model, body) } else { build_chat(BASE, model, body, stream) };
        let built = built.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(built.headers, [("content-type".to_string(), "application/json".to_string())], "{name}");
        assert_eq!(built.stream, stream, "{name}");
        let got = json!({"url": built.url, "body": body_of(&built)});
        let expected = read_json(&case.join("expected_upstream_request.json"));
        assert_eq!(got, expected, "{name}: upstream request\n got: {got}\nwant: {expected}");
    }

    fn golden_response(case: &std::path::Path, name: &str, embeddings: bool) {
        let upstream = read_json(&case.join("upstream_response.json"));
        let got = if embeddings {
            parse_embeddings(EMBEDDING_MODEL, &upstream)
        } else {
            parse_chat(MODEL, ID, CREATED, &upstream)
        };
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = read_json(&case.join("expected_openai_response.json"));
        assert_eq!(got, expected, "{name}: response\n got: {got}\nwant: {expected}");
    }

    fn golden_stream(case: &std::path::Path, name: &str) {
        let input = std::fs::read(case.join("upstream.sse")).unwrap();
        // Gemini frames with CRLF; the cases must too, or they prove nothing about it.
        let lf_only = input.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || input[i - 1] != b'\r'));
        assert!(!lf_only && input.windows(4).any(|w| w == b"\r\n\r\n"), "{name}: upstream.sse must use CRLF framing");
        let text = std::fs::read_to_string(case.join("expected_openai_chunks.jsonl")).unwrap();
        let expected: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
            .collect();
        for piece in [1, 7, input.len()] {
            let got: Vec<Value> = translate(&input, piece).iter().map(step_json).cloned().collect();
            let (g, w) = (Value::Array(got.clone()), Value::Array(expected.clone()));
            assert_eq!(got, expected, "{name}: chunks with {piece}-byte reads\n got: {g}\nwant: {w}");
        }
    }
}
