//! Helpers shared by the translators' golden tests (`tests/data/...`): reading cases and
//! JSON files, and replaying an SSE transcript through a translator in pieces of any size.

use crate::providers::{StreamTranslator, Translated};
use crate::sse;
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The case folders under `tests/data/<dir>`, sorted.
pub fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    let mut cases: Vec<_> =
        std::fs::read_dir(&root).expect("golden cases").flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    cases
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("a JSON object").clone()
}

pub fn body_of(request: &UpstreamRequest) -> Value {
    serde_json::from_slice(request.body.as_deref().expect("a body")).expect("JSON")
}

/// A translated step as the JSON written in the expected files.
pub fn step_json(step: &Translated) -> &Value {
    match step {
        Translated::Chunk(chunk) | Translated::Error(chunk) => chunk,
    }
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
