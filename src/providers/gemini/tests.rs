use super::request::*;
use super::request::{args_object, split_call_id};
use super::response::*;
use super::response::{call_id, call_id_stem};
use super::schema::clean_schema;
use super::stream::*;
use crate::error::ApiError;
use crate::golden::{self, body_of, object, read_json, replay};
use crate::providers::Translated;
use crate::upstream::Method;
use serde_json::{Value, json};
use std::path::Path;

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
    let untyped = json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "AAAA"}}]}]});
    assert_eq!(param(build(untyped)).as_deref(), Some("messages"));
    let role = json!({"messages": [{"role": "function", "name": "f", "content": "1"}]});
    assert!(build(role).unwrap_err().message.contains("role 'function'"));
    let plain_uri =
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,hi"}}]}]});
    assert!(build(plain_uri).is_err());
    let effort = json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"});
    assert_eq!(param(build(effort)).as_deref(), Some("reasoning_effort"));
    let custom =
        json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {"name": "x"}}]});
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
        let body = build(json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort})).unwrap();
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
    let ids: Vec<&str> = message["tool_calls"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
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
    assert!(parse_chat("m", "i", 1, &json!({"error": {"code": 500, "message": "boom"}})).unwrap_err().contains("boom"));
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

/// `embeddings*` cases go through the embeddings calls.
#[test]
fn golden_cases() {
    let pairs = golden::provider_pairs(&golden_request, &golden_response, "upstream.sse", &golden_stream);
    golden::run("providers/gemini", &pairs, 25);
}

fn golden_request(input: &Path, name: &str) -> Value {
    let built = golden::build_request(input, name, "gemini", |model, body, stream| {
        if name.starts_with("embeddings") {
            build_embeddings(BASE, model, body)
        } else {
            build_chat(BASE, model, body, stream)
        }
    });
    golden::json_request_json(&built, name)
}

fn golden_response(input: &Path, name: &str) -> Value {
    let upstream = read_json(input);
    let got = if name.starts_with("embeddings") {
        parse_embeddings(EMBEDDING_MODEL, &upstream)
    } else {
        parse_chat(MODEL, ID, CREATED, &upstream)
    };
    got.unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn golden_stream(input: &Path, name: &str) -> Value {
    let input = golden::read_bytes(input);
    check_crlf_framing(&input, name);
    golden::same_in_pieces(&input, name, |input, piece| golden::steps_json(&translate(input, piece)))
}

/// Gemini frames with CRLF; the cases must too, or they prove nothing about it.
fn check_crlf_framing(input: &[u8], name: &str) {
    let lf_only = input.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || input[i - 1] != b'\r'));
    assert!(!lf_only && input.windows(4).any(|w| w == b"\r\n\r\n"), "{name}: upstream.sse must use CRLF framing");
}
