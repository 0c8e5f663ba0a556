//! AWS Bedrock (`bedrock/<model id>`) against a mock of Bedrock Runtime's Converse API: every
//! call's SigV4 signature recomputed here from the known secret (an implementation of the
//! signing steps of its own, with `ring` and `sha2`), the Bedrock API key as a bearer, streams
//! in the binary event-stream framing, tools, rotation on `ThrottlingException` and none on
//! `ValidationException`, an exception as a stream's first event, and a mock that echoes
//! the secret access key and session token everywhere while none of it comes out.

use crate::support::eventstream::encode;
use crate::support::mock::Piece;
use crate::support::{Mock, MockReply, Proxy, Recorded, TempDir, run_cli};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const AKID_1: &str = "AKIAEXAMPLEKEY0001";
const SECRET_1: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYsecret0001";
const AKID_2: &str = "AKIAEXAMPLEKEY0002";
const SECRET_2: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYsecret0002";
const TOKEN_2: &str = "FwoGZXIvYXdzEXAMPLEsessionTokenQm7Zt2Vx9Lp4Rn8W";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const PATH: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";

fn proxy(mock: &Mock, extra: &str) -> Proxy {
    Proxy::start(&env(mock, extra))
}

fn env(mock: &Mock, extra: &str) -> String {
    format!(
        "BEDROCK_API_BASE=http://127.0.0.1:{}\nBEDROCK_AWS_REGION=eu-west-3\n\
         BEDROCK_AWS_ACCESS_KEY_ID_1={AKID_1}\nBEDROCK_AWS_SECRET_ACCESS_KEY_1={SECRET_1}\n\
         BEDROCK_AWS_ACCESS_KEY_ID_2={AKID_2}\nBEDROCK_AWS_SECRET_ACCESS_KEY_2={SECRET_2}\n\
         BEDROCK_AWS_SESSION_TOKEN_2={TOKEN_2}\n{extra}",
        mock.port
    )
}

