//! What agent clients and their libraries lean on beyond plain chat: legacy `/v1/completions`,
//! `response_format` honoured by the translated families, token-id embedding inputs, one model
//! naming rule on every route, and `MODEL_ALIASES` in the model lists.

use crate::support::mock::{Piece, completion, content_chunk, event, finish_chunk};
use crate::support::{Mock, MockReply, Proxy, TempDir, run_cli};
use serde_json::{Value, json};

/// The `data:` payloads of a stream, `[DONE]` left out (and checked to be last).
fn payloads(events: &[String]) -> Vec<Value> {
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"), "{events:?}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("a data event")).expect("JSON"))
        .collect()
}

fn openai_proxy(mock: &Mock, extra: &str) -> Proxy {
    Proxy::start(&format!("OPENAI_API_KEY=sk-agents-0001\nOPENAI_API_BASE={}\n{extra}", mock.base()))
}

/// An OpenAI-compatible upstream that answers each chat request with its own prompt, named
/// `m-2025` (a dated id, as upstreams answer).
fn echo_upstream() -> Mock {
    Mock::start(|req| {
        let body = req.json();
        let prompt = body["messages"][0]["content"].as_str().unwrap_or("").to_string();
        let mut answer = completion(&format!("re: {prompt}"));
        answer["model"] = json!("m-2025");
        if body["stream"] == true {
            let mut first = content_chunk(&format!("re: {prompt}"));
            first["model"] = json!("m-2025");
            let mut last = finish_chunk();
            last["model"] = json!("m-2025");
            let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m-2025",
                "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
            let mut pieces = vec![Piece::Bytes(event(&first)), Piece::Bytes(event(&last))];
            if body["stream_options"]["include_usage"] == true {
                pieces.push(Piece::Bytes(event(&usage)));
            }
            pieces.push(Piece::Bytes(b"data: [DONE]\n\n".to_vec()));
            return MockReply::sse(pieces);
        }
        MockReply::json(200, answer)
    })
}

#[test]
fn completions_answer_every_prompt_in_turn() {
    let mock = echo_upstream();
    let proxy = openai_proxy(&mock, "");
    let body = r#"{"model":"openai/m","prompt":["one","two"],"max_tokens":7,"temperature":0,"stop":["\n"],"suffix":"x","echo":true}"#;
    let answer = proxy.client().post("/v1/completions", body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    assert_eq!((v["object"].clone(), v["model"].clone()), (json!("text_completion"), json!("openai/m-2025")));
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    let texts: Vec<(Value, Value, Value)> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["index"].clone(), c["text"].clone(), c["finish_reason"].clone()))
        .collect();
    assert_eq!(texts, [(json!(0), json!("onere: one"), json!("stop")), (json!(1), json!("twore: two"), json!("stop"))]);
    assert_eq!(v["usage"], json!({"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}));
    let sent: Vec<Value> = mock.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["messages"], json!([{"role": "user", "content": "one"}]));
    assert_eq!((sent[0]["model"].clone(), sent[0]["max_tokens"].clone()), (json!("m"), json!(7)));
    assert_eq!((sent[0]["stop"].clone(), sent[0]["temperature"].clone()), (json!(["\n"]), json!(0)));
    assert!(sent[0].get("suffix").is_none() && sent[0].get("prompt").is_none() && sent[0].get("echo").is_none());

    let refused = proxy.client().post("/v1/completions", r#"{"model":"openai/m","prompt":"x","n":2}"#);
    assert_eq!((refused.status, refused.json()["error"]["param"].clone()), (400, json!("n")));
    let missing = proxy.client().post("/v1/completions", r#"{"model":"openai/m"}"#);
    assert_eq!((missing.status, missing.json()["error"]["param"].clone()), (400, json!("prompt")));
    assert_eq!(mock.requests().len(), 2, "refused requests reach no upstream");
    // The route is served without /v1 too.
    let bare = proxy.client().post("/completions", r#"{"model":"openai/m","prompt":"three"}"#);
    assert_eq!(bare.json()["choices"][0]["text"], "re: three");
}

#[test]
fn completions_stream_as_text_completion_chunks() {
    let mock = echo_upstream();
    let proxy = openai_proxy(&mock, "");
    let body = r#"{"model":"openai/m","prompt":["one","two"],"stream":true,"stream_options":{"include_usage":true}}"#;
    let chunks = payloads(&proxy.client().stream("/v1/completions", body).rest());
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}));
    let chunks = &chunks[..chunks.len() - 1];
    for chunk in chunks {
        assert_eq!(
            (chunk["object"].clone(), chunk["model"].clone()),
            (json!("text_completion"), json!("openai/m-2025"))
        );
        assert_eq!(chunk["id"], chunks[0]["id"], "one id for the whole stream");
    }
    let steps: Vec<(Value, Value, Value)> = chunks
        .iter()
        .map(|c| {
            (
                c["choices"][0]["index"].clone(),
                c["choices"][0]["text"].clone(),
                c["choices"][0]["finish_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (json!(0), json!("re: one"), Value::Null),
            (json!(0), json!(""), json!("stop")),
            (json!(1), json!("re: two"), Value::Null),
            (json!(1), json!(""), json!("stop")),
        ]
    );
    // Without include_usage: no usage chunk, and echo comes first.
    let body = r#"{"model":"openai/m","prompt":"hi","stream":true,"echo":true}"#;
    let chunks = payloads(&proxy.client().stream("/v1/completions", body).rest());
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, "hire: hi");
    assert!(chunks.iter().all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())));
}

