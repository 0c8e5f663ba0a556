//! Token counting for `POST /v1/token-count` and `POST /v1/messages/count_tokens`.
//!
//! OpenAI models are counted exactly with tiktoken's own encodings (`o200k_base`, `cl100k_base`, the BPE
//! tables embedded in the `tiktoken-rs` crate). Every other model gets a stated approximation: its text
//! counted with `o200k_base`, which follows modern BPE tokenizers (Claude, Gemini, Llama, ...) more closely
//! than a characters-divided-by-four rule, above all outside English. [`Method::name`] says which applied.
//!
//! A chat request is counted the way OpenAI's cookbook `num_tokens_from_messages` counts it: 3 tokens per
//! message, the tokens of every string value of each message (`role`, `content`, `name`, `tool_call_id`,
//! ...), 1 more per `name`, and 3 priming the reply. Where the cookbook stops at plain strings:
//! - `content` as an array of parts: the `text` (and `refusal`) strings of its parts; an image part
//!   (`image_url`, `input_image`, `image`) counts a fixed [`IMAGE_TOKENS`] (OpenAI's price of a
//!   low-detail image: the image itself is neither fetched nor decoded, so high-detail tiles are not
//!   added); other parts (audio, files) count nothing.
//! - `tool_calls` (and the legacy `function_call`): each call's function `name` and `arguments` strings.
//!   The call `id` and `type` are not counted, nor any other non-string value.
//! - `tools`, when given and not empty: the array's JSON (compact, keys sorted) counted as text. This is an
//!   approximation, and an upper one: OpenAI renders tools into a private TypeScript-like prompt, which
//!   litellm imitates (and adds 9); that rendering counts fewer tokens than the JSON (o200k_base, the
//!   corpus's tools: 68 against 93 for one tool, 97 against 157 for two).
//!
//! Text is encoded as ordinary text: a special-token string such as `<|endoftext|>` inside a message counts
//! as the characters it is made of (tiktoken's `encode_ordinary`).
//!
//! Building an encoding's BPE table takes a noticeable time, so each is built once per process, at its
//! first use.

use serde_json::Value;
use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

/// Tokens counted for each message on top of its contents (cookbook: `tokens_per_message`).
const TOKENS_PER_MESSAGE: u64 = 3;
/// Extra tokens for a message's `name` (cookbook: `tokens_per_name`).
const TOKENS_PER_NAME: u64 = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING: u64 = 3;
/// Tokens counted per image part: OpenAI's cost of a low-detail image (also the base of a high-detail one).
pub const IMAGE_TOKENS: u64 = 85;
/// Content part types counted as one image each.
const IMAGE_PART_TYPES: [&str; 3] = ["image_url", "input_image", "image"];

/// How a model's tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Exact: tiktoken's `o200k_base` (GPT-4o and later OpenAI models).
    O200k,
    /// Exact: tiktoken's `cl100k_base` (GPT-4, GPT-3.5, the embedding models).
    Cl100k,
    /// Not an OpenAI model: `o200k_base` counts, stated as an approximation.
    Approximate,
}

impl Method {
    /// The name reported to clients next to a count.
    pub fn name(&self) -> &'static str {
        match self {
            Method::O200k => "tiktoken/o200k_base",
            Method::Cl100k => "tiktoken/cl100k_base",
            Method::Approximate => "approximation",
        }
    }

    /// Whether the count is exact (an OpenAI model counted with its own encoding).
    #[cfg(test)]
    pub fn is_exact(&self) -> bool {
        !matches!(self, Method::Approximate)
    }
}

/// Model name prefixes counted with `o200k_base`, matched on the lower-cased bare model name.
const O200K_PREFIXES: [&str; 6] = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "gpt-oss"];
/// The `o` reasoning series: the name itself, or followed by a non-alphanumeric (`o3-mini`, `o1:free`).
const O_SERIES: [&str; 3] = ["o1", "o3", "o4"];
/// Model name prefixes counted with `cl100k_base` (`gpt-35` is Azure's spelling of `gpt-3.5`).
const CL100K_PREFIXES: [&str; 3] = ["gpt-3.5", "gpt-35", "text-embedding-"];

