//! Azure OpenAI: the OpenAI family's bodies and answers (passed through), on Azure's own URLs
//! and with its own key header. Two APIs, as Azure's "Azure OpenAI in Azure AI Foundry Models
//! REST API reference" describes them:
//!
//! - the deployments API, `AZURE_API_BASE` = `https://<resource>.openai.azure.com`:
//!   `{base}/openai/deployments/<deployment>/chat/completions?api-version=<v>` (and
//!   `/embeddings`), the deployment named in the URL (`azure/<deployment>`);
//! - the v1 API, a base ending in `/openai/v1`: `{base}/chat/completions` and
//!   `{base}/embeddings`, the model named in the body, no `api-version`.
//!
//! Both take the key in an `api-key` header, not as a bearer. Errors (content filtering
//! included) go through `errors::classify` like every family's.

use super::path_segment;
use crate::error::{ApiError, ErrorKind};
use crate::secret::Secret;
use crate::upstream::{Method, UpstreamRequest};

/// The provider's name.
pub const NAME: &str = "azure";

/// `AZURE_API_VERSION` when unset: the latest generally available version of the data-plane
/// inference API.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// Whether `base` is the v1 API's (ends in `/openai/v1`), which takes no `api-version`.
pub fn is_v1(base: &str) -> bool {
    base.ends_with("/openai/v1")
}