fn chat(stream: bool) -> String {
    json!({"model": format!("bedrock/{MODEL}"), "stream": stream,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    .to_string()
}

fn converse(text: &str) -> Value {
    json!({"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn", "usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}})
}

fn frame(kind: &str, payload: Value) -> Vec<u8> {
    encode(
        &[(":message-type", "event"), (":event-type", kind), (":content-type", "application/json")],
        payload.to_string().as_bytes(),
    )
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data.as_bytes()).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The access key id of a SigV4-signed call, after checking its signature the way Bedrock
/// would: the canonical request rebuilt from what arrived (the path's segments encoded once
/// more, the signed headers, the body's hash), the string to sign, and the HMAC chain with
/// the secret of that key id, for region eu-west-3 and service bedrock.
#[track_caller]
fn verify_sigv4(call: &Recorded) -> String {
    let authorization = call.header("authorization").expect("an authorization header");
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256 Credential=").expect("a SigV4 authorization");
    let (credential, rest) = rest.split_once(", SignedHeaders=").unwrap();
    let (signed_headers, signature) = rest.split_once(", Signature=").unwrap();
    let mut scope = credential.split('/');
    let (akid, date) = (scope.next().unwrap(), scope.next().unwrap());
    assert_eq!(scope.collect::<Vec<_>>(), ["eu-west-3", "bedrock", "aws4_request"]);
    let secret = match akid {
        AKID_1 => SECRET_1,
        AKID_2 => SECRET_2,
        other => panic!("unknown access key id {other}"),
    };
    let names: Vec<&str> = signed_headers.split(';').collect();
    for needed in ["content-type", "host", "x-amz-date"] {
        assert!(names.contains(&needed), "{needed} is signed: {signed_headers}");
    }
    assert_eq!(names.contains(&"x-amz-security-token"), akid == AKID_2, "the session token is signed");
    let canonical_headers: String = names
        .iter()
        .map(|n| format!("{n}:{}\n", call.header(n).unwrap_or_else(|| panic!("{n} sent")).trim()))
        .collect();
    let (path, query) = call.url.split_once('?').unwrap_or((&call.url, ""));
    let encode = |s: &str| s.replace('%', "%25");
    let canonical_path = path.split('/').map(encode).collect::<Vec<_>>().join("/");
    let canonical_request = format!(
        "{}\n{canonical_path}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        call.method,
        hex(&Sha256::digest(&call.body))
    );
    let amz_date = call.header("x-amz-date").unwrap();
    assert!(amz_date.starts_with(date) && amz_date.len() == 16, "{amz_date}");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/eu-west-3/bedrock/aws4_request\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date);
    for part in ["eu-west-3", "bedrock", "aws4_request"] {
        key = hmac(&key, part);
    }
    assert_eq!(signature, hex(&hmac(&key, &string_to_sign)), "signature of:\n{canonical_request}");
    akid.to_string()
}

#[test]
fn chat_is_signed_with_sigv4_and_translated() {
    let mock = Mock::start(|_| MockReply::json(200, converse("hello from bedrock")));
    let proxy = proxy(&mock, "");
    for _ in 0..2 {
        let answer = proxy.client().post("/v1/chat/completions", &chat(false));
        assert_eq!(answer.status, 200, "{}", answer.text());
        let body = answer.json();
        assert_eq!(body["choices"][0]["message"]["content"], "hello from bedrock");
        assert_eq!(body["model"], format!("bedrock/{MODEL}"));
        assert_eq!(body["usage"]["total_tokens"], 10);
    }
    let calls = mock.requests();
    for call in &calls {
        assert_eq!((call.method.as_str(), call.url.as_str()), ("POST", PATH));
        assert_eq!(call.header("host"), Some(format!("127.0.0.1:{}", mock.port).as_str()));
        assert_eq!(call.json()["system"], json!([{"text": "Be brief."}]));
        assert_eq!(call.json()["messages"], json!([{"role": "user", "content": [{"text": "hi"}]}]));
        let akid = verify_sigv4(call);
        assert_eq!(call.header("x-amz-security-token"), (akid == AKID_2).then_some(TOKEN_2));
    }
}

#[test]
fn a_bedrock_api_key_is_a_bearer() {
    let mock = Mock::start(|_| MockReply::json(200, converse("via api key")));
    let proxy = Proxy::start(&format!(
        "BEDROCK_API_BASE=http://127.0.0.1:{}\nBEDROCK_API_KEY=ABSKbedrockApiKey0001\n",
        mock.port
    ));
    let answer = proxy.client().post("/v1/chat/completions", &chat(false));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let call = &mock.requests()[0];
    assert_eq!(call.header("authorization"), Some("Bearer ABSKbedrockApiKey0001"));
    assert_eq!(call.header("x-amz-date"), None);
}

#[test]
fn streams_come_as_event_stream_frames_with_tools() {
    let frames = [
        frame("messageStart", json!({"role": "assistant"})),
        frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Let me "}})),
        frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "check."}})),
        frame(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_1", "name": "get_weather"}}}),
        ),
        frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":\"Rome\"}"}}}),
        ),
        frame("contentBlockStop", json!({"contentBlockIndex": 1})),
        frame("messageStop", json!({"stopReason": "tool_use"})),
        frame("metadata", json!({"usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13}})),
    ]
    .concat();
    // Cut at odd places, across frames and inside them.
    let pieces: Vec<Piece> = frames.chunks(37).map(|c| Piece::Bytes(c.to_vec())).collect();
    let pieces = std::sync::Mutex::new(Some(pieces));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().unwrap_or_default()));
    let proxy = proxy(&mock, "");
    let body = json!({"model": format!("bedrock/{MODEL}"), "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "weather in Rome?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
    let events = proxy.client().stream("/v1/chat/completions", &body.to_string()).rest();
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let chunks: Vec<Value> =
        events.iter().filter_map(|e| e.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Let me check.");
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert_eq!(calls[1][0]["function"]["arguments"], "{\"city\":\"Rome\"}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    assert_eq!(chunks.iter().rev().find_map(|c| c.get("usage")).unwrap()["total_tokens"], 13);
    assert!(chunks.iter().all(|c| c["model"] == format!("bedrock/{MODEL}")));
    let call = &mock.requests()[0];
    assert_eq!(call.url, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream");
    assert_eq!(call.json()["toolConfig"]["tools"][0]["toolSpec"]["name"], "get_weather");
    verify_sigv4(call);
}

#[test]
fn a_corrupted_frame_ends_the_stream_with_an_in_band_error() {
    let mut bad = frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": " lost"}}));
    let at = bad.len() - 2;
    bad[at] ^= 0xff;
    let pieces = vec![
        Piece::Bytes(frame("messageStart", json!({"role": "assistant"}))),
        Piece::Bytes(frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "kept"}}))),
        Piece::Bytes(bad),
        Piece::Bytes(frame("messageStop", json!({"stopReason": "end_turn"}))),
    ];
    let pieces = std::sync::Mutex::new(Some(pieces));
    let mock = Mock::start(move |_| MockReply::sse(pieces.lock().unwrap().take().unwrap_or_default()));
    let proxy = proxy(&mock, "");
    let events = proxy.client().stream("/v1/chat/completions", &chat(true)).rest();
    let joined = events.join("\n");
    assert!(joined.contains("kept") && !joined.contains("lost"), "{joined}");
    let error = events.iter().rev().find(|e| e.contains("\"error\"")).expect("an in-band error");
    assert!(error.contains("stream_interrupted") && error.contains("CRC"), "{error}");
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    // The proxy is still up.
    assert_eq!(proxy.client().get("/health").status, 200);
}

