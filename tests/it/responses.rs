//! `POST /v1/responses` end to end: translated through the chat hub for an OpenAI-compatible
//! and an Anthropic upstream, passed through for the `openai` provider, stream and not, and
//! its errors before and after the first byte.

use crate::support::mock::{Piece, completion, event};
use crate::support::{Mock, MockReply, Proxy, Recorded};
use serde_json::{Value, json};
use std::sync::Mutex;

/// A proxy whose custom OpenAI-compatible provider `local` is the mock.
fn local_proxy(mock: &Mock) -> Proxy {
    Proxy::start(&format!("LOCAL_API_BASE={}\nLOCAL_API_KEY=sk-local-0001\n", mock.base()))
}

/// A stream's events as (name, data) pairs.
fn parse_events(events: &[String]) -> Vec<(String, Value)> {
    events
        .iter()
        .map(|e| {
            let (name, data) = e.split_once("\ndata: ").unwrap_or_else(|| panic!("not `event:` + `data:`: {e}"));
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("no event name: {e}"));
            let data: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
            assert_eq!(data["type"], name, "the data repeats the event name");
            (name.to_string(), data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn sse_of(chunks: &[Value]) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = chunks.iter().map(|c| Piece::Bytes(event(c))).collect();
    pieces.push(Piece::Bytes(b"data: [DONE]\n\n".to_vec()));
    pieces
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m-2025",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

#[test]
fn text_is_translated_through_the_chat_hub() {
    let mock = Mock::start(|_| MockReply::json(200, completion("Hi there")));
    let proxy = local_proxy(&mock);
    let body = json!({"model": "local/m", "instructions": "Be brief.", "input": "Say hi", "max_output_tokens": 50,
        "store": true, "include": ["reasoning.encrypted_content"], "some_new_field": 1});
    let answer = proxy.client().post("/v1/responses", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    assert_eq!((v["object"].clone(), v["status"].clone()), (json!("response"), json!("completed")));
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    assert_eq!(v["model"], "local/m", "provider/ + the id the upstream answered with");
    assert_eq!(v["output"][0]["type"], "message");
    assert!(v["output"][0]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        v["output"][0]["content"][0],
        json!({"type": "output_text", "text": "Hi there", "annotations": [], "logprobs": []})
    );
    assert_eq!(
        (v["usage"]["input_tokens"].clone(), v["usage"]["output_tokens"].clone(), v["usage"]["total_tokens"].clone()),
        (json!(3), json!(2), json!(5))
    );
    let sent = &mock.requests()[0];
    assert_eq!(sent.url, "/v1/chat/completions");
    assert_eq!(sent.key().as_deref(), Some("sk-local-0001"));
    let upstream = sent.json();
    assert_eq!(upstream["model"], "m");
    assert_eq!(
        upstream["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}])
    );
    assert_eq!(upstream["max_tokens"], 50);
    for dropped in ["store", "include", "some_new_field", "input", "instructions"] {
        assert!(upstream.get(dropped).is_none(), "{dropped} reached the upstream: {upstream}");
    }
    // The same route without /v1, for clients whose base URL lacks it.
    assert_eq!(proxy.client().post("/responses", &body.to_string()).status, 200);
}

#[test]
fn a_tool_call_round_trip() {
    let mock = Mock::start(|r: &Recorded| {
        if r.json()["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool") {
            return MockReply::json(200, completion("It is 21 C in Paris."));
        }
        let message = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_42", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]});
        MockReply::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
        )
    });
    let proxy = local_proxy(&mock);
    let tools = json!([{"type": "function", "name": "get_weather", "strict": false,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"type": "web_search"}, {"type": "custom", "name": "apply_patch"}]);
    let first = json!({"model": "local/m", "input": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools, "tool_choice": "auto"});
    let answer = proxy.client().post("/v1/responses", &first.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let call = answer.json()["output"][0].clone();
    assert_eq!(
        (call["type"].clone(), call["call_id"].clone(), call["name"].clone()),
        (json!("function_call"), json!("call_42"), json!("get_weather"))
    );
    assert!(call["id"].as_str().unwrap().starts_with("fc_"), "{call}");
    let upstream = mock.requests()[0].json();
    assert_eq!(
        upstream["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "strict": false,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]),
        "built-in and custom tools are dropped"
    );

    let second = json!({"model": "local/m", "tools": tools, "input": [
        {"role": "user", "content": "Weather in Paris?"}, call,
        {"type": "function_call_output", "call_id": "call_42", "output": "21 C"}]});
    let answer = proxy.client().post("/v1/responses", &second.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["output"][0]["content"][0]["text"], "It is 21 C in Paris.");
    let messages = mock.requests()[1].json()["messages"].clone();
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_42", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    );
    assert_eq!(messages[2], json!({"role": "tool", "tool_call_id": "call_42", "content": "21 C"}));
}

#[test]
fn json_schema_becomes_response_format() {
    let mock = Mock::start(|_| MockReply::json(200, completion("{\"c\":21}")));
    let proxy = local_proxy(&mock);
    let schema = json!({"type": "object", "properties": {"c": {"type": "number"}}, "required": ["c"]});
    let body = json!({"model": "local/m", "input": "Temperature?", "text": {"format": {"type": "json_schema", "name": "t", "schema": schema, "strict": true}}});
    let answer = proxy.client().post("/v1/responses", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["text"]["format"]["name"], "t", "the request's text is echoed");
    assert_eq!(
        mock.requests()[0].json()["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": true}})
    );
}

#[test]
fn a_stream_is_the_responses_event_sequence() {
    let chunks = vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hel"}), None),
        chunk(json!({"content": "lo"}), None),
        chunk(json!({}), Some("stop")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m-2025", "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}),
    ];
    let pieces = Mutex::new(Some(sse_of(&chunks)));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().expect("one stream")));
    let proxy = local_proxy(&mock);
    let mut stream = proxy.client().stream("/v1/responses", r#"{"model":"local/m","input":"hi","stream":true}"#);
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").unwrap().starts_with("text/event-stream"));
    let events = parse_events(&stream.rest());
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["id"], events[0].1["response"]["id"]);
    assert_eq!(completed["model"], "local/m-2025");
    assert_eq!(completed["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(completed["usage"]["total_tokens"], 6);
    assert_eq!(mock.requests()[0].json()["stream_options"], json!({"include_usage": true}));
}

#[test]
fn a_streamed_tool_call_has_its_own_item() {
    let chunks = vec![
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_7", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
    ];
    let pieces = Mutex::new(Some(sse_of(&chunks)));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().expect("one stream")));
    let proxy = local_proxy(&mock);
    let body = json!({"model": "local/m", "input": "weather?", "stream": true,
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    let events = parse_events(&proxy.client().stream("/v1/responses", &body.to_string()).rest());
    let done = events.iter().find(|(n, _)| n == "response.function_call_arguments.done").expect("arguments done");
    assert_eq!(done.1["arguments"], "{\"city\":\"Paris\"}");
    let item = &events.iter().find(|(n, _)| n == "response.output_item.done").expect("item done").1["item"];
    assert_eq!(
        (item["call_id"].clone(), item["name"].clone(), item["status"].clone()),
        (json!("call_7"), json!("get_weather"), json!("completed"))
    );
    assert_eq!(done.1["item_id"], item["id"], "item_id is the item's id, not its call_id");
    assert_eq!(names(&events).last(), Some(&"response.completed"));
}

#[test]
fn anthropic_models_answer_responses_too() {
    let mock = Mock::start(|_| {
        MockReply::json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-2025",
            "content": [{"type": "thinking", "thinking": "Easy.", "signature": "s"}, {"type": "text", "text": "Bonjour"}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 3}}),
        )
    });
    let proxy = Proxy::start(&format!("ANTHROPIC_API_KEY=sk-ant-0001\nANTHROPIC_API_BASE={}\n", mock.base()));
    let body = json!({"model": "anthropic/claude-x", "instructions": "Answer in French.", "input": "Hello",
        "reasoning": {"effort": "low", "summary": "auto"}});
    let answer = proxy.client().post("/v1/responses", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    // The chat pipeline names the model (the id it sent to Anthropic or the one answered).
    assert!(v["model"].as_str().unwrap().starts_with("anthropic/claude-x"), "{v}");
    assert_eq!(
        v["output"][0],
        json!({"type": "reasoning", "id": v["output"][0]["id"], "summary": [{"type": "summary_text", "text": "Easy."}]})
    );
    assert_eq!(v["output"][1]["content"][0]["text"], "Bonjour");
    let sent = mock.requests()[0].json();
    assert_eq!(
        (sent["system"].clone(), sent["thinking"]["type"].clone()),
        (json!("Answer in French."), json!("enabled"))
    );
}

