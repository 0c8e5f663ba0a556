//! Every route on its happy path.

use crate::support::mock::{completion, content_chunk, event, finish_chunk};
use crate::support::{Mock, MockReply, Proxy};
use serde_json::{Value, json};

fn env_for(mock: &Mock, extra: &str) -> String {
    format!("OPENAI_API_KEY=sk-route-key-0001\nOPENAI_API_BASE={}\nPROXY_API_KEY=proxy-key\n{extra}", mock.base())
}

fn upstream() -> Mock {
    Mock::start(|req| match (req.method.as_str(), req.url.as_str()) {
        ("POST", "/v1/chat/completions") => MockReply::json(200, completion("hello there")),
        ("POST", "/v1/embeddings") => MockReply::json(
            200,
            json!({"object": "list", "model": "emb",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
                     {"object": "embedding", "index": 1, "embedding": [2.0, 0.0, -1.5]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}}),
        ),
        ("GET", "/v1/models") => MockReply::json(
            200,
            json!({"object": "list", "data": [
            {"id": "gpt-up", "object": "model"}, {"id": "hidden-preview", "object": "model"}]}),
        ),
        _ => MockReply::json(404, json!({"error": {"message": "no such route"}})),
    })
}

#[test]
fn root_and_health_need_no_key() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, ""));
    let c = proxy.client();
    let health = c.get("/health");
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    assert_eq!(health.header("content-type"), Some("application/json"));
    let root = c.get("/");
    assert_eq!(root.status, 200);
    assert!(root.json()["status"].as_str().unwrap().contains("running"));
}

#[test]
fn chat_completion_is_relayed_with_the_bare_model_and_the_provider_key() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, ""));
    let answer = proxy.client_with_key("proxy-key").post(
        "/v1/chat/completions",
        r#"{"model":"openai/gpt-up","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "hello there");
    let sent = &mock.requests()[0];
    assert_eq!(sent.url, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-route-key-0001"));
    let body = sent.json();
    assert_eq!(body["model"], "gpt-up");
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["messages"][0]["content"], "hi");
}

#[test]
fn x_api_key_is_accepted_as_the_proxy_key() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, ""));
    let answer = proxy.client().post_with(
        "/v1/chat/completions",
        r#"{"model":"openai/gpt-up","messages":[]}"#,
        "x-api-key: proxy-key\r\n",
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[test]
fn embeddings_honour_float_and_base64() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, ""));
    let c = proxy.client_with_key("proxy-key");
    let floats = c.post("/v1/embeddings", r#"{"model":"openai/emb","input":["a","b"],"encoding_format":"float"}"#);
    assert_eq!(floats.status, 200, "{}", floats.text());
    assert_eq!(floats.json()["data"][1]["embedding"], json!([2.0, 0.0, -1.5]));
    assert_eq!(floats.json()["usage"]["total_tokens"], 4);

    let packed = c.post("/v1/embeddings", r#"{"model":"openai/emb","input":"a","encoding_format":"base64"}"#);
    assert_eq!(packed.status, 200, "{}", packed.text());
    let b64 = packed.json()["data"][0]["embedding"].as_str().expect("base64 string").to_string();
    assert_eq!(decode_f32(&b64), [0.5, -0.25, 1.0]);
    // The upstream is asked for floats whatever the client wants.
    assert!(mock.requests().iter().all(|r| r.json().get("encoding_format").is_none()));
    assert_eq!(mock.requests()[0].json()["model"], "emb");
}

fn decode_f32(b64: &str) -> Vec<f32> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = Vec::new();
    for c in b64.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64 alphabet") as u8;
        bits.extend((0..6).rev().map(|i| (v >> i) & 1));
    }
    let bytes: Vec<u8> = bits.chunks_exact(8).map(|b| b.iter().fold(0, |acc, bit| acc << 1 | bit)).collect();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn models_merge_static_and_upstream_lists_with_filters() {
    let mock = upstream();
    let proxy =
        Proxy::start(&env_for(&mock, "OPENAI_MODELS='[\"static-one\",\"gpt-up\"]'\nIGNORE_MODELS_OPENAI=*-preview\n"));
    let c = proxy.client_with_key("proxy-key");
    let list = c.get("/v1/models");
    assert_eq!(list.status, 200);
    let ids: Vec<String> =
        list.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["openai/static-one", "openai/gpt-up"]);
    assert_eq!(list.json()["object"], "list");
    assert_eq!(list.json()["data"][0]["object"], "model");

    let card = c.get("/v1/models/openai/gpt-up");
    assert_eq!((card.status, card.json()["id"].clone()), (200, json!("openai/gpt-up")));
    let encoded = c.get("/v1/models/openai%2Fstatic-one");
    assert_eq!(encoded.status, 200, "{}", encoded.text());
    let hidden = c.get("/v1/models/openai/hidden-preview");
    assert_eq!((hidden.status, hidden.error_code()), (404, "model_not_found".into()));

    // The upstream list is cached: three listings, one upstream call.
    c.get("/v1/models");
    assert_eq!(mock.requests().iter().filter(|r| r.url == "/v1/models").count(), 1);
}