/// A mock that throttles the first call (whichever key it came with) and answers the rest.
fn throttle_first(status: u16, kind: &'static str) -> Mock {
    let count = std::sync::atomic::AtomicUsize::new(0);
    Mock::start(move |_| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            MockReply::Full {
                status,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-amzn-errortype".into(), format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")),
                ],
                body: json!({"message": format!("{kind} for this call")}).to_string().into_bytes(),
            }
        } else {
            MockReply::json(200, converse("second key"))
        }
    })
}

#[test]
fn a_throttling_exception_rotates_to_the_other_pair() {
    let mock = throttle_first(429, "ThrottlingException");
    let proxy = proxy(&mock, "");
    let answer = proxy.client().post("/v1/chat/completions", &chat(false));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "second key");
    let calls = mock.requests();
    assert_eq!(calls.len(), 2);
    let (first, second) = (verify_sigv4(&calls[0]), verify_sigv4(&calls[1]));
    assert_ne!(first, second, "rotated to the other key pair");
    let masked = format!("...{}", &first[first.len() - 4..]);
    let status = proxy.key_status(&masked);
    assert_eq!(status["state"], "cooldown", "{status}");
    assert!(status["cooldowns"][0]["reason"].as_str().unwrap().contains("rate limited"), "{status}");
}

#[test]
fn a_validation_exception_goes_back_without_rotating() {
    let mock = throttle_first(400, "ValidationException");
    let proxy = proxy(&mock, "");
    let answer = proxy.client().post("/v1/chat/completions", &chat(false));
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("ValidationException for this call"), "{}", answer.text());
    assert_eq!(mock.requests().len(), 1, "no rotation on a request error");
    for masked in ["...0001", "...0002"] {
        assert_ne!(proxy.key_status(masked)["state"], "cooldown");
    }
}

#[test]
fn an_exception_as_the_first_stream_event_rotates() {
    let count = std::sync::atomic::AtomicUsize::new(0);
    let mock = Mock::start(move |_| {
        let first = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let frames = if first {
            vec![Piece::Bytes(encode(
                &[(":message-type", "exception"), (":exception-type", "throttlingException")],
                br#"{"message":"Too many tokens, please wait before trying again."}"#,
            ))]
        } else {
            vec![
                Piece::Bytes(frame("messageStart", json!({"role": "assistant"}))),
                Piece::Bytes(frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "ok"}}))),
                Piece::Bytes(frame("messageStop", json!({"stopReason": "end_turn"}))),
            ]
        };
        MockReply::sse(frames)
    });
    let proxy = proxy(&mock, "");
    let events = proxy.client().stream("/v1/chat/completions", &chat(true)).rest();
    assert!(events.iter().any(|e| e.contains("\"ok\"")), "{events:?}");
    assert!(!events.iter().any(|e| e.contains("\"error\"")), "{events:?}");
    let calls = mock.requests();
    assert_eq!(calls.len(), 2);
    assert_ne!(verify_sigv4(&calls[0]), verify_sigv4(&calls[1]));
}

