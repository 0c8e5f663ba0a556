//! The translators' golden tests (`tests/data/<dir>/<case>/`): one driver for every family,
//! and the helpers its pairs share (reading JSON files, building an upstream request from a
//! case, replaying an SSE transcript in pieces of any size).
//!
//! `run` lists the case folders, checks that each pair's input and expected file come
//! together, turns the input into a JSON value with the pair's `actual`, and compares that
//! with the expected file as values (a `.jsonl` file is one value per line, compared as a
//! list). With `UPDATE_EXPECT=1` it rewrites instead the expected files whose value differs
//! (or that are missing), and only those, so untouched files keep their formatting: `.json`
//! pretty-printed with 2 spaces, `.jsonl` one compact value per line. Review the diff.

use crate::error::ApiError;
use crate::providers::{StreamTranslator, Translated};
use crate::sse;
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One kind of input in a case folder, the file that says what it must become, and how it
/// becomes that: `actual` gets the input's path and the case name, and may assert more on the
/// way (stream rules, framing, reads in pieces).
pub struct Pair<'a> {
    pub input: &'a str,
    pub expected: &'a str,
    pub actual: Actual<'a>,
}

/// How a pair turns an input file (its path, the case name) into the value compared.
pub type Actual<'a> = &'a dyn Fn(&Path, &str) -> Value;

/// The three pairs of a provider family's cases: `openai_request.json` as the upstream
/// request (`request`), `upstream_response.json` as OpenAI's answer (`response`), and the
/// upstream stream in `stream_input` (`upstream.sse`; Bedrock's `upstream.eventstream`) as
/// OpenAI chunks (`stream`).
pub fn provider_pairs<'a>(
    request: Actual<'a>,
    response: Actual<'a>,
    stream_input: &'a str,
    stream: Actual<'a>,
) -> [Pair<'a>; 3] {
    [
        Pair { input: "openai_request.json", expected: "expected_upstream_request.json", actual: request },
        Pair { input: "upstream_response.json", expected: "expected_openai_response.json", actual: response },
        Pair { input: stream_input, expected: "expected_openai_chunks.jsonl", actual: stream },
    ]
}

/// Checks every pair of every case under `tests/data/<dir>`, and that at least `at_least`
/// pairs were found (so a misplaced folder cannot pass by checking nothing).
pub fn run(dir: &str, pairs: &[Pair], at_least: usize) {
    let updating = update_expect();
    let (mut checked, mut rewritten) = (0, Vec::new());
    for case in cases(dir) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        for pair in pairs {
            let (input, expected) = (case.join(pair.input), case.join(pair.expected));
            assert!(
                input.exists() == expected.exists() || (updating && input.exists()),
                "{name}: {} and {} come in pairs",
                pair.input,
                pair.expected
            );
            if !input.exists() {
                continue;
            }
            let got = (pair.actual)(&input, &name);
            if updating {
                if rewrite_if_changed(&expected, &got) {
                    rewritten.push(expected);
                }
            } else {
                let want = read_expected(&expected);
                assert_eq!(got, want, "{name}: {}\n got: {got}\nwant: {want}", expected.display());
            }
            checked += 1;
        }
    }
    report(&rewritten);
    assert!(checked >= at_least, "only {checked} golden pairs found under tests/data/{dir}");
}

/// `UPDATE_EXPECT=1`: rewrite the expected files that differ instead of failing on them.
fn update_expect() -> bool {
    std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1")
}

/// The case folders under `tests/data/<dir>`, sorted.
fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    let mut cases: Vec<_> =
        std::fs::read_dir(&root).expect("golden cases").flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    cases
}

fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl")
}