/// Which counting applies to a `provider/model` id (or a bare model id). Only the bare model name counts
/// (the last `/` segment, lower-cased, without a fine-tune `ft:` prefix), so `openai/gpt-4o`,
/// `openrouter/openai/gpt-4o` and a custom OpenAI-compatible provider serving `gpt-4o` all count exactly.
///
/// `o200k_base`: `gpt-4o*`, `gpt-4.1*`, `gpt-4.5*`, `gpt-5*`, `o1*`, `o3*`, `o4*`, `chatgpt-4o*`,
/// `gpt-oss*`. `cl100k_base`: `gpt-4` and `gpt-4-*`, `gpt-3.5*` (`gpt-35*`), `text-embedding-*`.
/// [`Method::Approximate`] for everything else.
pub fn method_for(model: &str) -> Method {
    let last = model.trim().rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
    let bare = last.strip_prefix("ft:").unwrap_or(&last);
    let o_series =
        |p: &str| bare.strip_prefix(p).is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric()));
    if O200K_PREFIXES.iter().any(|p| bare.starts_with(p)) || O_SERIES.iter().any(|p| o_series(p)) {
        Method::O200k
    } else if bare == "gpt-4" || bare.starts_with("gpt-4-") || CL100K_PREFIXES.iter().any(|p| bare.starts_with(p)) {
        Method::Cl100k
    } else {
        Method::Approximate
    }
}

/// The BPE table of a method, built once per process.
fn encoding(method: Method) -> &'static CoreBPE {
    static O200K: OnceLock<CoreBPE> = OnceLock::new();
    static CL100K: OnceLock<CoreBPE> = OnceLock::new();
    match method {
        Method::O200k | Method::Approximate => {
            O200K.get_or_init(|| tiktoken_rs::o200k_base().expect("the embedded o200k_base table is valid"))
        }
        Method::Cl100k => {
            CL100K.get_or_init(|| tiktoken_rs::cl100k_base().expect("the embedded cl100k_base table is valid"))
        }
    }
}

/// Runs of whitespace other than line breaks longer than this many characters are counted in pieces of
/// this size. The encodings' split pattern (`\s+(?!\S)`) needs a backtracking regex, which gives up on a
/// run of about a million such characters (tiktoken-rs and Python's tiktoken both panic there), so no
/// reference count exists for such text; cutting the run keeps the count within a few tokens per cut.
const MAX_WHITESPACE_RUN: usize = 100_000;

fn count(bpe: &CoreBPE, text: &str) -> u64 {
    count_cutting_runs(bpe, text, MAX_WHITESPACE_RUN)
}

fn count_cutting_runs(bpe: &CoreBPE, text: &str, max_run: usize) -> u64 {
    let encode = |piece: &str| if piece.is_empty() { 0 } else { bpe.encode_ordinary(piece).len() as u64 };
    if text.len() <= max_run {
        return encode(text); // no run of characters can be longer than the text's bytes
    }
    let (mut total, mut start, mut run) = (0, 0, 0);
    for (i, c) in text.char_indices() {
        if c.is_whitespace() && c != '\r' && c != '\n' {
            if run == max_run {
                total += encode(&text[start..i]);
                (start, run) = (i, 0);
            }
            run += 1;
        } else {
            run = 0;
        }
    }
    total + encode(&text[start..])
}

/// Tokens of plain text with a method.
#[cfg(test)]
pub fn count_text(method: Method, text: &str) -> u64 {
    count(encoding(method), text)
}

