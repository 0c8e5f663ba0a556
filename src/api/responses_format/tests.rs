use super::request::*;
use super::response::*;
use super::stream::*;
use crate::error::ApiError;
use crate::golden::{self, Pair, read_json};
use crate::providers::{Translated, openai};
use serde_json::{Map, Value, json};
use std::path::Path;

fn translate(body: Value) -> Result<Map<String, Value>, ApiError> {
    to_chat_request(body.as_object().expect("an object"))
}

#[test]
fn previous_response_id_is_a_clear_400() {
    let e = translate(json!({"model": "groq/m", "input": "hi", "previous_response_id": "resp_1"})).unwrap_err();
    assert_eq!((e.status, e.param.as_deref()), (400, Some("previous_response_id")));
    assert!(e.message.contains("stateless"), "{}", e.message);
    // null is no id at all
    assert!(translate(json!({"model": "groq/m", "input": "hi", "previous_response_id": null})).is_ok());
}

#[test]
fn malformed_input_is_named_by_its_path() {
    let param = |body: Value| translate(body).unwrap_err().param;
    assert_eq!(param(json!({"model": "m"})).as_deref(), Some("input"));
    assert_eq!(param(json!({"model": "m", "input": 3})).as_deref(), Some("input"));
    assert_eq!(param(json!({"model": "m", "input": ["x"]})).as_deref(), Some("input[0]"));
    let role = json!({"model": "m", "input": [{"role": "tool", "content": "x"}]});
    assert_eq!(param(role).as_deref(), Some("input[0].role"));
    let nameless = json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]});
    assert_eq!(param(nameless).as_deref(), Some("input[0].name"));
    let file_id =
        json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]});
    assert_eq!(param(file_id).as_deref(), Some("input[0].content[0]"));
    let tokens = json!({"model": "m", "input": "x", "max_output_tokens": 0});
    assert_eq!(param(tokens).as_deref(), Some("max_output_tokens"));
    let format = json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}});
    assert_eq!(param(format).as_deref(), Some("text.format.schema"));
}

#[test]
fn an_output_without_a_waiting_call_is_a_user_message() {
    let body = json!({"model": "m", "input": [{"type": "function_call_output", "output": "42"}]});
    let messages = translate(body).unwrap()["messages"].clone();
    assert_eq!(messages, json!([{"role": "user", "content": "Tool output:\n42"}]));
}

#[test]
fn model_names_follow_the_rule() {
    assert_eq!(model_name("groq", Some("llama-3"), "sent"), "groq/llama-3");
    assert_eq!(model_name("groq", None, "sent"), "groq/sent");
    assert_eq!(model_name("groq", Some(""), "sent"), "groq/sent");
    assert_eq!(model_name("groq", Some("groq/llama-3"), "sent"), "groq/llama-3");
    assert_eq!(model_name("openrouter", Some("openai/gpt-4o"), "x"), "openrouter/openai/gpt-4o");
}

#[test]
fn nothing_follows_the_terminal_event() {
    let mut writer = EventWriter::new(frame(&Map::new()));
    let first = writer.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "a"}}]}));
    assert_eq!(first.len(), 5, "created, in_progress, item added, part added, delta");
    let failed = writer.error(&json!({"error": {"message": "boom", "type": "api_error", "code": null}}));
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["response"]["error"], json!({"code": "api_error", "message": "boom"}));
    assert!(writer.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "b"}}]})).is_empty());
    assert!(writer.finish().is_empty());
}

// ---- golden cases: tests/data/responses/<case>/ (README.md there) ----

const ID: &str = "resp_0123456789abcdef01234567";
const CREATED: u64 = 1741476542;
const MODEL: &str = "groq/llama-3.3-70b";

fn frame(request: &Map<String, Value>) -> Frame {
    Frame::new(ID, CREATED, MODEL, request)
}

/// A chat SSE body through the OpenAI family's stream translator (`piece` bytes per read),
/// then through the writer: a `Translated::Error` ends it as `error`, else `finish`.
fn stream_case(frame: Frame, sse: &[u8], piece: usize) -> Vec<Value> {
    let steps = crate::golden::replay(Box::new(openai::PassThrough::default()), sse, piece);
    let mut writer = EventWriter::new(frame);
    let mut out = Vec::new();
    for step in steps {
        match step {
            Translated::Chunk(chunk) => out.extend(writer.chunk(&chunk)),
            Translated::Error(error) => {
                out.extend(writer.error(&error));
                return out;
            }
        }
    }
    out.extend(writer.finish());
    out
}

#[test]
fn golden_cases() {
    golden::run(
        "responses",
        &[
            Pair { input: "request.json", expected: "expected_chat_request.json", actual: &golden_request },
            Pair { input: "chat_response.json", expected: "expected_response.json", actual: &golden_response },
            Pair { input: "chat_stream.sse", expected: "expected_events.jsonl", actual: &golden_stream },
        ],
        14,
    );
}

