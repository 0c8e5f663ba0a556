//! Every error row of the man page's error table on the OpenAI routes: status, shape, code.

use crate::support::mock::RawMock;
use crate::support::mock::completion;
use crate::support::{Client, Mock, MockReply, Proxy};
use serde_json::json;

const CHAT: &str = "/v1/chat/completions";

fn ok_upstream() -> Mock {
    Mock::start(|_| MockReply::json(200, completion("fine")))
}

#[track_caller]
fn check(answer: crate::support::Answer, status: u16, kind: &str, code: &str) -> serde_json::Value {
    assert_eq!(answer.status, status, "{}", answer.text());
    let body = answer.json();
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error.get("param").is_some(), "param is always present: {body}");
    body
}

#[test]
fn bad_bodies_and_models_are_400_or_404() {
    let mock = ok_upstream();
    let proxy = Proxy::start(&format!("OPENAI_API_KEY=k1\nOPENAI_API_BASE={}\n", mock.base()));
    let c = proxy.client();
    check(c.post(CHAT, "{not json"), 400, "invalid_request_error", "invalid_request");
    check(c.post(CHAT, "[1,2]"), 400, "invalid_request_error", "invalid_request");
    let missing = check(c.post(CHAT, r#"{"messages":[]}"#), 400, "invalid_request_error", "invalid_request");
    assert_eq!(missing["error"]["param"], "model");
    let no_messages = check(c.post(CHAT, r#"{"model":"openai/m"}"#), 400, "invalid_request_error", "invalid_request");
    assert_eq!(no_messages["error"]["param"], "messages");
    check(c.post(CHAT, r#"{"model":"gpt-4o","messages":[]}"#), 400, "invalid_request_error", "invalid_request");
    check(c.post(CHAT, r#"{"model":"nosuch/m","messages":[]}"#), 404, "invalid_request_error", "model_not_found");
    check(c.post(CHAT, r#"{"model":"groq/llama","messages":[]}"#), 400, "invalid_request_error", "no_credentials");
    check(c.post("/v1/embeddings", r#"{"model":"openai/e"}"#), 400, "invalid_request_error", "invalid_request");
    check(
        c.post("/v1/embeddings", r#"{"model":"openai/e","input":[]}"#),
        400,
        "invalid_request_error",
        "invalid_request",
    );
    assert!(mock.requests().is_empty(), "no bad request may reach the upstream");
}

#[test]
fn the_proxy_key_is_required_on_v1_routes() {
    let mock = ok_upstream();
    let proxy = Proxy::start(&format!("OPENAI_API_KEY=k1\nOPENAI_API_BASE={}\nPROXY_API_KEY=right-key\n", mock.base()));
    for client in [proxy.client(), proxy.client_with_key("wrong-key"), proxy.client_with_key("right-ke")] {
        check(
            client.post(CHAT, r#"{"model":"openai/m","messages":[]}"#),
            401,
            "authentication_error",
            "invalid_api_key",
        );
        check(client.get("/v1/models"), 401, "authentication_error", "invalid_api_key");
    }
    let wrong_x = proxy.client().post_with(CHAT, r#"{"model":"openai/m","messages":[]}"#, "x-api-key: nope\r\n");
    check(wrong_x, 401, "authentication_error", "invalid_api_key");
    assert_eq!(proxy.client_with_key("right-key").post(CHAT, r#"{"model":"openai/m","messages":[]}"#).status, 200);
}

#[test]
fn unknown_routes_and_wrong_methods() {
    let proxy = Proxy::start("");
    let c = proxy.client();
    check(c.get("/v1/nothing-here"), 404, "invalid_request_error", "unknown_route");
    check(c.get("/elsewhere"), 404, "invalid_request_error", "unknown_route");
    check(c.get(CHAT), 405, "invalid_request_error", "method_not_allowed");
    check(c.request("DELETE", "/v1/models"), 405, "invalid_request_error", "method_not_allowed");
    check(c.request("PUT", "/v1/embeddings"), 405, "invalid_request_error", "method_not_allowed");
}

#[test]
fn upstream_request_errors_come_back_as_they_are_without_rotation() {
    let mock = Mock::start(|req| {
        let body = req.json();
        match body["model"].as_str() {
            Some("too-long") => MockReply::json(
                400,
                json!({"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
            ),
            Some("missing") => MockReply::json(
                404,
                json!({"error": {"message": "The model `missing` does not exist", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
            ),
            Some("unprocessable") => MockReply::json(422, json!({"detail": "unprocessable"})),
            Some("too-big") => MockReply::raw(413, "payload too large"),
            _ => MockReply::json(200, completion("fine")),
        }
    });
    let proxy = Proxy::start(&format!(
        "OPENAI_API_KEY_1=key-aaaa\nOPENAI_API_KEY_2=key-bbbb\nOPENAI_API_BASE={}\n",
        mock.base()
    ));
    let c = proxy.client();
    let ctx = check(
        c.post(CHAT, r#"{"model":"openai/too-long","messages":[]}"#),
        400,
        "invalid_request_error",
        "context_length_exceeded",
    );
    assert!(ctx["error"]["message"].as_str().unwrap().contains("maximum context length"));
    assert_eq!(ctx["error"]["param"], "messages");
    assert_eq!(mock.requests().len(), 1, "a request error must not be retried on another key");
    check(c.post(CHAT, r#"{"model":"openai/missing","messages":[]}"#), 404, "invalid_request_error", "model_not_found");
    let unprocessable = c.post(CHAT, r#"{"model":"openai/unprocessable","messages":[]}"#);
    assert_eq!(unprocessable.status, 422);
    assert_eq!(unprocessable.json()["error"]["message"], "unprocessable");
    let too_big = c.post(CHAT, r#"{"model":"openai/too-big","messages":[]}"#);
    assert_eq!((too_big.status, too_big.json()["error"]["message"].clone()), (413, json!("payload too large")));
    assert_eq!(mock.requests().len(), 4);
}

#[test]
fn failing_keys_rotate_and_the_final_error_names_each_masked_key() {
    let mock = Mock::start(|req| match req.key().as_deref() {
        Some("sk-first-key-1111") => MockReply::json(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-first-key-1111", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ),
        Some("sk-second-key-2222") => {
            MockReply::json(503, json!({"error": {"message": "engine overloaded", "type": "server_error"}}))
        }
        _ => MockReply::raw(200, "{truncated"),
    });
    // The fourth key's upstream drops the connection in the middle of its answer.
    let dropper =
        RawMock::start(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"id\":");
    let keys =
        "OPENAI_API_KEY_1=sk-first-key-1111\nOPENAI_API_KEY_2=sk-second-key-2222\nOPENAI_API_KEY_3=sk-third-key-3333\n";
    let proxy = Proxy::start(&format!(
        "{keys}OPENAI_API_BASE={}\nDROPPY_API_BASE={}\nDROPPY_API_KEY=sk-fourth-key-4444\n",
        mock.base(),
        dropper.base()
    ));
    let body =
        check(proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#), 502, "api_error", "upstream_error");
    let message = body["error"]["message"].as_str().unwrap();
    for masked in ["...1111", "...2222", "...3333"] {
        assert!(message.contains(masked), "{masked} missing from {message}");
    }
    assert!(message.contains("auth failed") && message.contains("not JSON") && message.contains("503"), "{message}");
    let mut seen = mock.keys_seen();
    seen.sort();
    // Transient failures (the 503, the broken JSON) get one same-key retry; auth does not.
    assert_eq!(
        seen,
        ["sk-first-key-1111", "sk-second-key-2222", "sk-second-key-2222", "sk-third-key-3333", "sk-third-key-3333"]
    );

    let dropped =
        check(proxy.client().post(CHAT, r#"{"model":"droppy/m","messages":[]}"#), 502, "api_error", "upstream_error");
    let message = dropped["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("...4444") && message.contains("cut off"), "{message}");
    assert_eq!(dropper.keys_seen(), ["sk-fourth-key-4444", "sk-fourth-key-4444"]);
    for secret in ["sk-first-key-1111", "sk-second-key-2222", "sk-third-key-3333", "sk-fourth-key-4444"] {
        assert!(!message.contains(secret), "a key leaked into the error: {message}");
        assert!(!proxy.logs().contains(secret), "a key leaked into the log");
    }
}

#[test]
fn an_auth_failure_moves_on_to_a_working_key() {
    let mock = Mock::start(|req| match req.key().as_deref() {
        Some("revoked") => MockReply::json(401, json!({"error": {"message": "revoked"}})),
        _ => MockReply::json(200, completion("from the good key")),
    });
    // Not `good`: a secret that short is redacted where it stands as a word, answers included.
    let proxy = Proxy::start(&format!(
        "OPENAI_API_KEY_1=revoked\nOPENAI_API_KEY_2=good-key-0002\nOPENAI_API_BASE={}\n",
        mock.base()
    ));
    for _ in 0..2 {
        let answer = proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
        assert_eq!(answer.json()["choices"][0]["message"]["content"], "from the good key");
    }
}

#[test]
fn a_passed_deadline_while_rotating_is_504() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let mock = Mock::start(move |_| {
        // Holds the answer past keyrelay's read timeout.
        let _ = release_rx.recv_timeout(crate::support::WAIT);
        MockReply::json(200, completion("late"))
    });
    let env = format!(
        "OPENAI_API_KEY_1=slow-1\nOPENAI_API_KEY_2=slow-2\nOPENAI_API_BASE={}\nTIMEOUT_READ_NON_STREAMING=0.3\nGLOBAL_TIMEOUT=0.2\n",
        mock.base()
    );
    let proxy = Proxy::start(&env);
    check(proxy.client().post(CHAT, r#"{"model":"openai/m","messages":[]}"#), 504, "api_error", "timeout");
    assert_eq!(mock.requests().len(), 1, "no attempt may start after the deadline");
    drop(release_tx);
}

#[test]
fn bodies_over_the_limit_are_413_and_the_server_keeps_going() {
    let mock = ok_upstream();
    let proxy =
        Proxy::start(&format!("OPENAI_API_KEY=k\nOPENAI_API_BASE={}\nMAX_REQUEST_BODY_BYTES=2000\n", mock.base()));
    let c = proxy.client();
    let big = format!(r#"{{"model":"openai/m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(3000));
    check(c.post(CHAT, &big), 413, "invalid_request_error", "request_too_large");

    // Chunked, so only reading finds out.
    let chunked = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    check(c.raw(chunked.as_bytes()), 413, "invalid_request_error", "request_too_large");

    // Declares 100 GB and sends almost nothing: answered from the header alone.
    let liar = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{{\"model\":"
    );
    check(c.raw(liar.as_bytes()), 413, "invalid_request_error", "request_too_large");
    let huge = format!("POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n");
    check(c.raw(huge.as_bytes()), 413, "invalid_request_error", "request_too_large");

    let after = c.post(CHAT, r#"{"model":"openai/m","messages":[]}"#);
    assert_eq!(after.status, 200, "the server must still answer: {}", after.text());
    assert_eq!(Client::new(proxy.port, None).get("/health").status, 200);
}
