//! Upstream providers, hub and spoke: every family translates to and from the OpenAI chat
//! format, nothing translates provider to provider. This module knows the built-in providers
//! and builds `UpstreamRequest`s; it does no I/O.

pub mod anthropic;
pub mod anthropic_map;
pub mod azure;
pub mod bedrock;
pub mod code_assist;
pub mod errors;
pub mod eventstream;
pub mod gemini;
pub mod hub;
pub mod iflow;
pub mod openai;
pub mod sigv4;
pub mod think;
pub mod vertex;

use crate::error::ApiError;
use crate::secret::Secret;
use crate::sse;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::Value;

/// One step of a stream translated to the OpenAI chat format.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// A `chat.completion.chunk` object. A usage-only chunk (`"choices": []` with `usage`) is
    /// emitted once at the end when usage is known; the relay drops it unless the client
    /// asked for it.
    Chunk(Value),
    /// An error inside the stream, as an OpenAI error object `{"error": {...}}`; nothing
    /// follows it.
    Error(Value),
}

/// A `chat.completion.chunk` with the stream's fixed id, created time and model.
pub fn chunk_envelope(id: &str, created: u64, model: &str, choices: Vec<Value>) -> Value {
    serde_json::json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices})
}

/// The in-band error that ends a stream which broke on keyrelay's side of the translation
/// (`stream_interrupted`, `stream_stalled`, ...), as an OpenAI error object.
pub fn stream_error(code: &str, message: &str) -> Value {
    serde_json::json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}})
}

/// An upstream stream event's data as JSON; when it is not, the `upstream_error` message
/// that ends the stream, naming what `sent` it.
pub fn event_json(event: &sse::Event, sent: &str) -> Result<Value, String> {
    serde_json::from_str(&event.data).map_err(|e| format!("{sent} that is not JSON: {e}"))
}

/// Turns a provider's SSE events into OpenAI chat chunks, keeping whatever state the
/// translation needs (message id, open content blocks, tool-call indices, usage). Rules for
/// every translator (as OpenAI's own streams do): `role`, tool-call `id`, `type` and
/// `function.name` appear only in the first delta of their choice or tool call; every chunk
/// carries the same `id`, `created` and `model`; the last choice chunk has a `finish_reason`.
/// A pass-through (the Anthropic Messages API to Anthropic) produces its own step type `T`.
pub trait StreamTranslator<T = Translated>: Send {
    /// One upstream event in, zero or more translated steps out.
    fn event(&mut self, event: &sse::Event, out: &mut Vec<T>);
    /// The upstream body ended. Flush what is pending; if the stream never reached its proper
    /// end, say so with a `Translated::Error`.
    fn finish(&mut self, out: &mut Vec<T>);
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// OpenAI Chat Completions, embeddings and model list: passed through.
    OpenAi,
    /// Anthropic Messages, translated.
    Anthropic,
    /// Gemini generateContent, translated.
    Gemini,
    /// Gemini CLI's Code Assist API: Gemini in an envelope, for OAuth accounts.
    CodeAssist,
    /// Google Vertex AI: Gemini or Anthropic translation by the model's publisher
    /// (`vertex::publisher`), on Vertex's URLs.
    Vertex,
    /// AWS Bedrock Runtime's Converse API, translated; streams in AWS's event-stream framing.
    Bedrock,
}

