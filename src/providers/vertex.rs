//! Google Vertex AI: no wire format of its own. Google's models (`vertex/gemini-*`) speak the
//! Gemini API's generateContent, Anthropic's (`vertex/claude-*`) the Messages API, each under
//! its publisher's path of one Vertex base (Vertex AI's "Generative AI" REST reference and its
//! "Use Claude models" page):
//!
//! - `{base}/publishers/google/models/<m>:generateContent`, `:streamGenerateContent?alt=sse`,
//!   and `:predict` for embedding models (`instances: [{content}]`, answered with
//!   `predictions[].embeddings.values` and `statistics.token_count`);
//! - `{base}/publishers/anthropic/models/<m>:rawPredict` and `:streamRawPredict`, the Messages
//!   body without `model` (it is in the URL) and with `anthropic_version: vertex-2023-10-16`.
//!
//! The base is `https://<location>-aiplatform.googleapis.com/v1/projects/<p>/locations/<l>`
//! (host `aiplatform.googleapis.com` for the `global` location) for service-account tokens,
//! and express mode's `https://aiplatform.googleapis.com/v1` for API keys; `VERTEX_API_BASE`
//! replaces either. Requests are built against the provider's base and moved to the
//! credential's own at attempt time (`rebase`). Translation is the Gemini and Anthropic
//! families'; this module only picks the publisher, builds URLs and tweaks bodies. No I/O.

use super::hub::{self, Body};
use super::{anthropic, gemini, path_segment};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value, json};

/// The provider's name.
pub const NAME: &str = "vertex";

/// `VERTEX_LOCATION` when unset.
pub const DEFAULT_LOCATION: &str = "us-central1";

/// Express mode's base: no project, no location (Vertex AI's express mode REST reference).
pub const EXPRESS_BASE: &str = "https://aiplatform.googleapis.com/v1";

/// The `anthropic_version` Vertex requires in a Claude request's body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Who publishes a model, which decides its path and its translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// Gemini and Google's other models: the Gemini translator.
    Google,
    /// Claude: the Anthropic translator.
    Anthropic,
}

/// `claude-*` is Anthropic's; everything else is Google's.
pub fn publisher(model: &str) -> Publisher {
    if model.starts_with("claude") { Publisher::Anthropic } else { Publisher::Google }
}

/// The project base of `project` in `location`.
pub fn project_base(project: &str, location: &str) -> String {
    let host = if location == "global" {
        "aiplatform.googleapis.com".to_string()
    } else {
        format!("{location}-aiplatform.googleapis.com")
    };
    format!("https://{host}/v1/projects/{project}/locations/{location}")
}

/// A model id as its URL path segment: plain (`providers::path_segment`), with one `@version`
/// allowed, as Claude's ids on Vertex have (`claude-sonnet-4@20250514`).
pub fn model_segment(model: &str) -> Result<String, ApiError> {
    match model.split_once('@') {
        Some((name, version)) => Ok(format!("{}@{}", path_segment(name)?, path_segment(version)?)),
        None => Ok(path_segment(model)?.to_string()),
    }
}

fn model_url(base: &str, publisher: Publisher, model: &str, method: &str) -> Result<String, ApiError> {
    let publisher = match publisher {
        Publisher::Google => "google",
        Publisher::Anthropic => "anthropic",
    };
    Ok(format!("{base}/publishers/{publisher}/models/{}:{method}", model_segment(model)?))
}

