//! Azure OpenAI (`azure/<deployment>`) against a mock of its API: the deployments API's URLs
//! with `api-version` and the v1 API's, the key in `api-key` (never a bearer), chat whole and
//! streamed, embeddings, a content-filter refusal passed back without rotating, and a 429's
//! `retry-after-ms` honoured as the key's cooldown.

use crate::support::mock::{Piece, completion, content_chunk, event, finish_chunk};
use crate::support::{Mock, MockReply, Proxy, Recorded};
use serde_json::{Value, json};

const CHAT: &str = r#"{"model":"azure/gpt4o-prod","messages":[{"role":"user","content":"hi"}]}"#;

/// The mock's origin, `http://127.0.0.1:PORT`, as an Azure resource's endpoint.
fn origin(mock: &Mock) -> String {
    format!("http://127.0.0.1:{}", mock.port)
}

fn proxy(base: &str, extra: &str) -> Proxy {
    Proxy::start(&format!("AZURE_API_BASE={base}\nAZURE_API_KEY_1=az-key-0001\nAZURE_API_KEY_2=az-key-0002\n{extra}"))
}

#[track_caller]
fn assert_azure_key(call: &Recorded) {
    let key = call.header("api-key").expect("an api-key header");
    assert!(key == "az-key-0001" || key == "az-key-0002", "{key}");
    assert_eq!(call.header("authorization"), None, "the key is not sent as a bearer");
}

#[test]
fn chat_goes_to_the_deployment_with_api_version_and_api_key() {
    let mock = Mock::start(|_| MockReply::json(200, completion("hello from azure")));
    let proxy = proxy(&origin(&mock), "");
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["choices"][0]["message"]["content"], "hello from azure");
    assert_eq!(body["model"], "azure/m");
    let calls = mock.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].url, "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21");
    assert_azure_key(&calls[0]);
    assert_eq!(calls[0].json()["model"], "gpt4o-prod");
}

#[test]
fn streamed_chat_passes_through() {
    let mock = Mock::start(|_| {
        MockReply::sse(vec![
            Piece::Bytes(event(&content_chunk("str"))),
            Piece::Bytes(event(&content_chunk("eamed"))),
            Piece::Bytes(event(&finish_chunk())),
            Piece::Bytes(b"data: [DONE]\n\n".to_vec()),
        ])
    });
    let proxy = proxy(&origin(&mock), "AZURE_API_VERSION=2025-04-01-preview\n");
    let body = r#"{"model":"azure/gpt4o-prod","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let events = proxy.client().stream("/v1/chat/completions", body).rest();
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let chunks: Vec<Value> =
        events.iter().filter_map(|e| e.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "streamed");
    assert!(chunks.iter().all(|c| c["model"] == "azure/m"), "{chunks:?}");
    let calls = mock.requests();
    assert_eq!(calls[0].url, "/openai/deployments/gpt4o-prod/chat/completions?api-version=2025-04-01-preview");
    assert_azure_key(&calls[0]);
    assert_eq!(calls[0].json()["stream"], true);
}