/// Built-in providers: name, default base URL, protocol family.
pub const BUILTIN: &[(&str, &str, Family)] = &[
    ("openai", "https://api.openai.com/v1", Family::OpenAi),
    ("openrouter", "https://openrouter.ai/api/v1", Family::OpenAi),
    ("groq", "https://api.groq.com/openai/v1", Family::OpenAi),
    ("mistral", "https://api.mistral.ai/v1", Family::OpenAi),
    ("deepseek", "https://api.deepseek.com", Family::OpenAi),
    ("xai", "https://api.x.ai/v1", Family::OpenAi),
    ("together", "https://api.together.xyz/v1", Family::OpenAi),
    ("fireworks", "https://api.fireworks.ai/inference/v1", Family::OpenAi),
    ("cerebras", "https://api.cerebras.ai/v1", Family::OpenAi),
    ("nvidia_nim", "https://integrate.api.nvidia.com/v1", Family::OpenAi),
    ("chutes", "https://llm.chutes.ai/v1", Family::OpenAi),
    ("cohere", "https://api.cohere.ai/compatibility/v1", Family::OpenAi),
    ("qwen_code", "https://dashscope.aliyuncs.com/compatible-mode/v1", Family::OpenAi),
    ("iflow", "https://apis.iflow.cn/v1", Family::OpenAi),
    // No default base: each Azure resource has its own (`AZURE_API_BASE`, required).
    ("azure", "", Family::OpenAi),
    // The default base is made from `BEDROCK_AWS_REGION` (`bedrock::default_base`).
    ("bedrock", "", Family::Bedrock),
    ("anthropic", "https://api.anthropic.com/v1", Family::Anthropic),
    ("gemini", "https://generativelanguage.googleapis.com/v1beta", Family::Gemini),
    ("gemini_cli", "https://cloudcode-pa.googleapis.com/v1internal", Family::CodeAssist),
    // Express mode's base; `VERTEX_PROJECT` or a service account's project gives the project's.
    ("vertex", "https://aiplatform.googleapis.com/v1", Family::Vertex),
];

/// The variables that give `provider` its keys, for the error that says none is set.
pub fn credential_variables(provider: &str) -> String {
    match provider {
        // Bedrock's usual credential is an AWS key pair.
        bedrock::NAME => "BEDROCK_AWS_ACCESS_KEY_ID and BEDROCK_AWS_SECRET_ACCESS_KEY, or BEDROCK_API_KEY,".to_string(),
        _ => format!("{}_API_KEY", provider.to_ascii_uppercase()),
    }
}

/// Splits `provider/model-id` at the first `/`; the model id may hold more slashes.
pub fn split_model(model: &str) -> Option<(&str, &str)> {
    let (provider, id) = model.split_once('/')?;
    (!provider.is_empty() && !id.is_empty()).then_some((provider, id))
}

/// A model id as one upstream URL path segment, for the families that name the model in the
/// URL (Gemini, Azure's deployments). Only `A-Z a-z 0-9 . _ -` pass, which every real model id uses; they are
/// unreserved in URLs, so the segment is its own percent-encoding. Anything else (`/ ? # : %`,
/// spaces, controls), an empty id, `.` and `..` could reach another resource or method of the
/// upstream API with a pool key: a 400 on `model`, before any upstream call.
pub fn path_segment(id: &str) -> Result<&str, ApiError> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if id.is_empty() || id == "." || id == ".." || !id.bytes().all(unreserved) {
        let shown: String = id.chars().flat_map(char::escape_default).take(200).collect();
        return Err(ApiError::invalid_request(format!(
            "model id '{shown}' cannot be sent upstream: use letters, digits, '.', '_' and '-' only"
        ))
        .with_param("model"));
    }
    Ok(id)
}

/// Attaches the key the way the family expects it. The body is built once per
/// client request and re-sent unchanged to each key tried.
pub fn with_key(family: Family, mut req: UpstreamRequest, key: &Secret) -> UpstreamRequest {
    match family {
        Family::OpenAi | Family::CodeAssist | Family::Bedrock => {
            req.headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
        }
        Family::Anthropic => {
            req.headers.push(("x-api-key".into(), key.expose().to_string()));
            req.headers.push(("anthropic-version".into(), "2023-06-01".into()));
        }
        Family::Gemini => req.headers.push(("x-goog-api-key".into(), key.expose().to_string())),
        Family::Vertex => return vertex::with_api_key(req, key),
    }
    req
}

/// The API base an OAuth credential's `resource_url` names: `https://` when it has no scheme,
/// `/v1` appended when it does not end so (`portal.qwen.ai` is `https://portal.qwen.ai/v1`).
pub fn resource_base(resource_url: &str) -> String {
    let url = resource_url.trim().trim_end_matches('/');
    let url = if url.contains("://") { url.to_string() } else { format!("https://{url}") };
    if url.ends_with("/v1") { url } else { format!("{url}/v1") }
}