const PERSON: &str = r#"{"type":"json_schema","json_schema":{"name":"Person","strict":true,"schema":{"type":"object","additionalProperties":false,"properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}}}"#;

fn structured(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"Ada, 36"}}],"response_format":{PERSON}}}"#
    )
}

#[test]
fn json_schema_reaches_gemini_as_a_response_schema() {
    let mock = Mock::start(|req| {
        let text = r#"{"name": "Ada", "age": 36}"#;
        let answer = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "modelVersion": "gemini-x-001"});
        if req.url.contains("streamGenerateContent") {
            return MockReply::sse(vec![Piece::Bytes(format!("data: {answer}\r\n\r\n").into_bytes())]);
        }
        MockReply::json(200, answer)
    });
    let proxy = Proxy::start(&format!("GEMINI_API_KEY=gm-0001\nGEMINI_API_BASE={}beta\n", mock.base()));
    let answer = proxy.client().post("/v1/chat/completions", &structured("gemini/gemini-x", false));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    let content: Value = serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"name": "Ada", "age": 36}));
    assert_eq!(v["model"], "gemini/gemini-x-001");
    let config = &mock.requests()[0].json()["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(
        config["responseSchema"],
        json!({"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER"}}, "required": ["name", "age"]})
    );
    let chunks = payloads(&proxy.client().stream("/v1/chat/completions", &structured("gemini/gemini-x", true)).rest());
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"name": "Ada", "age": 36}));
    assert!(mock.requests()[1].json()["generationConfig"]["responseSchema"].is_object());
}

fn anthropic_sse(events: &[Value]) -> Vec<Piece> {
    let named = |e: &Value| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).into_bytes();
    events.iter().map(|e| Piece::Bytes(named(e))).collect()
}

