//! Errors: `Error` for commands (exit codes), `ApiError` for HTTP answers in the OpenAI and
//! Anthropic shapes (the error table of man/keyrelay.1).

use serde_json::{Value, json};
use std::fmt;
use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a command can fail with. Messages are lowercase without a trailing period.
#[derive(Debug)]
pub enum Error {
    Io { what: String, source: io::Error },
    Config(String),
    Usage(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Config(msg) | Error::Usage(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// anyhow-style `.context("reading .env")` without the crate.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Io { what: what.into(), source })
    }
}

/// Every error keyrelay itself answers with. The kind owns the HTTP status and the OpenAI `type`
/// and `code`; the Anthropic `type` follows from the status by one table (`anthropic_type_of`),
/// for keyrelay's errors and relayed ones alike, so no answer derives one from another's
/// string. An upstream's own error is relayed with its status, type and code
/// (`ApiError::upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    // A new kind goes into `ALL` below too (the man page test reads it).
    /// A request keyrelay cannot serve as sent (a bad field, an unsupported combination).
    InvalidRequest,
    /// A provider that needs a setting it does not have (`AZURE_API_BASE`, ...).
    ProviderNotConfigured,
    /// A provider with no key or account configured.
    NoCredentials,
    /// A missing or wrong proxy key.
    Unauthorized,
    UnknownRoute,
    ModelNotFound,
    MethodNotAllowed,
    /// A request head or body that did not arrive in time.
    RequestTimeout,
    /// A body over `MAX_REQUEST_BODY_BYTES`.
    RequestTooLarge,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    /// A request head over its size or field limit.
    HeadTooLarge,
    /// Every key of the provider is cooling down.
    AllKeysCooling,
    /// A bug: a panic while handling the request, or an invariant broken.
    Internal,
    /// No key got a usable answer, or the answer could not be used.
    UpstreamError,
    /// Every usable key stayed at its concurrency limit until the deadline.
    KeysBusy,
    /// keyrelay's own capacity (workers, connections) is taken.
    ServerBusy,
    /// `GLOBAL_TIMEOUT` passed.
    Timeout,
}

