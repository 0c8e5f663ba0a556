//! `/v1/messages` as Claude Code uses it: everything the Messages API accepts, translated for
//! an OpenAI-compatible model, and passed through to Anthropic for `anthropic/*` (the client's
//! body byte for byte but the model id, its `anthropic-beta` header, the pool's key, events as
//! they come, rotation before the first byte, Anthropic's error shape).

use crate::support::mock::{Piece, completion};
use crate::support::{Mock, MockReply, Proxy, Recorded};
use serde_json::{Value, json};
use std::sync::Mutex;

const BETA: &str = "context-management-2025-06-27,interleaved-thinking-2025-05-14";

/// A request shaped like Claude Code's, written with spacing, escapes and number spellings a
/// re-encoder would change.
fn claude_code_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model": "{model}", "max_tokens": 32000, "stream": {stream},
  "system": [{{"type": "text", "text": "You are Claude Code."}},
             {{"type": "text", "text": "Caf\u00e9 rules.", "cache_control": {{"type": "ephemeral"}}}}],
  "messages": [
    {{"role": "user", "content": [{{"type": "text", "text": "say hello", "cache_control": {{"type": "ephemeral", "ttl": "1h"}}}}]}},
    {{"role": "system", "content": "Working directory: /tmp/p"}},
    {{"role": "assistant", "content": [{{"type": "thinking", "thinking": "Greet.", "signature": "EqQBsig=="}},
      {{"type": "text", "text": "Hello!"}}]}},
    {{"role": "user", "content": "again"}}],
  "tools": [{{"name": "Bash", "description": "Run a command.", "cache_control": {{"type": "ephemeral"}},
              "input_schema": {{"type": "object", "properties": {{"command": {{"type": "string"}}}}, "required": ["command"]}}}},
            {{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}}],
  "tool_choice": {{"type": "auto"}},
  "thinking": {{"type": "adaptive"}},
  "output_config": {{"effort": "medium"}},
  "context_management": {{"edits": [{{"type": "clear_thinking_20251015", "keep": "all"}}]}},
  "metadata": {{"user_id": "user_1_account__session_2"}},
  "temperature": 1.0}}"#
    )
}

/// Claude Code's headers: its key as `x-api-key` and its betas.
fn claude_headers(key: &str) -> String {
    format!("x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\nanthropic-beta: {BETA}\r\n")
}

fn anthropic_message() -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "thinking", "thinking": "Hm.", "signature": "EqQBreal=="},
                    {"type": "text", "text": "Hello again"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 9, "cache_read_input_tokens": 4000, "output_tokens": 5}})
}

const EVENTS: [(&str, &str); 7] = [
    (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_02","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"cache_creation_input_tokens":4000,"output_tokens":1}}}"#,
    ),
    (
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
    ),
    (
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBsig=="}}"#,
    ),
    ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
    ("ping", r#"{"type": "ping"}"#),
    (
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}"#,
    ),
    ("message_stop", r#"{"type":"message_stop"}"#),
];

fn sse(events: &[(&str, &str)]) -> Vec<u8> {
    events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect::<String>().into_bytes()
}

/// An Anthropic upstream: count_tokens, streams and whole messages.
fn anthropic_upstream(r: &Recorded) -> MockReply {
    if r.url.ends_with("/messages/count_tokens") {
        return MockReply::json(200, json!({"input_tokens": 4242}));
    }
    if r.json()["stream"] == true {
        return MockReply::sse(vec![Piece::Bytes(sse(&EVENTS))]);
    }
    MockReply::json(200, anthropic_message())
}

fn anthropic_proxy(mock: &Mock, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "ANTHROPIC_API_KEY_1=sk-ant-pool-0001\nANTHROPIC_API_BASE={}\nPROXY_API_KEY=pk\n{extra}",
        mock.base()
    ))
}

