//! The translated families and the Anthropic-compatible routes end to end: what reaches the
//! upstream, what the client gets, and the error shape of each route.

use crate::support::mock::{Piece, completion};
use crate::support::{Mock, MockReply, Proxy};
use serde_json::{Value, json};

fn anthropic_message() -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Bonjour"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 11, "output_tokens": 3}})
}

#[test]
fn anthropic_models_are_translated_both_ways() {
    let mock = Mock::start(|_| MockReply::json(200, anthropic_message()));
    let proxy = Proxy::start(&format!("ANTHROPIC_API_KEY=sk-ant-0001\nANTHROPIC_API_BASE={}\n", mock.base()));
    let body = r#"{"model":"anthropic/claude-x","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}"#;
    let answer = proxy.client().post("/v1/chat/completions", body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    let sent = &mock.requests()[0];
    assert_eq!(sent.url, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-0001"));
    assert!(sent.header("anthropic-version").is_some());
    let upstream = sent.json();
    assert_eq!((upstream["model"].clone(), upstream["system"].clone()), (json!("claude-x"), json!("Be brief.")));
    assert!(upstream["max_tokens"].as_u64().is_some(), "Anthropic requires max_tokens: {upstream}");
}

#[test]
fn gemini_streams_are_translated_to_openai_chunks() {
    let events = [
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}]}"#,
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6}}"#,
    ];
    let pieces: Vec<Piece> = events.iter().map(|e| Piece::Bytes(format!("data: {e}\r\n\r\n").into_bytes())).collect();
    let pieces = std::sync::Mutex::new(Some(pieces));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().expect("one stream")));
    let proxy = Proxy::start(&format!("GEMINI_API_KEY=gm-key-0002\nGEMINI_API_BASE={}beta\n", mock.base()));
    let body = r#"{"model":"gemini/gemini-x","messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
    let events = proxy.client().stream("/v1/chat/completions", body).rest();
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "data: [DONE]").map(|e| serde_json::from_str(&e[6..]).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello");
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["delta"]["role"] == "assistant").count(), 1);
    assert!(
        chunks.iter().all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "no usage chunk unless asked"
    );
    assert_eq!(events.last().unwrap(), "data: [DONE]");
    let sent = &mock.requests()[0];
    assert_eq!(sent.url, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse");
    assert_eq!(sent.header("x-goog-api-key"), Some("gm-key-0002"));
}

#[test]
fn the_messages_route_answers_in_anthropic_shapes() {
    let mock = Mock::start(|_| MockReply::json(200, completion("from openai")));
    let proxy = Proxy::start(&format!("OPENAI_API_KEY=k\nOPENAI_API_BASE={}\nPROXY_API_KEY=pk\n", mock.base()));
    let c = proxy.client_with_key("pk");
    let ok =
        c.post("/v1/messages", r#"{"model":"openai/m","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let v = ok.json();
    assert_eq!(
        (v["type"].clone(), v["content"][0]["text"].clone(), v["stop_reason"].clone()),
        (json!("message"), json!("from openai"), json!("end_turn"))
    );

    let shape = |answer: crate::support::Answer, status: u16, kind: &str| {
        assert_eq!(answer.status, status, "{}", answer.text());
        let v = answer.json();
        assert_eq!((v["type"].clone(), v["error"]["type"].clone()), (json!("error"), json!(kind)), "{v}");
    };
    shape(proxy.client().post("/v1/messages", "{}"), 401, "authentication_error");
    shape(c.post("/v1/messages", "{not json"), 400, "invalid_request_error");
    shape(
        c.post("/v1/messages", r#"{"model":"nosuch/m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#),
        404,
        "not_found_error",
    );
    shape(
        c.post("/v1/messages", r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#),
        400,
        "invalid_request_error",
    );
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn all_keys_failing_on_the_messages_route_is_never_an_empty_200() {
    let mock = Mock::start(|_| MockReply::json(503, json!({"error": {"message": "down"}})));
    for stream in [false, true] {
        // A fresh proxy each time: the failed key now cools down for 30 s, which a second
        // request on the same proxy would wait out.
        let proxy = Proxy::start(&format!("OPENAI_API_KEY=k\nOPENAI_API_BASE={}\n", mock.base()));
        let body = format!(
            r#"{{"model":"openai/m","max_tokens":5,"stream":{stream},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let answer = proxy.client().post("/v1/messages", &body);
        assert_eq!(answer.status, 502, "{}", answer.text());
        assert_eq!(answer.json()["error"]["type"], "api_error");
    }
}

#[test]
fn token_counts_are_exact_for_openai_models() {
    let proxy = Proxy::start("");
    let c = proxy.client();
    let body = r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hello, world!"}]}"#;
    let v = c.post("/v1/token-count", body).json();
    // tiktoken o200k_base: "user" 1 token, "Hello, world!" 4; +3 per message, +3 reply priming.
    assert_eq!((v["token_count"].clone(), v["method"].clone()), (json!(11), json!("tiktoken/o200k_base")));
    let v = c
        .post(
            "/v1/token-count",
            r#"{"model":"anthropic/claude-x","messages":[{"role":"user","content":"Hello, world!"}]}"#,
        )
        .json();
    assert_eq!(v["method"], "approximation");
    let missing = c.post("/v1/token-count", r#"{"model":"openai/gpt-4o"}"#);
    assert_eq!((missing.status, missing.error_code()), (400, "invalid_request".into()));
    let counted = c.post(
        "/v1/messages/count_tokens",
        r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hello, world!"}]}"#,
    );
    assert_eq!(counted.status, 200, "{}", counted.text());
    assert!(counted.json()["input_tokens"].as_u64().is_some_and(|n| n > 0));
}