/// An Anthropic upstream that answers by calling the tool it was forced to call.
fn anthropic_tool_answerer() -> Mock {
    Mock::start(|req| {
        let body = req.json();
        let tool = body["tool_choice"]["name"].as_str().unwrap_or("none").to_string();
        if body["stream"] == true {
            return MockReply::sse(anthropic_sse(&[
                json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
                    "model": "claude-x-2025", "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"name\": \"Ada\","}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": " \"age\": 36}"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
                json!({"type": "message_stop"}),
            ]));
        }
        MockReply::json(
            200,
            json!({"id": "msg_w", "type": "message", "role": "assistant", "model": "claude-x-2025",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": tool, "input": {"name": "Ada", "age": 36}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 12}}),
        )
    })
}

#[test]
fn json_schema_reaches_anthropic_as_a_forced_tool_and_comes_back_as_content() {
    let mock = anthropic_tool_answerer();
    let proxy = Proxy::start(&format!("ANTHROPIC_API_KEY=sk-ant-0001\nANTHROPIC_API_BASE={}\n", mock.base()));
    let answer = proxy.client().post("/v1/chat/completions", &structured("anthropic/claude-x", false));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none(), "{v}");
    let content: Value = serde_json::from_str(choice["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"name": "Ada", "age": 36}));
    assert_eq!(v["model"], "anthropic/claude-x-2025");
    let sent = mock.requests()[0].json();
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "Person"}));
    assert_eq!(sent["tools"][0]["name"], "Person");
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["name", "age"]));

    let chunks =
        payloads(&proxy.client().stream("/v1/chat/completions", &structured("anthropic/claude-x", true)).rest());
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"name": "Ada", "age": 36}));
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()), "{chunks:?}");
    let finishes: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [&json!("stop")]);
    assert!(chunks.iter().all(|c| c["model"] == "anthropic/claude-x-2025"), "{chunks:?}");

    // json_object: the same, with a schema that takes any object.
    let object = r#"{"model":"anthropic/claude-x","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#;
    let v = proxy.client().post("/v1/chat/completions", object).json();
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"age":36,"name":"Ada"}"#);
    assert_eq!(mock.requests()[2].json()["tool_choice"], json!({"type": "tool", "name": "json_answer"}));

    // With tools of the client's own that it wants called: a clear 400, never a silent drop.
    let both = r#"{"model":"anthropic/claude-x","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},
        "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#;
    let refused = proxy.client().post("/v1/chat/completions", both);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["error"]["param"], "response_format");
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn token_id_embeddings_are_decoded_for_gemini_and_passed_through_elsewhere() {
    let mock = Mock::start(|req| {
        if req.url.contains("batchEmbedContents") {
            let n = req.json()["requests"].as_array().map_or(0, Vec::len);
            let embeddings: Vec<Value> = (0..n).map(|i| json!({"values": [i as f64, 0.5]})).collect();
            return MockReply::json(200, json!({"embeddings": embeddings}));
        }
        MockReply::json(
            200,
            json!({"object": "list", "model": "text-embedding-3-small-v2",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4}}),
        )
    });
    let proxy = Proxy::start(&format!(
        "GEMINI_API_KEY=gm-0001\nGEMINI_API_BASE={base}beta\nOPENAI_API_KEY=sk-0001\nOPENAI_API_BASE={base}\n",
        base = mock.base()
    ));
    // cl100k_base ids (tiktoken's own) of "Hello, world!", and of "Hello" and " world!".
    let body = r#"{"model":"gemini/text-embedding-004","input":[[9906,11],[1917,0]]}"#;
    let answer = proxy.client().post("/v1/embeddings", body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    assert_eq!((v["data"].as_array().unwrap().len(), v["model"].clone()), (2, json!("gemini/text-embedding-004")));
    let texts: Vec<Value> = mock.requests()[0].json()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["content"]["parts"][0]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("Hello,"), json!(" world!")]);
    let single =
        proxy.client().post("/v1/embeddings", r#"{"model":"gemini/text-embedding-004","input":[9906,11,1917,0]}"#);
    assert_eq!(single.json()["data"].as_array().unwrap().len(), 1);
    assert_eq!(mock.requests()[1].json()["requests"][0]["content"]["parts"][0]["text"], "Hello, world!");
    let bad = proxy.client().post("/v1/embeddings", r#"{"model":"gemini/text-embedding-004","input":[[4000000000]]}"#);
    assert_eq!((bad.status, bad.json()["error"]["param"].clone()), (400, json!("input")));

    let openai =
        proxy.client().post("/v1/embeddings", r#"{"model":"openai/text-embedding-3-small","input":[[9906,11]]}"#);
    assert_eq!(openai.status, 200, "{}", openai.text());
    assert_eq!(openai.json()["model"], "openai/text-embedding-3-small-v2");
    assert_eq!(mock.requests()[2].json()["input"], json!([[9906, 11]]), "OpenAI-compatible upstreams take token ids");
}

#[test]
fn every_route_names_the_model_provider_slash_upstream_id() {
    let mock = echo_upstream();
    let proxy = openai_proxy(&mock, "MODEL_ALIASES='{\"fast\": \"openai/m\"}'\n");
    let c = proxy.client();
    let chat = r#"{"model":"openai/m","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(c.post("/v1/chat/completions", chat).json()["model"], "openai/m-2025");
    let streamed = r#"{"model":"fast","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let chunks = payloads(&c.stream("/v1/chat/completions", streamed).rest());
    assert!(chunks.len() >= 2 && chunks.iter().all(|c| c["model"] == "openai/m-2025"), "{chunks:?}");
    assert_eq!(c.post("/v1/completions", r#"{"model":"fast","prompt":"hi"}"#).json()["model"], "openai/m-2025");
    let message = r#"{"model":"fast","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(c.post("/v1/messages", message).json()["model"], "openai/m-2025");
    // The upstream named no model: the id sent stands in.
    let quiet = Mock::start(|_| {
        let mut answer = completion("ok");
        answer.as_object_mut().unwrap().remove("model");
        MockReply::json(200, answer)
    });
    let proxy = openai_proxy(&quiet, "");
    assert_eq!(proxy.client().post("/v1/chat/completions", chat).json()["model"], "openai/m");
}

#[test]
fn aliases_are_listed_as_models() {
    let mock = Mock::start(|_| MockReply::json(200, json!({"data": [{"id": "gpt-up"}]})));
    let env = format!(
        "OPENAI_API_KEY=k\nOPENAI_API_BASE={}\nMODEL_ALIASES='{{\"fast\": \"openai/gpt-up\", \"claude-*\": \"openai/gpt-up\", \"gone\": \"groq/llama\"}}'\n",
        mock.base()
    );
    let proxy = Proxy::start(&env);
    let list = proxy.client().get("/v1/models").json();
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["openai/gpt-up", "fast"], "globs and aliases of providers without keys are not listed");
    let alias = &list["data"][1];
    assert_eq!((alias["alias_for"].clone(), alias["owned_by"].clone()), (json!("openai/gpt-up"), json!("openai")));
    let card = proxy.client().get("/v1/models/fast");
    assert_eq!(card.status, 200, "{}", card.text());
    assert_eq!(card.json()["alias_for"], "openai/gpt-up");

    let dir = TempDir::new();
    dir.write(".env", &env);
    let (code, out, err) = run_cli(dir.path(), &["models"], "");
    assert_eq!((code, out.as_str()), (0, "openai/gpt-up\nfast\n"), "{err}");
    let (_, out, _) = run_cli(dir.path(), &["models", "--json"], "");
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last, json!({"type": "model", "id": "fast", "provider": "openai", "alias_for": "openai/gpt-up"}));
}