#[test]
fn embeddings_are_refused_and_ids_cannot_escape_their_segment() {
    let mock = Mock::start(|_| MockReply::json(200, converse("x")));
    let proxy = proxy(&mock, "");
    let answer = proxy
        .client()
        .post("/v1/embeddings", &json!({"model": "bedrock/amazon.titan-embed-text-v2:0", "input": "x"}).to_string());
    assert_eq!(answer.status, 400, "{}", answer.text());
    let body =
        json!({"model": "bedrock/../../foundation-models?x=1#", "messages": [{"role": "user", "content": "hi"}]});
    let answer = proxy.client().post("/v1/chat/completions", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.requests()[0].url, "/model/..%2F..%2Ffoundation-models%3Fx%3D1%23/converse");
    verify_sigv4(&mock.requests()[0]);
    let answer =
        proxy.client().post("/v1/chat/completions", &json!({"model": "bedrock/..", "messages": []}).to_string());
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(mock.requests().len(), 1);
}

/// Every 8-character window of the secrets, in any case.
#[track_caller]
fn assert_clean(what: &str, text: &str) {
    let lower = text.to_ascii_lowercase();
    for secret in [SECRET_1, SECRET_2, TOKEN_2] {
        for window in secret.as_bytes().windows(8) {
            let window = String::from_utf8_lossy(window).to_ascii_lowercase();
            assert!(!lower.contains(&window), "{what} leaks {window:?}:\n{text}");
        }
    }
}

#[test]
fn the_secrets_never_come_out_and_status_shows_the_key_ids_masked() {
    let echo = format!("echo {SECRET_1} {SECRET_2} {TOKEN_2} {}", SECRET_1.to_ascii_uppercase());
    let error_echo = echo.clone();
    let mock = Mock::start(move |req| {
        if req.url.ends_with("/converse-stream") {
            return MockReply::sse(vec![
                Piece::Bytes(frame("messageStart", json!({"role": "assistant"}))),
                Piece::Bytes(frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": echo}}))),
                Piece::Bytes(frame("messageStop", json!({"stopReason": "end_turn"}))),
            ]);
        }
        MockReply::Full {
            status: 500,
            headers: vec![
                ("x-amzn-errortype".into(), "InternalServerException".into()),
                ("x-echo".into(), error_echo.clone()),
            ],
            body: json!({"message": error_echo}).to_string().into_bytes(),
        }
    });
    let dir = TempDir::new();
    dir.write(".env", &env(&mock, ""));
    let proxy = Proxy::start_in(dir, &["--enable-request-logging"]);
    let answer = proxy.client().post("/v1/chat/completions", &chat(false));
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_clean("the error answer", &answer.text());
    let events = proxy.client().stream("/v1/chat/completions", &chat(true)).rest();
    // The echo breaks the frame's CRC once redacted: an in-band error, never the secret.
    assert_clean("the stream", &events.join("\n"));
    let (code, out, err) =
        run_cli(proxy.dir().path(), &["status", "--url", &format!("http://127.0.0.1:{}", proxy.port)], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("...0001") && out.contains("...0002"), "{out}");
    assert_clean("status", &out);
    let lines = proxy.status();
    assert_clean("status --json", &serde_json::to_string(&lines).unwrap());
    assert_clean("the log", &proxy.logs());
    let (_, dir) = proxy.stop();
    walk(dir.path(), &mut |path, text| {
        if !path.ends_with(".env") {
            assert_clean(&path.display().to_string(), text);
        }
    });
}

fn walk(dir: &std::path::Path, check: &mut dyn FnMut(&std::path::Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, check);
        } else if let Ok(bytes) = std::fs::read(&path) {
            check(&path, &String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn a_half_pair_stops_the_load_naming_the_variable() {
    let dir = TempDir::new();
    dir.write(".env", "BEDROCK_AWS_ACCESS_KEY_ID_3=AKIAHALF\n");
    let (code, _, err) = run_cli(dir.path(), &["models"], "");
    assert_ne!(code, 0);
    assert!(err.contains("BEDROCK_AWS_SECRET_ACCESS_KEY_3"), "{err}");
}