/// The text a client's token ids stand for, with the encoding the client most likely used:
/// `o200k_base` for the models [`method_for`] gives it, `cl100k_base` for every other name
/// (tiktoken's own for GPT-4 and the embedding models, and what tiktoken users such as
/// LangChain's `OpenAIEmbeddings` fall back to for a model tiktoken does not know). An id
/// outside the encoding is an error; bytes that end inside a UTF-8 character are replaced.
pub fn decode(model: &str, ids: &[u32]) -> Result<String, String> {
    let method = if method_for(model) == Method::O200k { Method::O200k } else { Method::Cl100k };
    let bytes =
        encoding(method).decode_bytes(ids).map_err(|e| format!("token id {} is not in {}", e.token, method.name()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Token ids as a client sends them (JSON numbers) decoded with `model`'s encoding, as `decode`;
/// anything but integers from 0 to 2^32 - 1 is refused.
pub fn decode_json_ids(model: &str, ids: &[Value]) -> Result<String, String> {
    let ids: Vec<u32> = ids
        .iter()
        .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect::<Option<_>>()
        .ok_or("token ids are integers from 0 to 4294967295")?;
    decode(model, &ids)
}

/// Tokens of an OpenAI chat request's `messages` (and `tools` when given), counted as the module
/// documentation says, with the method [`method_for`] picks for `model`.
pub fn count_chat(model: &str, messages: &Value, tools: Option<&Value>) -> (u64, Method) {
    let method = method_for(model);
    let bpe = encoding(method);
    let mut total = REPLY_PRIMING;
    if let Some(messages) = messages.as_array() {
        total += messages.iter().map(|m| count_message(bpe, m)).sum::<u64>();
    }
    if let Some(tools) = tools.filter(|t| !is_empty_tools(t)) {
        let mut json = String::new();
        write_canonical_json(tools, &mut json);
        total += count(bpe, &json);
    }
    (total, method)
}

fn is_empty_tools(tools: &Value) -> bool {
    match tools {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

fn count_message(bpe: &CoreBPE, message: &Value) -> u64 {
    let fields = match message {
        Value::Object(fields) => fields,
        Value::String(text) => return TOKENS_PER_MESSAGE + count(bpe, text),
        _ => return TOKENS_PER_MESSAGE,
    };
    let mut n = TOKENS_PER_MESSAGE;
    for (key, value) in fields {
        n += match (key.as_str(), value) {
            ("name", Value::String(text)) => count(bpe, text) + TOKENS_PER_NAME,
            (_, Value::String(text)) => count(bpe, text),
            ("content", Value::Array(parts)) => parts.iter().map(|p| count_part(bpe, p)).sum(),
            ("tool_calls", Value::Array(calls)) => {
                calls.iter().map(|call| count_function_call(bpe, call.get("function"))).sum()
            }
            ("function_call", call) => count_function_call(bpe, Some(call)),
            _ => 0,
        };
    }
    n
}

fn count_part(bpe: &CoreBPE, part: &Value) -> u64 {
    let fields = match part {
        Value::Object(fields) => fields,
        Value::String(text) => return count(bpe, text),
        _ => return 0,
    };
    if fields.get("type").and_then(Value::as_str).is_some_and(|t| IMAGE_PART_TYPES.contains(&t)) {
        return IMAGE_TOKENS;
    }
    ["text", "refusal"].iter().filter_map(|f| fields.get(*f).and_then(Value::as_str)).map(|t| count(bpe, t)).sum()
}

fn count_function_call(bpe: &CoreBPE, call: Option<&Value>) -> u64 {
    let Some(Value::Object(fields)) = call else { return 0 };
    ["name", "arguments"].iter().filter_map(|f| fields.get(*f).and_then(Value::as_str)).map(|t| count(bpe, t)).sum()
}

/// Compact JSON with object keys sorted, whatever order the map keeps (so the count does not depend on
/// serde_json's `preserve_order` feature): Python's `json.dumps(v, ensure_ascii=False, sort_keys=True,
/// separators=(",", ":"))`.
fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical_json(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn data(name: &str) -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokens").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn expected(section: &Value, id: &str, encoding: &str) -> u64 {
        section[id][encoding].as_u64().unwrap_or_else(|| panic!("no expected {encoding} count for {id}"))
    }

    /// (model used to select the method, method, key in expected.json)
    const ENCODINGS: [(&str, Method, &str); 3] = [
        ("openai/gpt-4o", Method::O200k, "o200k_base"),
        ("openai/gpt-4", Method::Cl100k, "cl100k_base"),
        ("anthropic/claude-sonnet-4-5", Method::Approximate, "o200k_base"),
    ];

    #[test]
    fn corpus_counts_match_python_tiktoken() {
        let corpus = data("corpus.json");
        let expect = data("expected.json");
        assert_eq!(
            expect["image_tokens"].as_u64(),
            Some(IMAGE_TOKENS),
            "expected.json was made with another IMAGE_TOKENS"
        );
        let texts = corpus["text"].as_array().expect("corpus.json: text array");
        let chats = corpus["chat"].as_array().expect("corpus.json: chat array");
        assert!(
            texts.len() >= 40 && chats.len() >= 50,
            "corpus too small: {} texts, {} chats",
            texts.len(),
            chats.len()
        );
        let mut mismatches = Vec::new();
        for (model, method, key) in ENCODINGS {
            for item in texts {
                let id = item["id"].as_str().expect("text id");
                let want = expected(&expect["text"], id, key);
                let got = count_text(method, item["text"].as_str().expect("text"));
                if got != want {
                    mismatches.push(format!("text {id} {key}: got {got}, want {want}"));
                }
            }
            for item in chats {
                let id = item["id"].as_str().expect("chat id");
                let want = expected(&expect["chat"], id, key);
                let (got, got_method) = count_chat(model, &item["messages"], item.get("tools"));
                assert_eq!(got_method, method);
                if got != want {
                    mismatches.push(format!("chat {id} {key}: got {got}, want {want}"));
                }
            }
        }
        assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    }

    #[test]
    fn method_for_models() {
        let cases = [
            ("openai/gpt-4o", Method::O200k),
            ("openai/gpt-4o-mini-2024-07-18", Method::O200k),
            ("gpt-4.1-nano", Method::O200k),
            ("openai/gpt-4.5-preview", Method::O200k),
            ("openai/gpt-5", Method::O200k),
            ("openai/gpt-5.1-codex", Method::O200k),
            ("openai/o1", Method::O200k),
            ("openai/o1-mini", Method::O200k),
            ("openai/o3-mini-high", Method::O200k),
            ("openai/o4-mini", Method::O200k),
            ("openrouter/openai/o3:online", Method::O200k),
            ("openai/chatgpt-4o-latest", Method::O200k),
            ("groq/openai/gpt-oss-120b", Method::O200k),
            ("openrouter/openai/gpt-4o", Method::O200k),
            ("myazure/GPT-4o", Method::O200k),
            ("openai/ft:gpt-4o-mini:acme::abc123", Method::O200k),
            ("openai/gpt-4", Method::Cl100k),
            ("openai/gpt-4-turbo", Method::Cl100k),
            ("openai/gpt-4-0613", Method::Cl100k),
            ("openai/gpt-4-32k", Method::Cl100k),
            ("openai/gpt-3.5-turbo", Method::Cl100k),
            ("azure/gpt-35-turbo", Method::Cl100k),
            ("openai/text-embedding-3-small", Method::Cl100k),
            ("text-embedding-ada-002", Method::Cl100k),
            ("anthropic/claude-sonnet-4-5", Method::Approximate),
            ("gemini/gemini-2.5-pro", Method::Approximate),
            ("nvidia_nim/deepseek-ai/deepseek-v3.1", Method::Approximate),
            ("openrouter/meta-llama/llama-3.3-70b-instruct", Method::Approximate),
            ("mistral/mistral-large-latest", Method::Approximate),
            ("openai/o10-mini", Method::Approximate),
            ("openai/omni-moderation-latest", Method::Approximate),
            ("openai/gpt-40", Method::Approximate),
            ("openai/davinci-002", Method::Approximate),
            ("", Method::Approximate),
            ("openai/", Method::Approximate),
        ];
        for (model, want) in cases {
            assert_eq!(method_for(model), want, "{model}");
        }
        assert_eq!(Method::O200k.name(), "tiktoken/o200k_base");
        assert_eq!(Method::Cl100k.name(), "tiktoken/cl100k_base");
        assert_eq!(Method::Approximate.name(), "approximation");
        assert!(Method::Cl100k.is_exact() && !Method::Approximate.is_exact());
    }

    #[test]
    fn decodes_token_ids_with_the_model_encoding() {
        // "Hello, world!" in each encoding (tiktoken's own numbers).
        assert_eq!(decode("gpt-4o", &[13225, 11, 2375, 0]).unwrap(), "Hello, world!");
        assert_eq!(decode("text-embedding-3-small", &[9906, 11, 1917, 0]).unwrap(), "Hello, world!");
        assert_eq!(decode("gemini/text-embedding-004", &[9906, 11, 1917, 0]).unwrap(), "Hello, world!");
        assert!(decode("gpt-4o", &[u32::MAX]).unwrap_err().contains("o200k_base"));
    }

    #[test]
    fn count_text_fixed_strings() {
        // Known values from tiktoken (and the tiktoken README: "tiktoken is great!" is 6 tokens).
        assert_eq!(count_text(Method::Cl100k, "tiktoken is great!"), 6);
        assert_eq!(count_text(Method::O200k, "tiktoken is great!"), 6);
        assert_eq!(count_text(Method::O200k, ""), 0);
        assert_eq!(count_text(Method::Cl100k, "hello world"), 2);
        assert_eq!(count_text(Method::O200k, "hello world"), 2);
        // The two encodings differ on non-English text; the approximation is o200k's count.
        let ja = "日本語のテキストです。";
        assert_ne!(count_text(Method::O200k, ja), count_text(Method::Cl100k, ja));
        assert_eq!(count_text(Method::Approximate, ja), count_text(Method::O200k, ja));
        // Special-token text counts as ordinary text, never panics.
        assert!(count_text(Method::Cl100k, "<|endoftext|>") > 1);
    }

    #[test]
    fn chat_shapes() {
        let msgs = json!([{"role": "user", "content": "hello world"}]);
        // 3 (message) + 1 ("user") + 2 ("hello world") + 3 (reply priming)
        assert_eq!(count_chat("openai/gpt-4o", &msgs, None), (9, Method::O200k));
        let named = json!([{"role": "user", "name": "bob", "content": "hello world"}]);
        assert_eq!(count_chat("openai/gpt-4o", &named, None).0, 9 + 1 + 1);
        assert_eq!(count_chat("openai/gpt-4o", &json!([]), None).0, REPLY_PRIMING);
        assert_eq!(count_chat("openai/gpt-4o", &json!("not an array"), None).0, REPLY_PRIMING);
        assert_eq!(count_chat("openai/gpt-4o", &msgs, Some(&json!([]))).0, 9);
        assert_eq!(count_chat("openai/gpt-4o", &msgs, Some(&Value::Null)).0, 9);
        let image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
        assert_eq!(count_chat("openai/gpt-4o", &image, None).0, 3 + 1 + IMAGE_TOKENS + 3);
        // Odd shapes are counted without panicking.
        let odd = json!([1, null, "text", {"role": 5, "content": {"x": 1}, "tool_calls": "nope"}]);
        assert_eq!(count_chat("x/llama", &odd, Some(&json!({"a": 1}))).1, Method::Approximate);
    }

    #[test]
    fn canonical_json_sorts_keys_and_is_compact() {
        let mut out = String::new();
        write_canonical_json(&json!({"b": [1, "é\n\"q\""], "a": {"z": null, "y": true}}), &mut out);
        assert_eq!(out, r#"{"a":{"y":true,"z":null},"b":[1,"é\n\"q\""]}"#);
    }

    #[test]
    fn long_whitespace_runs_are_cut() {
        // The regex gives up from about 1,000,000 whitespace characters in a run (measured for spaces, tabs,
        // U+3000 and U+2028, both encodings); the end-to-end check is in `slow_checks`.
        const { assert!(MAX_WHITESPACE_RUN <= 250_000) };
        // Cutting changes nothing below the limit; above it, pieces of `max_run` count as separate texts.
        let bpe = encoding(Method::Cl100k);
        let text = "word ".to_string() + &" \t".repeat(30) + "\nnext  line\u{2028}\u{2028}end";
        assert_eq!(count_cutting_runs(bpe, &text, text.len()), count(bpe, &text));
        assert_eq!(count_cutting_runs(bpe, &text, 10), {
            let cut = text.find(" \t").unwrap() - 1 + 10; // the run starts at the space after "word"
            let run_end = text.find('\n').unwrap();
            let mut pieces = vec![&text[..cut]];
            let mut at = cut;
            while at + 10 < run_end {
                pieces.push(&text[at..at + 10]);
                at += 10;
            }
            pieces.push(&text[at..]);
            pieces.iter().map(|p| count(bpe, p)).sum::<u64>()
        });
    }

    /// A whitespace run long enough to be cut into 100,000-character pieces (tiktoken itself
    /// panics past about a million): pieces of 100,000 spaces count 782 each and the last,
    /// 100 spaces + "x", 3 (Python tiktoken).
    #[test]
    fn long_whitespace_runs_are_counted_in_pieces() {
        assert_eq!(count_text(Method::O200k, &(" ".repeat(200_100) + "x")), 2 * 782 + 3);
    }
}