#[test]
fn a_claude_code_request_works_on_an_openai_compatible_model() {
    let mock = Mock::start(|r| {
        if r.json()["stream"] == true {
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "streamed hi"}, "finish_reason": "stop"}]});
            return MockReply::sse(vec![Piece::Bytes(format!("data: {chunk}\n\ndata: [DONE]\n\n").into_bytes())]);
        }
        MockReply::json(200, completion("hi from openai"))
    });
    // A custom OpenAI-compatible provider: OpenAI itself gets no `reasoning_effort` on gpt-4o.
    let proxy = Proxy::start(&format!("LOCAL_API_KEY=sk-o\nLOCAL_API_BASE={}\nPROXY_API_KEY=pk\n", mock.base()));
    let c = proxy.client();
    let answer = c.post_with("/v1/messages", &claude_code_body("local/gpt-4o-mini", false), &claude_headers("pk"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    assert_eq!((v["type"].clone(), v["content"][0]["text"].clone()), (json!("message"), json!("hi from openai")));
    assert_eq!(v["model"], "local/m", "provider/ + the id the upstream answered with");

    let sent = mock.requests()[0].json();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are Claude Code.\n\nCafé rules.\n\nWorking directory: /tmp/p"})
    );
    assert_eq!(sent["messages"].as_array().map(Vec::len), Some(4), "{sent}");
    assert_eq!(sent["messages"][2]["reasoning_content"], "Greet.");
    assert_eq!(sent["tools"].as_array().map(Vec::len), Some(1), "the server tool is left out: {sent}");
    assert_eq!((sent["reasoning_effort"].clone(), sent["tool_choice"].clone()), (json!("medium"), json!("auto")));
    let text = sent.to_string();
    for gone in ["cache_control", "context_management", "output_config", "signature", "web_search"] {
        assert!(!text.contains(gone), "{gone} reached an OpenAI upstream: {text}");
    }

    let streamed = c.post_with("/v1/messages", &claude_code_body("local/gpt-4o-mini", true), &claude_headers("pk"));
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let body = streamed.text();
    assert!(body.starts_with("event: message_start\n"), "{body}");
    assert!(body.contains(r#""model":"local/gpt-4o-mini""#), "{body}");
    assert!(body.contains("streamed hi") && body.trim_end().ends_with(r#"data: {"type":"message_stop"}"#), "{body}");
}

#[test]
fn a_claude_code_request_is_passed_through_to_anthropic() {
    let mock = Mock::start(anthropic_upstream);
    let proxy = anthropic_proxy(&mock, "");
    let c = proxy.client();
    for stream in [false, true] {
        let body = claude_code_body("anthropic/claude-sonnet-4-5", stream);
        let answer = c.post_with("/v1/messages", &body, &claude_headers("pk"));
        assert_eq!(answer.status, 200, "{}", answer.text());

        let sent = mock.requests().pop().unwrap();
        assert_eq!(sent.url, "/v1/messages");
        let unchanged = body.replace(r#""anthropic/claude-sonnet-4-5""#, r#""claude-sonnet-4-5""#);
        assert_eq!(String::from_utf8(sent.body.clone()).unwrap(), unchanged, "the body byte for byte but the model");
        assert_eq!(sent.header("anthropic-beta"), Some(BETA));
        assert_eq!(sent.header("x-api-key"), Some("sk-ant-pool-0001"), "the pool's key, not the proxy's");
        assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
        assert!(sent.header("authorization").is_none());

        if stream {
            let mut want = sse(&EVENTS);
            let renamed = String::from_utf8(want.clone()).unwrap().replace(
                r#""model":"claude-sonnet-4-5-20250929""#,
                r#""model":"anthropic/claude-sonnet-4-5-20250929""#,
            );
            want = renamed.into_bytes();
            assert_eq!(answer.text(), String::from_utf8(want).unwrap(), "events as they came, model renamed");
        } else {
            let mut want = anthropic_message();
            want["model"] = json!("anthropic/claude-sonnet-4-5-20250929");
            assert_eq!(answer.json(), want);
        }
    }

    let count = r#"{"model":"anthropic/claude-sonnet-4-5","messages":[{"role":"user","content":"hi","cache_control":{"type":"ephemeral"}}],"system":[{"type":"text","text":"s"}]}"#;
    let counted = c.post_with("/v1/messages/count_tokens", count, &claude_headers("pk"));
    assert_eq!((counted.status, counted.json()), (200, json!({"input_tokens": 4242})));
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.url, "/v1/messages/count_tokens");
    assert_eq!(sent.body, count.replace("anthropic/claude", "claude").into_bytes());
    assert_eq!(sent.header("anthropic-beta"), Some(BETA));

    // The key's counters got Anthropic's usage, cached prompt tokens included.
    let today = &proxy.key_status("...0001")["today"];
    assert_eq!((today["prompt_tokens"].clone(), today["completion_tokens"].clone()), (json!(8018), json!(12)));
}

#[test]
fn bare_names_reach_anthropic_through_default_provider() {
    let mock = Mock::start(anthropic_upstream);
    let proxy = anthropic_proxy(&mock, "DEFAULT_PROVIDER=anthropic\n");
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = proxy.client_with_key("pk").post("/v1/messages", body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.requests()[0].body, body.as_bytes());
    assert_eq!(answer.json()["model"], "anthropic/claude-sonnet-4-5-20250929");
}

#[test]
fn passed_through_events_reach_the_client_as_they_come() {
    let (release, held) = crossbeam_channel::bounded::<()>(0);
    let held = Mutex::new(Some(held));
    let mock = Mock::start(move |_| {
        let held = held.lock().unwrap().take().expect("one stream");
        MockReply::sse(vec![Piece::Bytes(sse(&EVENTS[..1])), Piece::Hold(held), Piece::Bytes(sse(&EVENTS[1..]))])
    });
    let proxy = anthropic_proxy(&mock, "");
    let body =
        r#"{"model":"anthropic/claude-x","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut stream = proxy.client_with_key("pk").stream("/v1/messages", body);
    assert_eq!(stream.status, 200);
    let first = stream.next_event().expect("message_start before the rest is sent");
    assert!(first.starts_with("event: message_start\ndata: ") && first.contains("anthropic/claude-sonnet"), "{first}");
    drop(release);
    let rest = stream.rest();
    assert_eq!(rest.len(), EVENTS.len() - 1);
    assert_eq!(rest.last().unwrap(), "event: message_stop\ndata: {\"type\":\"message_stop\"}");
}

#[test]
fn a_429_rotates_to_the_next_key_before_the_first_byte() {
    for stream in [true, false] {
        let first_key = Mutex::new(None::<String>);
        let mock = Mock::start(move |r| {
            let key = r.header("x-api-key").unwrap_or_default().to_string();
            let mut first = first_key.lock().unwrap();
            if first.get_or_insert_with(|| key.clone()) == &key {
                return MockReply::json(
                    429,
                    json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}}),
                );
            }
            anthropic_upstream(r)
        });
        let proxy = anthropic_proxy(&mock, "ANTHROPIC_API_KEY_2=sk-ant-pool-0002\n");
        let body = format!(
            r#"{{"model":"anthropic/claude-x","max_tokens":10,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let answer = proxy.client_with_key("pk").post("/v1/messages", &body);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let keys: Vec<String> =
            mock.requests().iter().filter_map(|r| r.header("x-api-key").map(String::from)).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert_ne!(keys[0], keys[1]);
        assert!(answer.text().contains("anthropic/claude-sonnet-4-5-20250929"), "{}", answer.text());
    }
}

#[test]
fn pass_through_errors_keep_anthropics_shape() {
    let mock = Mock::start(|r| {
        let body = r.json();
        match body["messages"][0]["content"].as_str() {
            Some("bad") => MockReply::json(
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages.0: unexpected field"}}),
            ),
            Some("cut") => {
                let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
                MockReply::sse(vec![Piece::Bytes(sse(&[EVENTS[0], ("error", overloaded)]))])
            }
            _ => MockReply::json(
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
            ),
        }
    });
    // A second proxy for the auth failure, which locks the key it used.
    let (proxy, locked) = (anthropic_proxy(&mock, ""), anthropic_proxy(&mock, ""));
    let ask = |proxy: &Proxy, text: &str, stream: bool| {
        proxy.client_with_key("pk").post(
            "/v1/messages",
            &format!(
                r#"{{"model":"anthropic/claude-x","max_tokens":10,"stream":{stream},"messages":[{{"role":"user","content":"{text}"}}]}}"#
            ),
        )
    };
    let shape = |answer: crate::support::Answer, status: u16, kind: &str| {
        assert_eq!(answer.status, status, "{}", answer.text());
        let v = answer.json();
        assert_eq!((v["type"].clone(), v["error"]["type"].clone()), (json!("error"), json!(kind)), "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    };
    let message = shape(ask(&proxy, "bad", false), 400, "invalid_request_error");
    assert!(message.contains("unexpected field"), "{message}");
    assert_eq!(mock.requests().len(), 1, "a request error is not retried on another key");

    let cut = ask(&proxy, "cut", true);
    assert_eq!(cut.status, 200);
    assert!(cut.text().ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"), "{}", cut.text());

    let message = shape(ask(&locked, "key", false), 502, "api_error");
    assert!(message.contains("...0001") && !message.contains("sk-ant-pool"), "{message}");
    // The next request finds no usable key: still Anthropic's shape, whatever the status.
    let none = locked
        .client_with_key("pk")
        .post("/v1/messages/count_tokens", r#"{"model":"anthropic/claude-x","messages":[]}"#);
    assert!(none.status >= 400, "{}", none.text());
    assert_eq!(none.json()["type"], "error", "{}", none.text());
}
