use super::passthrough::*;
use super::request::*;
use super::response::*;
use super::stream::*;
use crate::error::ApiError;
use crate::golden::{self, body_of, object, read_json, replay};
use crate::providers::Translated;
use crate::providers::errors::{ErrorClass, classify};
use crate::upstream::Method;
use serde_json::{Value, json};
use std::path::Path;

const BASE: &str = "https://api.anthropic.com/v1";

fn build(value: Value) -> Result<Value, ApiError> {
    build_chat(BASE, "claude-sonnet-4-5", &object(value), false).map(|r| body_of(&r))
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// Feeds SSE bytes in pieces of `piece` bytes, then ends the stream.
fn translate(input: &[u8], piece: usize) -> Vec<Translated> {
    replay(stream_translator(MODEL, CREATED), input, piece)
}

fn sse_of(events: &[(&str, Value)]) -> Vec<u8> {
    events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect::<String>().into_bytes()
}

#[test]
fn url_headers_and_stream_flag() {
    let body = object(json!({"model": "anthropic/claude-sonnet-4-5", "messages": [user("hi")]}));
    let r = build_chat(BASE, "claude-sonnet-4-5", &body, false).unwrap();
    assert_eq!(r.url, format!("{BASE}/messages"));
    assert_eq!((r.method, r.stream), (Method::Post, false));
    assert_eq!(r.headers, [("content-type".to_string(), "application/json".to_string())]);
    let sent = body_of(&r);
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["stream"], false);
    let r = build_chat(BASE, "claude-sonnet-4-5", &body, true).unwrap();
    assert!(r.stream && body_of(&r)["stream"] == true);
}

#[test]
fn refuses_what_anthropic_cannot_take() {
    let param = |r: Result<Value, ApiError>| r.unwrap_err().param;
    assert_eq!(param(build(json!({"messages": [{"role": "system", "content": "x"}]}))).as_deref(), Some("messages"));
    let audio = json!({"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}});
    let audio = json!({"messages": [{"role": "user", "content": [audio]}]});
    assert!(build(audio).unwrap_err().message.contains("messages[0]"));
    let by_id = json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}]}]});
    assert_eq!(param(build(by_id)).as_deref(), Some("messages"));
    let role = json!({"messages": [{"role": "function", "name": "f", "content": "1"}]});
    assert!(build(role).unwrap_err().message.contains("role 'function'"));
    let plain_uri = json!({"type": "image_url", "image_url": {"url": "data:,hi"}});
    let plain_uri = json!({"messages": [{"role": "user", "content": [plain_uri]}]});
    assert!(build(plain_uri).is_err());
    let no_id = json!({"messages": [user("x"), {"role": "tool", "content": "1"}]});
    assert!(build(no_id).unwrap_err().message.contains("messages[1]"));
    let effort = json!({"messages": [user("x")], "reasoning_effort": "extreme"});
    assert_eq!(param(build(effort)).as_deref(), Some("reasoning_effort"));
    let custom = json!({"messages": [user("x")], "tools": [{"type": "custom", "custom": {"name": "x"}}]});
    assert_eq!(param(build(custom)).as_deref(), Some("tools"));
    assert_eq!(param(build(json!({"messages": [user("x")], "n": 2}))).as_deref(), Some("n"));
    assert_eq!(param(build(json!({"messages": [user("x")], "max_tokens": "9"}))).as_deref(), Some("max_tokens"));
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let choice = json!({"messages": [user("x")], "tools": tools, "tool_choice": "sometimes"});
    assert_eq!(param(build(choice)).as_deref(), Some("tool_choice"));
}