/// The family's model list request: `GET {base}/models`, asking for one big page where the
/// API pages (Anthropic's default page is 20 models, Gemini's 50).
pub fn models_request(family: Family, base: &str) -> UpstreamRequest {
    let query = match family {
        Family::Anthropic => "?limit=1000",
        Family::Gemini => "?pageSize=1000",
        Family::OpenAi | Family::CodeAssist | Family::Vertex | Family::Bedrock => "",
    };
    UpstreamRequest {
        method: Method::Get,
        url: format!("{base}/models{query}"),
        headers: Vec::new(),
        body: None,
        stream: false,
    }
}

/// Model ids from the family's model list answer.
pub fn model_ids(family: Family, body: &Value) -> Vec<String> {
    match family {
        Family::OpenAi | Family::CodeAssist | Family::Vertex | Family::Bedrock => openai::model_ids(body),
        Family::Anthropic => anthropic::model_ids(body),
        Family::Gemini => gemini::model_ids(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_provider_and_model() {
        assert_eq!(split_model("openai/gpt-4o"), Some(("openai", "gpt-4o")));
        assert_eq!(
            split_model("nvidia_nim/deepseek-ai/deepseek-v3.1"),
            Some(("nvidia_nim", "deepseek-ai/deepseek-v3.1"))
        );
        assert_eq!(split_model("gpt-4o"), None);
        assert_eq!(split_model("/gpt-4o"), None);
        assert_eq!(split_model("openai/"), None);
    }

    #[test]
    fn resource_urls_become_v1_bases() {
        assert_eq!(resource_base("portal.qwen.ai"), "https://portal.qwen.ai/v1");
        assert_eq!(resource_base("https://portal.qwen.ai/v1/"), "https://portal.qwen.ai/v1");
        assert_eq!(resource_base("http://127.0.0.1:9"), "http://127.0.0.1:9/v1");
    }

    #[test]
    fn path_segments_are_plain_ids_only() {
        for good in ["gemini-2.5-flash", "gemini-2.0-flash-exp", "text-embedding-004", "my_model.v2"] {
            assert_eq!(path_segment(good).unwrap(), good);
        }
        for bad in ["", ".", "..", "a/b", "a%2Fb", "gemini-2.5-flash:countTokens#", "x?y", "a b", "a\nb", "é"] {
            let e = path_segment(bad).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_deref(), e.param.as_deref()),
                (400, Some("invalid_request"), Some("model"))
            );
        }
    }
}

