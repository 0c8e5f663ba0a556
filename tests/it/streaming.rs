//! Streams: events flushed one by one, SSE parsed per the spec, usage chunk rules, breaks and
//! client disconnects.

use crate::support::mock::{Piece, content_chunk, event, finish_chunk};
use crate::support::{Mock, MockReply, Proxy, WAIT};
use serde_json::{Value, json};

const STREAM_BODY: &str = r#"{"model":"openai/m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

fn proxy_for(mock: &Mock) -> Proxy {
    Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=stream-key-1\n", mock.base()))
}

fn data(event: &str) -> Value {
    serde_json::from_str(event.strip_prefix("data: ").expect("a data event")).expect("JSON event")
}

fn bytes(b: &[u8]) -> Piece {
    Piece::Bytes(b.to_vec())
}

#[test]
fn the_first_event_reaches_the_client_while_the_upstream_holds_the_rest() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let gate = std::sync::Mutex::new(Some(release_rx));
    let mock = Mock::start(move |_| {
        let hold = gate.lock().unwrap().take().expect("one stream");
        MockReply::sse(vec![
            Piece::Bytes(event(&content_chunk("first"))),
            Piece::Hold(hold),
            Piece::Bytes(event(&finish_chunk())),
            bytes(b"data: [DONE]\n\n"),
        ])
    });
    let proxy = proxy_for(&mock);
    let mut s = proxy.client().stream("/v1/chat/completions", STREAM_BODY);
    // The upstream is still holding the rest: this event can only have come through unbuffered.
    let first = s.next_event().expect("first event");
    assert_eq!(data(&first)["choices"][0]["delta"]["content"], "first");
    release_tx.send(()).unwrap();
    let rest = s.rest();
    assert_eq!(rest.last().map(String::as_str), Some("data: [DONE]"));
    assert_eq!(data(&rest[0])["choices"][0]["finish_reason"], "stop");
}

#[test]
fn sse_is_parsed_per_the_spec() {
    // CRLF line ends, a comment, `data:` without its space, an event split inside a UTF-8
    // character across two writes, and a [DONE] without its blank line before the close.
    let chunk = content_chunk("héllo 🎉").to_string();
    let raw = format!(": OPENROUTER PROCESSING\r\n\r\ndata:{chunk}\r\n\r\n");
    let split = raw.find('🎉').unwrap() + 2;
    let (a, b) = raw.as_bytes().split_at(split);
    let (a, b) = (a.to_vec(), b.to_vec());
    let mock = Mock::start(move |_| {
        MockReply::sse(vec![
            Piece::Bytes(a.clone()),
            Piece::Bytes(b.clone()),
            Piece::Bytes(event(&finish_chunk())),
            bytes(b"data: [DONE]\n"),
        ])
    });
    let proxy = proxy_for(&mock);
    let events = proxy.client().stream("/v1/chat/completions", STREAM_BODY).rest();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(data(&events[0])["choices"][0]["delta"]["content"], "héllo 🎉");
    assert!(events.iter().all(|e| !e.contains("OPENROUTER")));
    assert_eq!(events[2], "data: [DONE]");
}

fn usage_stream(_: &crate::support::Recorded) -> MockReply {
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}});
    MockReply::sse(vec![
        Piece::Bytes(event(&content_chunk("x"))),
        Piece::Bytes(event(&finish_chunk())),
        Piece::Bytes(event(&usage)),
        bytes(b"data: [DONE]\n\n"),
    ])
}

#[test]
fn the_usage_chunk_reaches_only_clients_that_asked() {
    let mock = Mock::start(usage_stream);
    let proxy = proxy_for(&mock);
    let plain = proxy.client().stream("/v1/chat/completions", STREAM_BODY).rest();
    assert!(
        plain.iter().filter(|e| *e != "data: [DONE]").all(|e| !data(e)["choices"].as_array().unwrap().is_empty()),
        "{plain:?}"
    );
    // keyrelay asks the upstream for usage either way (to count tokens).
    assert_eq!(mock.requests()[0].json()["stream_options"]["include_usage"], true);

    let asked = r#"{"model":"openai/m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#;
    let events = proxy.client().stream("/v1/chat/completions", asked).rest();
    let usage = &events[events.len() - 2];
    assert_eq!(data(usage)["choices"], json!([]));
    assert_eq!(data(usage)["usage"]["total_tokens"], 7);
    assert_eq!(events.last().unwrap(), "data: [DONE]");
}