impl ErrorKind {
    #[cfg(test)]
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::InvalidRequest,
        ErrorKind::ProviderNotConfigured,
        ErrorKind::NoCredentials,
        ErrorKind::Unauthorized,
        ErrorKind::UnknownRoute,
        ErrorKind::ModelNotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::RequestTimeout,
        ErrorKind::RequestTooLarge,
        ErrorKind::ExpectationFailed,
        ErrorKind::HeadTooLarge,
        ErrorKind::AllKeysCooling,
        ErrorKind::Internal,
        ErrorKind::UpstreamError,
        ErrorKind::KeysBusy,
        ErrorKind::ServerBusy,
        ErrorKind::Timeout,
    ];

    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ProviderNotConfigured | ErrorKind::NoCredentials => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::UnknownRoute | ErrorKind::ModelNotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::ExpectationFailed => 417,
            ErrorKind::AllKeysCooling => 429,
            ErrorKind::HeadTooLarge => 431,
            ErrorKind::Internal => 500,
            ErrorKind::UpstreamError => 502,
            ErrorKind::KeysBusy | ErrorKind::ServerBusy => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The OpenAI error `type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::AllKeysCooling => "rate_limit_error",
            ErrorKind::Internal | ErrorKind::UpstreamError | ErrorKind::KeysBusy | ErrorKind::ServerBusy => "api_error",
            ErrorKind::Timeout => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The OpenAI error `code`, keyrelay's name for the kind (the error table of the man page).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ProviderNotConfigured => "provider_not_configured",
            ErrorKind::NoCredentials => "no_credentials",
            ErrorKind::Unauthorized => "invalid_api_key",
            ErrorKind::UnknownRoute => "unknown_route",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::ExpectationFailed => "expectation_failed",
            ErrorKind::HeadTooLarge => "request_header_fields_too_large",
            ErrorKind::AllKeysCooling => "all_keys_cooling_down",
            ErrorKind::Internal => "internal_error",
            ErrorKind::UpstreamError => "upstream_error",
            ErrorKind::KeysBusy => "keys_busy",
            ErrorKind::ServerBusy => "server_busy",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// Anthropic's error `type` for an HTTP status (Anthropic's "Errors" page): the one table for
/// keyrelay's own errors and for relayed ones.
pub fn anthropic_type_of(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        500.. => "api_error",
        _ => "invalid_request_error",
    }
}

/// The HTTP status an OpenAI error object stands for when none came with it (an error inside a
/// stream): from its `code` (keyrelay's own codes, OpenAI's, or OpenRouter's numeric statuses),
/// then its `type`.
pub fn status_of_openai_error(code: Option<&Value>, kind: &str) -> u16 {
    let code_text = code.and_then(Value::as_str).unwrap_or_default();
    match (code.and_then(Value::as_u64), code_text, kind) {
        (Some(status @ 400..=599), _, _) => status as u16,
        (_, "invalid_api_key", _) | (_, _, "authentication_error") => 401,
        (_, _, "permission_error") => 403,
        (_, "model_not_found", _) | (_, _, "not_found_error") => 404,
        (_, "request_too_large", _) | (_, _, "request_too_large") => 413,
        (_, "rate_limit_exceeded" | "insufficient_quota" | "all_keys_cooling_down", _)
        | (_, _, "rate_limit_error" | "tokens" | "requests" | "insufficient_quota") => 429,
        (_, "keys_busy" | "server_busy" | "overloaded_error", _) | (_, _, "overloaded_error") => 503,
        (_, _, "invalid_request_error") => 400,
        _ => 500,
    }
}

/// An error answered over HTTP: keyrelay's own (`ApiError::of`) or an upstream's relayed
/// (`ApiError::upstream`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// The OpenAI `type`.
    pub error_type: String,
    /// The OpenAI `code`.
    pub code: Option<String>,
    pub param: Option<String>,
    pub message: String,
    /// Whole seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status: kind.status(),
            error_type: kind.openai_type().to_string(),
            code: Some(kind.code().to_string()),
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An upstream's error as it gave it (type and code in OpenAI's shape).
    pub fn upstream(status: u16, error_type: String, code: Option<String>, message: String) -> ApiError {
        ApiError { status, error_type, code, param: None, message, retry_after: None }
    }

    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::of(ErrorKind::InvalidRequest, message)
    }

    pub fn with_param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::of(
            ErrorKind::Unauthorized,
            "missing or wrong proxy API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'",
        )
    }

    pub fn unknown_route(method: &str, path: &str) -> ApiError {
        ApiError::of(ErrorKind::UnknownRoute, format!("no route for {method} {path}"))
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ApiError {
        ApiError::of(ErrorKind::MethodNotAllowed, format!("{method} is not allowed on {path}; use {allowed}"))
    }

    pub fn model_not_found(message: impl Into<String>) -> ApiError {
        ApiError::of(ErrorKind::ModelNotFound, message)
    }

    pub fn too_large(limit: u64) -> ApiError {
        ApiError::of(
            ErrorKind::RequestTooLarge,
            format!("request body is larger than MAX_REQUEST_BODY_BYTES ({limit} bytes)"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::of(ErrorKind::Internal, message)
    }

    /// An upstream answer keyrelay could not use (not JSON, not the expected shape).
    pub fn unusable_answer(message: impl Into<String>) -> ApiError {
        ApiError::of(ErrorKind::UpstreamError, message)
    }

    /// A provider with no key or account: says which variables to set.
    pub fn no_credentials(provider: &str, variables: &str) -> ApiError {
        ApiError::of(
            ErrorKind::NoCredentials,
            format!("no credentials for provider '{provider}': set {variables} in .env"),
        )
    }

    /// `{"error": {"message", "type", "param", "code"}}`
    pub fn to_openai_json(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }})
    }

    /// `{"type": "error", "error": {"type", "message"}}` with Anthropic's type names.
    pub fn to_anthropic_json(&self) -> Value {
        json!({"type": "error", "error": {"type": anthropic_type_of(self.status), "message": self.message}})
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error_type, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man page's error table has a `.B <status> <type> <code>` line for every kind.
    #[test]
    fn every_kind_is_in_the_man_pages_error_table() {
        let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/keyrelay.1")).unwrap();
        for kind in ErrorKind::ALL {
            let line = format!(".B {} {} {}", kind.status(), kind.openai_type(), kind.code());
            assert!(man.lines().any(|l| l == line), "man/keyrelay.1 lacks '{line}'");
        }
    }

    #[test]
    fn anthropic_types_follow_the_status() {
        let types: Vec<_> = [400, 401, 403, 404, 413, 429, 500, 502, 503, 529].map(anthropic_type_of).into();
        assert_eq!(
            types,
            [
                "invalid_request_error",
                "authentication_error",
                "permission_error",
                "not_found_error",
                "request_too_large",
                "rate_limit_error",
                "api_error",
                "api_error",
                "overloaded_error",
                "overloaded_error"
            ]
        );
    }

    #[test]
    fn stream_errors_get_a_status_from_code_then_type() {
        let status = |code: Value, kind: &str| status_of_openai_error(Some(&code), kind);
        assert_eq!(status(json!(429), "whatever"), 429, "OpenRouter's numeric codes are statuses");
        assert_eq!(status(json!("all_keys_cooling_down"), "rate_limit_error"), 429);
        assert_eq!(status(json!("server_busy"), "api_error"), 503);
        assert_eq!(status(Value::Null, "authentication_error"), 401);
        assert_eq!(status(json!("stream_interrupted"), "api_error"), 500);
    }
}
