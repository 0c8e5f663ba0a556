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

/// An error answered over HTTP. `kind` is the OpenAI `type`; `code` the OpenAI `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: String,
    pub code: Option<String>,
    pub param: Option<String>,
    pub message: String,
    /// Whole seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, kind: &str, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind: kind.to_string(),
            code: Some(code.to_string()),
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", "invalid_request", message)
    }

    pub fn with_param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            "authentication_error",
            "invalid_api_key",
            "missing or wrong proxy API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'",
        )
    }

    pub fn unknown_route(method: &str, path: &str) -> ApiError {
        ApiError::new(404, "invalid_request_error", "unknown_route", format!("no route for {method} {path}"))
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ApiError {
        ApiError::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path}; use {allowed}"),
        )
    }

    pub fn model_not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "invalid_request_error", "model_not_found", message)
    }

    pub fn too_large(limit: u64) -> ApiError {
        ApiError::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("request body is larger than MAX_REQUEST_BODY_BYTES ({limit} bytes)"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "api_error", "internal_error", message)
    }

    /// `{"error": {"message", "type", "param", "code"}}`
    pub fn to_openai_json(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    /// `{"type": "error", "error": {"type", "message"}}` with Anthropic's type names.
    pub fn to_anthropic_json(&self) -> Value {
        let kind = match self.status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            500.. => "api_error",
            _ => "invalid_request_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": self.message}})
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}