/// An expected file as one value: a `.jsonl` file as the list of its lines.
fn read_expected(path: &Path) -> Value {
    parse_expected(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_expected(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if is_jsonl(path) {
        parse_lines(&text).map(Value::Array)
    } else {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}

/// One JSON value per line; blank lines are skipped.
fn parse_lines(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect()
}

/// Writes `got` to `path` unless the file already holds that value; true when it wrote.
fn rewrite_if_changed(path: &Path, got: &Value) -> bool {
    if parse_expected(path).is_ok_and(|want| &want == got) {
        return false;
    }
    let text = match got {
        Value::Array(lines) if is_jsonl(path) => lines.iter().map(|l| format!("{l}\n")).collect(),
        _ if is_jsonl(path) => panic!("{}: a .jsonl file holds a list of values, got {got}", path.display()),
        _ => serde_json::to_string_pretty(got).unwrap() + "\n",
    };
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    true
}

/// Names the rewritten files on the real stderr: the test harness captures only `eprintln!`,
/// and a passing test's captured output is never shown.
fn report(rewritten: &[PathBuf]) {
    let mut stderr = std::io::stderr();
    for path in rewritten {
        let _ = writeln!(stderr, "UPDATE_EXPECT: rewrote {}", path.display());
    }
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_lines(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of a case's input file.
pub fn read_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("a JSON object").clone()
}

pub fn body_of(request: &UpstreamRequest) -> Value {
    serde_json::from_slice(request.body.as_deref().expect("a body")).expect("JSON")
}

/// A case's `openai_request.json` (at `input`) built by `build` for `provider`: the model's
/// provider prefix must be `provider`, and the built request streams when the body asks to.
/// `build` gets the upstream model id, the body and the stream flag.
pub fn build_request(
    input: &Path,
    name: &str,
    provider: &str,
    build: impl Fn(&str, &Map<String, Value>, bool) -> Result<UpstreamRequest, ApiError>,
) -> UpstreamRequest {
    let request = read_json(input);
    let body = request.as_object().expect("a request object");
    let (prefix, model) = crate::providers::split_model(body["model"].as_str().unwrap()).unwrap();
    assert_eq!(prefix, provider, "{name}");
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let built = build(model, body, stream).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(built.stream, stream, "{name}");
    built
}

/// An upstream request as the expected files write it.
pub fn request_json(request: &UpstreamRequest) -> Value {
    json!({"url": request.url, "body": body_of(request)})
}

/// A translator's upstream request, which carries only its JSON content type (the key is
/// added later), as the expected files write it.
pub fn json_request_json(request: &UpstreamRequest, name: &str) -> Value {
    assert_eq!(request.headers, [("content-type".to_string(), "application/json".to_string())], "{name}");
    request_json(request)
}

/// A translated step as the JSON written in the expected files.
fn step_json(step: &Translated) -> &Value {
    match step {
        Translated::Chunk(chunk) | Translated::Error(chunk) => chunk,
    }
}

/// Translated steps as the JSON written in the expected files.
pub fn steps_json(steps: &[Translated]) -> Vec<Value> {
    steps.iter().map(step_json).cloned().collect()
}

/// `translate(input, piece)` with 1-byte, 7-byte and whole reads, which must agree (splitting
/// the bytes anywhere, inside events or UTF-8 characters, changes nothing); the list of values
/// they give.
pub fn same_in_pieces(input: &[u8], name: &str, translate: impl Fn(&[u8], usize) -> Vec<Value>) -> Value {
    let whole = translate(input, input.len());
    for piece in [1, 7] {
        let split = translate(input, piece);
        assert_eq!(
            split,
            whole,
            "{name}: {piece}-byte reads differ from one whole read\n got: {}\nwant: {}",
            Value::Array(split.clone()),
            Value::Array(whole.clone())
        );
    }
    Value::Array(whole)
}

/// Feeds `input` to a fresh translator `piece` bytes at a time, as the network might.
pub fn replay<T>(mut translator: Box<dyn StreamTranslator<T>>, input: &[u8], piece: usize) -> Vec<T> {
    let mut parser = sse::Parser::new();
    let (mut events, mut out) = (Vec::new(), Vec::new());
    for bytes in input.chunks(piece.max(1)) {
        parser.feed(bytes, &mut events).expect("no overlong lines");
        events.drain(..).for_each(|e| translator.event(&e, &mut out));
    }
    parser.finish(&mut events);
    events.drain(..).for_each(|e| translator.event(&e, &mut out));
    translator.finish(&mut out);
    out
}