// ---- the openai provider: passed through ---------------------------------------------------

fn openai_proxy(mock: &Mock, keys: &str) -> Proxy {
    Proxy::start(&format!("OPENAI_API_BASE={}\n{keys}", mock.base()))
}

fn upstream_response() -> Value {
    json!({"id": "resp_up", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-x-2025",
        "output": [{"type": "message", "id": "msg_up", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "From OpenAI", "annotations": []}]}],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}, "error": null, "some_new_field": [1]})
}

#[test]
fn the_openai_provider_is_passed_through_with_rotation() {
    let mock = Mock::start(|r: &Recorded| match r.key().as_deref() {
        Some("sk-bad-key-0bad") => MockReply::json(
            429,
            json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}),
        ),
        _ => MockReply::json(200, upstream_response()),
    });
    let proxy = openai_proxy(
        &mock,
        "OPENAI_API_KEY_1=sk-bad-key-0bad\nOPENAI_API_KEY_2=sk-good-key-good\nROTATION_MODE_OPENAI=sequential\n",
    );
    let body = json!({"model": "openai/gpt-x", "input": [{"role": "user", "content": "hi"}], "store": true,
        "include": ["reasoning.encrypted_content"], "tools": [{"type": "web_search"}], "text": {"verbosity": "low"}});
    let answer = proxy.client().post("/v1/responses", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    let mut want = upstream_response();
    want["model"] = json!("openai/gpt-x-2025");
    assert_eq!(v, want, "the upstream's answer, only the model renamed");
    let requests = mock.requests();
    assert_eq!(requests.iter().map(|r| r.url.as_str()).collect::<Vec<_>>(), ["/v1/responses", "/v1/responses"]);
    assert_eq!(mock.keys_seen(), ["sk-bad-key-0bad", "sk-good-key-good"], "rotated before the first byte");
    let mut sent = body.clone();
    sent["model"] = json!("gpt-x");
    assert_eq!(requests[1].json(), sent, "the body unchanged apart from the model");
}