#[test]
fn hidden_models_are_refused_on_requests_too() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, "IGNORE_MODELS_OPENAI=*\nWHITELIST_MODELS_OPENAI=gpt-up\n"));
    let c = proxy.client_with_key("proxy-key");
    let refused = c.post("/v1/chat/completions", r#"{"model":"openai/other","messages":[]}"#);
    assert_eq!((refused.status, refused.error_code()), (404, "model_not_found".into()));
    let allowed = c.post("/v1/chat/completions", r#"{"model":"openai/gpt-up","messages":[]}"#);
    assert_eq!(allowed.status, 200);
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn providers_lists_those_with_credentials() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, &format!("GROQ_API_KEY=gk\nLOCAL_API_BASE={}\n", mock.base())));
    let answer = proxy.client_with_key("proxy-key").get("/v1/providers");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!(["groq", "openai"]));
}

#[test]
fn a_custom_provider_routes_to_its_base() {
    let mock = upstream();
    let proxy = Proxy::start(&format!("MYLOCAL_API_BASE={}/\nMYLOCAL_API_KEY=local-key\n", mock.base()));
    let answer = proxy.client().post("/v1/chat/completions", r#"{"model":"mylocal/llama-3","messages":[]}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.requests()[0].json()["model"], "llama-3");
    assert_eq!(mock.keys_seen(), ["local-key"]);
}

#[test]
fn keys_are_used_in_turn() {
    let mock = upstream();
    let proxy =
        Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY_1=key-one\nOPENAI_API_KEY_2=key-two\n", mock.base()));
    let c = proxy.client();
    for _ in 0..4 {
        assert_eq!(c.post("/v1/chat/completions", r#"{"model":"openai/m","messages":[]}"#).status, 200);
    }
    let mut seen = mock.keys_seen();
    seen.sort();
    assert_eq!(seen, ["key-one", "key-one", "key-two", "key-two"]);
}

#[test]
fn streaming_chat_relays_events_and_ends_with_done() {
    let mock = Mock::start(|_| {
        MockReply::sse(vec![
            crate::support::mock::Piece::Bytes(event(&content_chunk("Hel"))),
            crate::support::mock::Piece::Bytes(event(&content_chunk("lo"))),
            crate::support::mock::Piece::Bytes(event(&finish_chunk())),
            crate::support::mock::Piece::Bytes(b"data: [DONE]\n\n".to_vec()),
        ])
    });
    let proxy = Proxy::start(&format!("OPENAI_API_BASE={}\nOPENAI_API_KEY=k\n", mock.base()));
    let mut s = proxy.client().stream("/v1/chat/completions", r#"{"model":"openai/m","messages":[],"stream":true}"#);
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    let events = s.rest();
    let text: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).ok()?["choices"][0]["delta"]["content"].as_str().map(String::from)
        })
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    assert_eq!(events.len(), 4);
}

#[test]
fn request_logging_writes_one_folder_per_request_without_secrets() {
    use crate::support::mock::Piece;
    let mock = Mock::start(|req| {
        if req.json()["stream"] == true {
            MockReply::sse(vec![
                Piece::Bytes(event(&content_chunk("streamed "))),
                Piece::Bytes(event(&content_chunk("text"))),
                Piece::Bytes(event(&finish_chunk())),
                Piece::Bytes(b"data: [DONE]\n\n".to_vec()),
            ])
        } else {
            MockReply::json(200, completion("plain text"))
        }
    });
    let dir = crate::support::TempDir::new();
    dir.write(".env", &env_for(&mock, ""));
    let proxy = Proxy::start_in(dir, &["--enable-request-logging"]);
    let c = proxy.client_with_key("proxy-key");
    assert_eq!(c.post("/v1/chat/completions", r#"{"model":"openai/gpt-up","messages":[]}"#).status, 200);
    let events = c.stream("/v1/chat/completions", r#"{"model":"openai/gpt-up","messages":[],"stream":true}"#).rest();
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    // A clean stop joins the workers, so every log is complete before it is read.
    let (status, dir) = proxy.stop();
    assert!(status.success());
    let root = dir.path().join("logs").join("detailed_logs");
    let mut folders: Vec<_> =
        std::fs::read_dir(&root).expect("detailed_logs exists").map(|e| e.unwrap().path()).collect();
    folders.sort();
    assert_eq!(folders.len(), 2, "{folders:?}");
    let read = |folder: &std::path::Path, name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(folder.join(name)).unwrap_or_else(|_| panic!("{name} in {folder:?}")))
            .unwrap()
    };
    let (plain, streamed) = if folders[0].join("streaming_chunks.jsonl").exists() {
        (&folders[1], &folders[0])
    } else {
        (&folders[0], &folders[1])
    };
    assert_eq!(read(plain, "request.json")["body"]["model"], "openai/gpt-up");
    assert_eq!(read(plain, "final_response.json")["choices"][0]["message"]["content"], "plain text");
    let meta = read(plain, "metadata.json");
    assert_eq!(
        (meta["status"].clone(), meta["provider"].clone(), meta["key"].clone()),
        (json!(200), json!("openai"), json!("...0001"))
    );
    assert_eq!(meta["usage"]["total_tokens"], 5);

    let chunks = std::fs::read_to_string(streamed.join("streaming_chunks.jsonl")).unwrap();
    assert_eq!(chunks.lines().count(), 4, "{chunks}");
    assert_eq!(read(streamed, "final_response.json")["choices"][0]["message"]["content"], "streamed text");
    let meta = read(streamed, "metadata.json");
    assert_eq!((meta["streaming"].clone(), meta["stream_completed"].clone()), (json!(true), json!(true)));

    for folder in &folders {
        for file in std::fs::read_dir(folder).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            assert!(
                !text.contains("sk-route-key-0001") && !text.contains("proxy-key"),
                "a secret reached a request log"
            );
        }
    }
}

#[test]
fn names_without_a_provider_go_through_aliases_then_the_default_provider() {
    let mock = upstream();
    let aliases = r#"MODEL_ALIASES='{"claude-*": "openai/from-glob", "gpt-4o-mini": "openai/from-exact", "gpt-4o-*": "openai/glob-loses"}'"#;
    let proxy = Proxy::start(&env_for(&mock, aliases));
    let c = proxy.client_with_key("proxy-key");
    let chat = |model: &str| c.post("/v1/chat/completions", &json!({"model": model, "messages": []}).to_string());
    for (asked, sent) in [("claude-sonnet-4-5", "from-glob"), ("gpt-4o-mini", "from-exact"), ("openai/as-is", "as-is")]
    {
        assert_eq!(chat(asked).status, 200, "{asked}");
        assert_eq!(mock.requests().last().unwrap().json()["model"], sent, "{asked}");
    }
    // No alias and no DEFAULT_PROVIDER: a bare name is a 400 that says how to fix it.
    let bare = chat("llama-3");
    assert_eq!((bare.status, bare.error_code().as_str()), (400, "invalid_request"));
    assert!(bare.text().contains("DEFAULT_PROVIDER"), "{}", bare.text());

    let proxy = Proxy::start(&env_for(&mock, "DEFAULT_PROVIDER=openai\n"));
    let c = proxy.client_with_key("proxy-key");
    let answer = c.post("/v1/chat/completions", r#"{"model":"meta-llama/llama-3","messages":[]}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.requests().last().unwrap().json()["model"], "meta-llama/llama-3", "the name goes unchanged");
}

#[test]
fn a_bad_model_aliases_value_stops_the_start_with_a_clear_message() {
    let dir = crate::support::TempDir::new();
    dir.write(".env", "OPENAI_API_KEY=k\nMODEL_ALIASES={\"x\": \"no-provider\"}\n");
    let (code, _, err) = crate::support::run_cli(dir.path(), &["models"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MODEL_ALIASES") && err.contains("no-provider"), "{err}");
}

#[test]
fn every_v1_route_is_served_without_the_prefix_too() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, ""));
    let c = proxy.client_with_key("proxy-key");
    let chat = c.post("/chat/completions", r#"{"model":"openai/m","messages":[]}"#);
    assert_eq!(chat.status, 200, "{}", chat.text());
    assert_eq!(c.get("/models").status, 200);
    assert_eq!(c.get("/providers").json(), json!(["openai"]));
    // The same auth applies.
    assert_eq!(proxy.client().post("/chat/completions", "{}").status, 401);
    assert_eq!(c.get("/nowhere").error_code(), "unknown_route");
}

#[test]
fn cors_preflight_allows_the_headers_it_asks_for() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, ""));
    let asked = "authorization, content-type, x-stainless-os, x-stainless-retry-count, anthropic-beta";
    let answer = proxy.client().raw(
        format!(
            "OPTIONS /v1/messages HTTP/1.1\r\nHost: x\r\nOrigin: http://app\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: {asked}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-headers"), Some(asked));
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
}