#[test]
fn response_formats_that_cannot_be_a_forced_tool_are_refused() {
    let tools = json!([{"type": "function", "function": {"name": "json_answer"}}]);
    let param = |body: Value| build(body).unwrap_err().param;
    let object = json!({"type": "json_object"});
    for choice in [json!(null), json!("auto"), json!("required")] {
        let body = json!({"messages": [user("x")], "tools": tools, "tool_choice": choice, "response_format": object});
        assert_eq!(param(body).as_deref(), Some("response_format"));
    }
    let clash = json!({"messages": [user("x")], "tools": tools, "tool_choice": "none", "response_format": object});
    assert!(build(clash).unwrap_err().message.contains("json_answer"));
    for format in [json!({"type": "yaml"}), json!({"type": "json_schema", "json_schema": {"name": "x"}})] {
        assert_eq!(
            param(json!({"messages": [user("x")], "response_format": format})).as_deref(),
            Some("response_format")
        );
    }
    let text = build(json!({"messages": [user("x")], "response_format": {"type": "text"}})).unwrap();
    assert!(text.get("tools").is_none() && text.get("tool_choice").is_none());
    // A schema name Anthropic would refuse as a tool name gives way to json_answer.
    let spaced = json!({"type": "json_schema", "json_schema": {"name": "my schema", "schema": {"type": "object"}}});
    let sent = build(json!({"messages": [user("x")], "response_format": spaced})).unwrap();
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "json_answer"}));
    assert_eq!(
        answer_tool_name(&crate::golden::object(json!({"response_format": spaced}))).as_deref(),
        Some("json_answer")
    );
}

#[test]
fn a_whole_answer_keeps_only_the_answer_tool_call() {
    let completion = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
        "content": "Sure.", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "Person", "arguments": "{\"a\":1}"}}]}}]});
    let answered = json_answer(completion.clone(), "Person");
    assert_eq!(answered["choices"][0]["message"], json!({"role": "assistant", "content": "{\"a\":1}"}));
    assert_eq!(answered["choices"][0]["finish_reason"], "stop");
    // Cut short: the partial JSON is what there is, and `length` says so.
    let mut cut = completion.clone();
    cut["choices"][0]["finish_reason"] = json!("length");
    assert_eq!(json_answer(cut, "Person")["choices"][0]["finish_reason"], "length");
    // No call of the answer tool: left as it came.
    assert_eq!(json_answer(completion.clone(), "Other"), completion);
}

#[test]
fn tool_choice_and_parallel_calls() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let with = |extra: Value| {
        let mut body = json!({"messages": [user("x")], "tools": tools});
        body.as_object_mut().unwrap().extend(object(extra));
        build(body).unwrap()
    };
    let sent = with(json!({}));
    assert_eq!(sent["tools"], json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}]));
    assert!(sent.get("tool_choice").is_none());
    assert_eq!(with(json!({"tool_choice": "auto"}))["tool_choice"], json!({"type": "auto"}));
    assert_eq!(with(json!({"tool_choice": "required"}))["tool_choice"], json!({"type": "any"}));
    assert_eq!(with(json!({"tool_choice": "none"}))["tool_choice"], json!({"type": "none"}));
    let named = json!({"type": "function", "function": {"name": "f"}});
    assert_eq!(with(json!({"tool_choice": named}))["tool_choice"], json!({"type": "tool", "name": "f"}));
    let serial = json!({"type": "auto", "disable_parallel_tool_use": true});
    assert_eq!(with(json!({"parallel_tool_calls": false}))["tool_choice"], serial);
    let none = with(json!({"parallel_tool_calls": false, "tool_choice": "none"}));
    assert_eq!(none["tool_choice"], json!({"type": "none"}));
    // No tools, no tool_choice, whatever the client says.
    let bare = build(json!({"messages": [user("x")], "tool_choice": "required"})).unwrap();
    assert!(bare.get("tools").is_none() && bare.get("tool_choice").is_none());
}