#[test]
fn embeddings_go_to_the_deployment() {
    let mock = Mock::start(|_| {
        MockReply::json(
            200,
            json!({"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
        )
    });
    let proxy = proxy(&origin(&mock), "EMBEDDING_BATCH_WINDOW_MS=0\n");
    let answer = proxy.client().post("/v1/embeddings", r#"{"model":"azure/embed-prod","input":"hello"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["data"][0]["embedding"], json!([0.25, -0.5]));
    assert_eq!(body["model"], "azure/text-embedding-3-small");
    let calls = mock.requests();
    assert_eq!(calls[0].url, "/openai/deployments/embed-prod/embeddings?api-version=2024-10-21");
    assert_azure_key(&calls[0]);
    assert_eq!(calls[0].json()["input"], json!(["hello"]));
}

#[test]
fn the_v1_api_takes_the_model_in_the_body() {
    let mock = Mock::start(|req| {
        if req.url.ends_with("/embeddings") {
            MockReply::json(
                200,
                json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}]}),
            )
        } else {
            MockReply::json(200, completion("v1"))
        }
    });
    let proxy = proxy(&format!("{}/openai/v1", origin(&mock)), "");
    let chat = proxy.client().post("/v1/chat/completions", r#"{"model":"azure/gpt-4o","messages":[]}"#);
    assert_eq!(chat.status, 200, "{}", chat.text());
    let embed = proxy.client().post("/v1/embeddings", r#"{"model":"azure/text-embedding-3-small","input":"x"}"#);
    assert_eq!(embed.status, 200, "{}", embed.text());
    let calls = mock.requests();
    assert_eq!(calls[0].url, "/openai/v1/chat/completions");
    assert_eq!(calls[0].json()["model"], "gpt-4o");
    assert_eq!(calls[1].url, "/openai/v1/embeddings");
    assert_eq!(calls[1].json()["model"], "text-embedding-3-small");
    calls.iter().for_each(assert_azure_key);
}

#[test]
fn a_deployment_that_is_not_one_path_segment_is_refused() {
    let mock = Mock::start(|_| MockReply::json(200, completion("no")));
    let proxy = proxy(&origin(&mock), "");
    for model in ["azure/a%2Fb", "azure/../x", "azure/d?api-version=1"] {
        let body = json!({"model": model, "messages": []}).to_string();
        let answer = proxy.client().post("/v1/chat/completions", &body);
        assert_eq!(answer.status, 400, "{model}: {}", answer.text());
    }
    assert!(mock.requests().is_empty());
}

#[test]
fn without_a_base_a_request_names_the_variable() {
    let proxy = Proxy::start("OPENAI_API_KEY=sk-x\n");
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("AZURE_API_BASE"), "{}", answer.text());
}

#[test]
fn a_content_filter_refusal_goes_back_without_trying_another_key() {
    let mock = Mock::start(|_| {
        MockReply::json(
            400,
            json!({"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
                "type": null, "param": "prompt", "code": "content_filter", "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {"violence": {"filtered": true, "severity": "high"}}}}}),
        )
    });
    let proxy = proxy(&origin(&mock), "");
    let answer = proxy.client().post("/v1/chat/completions", CHAT);
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.error_code(), "content_filter", "{}", answer.text());
    assert_eq!(mock.requests().len(), 1, "no rotation on a request error");
    for masked in ["...0001", "...0002"] {
        assert_ne!(proxy.key_status(masked)["state"], "cooldown");
    }
}

#[test]
fn a_429_with_retry_after_ms_rotates_and_cools_the_key_that_long() {
    let mock = Mock::start(|req| {
        if req.header("api-key") == Some("az-key-0001") {
            MockReply::Full {
                status: 429,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("retry-after-ms".into(), "40000".into()),
                ],
                body: json!({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation have exceeded the rate limit."}})
                    .to_string()
                    .into_bytes(),
            }
        } else {
            MockReply::json(200, completion("from key 2"))
        }
    });
    let proxy = proxy(&origin(&mock), "");
    // Balanced rotation may start on either key: ask until the first has been tried.
    for _ in 0..4 {
        let answer = proxy.client().post("/v1/chat/completions", CHAT);
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["choices"][0]["message"]["content"], "from key 2");
        if mock.requests().iter().any(|c| c.header("api-key") == Some("az-key-0001")) {
            break;
        }
    }
    let keys: Vec<String> = mock.requests().iter().filter_map(|c| c.header("api-key").map(String::from)).collect();
    let first = keys.iter().position(|k| k == "az-key-0001").expect("the first key was tried");
    assert_eq!(keys.get(first + 1).map(String::as_str), Some("az-key-0002"), "rotated at once: {keys:?}");
    let status = proxy.key_status("...0001");
    assert_eq!(status["state"], "cooldown", "{status}");
    let cooldown = &status["cooldowns"][0];
    let left = cooldown["seconds_left"].as_u64().unwrap();
    assert!((37..=40).contains(&left), "about 40 s: {status}");
    assert!(cooldown["reason"].as_str().unwrap().contains("rate limited"), "{status}");
    // The cooling key is left alone.
    let before = mock.requests().len();
    for _ in 0..2 {
        assert_eq!(proxy.client().post("/v1/chat/completions", CHAT).status, 200);
    }
    assert!(mock.requests()[before..].iter().all(|c| c.header("api-key") == Some("az-key-0002")));
}
