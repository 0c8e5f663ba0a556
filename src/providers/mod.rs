//! Upstream providers, hub and spoke: every family translates to and from the OpenAI chat
//! format, nothing translates provider to provider. This module knows the built-in providers
//! and builds `UpstreamRequest`s; it does no I/O.

pub mod anthropic;
pub mod code_assist;
pub mod errors;
pub mod gemini;
pub mod iflow;
pub mod openai;
pub mod think;

use crate::error::ApiError;
use crate::keys::Secret;
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
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::OpenAi => "openai",
            Family::Anthropic => "anthropic",
            Family::Gemini => "gemini",
            Family::CodeAssist => "code-assist",
        }
    }
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
    ("anthropic", "https://api.anthropic.com/v1", Family::Anthropic),
    ("gemini", "https://generativelanguage.googleapis.com/v1beta", Family::Gemini),
    ("gemini_cli", "https://cloudcode-pa.googleapis.com/v1internal", Family::CodeAssist),
];

pub fn builtin(name: &str) -> Option<(&'static str, Family)> {
    BUILTIN.iter().find(|(n, _, _)| *n == name).map(|&(_, base, family)| (base, family))
}

/// Splits `provider/model-id` at the first `/`; the model id may hold more slashes.
pub fn split_model(model: &str) -> Option<(&str, &str)> {
    let (provider, id) = model.split_once('/')?;
    (!provider.is_empty() && !id.is_empty()).then_some((provider, id))
}

/// A model id as one upstream URL path segment, for the families that name the model in the
/// URL (Gemini). Only `A-Z a-z 0-9 . _ -` pass, which every real model id uses; they are
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
        Family::OpenAi | Family::CodeAssist => {
            req.headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
        }
        Family::Anthropic => {
            req.headers.push(("x-api-key".into(), key.expose().to_string()));
            req.headers.push(("anthropic-version".into(), "2023-06-01".into()));
        }
        Family::Gemini => req.headers.push(("x-goog-api-key".into(), key.expose().to_string())),
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
        Family::OpenAi | Family::CodeAssist => "",
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
        Family::OpenAi | Family::CodeAssist => openai::model_ids(body),
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