#[test]
fn an_upstream_that_closes_early_gets_an_in_band_error_then_done() {
    let mock = Mock::start(|_| MockReply::sse(vec![Piece::Bytes(event(&content_chunk("partial")))]));
    let proxy = proxy_for(&mock);
    let events = proxy.client().stream("/v1/chat/completions", STREAM_BODY).rest();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(data(&events[1])["error"]["code"], "stream_interrupted");
    assert_eq!(events[2], "data: [DONE]");
}

#[test]
fn a_finished_stream_without_done_still_ends_with_done() {
    let mock = Mock::start(|_| {
        MockReply::sse(vec![Piece::Bytes(event(&content_chunk("a"))), Piece::Bytes(event(&finish_chunk()))])
    });
    let proxy = proxy_for(&mock);
    let events = proxy.client().stream("/v1/chat/completions", STREAM_BODY).rest();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], "data: [DONE]");
}

#[test]
fn an_upstream_error_event_is_relayed_and_the_stream_closed() {
    let error = json!({"error": {"message": "overloaded mid-stream", "type": "server_error", "code": null}});
    let mock = Mock::start(move |_| {
        MockReply::sse(vec![
            Piece::Bytes(event(&content_chunk("a"))),
            Piece::Bytes(event(&error)),
            Piece::Bytes(event(&content_chunk("never"))),
        ])
    });
    let proxy = proxy_for(&mock);
    let events = proxy.client().stream("/v1/chat/completions", STREAM_BODY).rest();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(data(&events[1])["error"]["message"], "overloaded mid-stream");
    assert_eq!(events[2], "data: [DONE]");
}

#[test]
fn a_client_that_disconnects_closes_the_upstream_call() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let (broken_tx, broken_rx) = crossbeam_channel::bounded::<()>(1);
    let state = std::sync::Mutex::new(Some((release_rx, broken_tx)));
    let mock = Mock::start(move |_| {
        let (hold, broken) = state.lock().unwrap().take().expect("one stream");
        // After the hold, keep writing: once keyrelay has closed its side, a write fails.
        let mut pieces = vec![Piece::Bytes(event(&content_chunk("first"))), Piece::Hold(hold)];
        pieces.push(Piece::UntilClosed(event(&content_chunk(&"x".repeat(512)))));
        MockReply::Stream { status: 200, pieces, on_write_error: Some(broken) }
    });
    let proxy = proxy_for(&mock);
    let mut s = proxy.client().stream("/v1/chat/completions", STREAM_BODY);
    assert!(s.next_event().is_some());
    drop(s);
    release_tx.send(()).unwrap();
    broken_rx.recv_timeout(WAIT).expect("the upstream connection was not closed after the client left");
}

#[test]
fn a_stream_rotates_to_the_next_key_before_its_first_byte() {
    let mock = Mock::start(|req| match req.key().as_deref() {
        Some("limited-key") => MockReply::json(
            429,
            json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}),
        ),
        _ => MockReply::sse(vec![
            Piece::Bytes(event(&content_chunk("ok"))),
            Piece::Bytes(event(&finish_chunk())),
            bytes(b"data: [DONE]\n\n"),
        ]),
    });
    let proxy = Proxy::start(&format!(
        "OPENAI_API_BASE={}\nOPENAI_API_KEY_1=limited-key\nOPENAI_API_KEY_2=good-key\n",
        mock.base()
    ));
    for _ in 0..2 {
        let events = proxy.client().stream("/v1/chat/completions", STREAM_BODY).rest();
        assert_eq!(data(&events[0])["choices"][0]["delta"]["content"], "ok");
    }
    let seen = mock.keys_seen();
    assert_eq!(seen.iter().filter(|k| *k == "good-key").count(), 2, "{seen:?}");
}