#[test]
fn thinking_budgets_limits_and_sampling() {
    let with = |extra: Value| {
        let mut body = json!({"messages": [user("x")]});
        body.as_object_mut().unwrap().extend(object(extra));
        build(body).unwrap()
    };
    let budget = |effort: &str| with(json!({"reasoning_effort": effort}))["thinking"]["budget_tokens"].clone();
    assert_eq!(budget("minimal"), 1024);
    assert_eq!(budget("low"), 1024);
    assert_eq!(budget("medium"), 4096);
    assert_eq!(budget("high"), 16384);
    assert_eq!(budget("xhigh"), 24576);
    assert_eq!(budget("max"), 32768);
    assert!(with(json!({"reasoning_effort": "none"})).get("thinking").is_none());
    // max_tokens always clears the budget.
    assert_eq!(with(json!({"reasoning_effort": "low"}))["max_tokens"], 4096);
    assert_eq!(with(json!({"reasoning_effort": "high"}))["max_tokens"], 16384 + 4096);
    assert_eq!(with(json!({"reasoning_effort": "high", "max_tokens": 20000}))["max_tokens"], 20000);
    assert_eq!(with(json!({"reasoning_effort": "medium", "max_completion_tokens": 500}))["max_tokens"], 4596);
    assert_eq!(with(json!({"max_tokens": 10, "max_completion_tokens": 20}))["max_tokens"], 20);
    // Sampling: thinking drops what Anthropic refuses next to it.
    let sampled = json!({"temperature": 0.3, "top_p": 0.9, "top_k": 40});
    let plain = with(sampled.clone());
    assert_eq!(
        (plain["temperature"].clone(), plain["top_p"].clone(), plain["top_k"].clone()),
        (json!(0.3), json!(0.9), json!(40))
    );
    let mut thinking = object(sampled);
    thinking.insert("reasoning_effort".into(), json!("low"));
    let thought = with(Value::Object(thinking));
    assert!(thought.get("temperature").is_none() && thought.get("top_k").is_none() && thought.get("top_p").is_none());
    let kept = with(json!({"reasoning_effort": "low", "top_p": 0.95}));
    assert_eq!(kept["top_p"], 0.95);
    assert_eq!(with(json!({"temperature": 1.7}))["temperature"], 1.0);
    assert_eq!(with(json!({"stop": "END"}))["stop_sequences"], json!(["END"]));
    assert_eq!(with(json!({"stop": ["a", "", "b"]}))["stop_sequences"], json!(["a", "b"]));
    assert_eq!(with(json!({"user": "u-1"}))["metadata"], json!({"user_id": "u-1"}));
}

#[test]
fn thinking_is_left_out_where_anthropic_would_refuse_it() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let forced =
        build(json!({"messages": [user("x")], "tools": tools, "tool_choice": "required", "reasoning_effort": "high"}));
    let forced = forced.unwrap();
    assert!(forced.get("thinking").is_none());
    assert_eq!(forced["max_tokens"], 4096);
    let call = json!({"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
    let looping = json!({"messages": [user("x"), {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "1"}], "tools": tools, "reasoning_effort": "high"});
    assert!(build(looping).unwrap().get("thinking").is_none());
    let answered = json!({"messages": [user("x"), {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "1"}, {"role": "assistant", "content": "done"},
        user("again")], "tools": tools, "reasoning_effort": "high"});
    assert_eq!(build(answered).unwrap()["thinking"]["budget_tokens"], 16384);
}

#[test]
fn turns_alternate_and_tool_results_come_first() {
    let sent = build(json!({"messages": [
        user("a"),
        user("b"),
        {"role": "assistant", "content": "", "reasoning_content": "hmm",
         "tool_calls": [{"id": "call.1/x", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
        user("stray text before the result"),
        {"role": "tool", "tool_call_id": "call.1/x", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": null},
    ]}))
    .unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1_x", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1_x", "content": "42"},
                {"type": "text", "text": "stray text before the result"},
            ]},
        ])
    );
}

#[test]
fn cache_control_is_kept() {
    let cache = json!({"type": "ephemeral"});
    let sent = build(json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "long", "cache_control": cache}]},
        {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": cache}]},
    ]}))
    .unwrap();
    assert_eq!(sent["system"], json!([{"type": "text", "text": "long", "cache_control": cache}]));
    assert_eq!(sent["messages"][0]["content"], json!([{"type": "text", "text": "q", "cache_control": cache}]));
}

