//! Google Code Assist (`v1internal`), the API a Gemini CLI account is served through: the
//! `gemini_cli` family. It is the Gemini API in an envelope, so this module only wraps and
//! unwraps around `providers::gemini`, in the same four concerns as every family:
//! - build: `gemini::build_chat`'s body becomes the `request` of `{model, project, request}`,
//!   posted to `{base}:generateContent`, or `{base}:streamGenerateContent?alt=sse` for a stream;
//! - parse_response: the answer's `response` is a generateContent response for `gemini::parse_chat`;
//! - translate_event: each event's `response` is unwrapped and fed to Gemini's translator;
//! - classify_error: the errors are Google RPC's shape, which `errors` already reads (quota
//!   reasons and `retryDelay` / `quotaResetDelay` hints included).
//!
//! The project differs per credential while the body is built once per request: it is built
//! with an empty `project`, and `with_project` splices each credential's in at attempt time.
//! The onboarding calls that find a credential's project (`loadCodeAssist`, `onboardUser` and
//! its operation) are built and read here too; `oauth::project` makes them. So is the short map
//! of preview variants a rate-limited model falls back to (`preview_variant`, `with_model`).
//! Pure functions: no I/O, no clock.

use crate::error::ApiError;
use crate::json_splice;
use crate::providers::hub::{self, Body};
use crate::providers::{StreamTranslator, Translated, gemini};
use crate::sse;
use crate::upstream::{Method, UpstreamRequest};
use serde_json::{Value, json};

/// The models listed when `GEMINI_CLI_MODELS` is not set: Code Assist has no model list call.
pub const MODELS: &[&str] =
    &["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview", "gemini-3-flash-preview"];

// ---- build ---------------------------------------------------------------------------------

/// OpenAI chat body (already validated) -> the Code Assist call, with an empty `project` for
/// `with_project` to fill. The key (a Bearer token) is added by `providers::with_key`.
pub fn build_chat(base: &str, model: &str, body: &Body, stream: bool) -> Result<UpstreamRequest, ApiError> {
    let inner = gemini::build_chat(base, model, body, stream)?;
    let request: Value = serde_json::from_slice(inner.body.as_deref().unwrap_or(b"{}")).unwrap_or(Value::Null);
    let envelope = json!({"model": model, "project": "", "request": request});
    let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    Ok(UpstreamRequest {
        url: format!("{base}:{action}"),
        body: Some(serde_json::to_vec(&envelope).expect("a JSON object serialises")),
        ..inner
    })
}

/// The request with `project` set, every other byte as built.
pub fn with_project(mut request: UpstreamRequest, project: &str) -> UpstreamRequest {
    if let Some(body) = request.body.as_deref().and_then(|b| json_splice::replace_string(b, &["project"], project)) {
        request.body = Some(body);
    }
    request
}

/// The request for `model` instead, every other byte as built (the model is named only in
/// the envelope, not in the URL).
pub fn with_model(mut request: UpstreamRequest, model: &str) -> UpstreamRequest {
    if let Some(body) = request.body.as_deref().and_then(|b| json_splice::replace_string(b, &["model"], model)) {
        request.body = Some(body);
    }
    request
}

/// The preview release a model's request may fall back to when every account is rate-limited
/// on the model itself: Code Assist counts a preview's quota apart from its model's. These are
/// the dated previews the two models shipped as; no authoritative list of later ones exists,
/// so the map is short and fixed.
pub fn preview_variant(model: &str) -> Option<&'static str> {
    match model {
        "gemini-2.5-pro" => Some("gemini-2.5-pro-preview-06-05"),
        "gemini-2.5-flash" => Some("gemini-2.5-flash-preview-05-20"),
        _ => None,
    }
}

// ---- parse_response ------------------------------------------------------------------------

/// The Code Assist answer -> OpenAI `chat.completion`, through Gemini's parser.
pub fn parse_chat(model: &str, id: &str, created: u64, body: &Value) -> Result<Value, String> {
    gemini::parse_chat(model, id, created, unwrap(body))
}

/// The generateContent response inside an answer; an answer without one (an error) as it is.
fn unwrap(body: &Value) -> &Value {
    body.get("response").filter(|r| r.is_object()).unwrap_or(body)
}

// ---- translate_event -----------------------------------------------------------------------

/// Gemini's stream translator, fed each event's `response`.
pub fn stream_translator(model: &str, id: &str, created: u64) -> Box<dyn StreamTranslator> {
    Box::new(Unwrapping { inner: gemini::stream_translator(model, id, created) })
}

struct Unwrapping {
    inner: Box<dyn StreamTranslator>,
}

impl StreamTranslator for Unwrapping {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        let unwrapped = match serde_json::from_str::<Value>(&event.data) {
            Ok(Value::Object(mut envelope)) => match envelope.remove("response") {
                Some(response @ Value::Object(_)) => {
                    Some(sse::Event { name: event.name.clone(), data: response.to_string() })
                }
                _ => None,
            },
            _ => None,
        };
        // Anything else (an error object, a malformed event) is Gemini's translator's to judge.
        self.inner.event(unwrapped.as_ref().unwrap_or(event), out);
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        self.inner.finish(out);
    }
}