/// An embeddings upstream whose vector for each input is `[length of the input]`, whose usage
/// is 3 tokens per input, and which refuses any batch holding the input "bad".
fn embeddings_upstream() -> Mock {
    Mock::start(|req| {
        let inputs: Vec<String> =
            req.json()["input"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
        if inputs.iter().any(|i| i == "bad") {
            return MockReply::json(400, json!({"error": {"message": "bad input", "type": "invalid_request_error"}}));
        }
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": [text.len() as f64]}))
            .collect();
        let tokens = 3 * inputs.len();
        MockReply::json(
            200,
            json!({"object": "list", "model": "emb", "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        )
    })
}

/// Sends each body from its own thread, all at once; the answers in the same order.
fn embed_concurrently(proxy: &Proxy, bodies: Vec<Value>) -> Vec<crate::support::Answer> {
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let client = proxy.client_with_key("proxy-key");
            std::thread::spawn(move || client.post("/v1/embeddings", &body.to_string()))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_embedding_requests_share_one_upstream_call() {
    let mock = embeddings_upstream();
    // A window far longer than the test: the batch goes the moment its six inputs are in.
    let proxy = Proxy::start(&env_for(&mock, "EMBEDDING_BATCH_WINDOW_MS=60000\nEMBEDDING_BATCH_MAX_INPUTS=6\n"));
    let inputs = [vec!["a"], vec!["bb", "ccc"], vec!["dddd"], vec!["eeeee", "ffffff"]];
    let bodies = inputs.iter().map(|i| json!({"model": "openai/emb", "input": i})).collect();
    let answers = embed_concurrently(&proxy, bodies);
    assert_eq!(mock.requests().len(), 1, "one upstream call for the batch");
    assert_eq!(mock.requests()[0].json()["input"].as_array().unwrap().len(), 6);
    let mut tokens = 0;
    for (answer, asked) in answers.iter().zip(&inputs) {
        assert_eq!(answer.status, 200, "{}", answer.text());
        let v = answer.json();
        let lengths: Vec<f64> =
            v["data"].as_array().unwrap().iter().map(|d| d["embedding"][0].as_f64().unwrap()).collect();
        let expected: Vec<f64> = asked.iter().map(|t| t.len() as f64).collect();
        assert_eq!(lengths, expected, "each caller gets its own vectors, in its own order");
        assert_eq!(v["data"][0]["index"], 0);
        assert_eq!(v["usage"]["prompt_tokens"], 3 * asked.len() as u64, "usage in proportion to its inputs");
        tokens += v["usage"]["total_tokens"].as_u64().unwrap();
        assert_eq!(v["model"], "openai/emb");
    }
    assert_eq!(tokens, 18, "the shares add up to the upstream's total");
}

#[test]
fn an_upstream_error_reaches_every_caller_of_a_batch_and_window_0_turns_batching_off() {
    let mock = embeddings_upstream();
    let proxy = Proxy::start(&env_for(&mock, "EMBEDDING_BATCH_WINDOW_MS=60000\nEMBEDDING_BATCH_MAX_INPUTS=2\n"));
    let bodies = ["fine", "bad"].iter().map(|i| json!({"model": "openai/emb", "input": i})).collect();
    for answer in embed_concurrently(&proxy, bodies) {
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert_eq!(answer.json()["error"]["message"], "bad input");
    }
    assert_eq!(mock.requests().len(), 1);

    let mock = embeddings_upstream();
    let proxy = Proxy::start(&env_for(&mock, "EMBEDDING_BATCH_WINDOW_MS=0\n"));
    let bodies = ["a", "b", "c"].iter().map(|i| json!({"model": "openai/emb", "input": i})).collect();
    assert!(embed_concurrently(&proxy, bodies).iter().all(|a| a.status == 200));
    assert_eq!(mock.requests().len(), 3, "no batching with a window of 0");
}

#[test]
fn twenty_concurrent_single_inputs_become_at_most_two_upstream_calls() {
    let mock = embeddings_upstream();
    // Twenty inputs fill a batch, which then goes at once; the window only bounds stragglers.
    let proxy = Proxy::start(&env_for(&mock, "EMBEDDING_BATCH_WINDOW_MS=5000\nEMBEDDING_BATCH_MAX_INPUTS=20\n"));
    let texts: Vec<String> = (1..=20).map(|n| "x".repeat(n)).collect();
    let bodies = texts.iter().map(|t| json!({"model": "openai/emb", "input": t})).collect();
    let answers = embed_concurrently(&proxy, bodies);
    for (answer, text) in answers.iter().zip(&texts) {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["data"][0]["embedding"], json!([text.len() as f64]), "its own vector");
    }
    let calls = mock.requests().len();
    assert!((1..=2).contains(&calls), "{calls} upstream calls for 20 concurrent requests");
}

/// The value of the sample `line_start` (name and labels as written) in a Prometheus text page.
fn sample(page: &str, line_start: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_what_was_sent_under_bounded_labels() {
    let mock = upstream();
    let proxy = Proxy::start(&env_for(&mock, "OPENAI_MODELS='[\"listed\"]'\n"));
    assert_eq!(proxy.client().get("/metrics").status, 401, "the same auth as /v1");
    let c = proxy.client_with_key("proxy-key");
    for model in ["listed", "listed", "listed", "random-1", "random-2"] {
        let answer =
            c.post("/v1/chat/completions", &json!({"model": format!("openai/{model}"), "messages": []}).to_string());
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(c.post("/v1/chat/completions", r#"{"model":"nosuch/m","messages":[]}"#).status, 404);
    let page = c.get("/metrics");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let text = page.text();
    let chat = r#"keyrelay_requests_total{route="/v1/chat/completions",provider="openai","#;
    assert_eq!(sample(&text, &format!(r#"{chat}model="listed",status="200"}}"#)), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, &format!(r#"{chat}model="other",status="200"}}"#)),
        Some(2.0),
        "models outside the lists fold"
    );
    let refused = r#"keyrelay_requests_total{route="/v1/chat/completions",provider="none",model="none",status="404"}"#;
    assert_eq!(sample(&text, refused), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"keyrelay_upstream_attempts_total{provider="openai",class="success"}"#), Some(5.0));
    assert_eq!(sample(&text, r#"keyrelay_upstream_latency_seconds_count{provider="openai"}"#), Some(5.0));
    assert_eq!(sample(&text, r#"keyrelay_keys{provider="openai",state="ready"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"keyrelay_in_flight{provider="openai"}"#), Some(0.0));
    assert!(sample(&text, "keyrelay_log_lines_dropped_total").is_some());
}