#[test]
fn pdf_files_become_documents() {
    let pdf =
        json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}});
    let sent = build(json!({"messages": [{"role": "user", "content": [pdf]}]})).unwrap();
    let document =
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}});
    assert_eq!(sent["messages"][0]["content"], json!([document]));
    let zip = json!({"type": "file", "file": {"file_data": "data:application/zip;base64,UEs="}});
    assert!(build(json!({"messages": [{"role": "user", "content": [zip]}]})).is_err());
}

#[test]
fn parse_failures_and_odd_answers() {
    let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert!(parse_chat(MODEL, CREATED, &error).unwrap_err().contains("Overloaded"));
    assert!(parse_chat(MODEL, CREATED, &json!({"id": "msg_1"})).is_err());
    let refused = json!({"id": "msg_1", "content": [], "stop_reason": "refusal", "usage": {"input_tokens": 3, "output_tokens": 0}});
    let parsed = parse_chat(MODEL, CREATED, &refused).unwrap();
    assert_eq!(parsed["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(parsed["choices"][0]["message"]["content"], "");
    assert_eq!(parsed["usage"], json!({"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}));
}

#[test]
fn stream_edge_cases() {
    // Ended without message_stop.
    let cut = sse_of(&[(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_x", "usage": {"input_tokens": 1}}}),
    )]);
    let out = translate(&cut, usize::MAX);
    assert_eq!(out.len(), 2);
    assert!(matches!(&out[1], Translated::Error(e) if e["error"]["code"] == "stream_interrupted"));
    // Not JSON.
    let garbage = b"event: content_block_delta\ndata: {nope\n\n";
    let out = translate(garbage, usize::MAX);
    assert!(matches!(&out[..], [Translated::Error(e)] if e["error"]["code"] == "upstream_error"));
    // Nothing after the end; pings without JSON are fine.
    let mut done = sse_of(&[("message_stop", json!({"type": "message_stop"}))]);
    done.extend_from_slice(b"event: ping\ndata: \n\nevent: content_block_delta\ndata: {}\n\n");
    let out = translate(&done, usize::MAX);
    assert_eq!(out.len(), 3, "role chunk, finish chunk, usage chunk: {out:?}");
    let Translated::Chunk(last) = &out[2] else { panic!("{out:?}") };
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["id"], "msg_unknown");
}

#[test]
fn anthropic_errors_fit_the_shared_classifier() {
    let body = |kind: &str| json!({"type": "error", "error": {"type": kind, "message": "m"}, "request_id": "req_1"});
    assert_eq!(classify(529, &body("overloaded_error")), ErrorClass::Transient);
    assert_eq!(classify(401, &body("authentication_error")), ErrorClass::Auth);
    assert_eq!(classify(429, &body("rate_limit_error")), ErrorClass::RateLimit);
    assert_eq!(classify(400, &body("invalid_request_error")), ErrorClass::Request);
    let e = crate::providers::openai::upstream_error(529, body("overloaded_error").to_string().as_bytes());
    assert_eq!((e.error_type.as_str(), e.message.as_str()), ("overloaded_error", "m"));
}

#[test]
fn model_list() {
    let body =
        json!({"data": [{"type": "model", "id": "claude-sonnet-4-5"}, {"id": "claude-haiku-4-5"}], "has_more": false});
    assert_eq!(model_ids(&body), ["claude-sonnet-4-5", "claude-haiku-4-5"]);
    assert!(model_ids(&json!({})).is_empty());
}

// ---- golden cases: tests/data/providers/anthropic/<case>/ (README.md there) -------------

const MODEL: &str = "claude-sonnet-4-5";
const CREATED: u64 = 1_760_000_000;

#[test]
fn golden_cases() {
    let pairs = golden::provider_pairs(&golden_request, &golden_response, "upstream.sse", &golden_stream);
    golden::run("providers/anthropic", &pairs, 28);
}

fn golden_request(input: &Path, name: &str) -> Value {
    let built =
        golden::build_request(input, name, "anthropic", |model, body, stream| build_chat(BASE, model, body, stream));
    golden::json_request_json(&built, name)
}

/// The answer tool of a case whose request asks for a `response_format`.
fn case_answer_tool(input: &Path) -> Option<String> {
    let request = input.with_file_name("openai_request.json");
    request.exists().then(|| answer_tool_name(read_json(&request).as_object()?)).flatten()
}

fn golden_response(input: &Path, name: &str) -> Value {
    let mut got = parse_chat(MODEL, CREATED, &read_json(input)).unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(tool) = case_answer_tool(input) {
        got = json_answer(got, &tool);
    }
    got
}

fn golden_stream(input: &Path, name: &str) -> Value {
    let tool = case_answer_tool(input);
    let translate = |input: &[u8], piece: usize| match &tool {
        Some(tool) => replay(json_answer_stream(stream_translator(MODEL, CREATED), tool), input, piece),
        None => translate(input, piece),
    };
    let got = golden::same_in_pieces(&golden::read_bytes(input), name, |input, piece| {
        golden::steps_json(&translate(input, piece))
    });
    check_stream_rules(got.as_array().unwrap(), name);
    got
}

/// The rules every translator keeps (providers::StreamTranslator): one id/created/model,
/// the role once, a tool call's id/type/name once, finish_reason only on the last choice
/// chunk, and nothing after an error.
fn check_stream_rules(steps: &[Value], name: &str) {
    let chunks: Vec<&Value> = steps.iter().filter(|s| s.get("error").is_none()).collect();
    if let Some(error) = steps.iter().position(|s| s.get("error").is_some()) {
        assert_eq!(error, steps.len() - 1, "{name}: an error is the last step");
    }
    let Some(first) = chunks.first() else { return };
    let mut roles = 0;
    let mut named = std::collections::HashSet::new();
    let mut finishes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        for field in ["id", "created", "model"] {
            assert_eq!(chunk[field], first[field], "{name}: chunk {i} {field}");
        }
        assert_eq!(chunk["object"], "chat.completion.chunk", "{name}: chunk {i}");
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else { continue };
        assert_eq!(choice["index"], 0, "{name}: chunk {i}");
        roles += usize::from(choice["delta"].get("role").is_some());
        if !choice["finish_reason"].is_null() {
            finishes.push(i);
        }
        for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            if call.get("id").is_some() {
                assert!(named.insert(call["index"].as_u64().unwrap()), "{name}: tool call id sent twice");
                assert!(call["type"] == "function" && call["function"]["name"].is_string(), "{name}: chunk {i}");
            } else {
                assert!(call.get("type").is_none() && call["function"].get("name").is_none(), "{name}: chunk {i}");
            }
        }
    }
    assert_eq!(roles, 1, "{name}: the role goes out once");
    let last_choice = chunks.iter().rposition(|c| c["choices"].as_array().is_some_and(|c| !c.is_empty()));
    assert!(finishes.is_empty() || (finishes.len() == 1 && Some(finishes[0]) == last_choice), "{name}: finish_reason");
}

// ---- pass-through ----

#[test]
fn passthrough_forwards_anthropic_headers_but_not_the_proxy_key_version_or_oauth_betas() {
    let client = [
        ("x-api-key", "proxy-key"),
        ("authorization", "Bearer proxy-key"),
        ("anthropic-version", "2023-01-01"),
        ("anthropic-beta", "context-management-2025-06-27"),
        ("anthropic-beta", "oauth-2025-04-20, interleaved-thinking-2025-05-14"),
        ("anthropic-beta", "oauth-2025-04-20"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("accept-encoding", "gzip"),
        ("content-length", "12"),
    ]
    .map(|(n, v)| (n.to_string(), v.to_string()));
    let req =
        build_passthrough("https://api.anthropic.com/v1", "messages/count_tokens", b"{}".to_vec(), &client, false);
    assert_eq!(req.url, "https://api.anthropic.com/v1/messages/count_tokens");
    assert_eq!(req.body.as_deref(), Some(&b"{}"[..]));
    let names: Vec<(&str, &str)> = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(
        names,
        [
            ("content-type", "application/json"),
            ("anthropic-beta", "context-management-2025-06-27"),
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
            ("anthropic-dangerous-direct-browser-access", "true")
        ]
    );
}