/// An OpenAI chat body as the Vertex call of its model's publisher.
pub fn build_chat(base: &str, model: &str, body: &Body, stream: bool) -> Result<UpstreamRequest, ApiError> {
    model_segment(model)?;
    match publisher(model) {
        Publisher::Google => {
            // The Gemini translator's own URL is replaced below, so its model argument is only a
            // placeholder that its path check accepts (a Vertex id may carry an `@version`).
            let mut request = gemini::build_chat(base, "model", body, stream)?;
            let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            request.url = model_url(base, Publisher::Google, model, method)?;
            Ok(request)
        }
        Publisher::Anthropic => {
            let mut request = anthropic::build_chat(base, model, body, stream)?;
            let mut built: Map<String, Value> =
                serde_json::from_slice(request.body.as_deref().unwrap_or(b"{}")).expect("the translator built JSON");
            built.remove("model");
            built.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
            request.body = Some(serde_json::to_vec(&built).expect("a JSON map serialises"));
            let method = if stream { "streamRawPredict" } else { "rawPredict" };
            request.url = model_url(base, Publisher::Anthropic, model, method)?;
            Ok(request)
        }
    }
}

/// An OpenAI embeddings body (text inputs) as `:predict` of a Google embedding model:
/// one instance per input, `dimensions` as `outputDimensionality`.
pub fn build_embeddings(base: &str, model: &str, body: &Map<String, Value>) -> Result<UpstreamRequest, ApiError> {
    if publisher(model) == Publisher::Anthropic {
        return Err(ApiError::invalid_request(format!("'{model}' has no embeddings on Vertex AI")).with_param("model"));
    }
    let texts = hub::embedding_texts(body, "vertex")?;
    let mut request = json!({"instances": texts.iter().map(|t| json!({"content": t})).collect::<Vec<_>>()});
    if let Some(d) = hub::dimensions(body)? {
        request["parameters"] = json!({"outputDimensionality": d});
    }
    Ok(hub::post_json(model_url(base, Publisher::Google, model, "predict")?, &request, false))
}