#[test]
fn an_openai_stream_is_relayed_event_by_event() {
    let created = json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_up", "object": "response", "status": "in_progress", "model": "gpt-x-2025", "output": []}});
    let delta = r#"{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_up","output_index":0,"content_index":0,"delta":"Hi","logprobs":[],"x_unknown":true}"#;
    let (gate, hold) = crossbeam_channel::bounded::<()>(0);
    let pieces = Mutex::new(Some(vec![
        Piece::Bytes(format!("event: response.created\ndata: {created}\n\n").into_bytes()),
        Piece::Bytes(format!("event: response.output_text.delta\ndata: {delta}\n\n").into_bytes()),
        Piece::Hold(hold),
        Piece::Bytes(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-x-2025\",\"output\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1,\"total_tokens\":4}}}\n\n".to_vec()),
    ]));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().expect("one stream")));
    let proxy = openai_proxy(&mock, "OPENAI_API_KEY=sk-openai-0001\n");
    let mut stream = proxy.client().stream("/v1/responses", r#"{"model":"openai/gpt-x","input":"hi","stream":true}"#);
    assert_eq!(stream.status, 200);
    let first = parse_events(&[stream.next_event().unwrap()]);
    assert_eq!(first[0].1["response"]["model"], "openai/gpt-x-2025");
    // Relayed while the upstream still holds the rest, and byte for byte.
    assert_eq!(stream.next_event().unwrap(), format!("event: response.output_text.delta\ndata: {delta}"));
    drop(gate);
    let last = parse_events(&stream.rest());
    assert_eq!(names(&last), ["response.completed"]);
    assert_eq!(last[0].1["response"]["model"], "openai/gpt-x-2025");
    assert_eq!(mock.requests()[0].url, "/v1/responses");
}

