use super::request::*;
use super::response::*;
use super::stream::*;
use crate::error::ApiError;
use crate::golden::{self, Pair, read_json, read_jsonl};
use serde_json::{Value, json};
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
        effort(json!({"thinking": {"type": "enabled", "budget_tokens": 30000}, "output_config": {"effort": "low"}})),
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
    assert_eq!(choice(json!({"type": "tool", "name": "f"})).0, json!({"type": "function", "function": {"name": "f"}}));
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
    let empty = from_openai_response(&completion(json!({"role": "assistant", "content": null}), "stop"), "m", "msg_2");
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
    assert!(writer.chunk(&json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}})).is_empty());
}

#[test]
fn known_prompt_count_goes_into_message_start() {
    let mut writer = EventWriter::new("m", "msg_1").with_input_tokens(42);
    assert_eq!(writer.chunk(&chunk(json!({"role": "assistant"}), None))[0].1["message"]["usage"]["input_tokens"], 42);
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
    let out =
        run(&[chunk(json!({"role": "assistant", "refusal": "I can't help."}), None), chunk(json!({}), Some("stop"))]);
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
    let out = writer
        .error(&json!({"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}}));
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

#[test]
fn golden_cases() {
    golden::run(
        "messages",
        &[
            Pair { input: "anthropic_request.json", expected: "expected_openai_request.json", actual: &golden_request },
            Pair {
                input: "openai_response.json",
                expected: "expected_anthropic_response.json",
                actual: &golden_response,
            },
            Pair { input: "openai_chunks.jsonl", expected: "expected_events.jsonl", actual: &golden_stream },
        ],
        14,
    );
}

fn golden_request(input: &Path, name: &str) -> Value {
    Value::Object(to_openai_request(&read_json(input)).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn golden_response(input: &Path, _name: &str) -> Value {
    from_openai_response(&read_json(input), MODEL, ID)
}

/// The events as the expected files write them; they must follow the event grammar.
fn golden_stream(input: &Path, name: &str) -> Value {
    let events = stream_case(&read_jsonl(input));
    check_grammar(&events).unwrap_or_else(|e| panic!("{name}: {e}"));
    events.iter().map(|(n, d)| json!({"event": n, "data": d})).collect()
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