/// A case's Responses request (`request.json`, or none), which the answers echo.
fn case_request(input: &Path) -> Map<String, Value> {
    let path = input.with_file_name("request.json");
    if path.exists() { golden::object(read_json(&path)) } else { Map::new() }
}

fn golden_request(input: &Path, name: &str) -> Value {
    Value::Object(to_chat_request(&case_request(input)).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn golden_response(input: &Path, _name: &str) -> Value {
    from_chat_completion(&read_json(input), &frame(&case_request(input)))
}

/// The events as the expected files write them; they must follow the rules clients rely on.
fn golden_stream(input: &Path, name: &str) -> Value {
    let request = case_request(input);
    let got =
        golden::same_in_pieces(&golden::read_bytes(input), name, |sse, piece| stream_case(frame(&request), sse, piece));
    check_events(got.as_array().unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
    got
}

/// The rules clients rely on (OpenAI's streaming events reference, and what the official
/// SDK's stream helper and Codex check): sequence numbers 0, 1, 2...; `response.created`
/// then `response.in_progress` first; one constant response id; content events only for
/// the open item, after its `output_item.added`, with its id; items at increasing output
/// indices, each done before the next is added; exactly one terminal event, last, whose
/// `output` repeats every finished item (all of them, unless it is `response.failed`).
fn check_events(events: &[Value]) -> Result<(), String> {
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
    if kinds.len() < 3 || kinds[0] != "response.created" || kinds[1] != "response.in_progress" {
        return Err(format!("must start with response.created, response.in_progress: {kinds:?}"));
    }
    let id = &events[0]["response"]["id"];
    let mut open: Option<(u64, String)> = None;
    let mut done: Vec<Value> = Vec::new();
    for (i, (event, kind)) in events.iter().zip(&kinds).enumerate() {
        if event["sequence_number"] != json!(i) {
            return Err(format!("event {i} has sequence_number {}", event["sequence_number"]));
        }
        let terminal = matches!(*kind, "response.completed" | "response.incomplete" | "response.failed");
        if terminal != (i == events.len() - 1) {
            return Err(format!("event {i} ({kind}): one terminal event, last"));
        }
        if let Some(response) = event.get("response") {
            if &response["id"] != id {
                return Err(format!("event {i}: the response id changed"));
            }
        }
        match *kind {
            "response.output_item.added" => {
                if open.is_some() || event["output_index"] != json!(done.len()) {
                    return Err(format!("event {i}: an item opened while another is open or out of order"));
                }
                let item_id = event["item"]["id"].as_str().ok_or(format!("event {i}: item without id"))?;
                open = Some((done.len() as u64, item_id.to_string()));
            }
            "response.output_item.done" => {
                let Some((index, item_id)) = open.take() else { return Err(format!("event {i}: nothing open")) };
                if event["output_index"] != json!(index) || event["item"]["id"] != json!(item_id) {
                    return Err(format!("event {i}: done for another item"));
                }
                done.push(event["item"].clone());
            }
            _ if terminal => {
                let output = event["response"]["output"].as_array().ok_or(format!("event {i}: no output"))?;
                if output != &done || (*kind != "response.failed" && open.is_some()) {
                    return Err(format!("event {i}: output must repeat the finished items, none left open"));
                }
            }
            "response.created" | "response.in_progress" => {}
            _ => {
                let Some((index, item_id)) = &open else { return Err(format!("event {i} ({kind}): no open item")) };
                if event["output_index"] != json!(index) || event["item_id"] != json!(item_id) {
                    return Err(format!("event {i} ({kind}): not for the open item"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_rule_checker_catches_mistakes() {
    let mut writer = EventWriter::new(frame(&Map::new()));
    let mut good = writer.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "a"}}]}));
    good.extend(writer.finish());
    check_events(&good).unwrap();
    type Mutation = Box<dyn Fn(&mut Vec<Value>)>;
    let mutations: Vec<Mutation> = vec![
        Box::new(|e| e[3]["sequence_number"] = json!(9)),
        Box::new(|e| e.swap(0, 1)),
        Box::new(|e| e[4]["item_id"] = json!("msg_other")),
        Box::new(|e| {
            e.remove(2);
        }),
        Box::new(|e| {
            let last = e.len() - 1;
            e[last]["response"]["id"] = json!("resp_other");
        }),
        Box::new(|e| {
            let last = e.len() - 1;
            e[last]["response"]["output"] = json!([]);
        }),
    ];
    for mutate in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        for (i, e) in bad.iter_mut().enumerate() {
            if e["sequence_number"] != json!(9) {
                e["sequence_number"] = json!(i);
            }
        }
        assert!(check_events(&bad).is_err(), "{bad:?}");
    }
}