/// A `:predict` answer of an embedding model as an OpenAI embeddings list; the token counts
/// of every input's `statistics` summed as usage.
pub fn parse_embeddings(model: &str, body: &Value) -> Result<Value, String> {
    let predictions = body.get("predictions").and_then(Value::as_array).ok_or("predict answered no predictions")?;
    let mut data = Vec::with_capacity(predictions.len());
    let mut tokens = 0u64;
    for (index, prediction) in predictions.iter().enumerate() {
        let values = prediction
            .pointer("/embeddings/values")
            .and_then(Value::as_array)
            .filter(|v| v.iter().all(Value::is_number))
            .ok_or_else(|| format!("predictions[{index}] has no embedding values"))?;
        let count = prediction.pointer("/embeddings/statistics/token_count").and_then(Value::as_f64).unwrap_or(0.0);
        tokens = tokens.saturating_add(count as u64);
        data.push(json!({"object": "embedding", "index": index, "embedding": values}));
    }
    Ok(
        json!({"object": "list", "model": model, "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// The request moved from the base it was built on to `base` (the credential's own).
pub fn rebase(mut request: UpstreamRequest, built_on: &str, base: &str) -> UpstreamRequest {
    if built_on != base {
        if let Some(path) = request.url.strip_prefix(built_on) {
            request.url = format!("{base}{path}");
        }
    }
    request
}

/// An express-mode API key, in `x-goog-api-key`.
pub fn with_api_key(mut request: UpstreamRequest, key: &Secret) -> UpstreamRequest {
    request.headers.push(("x-goog-api-key".into(), key.expose().to_string()));
    request
}

/// A service account's access token, as a bearer.
pub fn with_token(mut request: UpstreamRequest, token: &Secret) -> UpstreamRequest {
    request.headers.push(("authorization".into(), format!("Bearer {}", token.expose())));
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{self, read_json};
    use std::path::Path;

    const BASE: &str = "https://us-central1-aiplatform.googleapis.com/v1/projects/proj-1/locations/us-central1";

    #[test]
    fn bases_by_location() {
        assert_eq!(project_base("proj-1", "us-central1"), BASE);
        assert_eq!(project_base("p", "global"), "https://aiplatform.googleapis.com/v1/projects/p/locations/global");
        assert_eq!(
            project_base("p", "europe-west4"),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4"
        );
    }

    #[test]
    fn publishers_by_model() {
        assert_eq!(publisher("claude-sonnet-4@20250514"), Publisher::Anthropic);
        assert_eq!(publisher("gemini-2.5-flash"), Publisher::Google);
        assert_eq!(publisher("text-embedding-005"), Publisher::Google);
    }

    #[test]
    fn model_segments_allow_one_version_only() {
        assert_eq!(model_segment("claude-sonnet-4@20250514").unwrap(), "claude-sonnet-4@20250514");
        assert_eq!(model_segment("gemini-2.5-flash").unwrap(), "gemini-2.5-flash");
        for bad in ["", "a@", "@1", "a@b@c", "a/b", "../x", "gemini:predict", "a%2Fb", "m?x"] {
            let e = model_segment(bad).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("model")), "{bad}");
        }
    }

    #[test]
    fn rebase_moves_only_the_base() {
        let request = build_embeddings(EXPRESS_BASE, "text-embedding-005", &object(json!({"input": "x"}))).unwrap();
        let moved = rebase(request, EXPRESS_BASE, BASE);
        assert_eq!(moved.url, format!("{BASE}/publishers/google/models/text-embedding-005:predict"));
    }

    #[test]
    fn credentials_go_in_their_headers() {
        let request = || {
            build_chat(
                BASE,
                "gemini-2.5-flash",
                &object(json!({"messages": [{"role": "user", "content": "x"}]})),
                false,
            )
            .unwrap()
        };
        let keyed = with_api_key(request(), &Secret::new("AIza-key"));
        assert!(keyed.headers.contains(&("x-goog-api-key".into(), "AIza-key".into())));
        let tokened = with_token(request(), &Secret::new("ya29.token"));
        assert!(tokened.headers.contains(&("authorization".into(), "Bearer ya29.token".into())));
    }

    #[test]
    fn claude_embeddings_are_refused() {
        let e = build_embeddings(BASE, "claude-sonnet-4", &object(json!({"input": "x"}))).unwrap_err();
        assert_eq!(e.status, 400);
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    // ---- golden cases: tests/data/providers/vertex/<case>/ (README.md there) ----------------

    const ID: &str = "chatcmpl-gm1";
    const CREATED: u64 = 1_760_000_000;

    #[test]
    fn golden_cases() {
        let pairs = golden::provider_pairs(&golden_request, &golden_response, "upstream.sse", &golden_stream);
        golden::run("providers/vertex", &pairs, 10);
    }

    /// `embeddings*` cases go through the embeddings calls.
    fn golden_request(input: &Path, name: &str) -> Value {
        let built = golden::build_request(input, name, "vertex", |model, body, stream| {
            if name.starts_with("embeddings") {
                build_embeddings(BASE, model, body)
            } else {
                build_chat(BASE, model, body, stream)
            }
        });
        golden::request_json(&built)
    }

    /// The upstream model id of a case, from its `openai_request.json`.
    fn case_model(input: &Path) -> String {
        let request = read_json(&input.with_file_name("openai_request.json"));
        let (_, model) = crate::providers::split_model(request["model"].as_str().unwrap()).unwrap();
        model.to_string()
    }

    fn golden_response(input: &Path, name: &str) -> Value {
        let (model, upstream) = (case_model(input), read_json(input));
        let got = if name.starts_with("embeddings") {
            parse_embeddings(&model, &upstream)
        } else if publisher(&model) == Publisher::Anthropic {
            anthropic::parse_chat(&model, CREATED, &upstream)
        } else {
            gemini::parse_chat(&model, ID, CREATED, &upstream)
        };
        got.unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn golden_stream(input: &Path, name: &str) -> Value {
        let model = case_model(input);
        golden::same_in_pieces(&golden::read_bytes(input), name, |input, piece| {
            let translator = match publisher(&model) {
                Publisher::Anthropic => anthropic::stream_translator(&model, CREATED),
                Publisher::Google => gemini::stream_translator(&model, ID, CREATED),
            };
            golden::steps_json(&golden::replay(translator, input, piece))
        })
    }
}