// ---- onboarding ----------------------------------------------------------------------------

/// The client metadata every onboarding call carries.
fn metadata() -> Value {
    json!({"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"})
}

/// `POST {base}:loadCodeAssist`: which tier and project the account has.
pub fn load_request(base: &str) -> UpstreamRequest {
    post(format!("{base}:loadCodeAssist"), json!({"metadata": metadata()}))
}

/// `POST {base}:onboardUser` for `tier`. The project is left out: the free tier refuses one.
pub fn onboard_request(base: &str, tier: &str) -> UpstreamRequest {
    post(format!("{base}:onboardUser"), json!({"tierId": tier, "metadata": metadata()}))
}

/// `GET {base}/{operation}`: the onboarding operation's state. `name` comes from the API; one
/// that is not a plain `operations/...` path is refused rather than sent with the token.
pub fn operation_request(base: &str, name: &str) -> Option<UpstreamRequest> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.');
    let ok = name.starts_with("operations/") && name.bytes().all(plain) && !name.contains("..");
    ok.then(|| UpstreamRequest {
        method: Method::Get,
        url: format!("{base}/{name}"),
        headers: Vec::new(),
        body: None,
        stream: false,
    })
}

fn post(url: String, body: Value) -> UpstreamRequest {
    hub::post_json(url, &body, false)
}

/// What `loadCodeAssist` says about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Onboarded, with this project.
    Project(String),
    /// Not onboarded yet: onboard it to this tier.
    Onboard(String),
    /// Nothing keyrelay can do: the account must act (validate, pick a project).
    Refused(String),
}

/// Reads a `loadCodeAssist` answer.
pub fn read_load(answer: &Value) -> Loaded {
    if answer.get("currentTier").is_some_and(|t| !t.is_null()) {
        return match project_of(answer.get("cloudaicompanionProject")) {
            Some(project) => Loaded::Project(project),
            None => Loaded::Refused("the account has a tier but no project; set GEMINI_CLI_PROJECT_ID".into()),
        };
    }
    let ineligible = answer.get("ineligibleTiers").and_then(Value::as_array).into_iter().flatten();
    for tier in ineligible {
        if tier.get("reasonCode").and_then(Value::as_str) == Some("VALIDATION_REQUIRED") {
            return Loaded::Refused("the account must be validated first: run the Gemini CLI once with it".into());
        }
    }
    let allowed = answer.get("allowedTiers").and_then(Value::as_array);
    let default = allowed.into_iter().flatten().find(|t| t.get("isDefault").and_then(Value::as_bool) == Some(true));
    let tier = default.and_then(|t| t.get("id")).and_then(Value::as_str).unwrap_or("legacy-tier");
    Loaded::Onboard(tier.to_string())
}

/// The account's tier in a `loadCodeAssist` answer: the paid one (Pro, Ultra) when it has
/// one, else its current one.
pub fn tier_of(answer: &Value) -> Option<String> {
    let id = |field: &str| answer.get(field)?.get("id")?.as_str().map(str::trim).filter(|t| !t.is_empty());
    id("paidTier").or_else(|| id("currentTier")).map(str::to_string)
}

/// Reads an `onboardUser` answer or operation: `None` while it runs, then the project or why
/// there is none.
pub fn read_operation(answer: &Value) -> Option<Result<String, String>> {
    if answer.get("done").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
        let message = error.get("message").and_then(Value::as_str).unwrap_or("no message");
        return Some(Err(format!("onboarding failed: {message}")));
    }
    let project = project_of(answer.get("response").and_then(|r| r.get("cloudaicompanionProject")));
    Some(project.ok_or_else(|| "onboarding named no project; set GEMINI_CLI_PROJECT_ID".into()))
}