/// Whether `version` can go into the query as it is (letters, digits, `.`, `_`, `-`):
/// `2024-10-21`, `2025-04-01-preview`.
pub fn valid_api_version(version: &str) -> bool {
    !version.is_empty() && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The error of an `azure/*` request when `AZURE_API_BASE` is not set.
pub fn missing_base() -> ApiError {
    ApiError::of(
        ErrorKind::ProviderNotConfigured,
        "provider 'azure' needs AZURE_API_BASE (https://<resource>.openai.azure.com, or a base ending in /openai/v1)",
    )
}

/// The URL of `operation` (`chat/completions`, `embeddings`) for `deployment`: on the v1 API
/// `{base}/{operation}`; otherwise `{base}/openai/deployments/<deployment>/{operation}` with
/// the `api-version` query, the deployment as one path segment (a 400 on `model` otherwise).
pub fn url(base: &str, api_version: &str, deployment: &str, operation: &str) -> Result<String, ApiError> {
    if base.is_empty() {
        return Err(missing_base());
    }
    if is_v1(base) {
        return Ok(format!("{base}/{operation}"));
    }
    let deployment = path_segment(deployment)?;
    Ok(format!("{base}/openai/deployments/{deployment}/{operation}?api-version={api_version}"))
}

/// The request with its URL moved to Azure's (`url`); the body stays the OpenAI one.
pub fn on_azure(
    mut request: UpstreamRequest,
    base: &str,
    api_version: &str,
    deployment: &str,
    operation: &str,
) -> Result<UpstreamRequest, ApiError> {
    request.url = url(base, api_version, deployment, operation)?;
    Ok(request)
}

/// The key in Azure's `api-key` header.
pub fn with_key(mut request: UpstreamRequest, key: &Secret) -> UpstreamRequest {
    request.headers.push(("api-key".into(), key.expose().to_string()));
    request
}

/// The model list request, for checking a key: the v1 API's `{base}/models`, or the
/// deployments API's `{base}/openai/models?api-version=<v>` (the models the resource can
/// deploy: not deployment names, so `GET /v1/models` lists only `AZURE_MODELS` there).
pub fn models_request(base: &str, api_version: &str) -> UpstreamRequest {
    let url =
        if is_v1(base) { format!("{base}/models") } else { format!("{base}/openai/models?api-version={api_version}") };
    UpstreamRequest { method: Method::Get, url, headers: Vec::new(), body: None, stream: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{self, Pair};
    use crate::providers::openai;
    use serde_json::Value;
    use std::path::Path;

    const BASE: &str = "https://res.openai.azure.com";

    #[test]
    fn golden_cases() {
        golden::run(
            "providers/azure",
            &[
                Pair {
                    input: "openai_request.json",
                    expected: "expected_upstream_request.json",
                    actual: &golden_request,
                },
                Pair {
                    input: "upstream_response.json",
                    expected: "expected_openai_response.json",
                    actual: &golden_response,
                },
                Pair { input: "upstream.sse", expected: "expected_openai_chunks.jsonl", actual: &golden_stream },
            ],
            4,
        );
    }

    /// `v1_*` cases use a base of the v1 API, the others the deployments API's.
    fn golden_request(input: &Path, name: &str) -> Value {
        let base = if name.starts_with("v1_") { format!("{BASE}/openai/v1") } else { BASE.to_string() };
        let built = golden::build_request(input, name, NAME, |model, body, stream| {
            let request = openai::build_chat(NAME, &base, model, body.clone(), stream);
            on_azure(request, &base, DEFAULT_API_VERSION, model, "chat/completions")
        });
        golden::request_json(&built)
    }

    fn golden_response(input: &Path, _name: &str) -> Value {
        let mut completion = serde_json::from_slice(&golden::read_bytes(input)).expect("JSON");
        openai::normalise_chat(&mut completion);
        completion
    }

    fn golden_stream(input: &Path, name: &str) -> Value {
        let translate = |bytes: &[u8], piece: usize| {
            golden::steps_json(&golden::replay(Box::new(openai::PassThrough::default()), bytes, piece))
        };
        golden::same_in_pieces(&golden::read_bytes(input), name, translate)
    }

    #[test]
    fn deployments_api_urls() {
        assert_eq!(
            url(BASE, "2024-10-21", "gpt-4o-prod", "chat/completions").unwrap(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            url(BASE, "2025-04-01-preview", "embed.small_1", "embeddings").unwrap(),
            "https://res.openai.azure.com/openai/deployments/embed.small_1/embeddings?api-version=2025-04-01-preview"
        );
    }

    #[test]
    fn v1_api_urls_have_no_deployment_or_version() {
        let base = "https://res.openai.azure.com/openai/v1";
        assert_eq!(url(base, "2024-10-21", "gpt-4o", "chat/completions").unwrap(), format!("{base}/chat/completions"));
        assert_eq!(
            url(base, "2024-10-21", "text-embedding-3-small", "embeddings").unwrap(),
            format!("{base}/embeddings")
        );
        assert!(is_v1(base) && !is_v1(BASE));
        assert_eq!(models_request(base, "x").url, format!("{base}/models"));
        assert_eq!(models_request(BASE, "2024-10-21").url, format!("{BASE}/openai/models?api-version=2024-10-21"));
    }

    #[test]
    fn deployments_that_are_not_one_segment_are_refused() {
        for bad in ["", ".", "..", "a/b", "a%2Fb", "x?api-version=1", "d#f", "a b", "../../admin"] {
            let e = url(BASE, "2024-10-21", bad, "chat/completions").unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("model")), "{bad}");
        }
    }

    #[test]
    fn a_missing_base_names_the_variable() {
        let e = url("", "2024-10-21", "d", "chat/completions").unwrap_err();
        assert!(e.message.contains("AZURE_API_BASE"), "{}", e.message);
    }

    #[test]
    fn api_versions() {
        assert!(valid_api_version("2024-10-21") && valid_api_version("2025-04-01-preview"));
        assert!(!valid_api_version("") && !valid_api_version("1&x=y") && !valid_api_version("a b"));
    }

    #[test]
    fn the_key_goes_in_api_key() {
        let req = models_request(BASE, "v");
        let keyed = with_key(req, &Secret::new("azure-key-1"));
        assert_eq!(keyed.headers, [("api-key".to_string(), "azure-key-1".to_string())]);
    }
}