/// Property tests: the Anthropic and Gemini stream translators fed arbitrary events
/// (`scripts/fuzz.sh` runs them with more cases).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::sse::Event;
    use proptest::prelude::*;
    use serde_json::{Map, json};

    /// Any JSON value, small.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An object whose fields are each sometimes left out, sometimes the right shape and
    /// sometimes anything at all.
    fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
        let fields: Vec<_> = fields
            .into_iter()
            .map(|(name, typed)| {
                proptest::option::of(prop_oneof![3 => typed, 1 => any_json()]).prop_map(move |v| (name, v))
            })
            .collect();
        fields
            .prop_map(|fields| {
                let map: Map<String, Value> =
                    fields.into_iter().filter_map(|(n, v)| Some((n.to_string(), v?))).collect();
                Value::Object(map)
            })
            .boxed()
    }

    fn text() -> BoxedStrategy<Value> {
        "\\PC{0,6}".prop_map(Value::from).boxed()
    }

    fn one_of(words: &'static [&'static str]) -> BoxedStrategy<Value> {
        proptest::sample::select(words).prop_map(Value::from).boxed()
    }

    fn small() -> BoxedStrategy<Value> {
        prop_oneof![0u64..4, Just(u64::MAX)].prop_map(Value::from).boxed()
    }

    fn usage() -> BoxedStrategy<Value> {
        object(vec![("input_tokens", small()), ("output_tokens", small()), ("cache_read_input_tokens", small())])
    }

    fn anthropic_event() -> impl Strategy<Value = Event> {
        let kinds = &[
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "error",
            "ping",
        ];
        let block = object(vec![
            ("type", one_of(&["text", "thinking", "tool_use", "redacted_thinking"])),
            ("text", text()),
            ("thinking", text()),
            ("id", text()),
            ("name", text()),
            ("input", any_json().boxed()),
        ]);
        let delta = object(vec![
            ("type", one_of(&["text_delta", "thinking_delta", "input_json_delta", "signature_delta"])),
            ("text", text()),
            ("thinking", text()),
            ("partial_json", text()),
            ("stop_reason", one_of(&["end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal"])),
        ]);
        let message = object(vec![("id", text()), ("model", text()), ("usage", usage())]);
        let data = object(vec![
            ("type", one_of(kinds)),
            ("index", small()),
            ("message", message),
            ("content_block", block),
            ("delta", delta),
            ("usage", usage()),
            ("error", object(vec![("type", text()), ("message", text())])),
        ]);
        event(proptest::option::of(one_of(kinds)), data)
    }

    fn gemini_event() -> impl Strategy<Value = Event> {
        let part = object(vec![
            ("text", text()),
            ("thought", any::<bool>().prop_map(Value::from).boxed()),
            ("functionCall", object(vec![("name", text()), ("args", any_json().boxed())])),
            ("thoughtSignature", text()),
        ]);
        let candidate = object(vec![
            ("index", small()),
            (
                "content",
                object(vec![
                    ("role", one_of(&["model"])),
                    ("parts", proptest::collection::vec(part, 0..3).prop_map(Value::Array).boxed()),
                ]),
            ),
            ("finishReason", one_of(&["STOP", "MAX_TOKENS", "SAFETY", "MALFORMED_FUNCTION_CALL", "OTHER"])),
        ]);
        let data = object(vec![
            ("candidates", proptest::collection::vec(candidate, 0..3).prop_map(Value::Array).boxed()),
            (
                "usageMetadata",
                object(vec![
                    ("promptTokenCount", small()),
                    ("candidatesTokenCount", small()),
                    ("thoughtsTokenCount", small()),
                ]),
            ),
            ("modelVersion", text()),
            ("promptFeedback", object(vec![("blockReason", one_of(&["SAFETY", "OTHER"]))])),
            ("error", object(vec![("code", small()), ("message", text()), ("status", text())])),
        ]);
        let data = prop_oneof![4 => data, 1 => any_json()];
        event(Just(None), data)
    }

    fn bedrock_event() -> impl Strategy<Value = Event> {
        let kinds = &[
            "messageStart",
            "contentBlockStart",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata",
            "throttlingException",
            "error",
        ];
        let delta = object(vec![
            ("text", text()),
            ("reasoningContent", object(vec![("text", text()), ("signature", text())])),
            ("toolUse", object(vec![("input", text())])),
        ]);
        let data = object(vec![
            ("role", one_of(&["assistant"])),
            ("contentBlockIndex", small()),
            ("start", object(vec![("toolUse", object(vec![("toolUseId", text()), ("name", text())]))])),
            ("delta", delta),
            ("stopReason", one_of(&["end_turn", "tool_use", "max_tokens", "guardrail_intervened"])),
            (
                "usage",
                object(vec![("inputTokens", small()), ("outputTokens", small()), ("cacheReadInputTokens", small())]),
            ),
            ("message", text()),
        ]);
        event(proptest::option::of(one_of(kinds)), data)
    }

    /// An event: its name and the data as JSON, or now and then not JSON at all.
    fn event(
        name: impl Strategy<Value = Option<Value>>,
        data: impl Strategy<Value = Value>,
    ) -> impl Strategy<Value = Event> {
        let data = prop_oneof![8 => data.prop_map(|d| d.to_string()), 1 => "\\PC{0,8}"];
        (name, data).prop_map(|(name, data)| Event { name: name.and_then(|n| n.as_str().map(String::from)), data })
    }

    /// The rules a translated stream keeps, whatever came in: every chunk carries the same
    /// `id`, `created` and `model` and is a `chat.completion.chunk`; an error is the last
    /// step and comes at most once; and once finished, the stream has either ended in an
    /// error or has given a `finish_reason`.
    fn check(mut translator: Box<dyn StreamTranslator>, events: &[Event]) -> Result<(), TestCaseError> {
        let mut steps = Vec::new();
        for event in events {
            translator.event(event, &mut steps);
        }
        translator.finish(&mut steps);
        let errors = steps.iter().filter(|s| matches!(s, Translated::Error(_))).count();
        prop_assert!(errors <= 1);
        if errors == 1 {
            prop_assert!(matches!(steps.last(), Some(Translated::Error(_))), "an error is the last step");
        }
        let chunks: Vec<&Value> =
            steps.iter().filter_map(|s| if let Translated::Chunk(c) = s { Some(c) } else { None }).collect();
        for chunk in &chunks {
            prop_assert_eq!(&chunk["object"], "chat.completion.chunk");
            for field in ["id", "created", "model"] {
                prop_assert_eq!(&chunk[field], &chunks[0][field], "{} of {}", field, chunk);
            }
        }
        let finished =
            chunks.iter().any(|c| c["choices"].as_array().into_iter().flatten().any(|c| !c["finish_reason"].is_null()));
        prop_assert!(errors == 1 || finished, "the stream ended without an error or a finish_reason");
        Ok(())
    }

    /// Regression: usage counts near u64::MAX overflowed the translated usage's sums.
    #[test]
    fn huge_usage_saturates() {
        let usage = |t: &mut Box<dyn StreamTranslator>, data: Value| {
            let mut out = Vec::new();
            t.event(&Event { name: None, data: data.to_string() }, &mut out);
            t.finish(&mut out);
            out.into_iter().find_map(|s| if let Translated::Chunk(c) = s { c.get("usage").cloned() } else { None })
        };
        let max = u64::MAX;
        let mut gemini = gemini::stream_translator("g", "chatcmpl-x", 7);
        let data = json!({"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": max, "candidatesTokenCount": max, "thoughtsTokenCount": max}});
        let got = usage(&mut gemini, data).unwrap();
        assert_eq!((got["completion_tokens"].as_u64(), got["total_tokens"].as_u64()), (Some(max), Some(max)));
        let mut anthropic = anthropic::stream_translator("c", 7);
        let start = json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": max, "cache_read_input_tokens": max, "output_tokens": max}}});
        let mut out = Vec::new();
        anthropic.event(&Event { name: None, data: start.to_string() }, &mut out);
        let stop = Event { name: None, data: json!({"type": "message_stop"}).to_string() };
        anthropic.event(&stop, &mut out);
        let got =
            out.iter().find_map(|s| if let Translated::Chunk(c) = s { c.get("usage").cloned() } else { None }).unwrap();
        assert_eq!((got["prompt_tokens"].as_u64(), got["total_tokens"].as_u64()), (Some(max), Some(max)));
    }

    /// Regression: a second `message_start` changed the chunks' id mid-stream.
    #[test]
    fn a_repeated_message_start_keeps_the_id() {
        let events: Vec<Event> = [
            json!({"type": "message_start", "message": {"id": "msg_1"}}),
            json!({"type": "message_start", "message": {"id": "msg_2"}}),
            json!({"type": "message_stop"}),
        ]
        .iter()
        .map(|d| Event { name: None, data: d.to_string() })
        .collect();
        check(anthropic::stream_translator("c", 7), &events).unwrap();
    }

    proptest! {
        #![proptest_config(crate::fuzz_config::config())]

        #[test]
        fn anthropic_stream(events in proptest::collection::vec(anthropic_event(), 0..12)) {
            check(anthropic::stream_translator("claude", 7), &events)?;
        }

        #[test]
        fn bedrock_stream(events in proptest::collection::vec(bedrock_event(), 0..10)) {
            check(bedrock::stream_translator("m", "chatcmpl-x", 7), &events)?;
        }

        #[test]
        fn gemini_stream(events in proptest::collection::vec(gemini_event(), 0..8)) {
            check(gemini::stream_translator("gemini", "chatcmpl-x", 7), &events)?;
        }
    }
}