/// A project given as a string or as `{"id": ...}`.
fn project_of(value: Option<&Value>) -> Option<String> {
    let id = match value? {
        Value::String(s) => s.as_str(),
        other => other.get("id").and_then(Value::as_str)?,
    };
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{self, Pair, body_of, object, replay};
    use serde_json::Map;
    use std::path::Path;

    const BASE: &str = "https://cloudcode-pa.googleapis.com/v1internal";
    const MODEL: &str = "gemini-2.5-flash";
    const ID: &str = "chatcmpl-gm1";
    const CREATED: u64 = 1_760_000_000;

    fn chat(stream: bool) -> Map<String, Value> {
        object(json!({"model": "gemini_cli/gemini-2.5-flash", "stream": stream, "temperature": 0.5,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}))
    }

    #[test]
    fn the_envelope_wraps_the_gemini_body_unchanged() {
        for stream in [false, true] {
            let gemini = gemini::build_chat(BASE, MODEL, &chat(stream), stream).unwrap();
            let built = build_chat(BASE, MODEL, &chat(stream), stream).unwrap();
            let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            assert_eq!(built.url, format!("{BASE}:{action}"));
            assert_eq!(built.stream, stream);
            assert_eq!(built.headers, gemini.headers);
            assert_eq!(body_of(&built), json!({"model": MODEL, "project": "", "request": body_of(&gemini)}));
            let scoped = with_project(built, "proj-1");
            assert_eq!(body_of(&scoped)["project"], "proj-1");
            assert_eq!(body_of(&scoped)["request"], body_of(&gemini));
        }
    }

    #[test]
    fn a_model_id_that_is_not_a_plain_segment_is_refused() {
        let e = build_chat(BASE, "x:loadCodeAssist", &chat(false), false).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
    }

    #[test]
    fn a_whole_answer_is_unwrapped() {
        let response = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hello"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}, "modelVersion": MODEL});
        let envelope = json!({"response": response, "traceId": "t1"});
        let got = parse_chat(MODEL, ID, CREATED, &envelope).unwrap();
        assert_eq!(got, gemini::parse_chat(MODEL, ID, CREATED, &response).unwrap());
        assert_eq!(got["choices"][0]["message"]["content"], "hello");
        assert!(parse_chat(MODEL, ID, CREATED, &json!({"error": {"code": 500, "message": "boom"}})).is_err());
    }

    // ---- golden cases: tests/data/providers/code_assist/<case>/ (README.md there) -----------

    #[test]
    fn golden_cases() {
        golden::run(
            "providers/code_assist",
            &[
                Pair { input: "upstream.sse", expected: "expected_openai_chunks.jsonl", actual: &golden_stream },
                Pair {
                    input: "openai_request.json",
                    expected: "expected_upstream_request.json",
                    actual: &golden_request,
                },
            ],
            9,
        );
    }

    fn golden_stream(input: &Path, name: &str) -> Value {
        golden::same_in_pieces(&golden::read_bytes(input), name, |input, piece| {
            golden::steps_json(&replay(stream_translator(MODEL, ID, CREATED), input, piece))
        })
    }

    fn golden_request(input: &Path, name: &str) -> Value {
        golden::request_json(&golden::build_request(input, name, "gemini_cli", |model, body, stream| {
            build_chat(BASE, model, body, stream)
        }))
    }

    #[test]
    fn load_answers() {
        let onboarded = json!({"currentTier": {"id": "free-tier"}, "cloudaicompanionProject": "proj-7"});
        assert_eq!(read_load(&onboarded), Loaded::Project("proj-7".into()));
        let object =
            json!({"currentTier": {"id": "standard-tier"}, "cloudaicompanionProject": {"id": "proj-8", "name": "x"}});
        assert_eq!(read_load(&object), Loaded::Project("proj-8".into()));
        assert!(matches!(read_load(&json!({"currentTier": {"id": "standard-tier"}})), Loaded::Refused(_)));
        let new = json!({"allowedTiers": [{"id": "legacy-tier"}, {"id": "free-tier", "isDefault": true}]});
        assert_eq!(read_load(&new), Loaded::Onboard("free-tier".into()));
        assert_eq!(read_load(&json!({})), Loaded::Onboard("legacy-tier".into()));
        let paid = json!({"currentTier": {"id": "standard-tier"}, "paidTier": {"id": "g1-ultra-tier"}});
        assert_eq!(
            (tier_of(&paid).as_deref(), tier_of(&object).as_deref()),
            (Some("g1-ultra-tier"), Some("standard-tier"))
        );
        assert_eq!(tier_of(&new), None);
        let validate =
            json!({"ineligibleTiers": [{"reasonCode": "VALIDATION_REQUIRED", "validationUrl": "https://x"}]});
        assert!(matches!(read_load(&validate), Loaded::Refused(_)));
    }

    #[test]
    fn operations() {
        assert_eq!(read_operation(&json!({"name": "operations/a", "done": false})), None);
        let done = json!({"name": "operations/a", "done": true, "response": {"cloudaicompanionProject": {"id": "fine-bonito-1"}}});
        assert_eq!(read_operation(&done), Some(Ok("fine-bonito-1".into())));
        assert!(matches!(read_operation(&json!({"done": true, "error": {"message": "no"}})), Some(Err(_))));
        assert!(matches!(read_operation(&json!({"done": true, "response": {}})), Some(Err(_))));
        assert_eq!(operation_request(BASE, "operations/abc-1").unwrap().url, format!("{BASE}/operations/abc-1"));
        for bad in ["../x", "operations/../../v1", "operations/a?b", "other/a"] {
            assert!(operation_request(BASE, bad).is_none(), "{bad}");
        }
        let body = body_of(&onboard_request(BASE, "free-tier"));
        assert_eq!(body["tierId"], "free-tier");
        assert!(body.get("cloudaicompanionProject").is_none());
    }
}