#[test]
fn an_openai_stream_that_breaks_ends_with_response_failed() {
    let created = json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_up", "object": "response", "status": "in_progress", "model": "gpt-x", "output": []}});
    let pieces =
        Mutex::new(Some(vec![Piece::Bytes(format!("event: response.created\ndata: {created}\n\n").into_bytes())]));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().expect("one stream")));
    let proxy = openai_proxy(&mock, "OPENAI_API_KEY=sk-openai-0001\n");
    let events = parse_events(
        &proxy.client().stream("/v1/responses", r#"{"model":"openai/gpt-x","input":"hi","stream":true}"#).rest(),
    );
    assert_eq!(names(&events), ["response.created", "response.failed"]);
    let failed = &events[1].1;
    assert_eq!(failed["sequence_number"], 1);
    assert_eq!(
        (failed["response"]["id"].clone(), failed["response"]["status"].clone()),
        (json!("resp_up"), json!("failed"))
    );
    assert_eq!(failed["response"]["error"]["code"], "stream_interrupted");
}

// ---- errors --------------------------------------------------------------------------------

#[test]
fn previous_response_id_is_refused_before_any_upstream_call() {
    let mock = Mock::start(|_| MockReply::json(200, upstream_response()));
    let proxy = Proxy::start(&format!(
        "OPENAI_API_BASE={0}\nOPENAI_API_KEY=k\nLOCAL_API_BASE={0}\nLOCAL_API_KEY=k\n",
        mock.base()
    ));
    for model in ["openai/gpt-x", "local/m"] {
        let body = json!({"model": model, "input": "and then?", "previous_response_id": "resp_1"});
        let answer = proxy.client().post("/v1/responses", &body.to_string());
        assert_eq!(answer.status, 400, "{}", answer.text());
        let v = answer.json();
        assert_eq!(
            (v["error"]["type"].clone(), v["error"]["param"].clone()),
            (json!("invalid_request_error"), json!("previous_response_id"))
        );
        assert!(v["error"]["message"].as_str().unwrap().contains("stateless"), "{v}");
    }
    assert!(mock.requests().is_empty());
}

#[test]
fn errors_before_the_first_byte_are_http_errors_in_openai_shape() {
    let mock = Mock::start(|_| {
        MockReply::json(
            400,
            json!({"error": {"message": "context too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}),
        )
    });
    let proxy = local_proxy(&mock);
    // stream: true, but nothing was streamed yet: a status and a JSON body.
    let answer = proxy.client().post("/v1/responses", r#"{"model":"local/m","input":"hi","stream":true}"#);
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(answer.error_code(), "context_length_exceeded");
    let c = proxy.client();
    assert_eq!(c.post("/v1/responses", r#"{"input":"hi"}"#).error_code(), "invalid_request");
    assert_eq!(c.post("/v1/responses", r#"{"model":"local/m"}"#).json()["error"]["param"], "input");
    assert_eq!(c.get("/v1/responses").status, 405);
}

#[test]
fn a_chat_stream_that_breaks_ends_with_response_failed() {
    let pieces = Mutex::new(Some(vec![Piece::Bytes(event(&chunk(json!({"content": "Once"}), None)))]));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().expect("one stream")));
    let proxy = local_proxy(&mock);
    let events = parse_events(
        &proxy.client().stream("/v1/responses", r#"{"model":"local/m","input":"hi","stream":true}"#).rest(),
    );
    let (name, failed) = events.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(failed["response"]["error"]["code"], "stream_interrupted");
    assert!(names(&events).contains(&"response.output_text.delta"));
}
