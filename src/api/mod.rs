//! The HTTP API, independent of the server library: an `Incoming` request goes in, a `Reply`
//! comes out. Routing, proxy auth and the error shape of each route live here.

mod chat;
mod completions;
mod embeddings;
mod messages;
pub mod messages_format;
pub(crate) mod models;
mod responses;
pub mod responses_format;
mod token_count;

use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::metrics::{self, RequestLabels};
use crate::providers;
use crate::providers::openai::StreamSummary;
use crate::reqlog::RequestLog;
use crate::sse;
use crate::state::AppState;
use crate::sync::lock;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// A request with its body read (within `MAX_REQUEST_BODY_BYTES`).
pub struct Incoming {
    /// Names this request in logs and the `x-request-id` header.
    pub id: String,
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Incoming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Events of a stream, each one complete (`data: ...\n\n`), produced as they are ready.
/// Dropping the iterator ends the upstream call and frees its key.
pub type EventStream = Box<dyn Iterator<Item = Vec<u8>> + Send>;

pub enum Body {
    Json(Vec<u8>),
    /// Another text format (`/metrics`).
    Text {
        content_type: &'static str,
        bytes: Vec<u8>,
    },
    Sse(EventStream),
    Empty,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// What the request log's `metadata.json` should know beyond the status: the key used
    /// (masked) and the failed attempts.
    pub meta: Map<String, Value>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::json_bytes(status, serde_json::to_vec(value).expect("a JSON value serialises"))
    }

    pub fn json_bytes(status: u16, bytes: Vec<u8>) -> Reply {
        Reply { status, headers: Vec::new(), body: Body::Json(bytes), meta: Map::new() }
    }

    pub fn openai_error(e: &ApiError) -> Reply {
        Reply::json(e.status, &e.to_openai_json()).with_retry_after(e.retry_after)
    }

    fn with_retry_after(mut self, seconds: Option<u64>) -> Reply {
        if let Some(s) = seconds {
            self.headers.push(("retry-after".into(), s.to_string()));
        }
        self
    }
}

/// Decides what can be decided from the head alone, before any body byte is read: public
/// routes, CORS preflight, the proxy key, unknown routes and wrong methods. `None` means the
/// request is admitted: read its body (within the limit) and `dispatch` it.
pub fn admit(state: &AppState, req: &Incoming) -> Option<Reply> {
    let reply = answer_from_head(state, req)?;
    count(state, &state.config(), req, &reply);
    Some(reply)
}

fn answer_from_head(state: &AppState, req: &Incoming) -> Option<Reply> {
    let method = req.method.as_str();
    match req.path.as_str() {
        "/" if method == "GET" || method == "HEAD" => {
            return Some(Reply::json(
                200,
                &json!({"status": "keyrelay is running", "version": env!("CARGO_PKG_VERSION")}),
            ));
        }
        "/health" if method == "GET" || method == "HEAD" => {
            return Some(Reply::json(200, &json!({"status": "ok"})));
        }
        _ => {}
    }
    if method == "OPTIONS" {
        return Some(preflight(req));
    }
    if (req.path.starts_with("/v1/") || req.path == "/metrics") && !authorized(&state.config(), req) {
        return Some(error_reply(req, &ApiError::unauthorized()));
    }
    let refused = match allowed_methods(&req.path) {
        None => ApiError::unknown_route(method, &req.path),
        Some(allowed) if !allowed.split(", ").any(|m| m == method) => {
            ApiError::method_not_allowed(method, &req.path, allowed)
        }
        Some(_) => return None,
    };
    Some(error_reply(req, &refused))
}

/// Answers an admitted request (see `admit`), and records it when request logging is on.
pub fn dispatch(state: &Arc<AppState>, req: &Incoming) -> Reply {
    let config = state.config();
    let log = match &state.request_logs {
        Some(root) if req.method == "POST" => RequestLog::start(root, &req.id, &req.body),
        _ => None,
    };
    let reply = route(state, &config, req);
    count(state, &config, req, &reply);
    match log {
        Some(log) => reqlog_reply(log, req, reply),
        None => reply,
    }
}

fn route(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Reply {
    let method = req.method.as_str();
    let result = match (method, req.path.as_str()) {
        ("POST", "/v1/chat/completions") => chat::handle(state, config, req),
        ("POST", "/v1/completions") => completions::handle(state, config, req),
        ("POST", "/v1/embeddings") => embeddings::handle(state, config, req),
        ("POST", "/v1/messages") => messages::handle(state, config, req),
        ("POST", "/v1/messages/count_tokens") => messages::count_tokens(state, config, req),
        ("POST", "/v1/responses") => responses::handle(state, config, req),
        ("POST", "/v1/token-count") => token_count::handle(req),
        ("GET", "/v1/models") => Ok(models::list(state, config)),
        ("GET", path) if path.starts_with("/v1/models/") => models::card(state, config, &path["/v1/models/".len()..]),
        ("GET", "/v1/quota-stats") => {
            let now = crate::clock::now_ms();
            let statuses = lock(&state.pool).status(now);
            let mut oauth: std::collections::BTreeMap<_, _> = state
                .oauth
                .all()
                .iter()
                .map(|s| (s.id.clone(), crate::oauth::refresh::describe(&s.credential(), now)))
                .collect();
            oauth.extend(state.vertex.all().iter().map(|s| (s.id.clone(), s.describe(now))));
            let mut report = crate::keys::report::build(&statuses, &oauth);
            state.shared.annotate(&mut report, crate::clock::day_start(now, config.settings.daily_reset_hour));
            Ok(Reply::json(200, &report))
        }
        ("GET", "/metrics") => Ok(metrics(state)),
        ("GET", "/v1/providers") => {
            Ok(Reply::json(200, &json!(config.configured().map(|p| &p.name).collect::<Vec<_>>())))
        }
        (_, path) => Err(match allowed_methods(path) {
            Some(allowed) => ApiError::method_not_allowed(method, path, allowed),
            None => ApiError::unknown_route(method, path),
        }),
    };
    result.unwrap_or_else(|e| error_reply(req, &e))
}

/// `GET /metrics`: the counters, and the key pool's gauges as they are now.
fn metrics(state: &AppState) -> Reply {
    let keys = lock(&state.pool).status(crate::clock::now_ms());
    let mut text = state.metrics.render(&keys, crate::logging::dropped());
    state.shared.metrics(&mut text);
    let body = Body::Text { content_type: "text/plain; version=0.0.4; charset=utf-8", bytes: text.into_bytes() };
    Reply { status: 200, headers: Vec::new(), body, meta: Map::new() }
}

/// Counts an answered request for `/metrics`, under bounded labels: known routes (model cards
/// as one), configured providers, and models from the provider's lists, else `other`.
fn count(state: &AppState, config: &Config, req: &Incoming, reply: &Reply) {
    let route = match req.path.as_str() {
        p if p.starts_with("/v1/models/") => "/v1/models/{id}",
        p if allowed_methods(p).is_some() => p,
        _ => metrics::OTHER,
    };
    let provider = reply.meta.get("provider").and_then(Value::as_str).and_then(|p| config.providers.get(p));
    let (provider, model) = match provider {
        Some(p) => (p.name.as_str(), model_label(state, p, reply.meta.get("model").and_then(Value::as_str))),
        None => ("none", "none".to_string()),
    };
    state.metrics.request(RequestLabels { route, provider, model: &model, status: reply.status });
}

fn model_label(state: &AppState, provider: &ProviderConfig, model: Option<&str>) -> String {
    let Some(model) = model else { return metrics::OTHER.to_string() };
    let listed = provider.static_models.iter().any(|m| m == model)
        || lock(&state.models).get(&provider.name).is_some_and(|(_, ids)| ids.iter().any(|m| m == model));
    if listed { model.to_string() } else { metrics::OTHER.to_string() }
}

/// The route a path names: every `/v1/...` route is also served without `/v1`, for clients
/// whose base URL lacks it.
pub fn canonical_path(path: &str) -> String {
    if path.starts_with("/v1/") || matches!(path, "/" | "/health") {
        return path.to_string();
    }
    let prefixed = format!("/v1{path}");
    if allowed_methods(&prefixed).is_some() { prefixed } else { path.to_string() }
}

/// The answer to a CORS preflight (browsers send it without credentials): every header the
/// page asks for is allowed, since the official SDKs send their own (`x-stainless-*`,
/// `anthropic-beta`, `anthropic-dangerous-direct-browser-access`, ...).
fn preflight(req: &Incoming) -> Reply {
    const DEFAULT: &str = "authorization, content-type, x-api-key, anthropic-version, anthropic-beta";
    let asked = req.header("access-control-request-headers").filter(|h| !h.trim().is_empty()).unwrap_or(DEFAULT);
    let headers = vec![
        ("access-control-allow-headers".to_string(), asked.to_string()),
        ("access-control-max-age".to_string(), "86400".to_string()),
    ];
    Reply { status: 204, headers, body: Body::Empty, meta: Map::new() }
}

fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/embeddings"
        | "/v1/messages"
        | "/v1/messages/count_tokens"
        | "/v1/responses"
        | "/v1/token-count" => Some("POST"),
        "/v1/models" | "/v1/providers" | "/v1/quota-stats" => Some("GET"),
        "/" | "/health" => Some("GET, HEAD"),
        "/metrics" => Some("GET"),
        p if p.starts_with("/v1/models/") => Some("GET"),
        _ => None,
    }
}

/// An error in the shape of the route's API: Anthropic's on `/v1/messages`, OpenAI's elsewhere.
pub fn error_reply(req: &Incoming, e: &ApiError) -> Reply {
    if req.path == "/v1/messages" || req.path.starts_with("/v1/messages/") {
        let mut reply = Reply::json(e.status, &e.to_anthropic_json());
        if let Some(s) = e.retry_after {
            reply.headers.push(("retry-after".into(), s.to_string()));
        }
        return reply;
    }
    Reply::openai_error(e)
}

/// Bearer token or `x-api-key`, compared in constant time. No `PROXY_API_KEY`: open (the
/// server refuses to bind beyond loopback in that case unless told to).
fn authorized(config: &Config, req: &Incoming) -> bool {
    let Some(expected) = &config.proxy_api_key else {
        return true;
    };
    let bearer = req.header("authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    [bearer, req.header("x-api-key").map(str::trim)].into_iter().flatten().any(|token| expected.matches(token))
}

/// The JSON object of a request body, or a 400 that says what is wrong with it.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid_request(format!("request body is not valid JSON: {e}"))),
    }
}

/// The provider and upstream model id for a `model` field, after every check a client can
/// fail: missing, no `provider/` prefix, unknown provider, hidden by filters, no keys.
pub fn resolve<'a>(config: &'a Config, body: &Map<String, Value>) -> Result<(&'a ProviderConfig, String), ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim(),
        Some(_) => {
            return Err(ApiError::invalid_request("'model' must be a non-empty string").with_param("model"));
        }
        None => {
            return Err(ApiError::invalid_request("missing required field 'model'").with_param("model"));
        }
    };
    let (provider, id) = route_model(config, model)?;
    let (name, id) = (provider.name.as_str(), id.as_str());
    if !provider.filter.allows(name, id) {
        return Err(ApiError::model_not_found(format!("model '{model}' is hidden by IGNORE_MODELS/WHITELIST_MODELS"))
            .with_param("model"));
    }
    if name == providers::azure::NAME && provider.base.is_empty() {
        return Err(providers::azure::missing_base());
    }
    if !provider.has_credentials() {
        return Err(ApiError::no_credentials(name, &providers::credential_variables(name)));
    }
    Ok((provider, id.to_string()))
}

/// The provider and upstream model id a client's `model` names: `provider/model` for a known
/// provider; else `MODEL_ALIASES` (an exact name, then the globs); else `DEFAULT_PROVIDER`,
/// which takes the name unchanged.
pub fn route_model<'a>(config: &'a Config, model: &str) -> Result<(&'a ProviderConfig, String), ApiError> {
    let unknown = |name: &str| {
        ApiError::model_not_found(format!(
            "unknown provider '{name}': not built in and no {}_API_BASE set",
            name.to_ascii_uppercase()
        ))
        .with_param("model")
    };
    if let Some((name, id)) = providers::split_model(model) {
        if let Some(provider) = config.providers.get(name) {
            return Ok((provider, id.to_string()));
        }
    }
    let (name, id) = match (config.aliases.lookup(model), &config.default_provider) {
        (Some(target), _) => providers::split_model(target).expect("MODEL_ALIASES targets are checked at load"),
        (None, Some(default)) => (default.as_str(), model),
        (None, None) => {
            return Err(match providers::split_model(model) {
                Some((name, _)) => unknown(name),
                None => ApiError::invalid_request(format!(
                    "model '{model}' must be given as provider/model (e.g. openai/gpt-4o-mini), or be named by MODEL_ALIASES, or DEFAULT_PROVIDER set"
                ))
                .with_param("model"),
            });
        }
    };
    config.providers.get(name).map(|p| (p, id.to_string())).ok_or_else(|| unknown(name))
}

/// Every `provider/model` id served now (for `keyrelay models`).
pub fn model_ids(state: &Arc<AppState>, config: &Config) -> Vec<String> {
    models::all_ids(state, config)
}

/// Finishes the request log of a JSON answer now, and of a stream when the stream ends (or
/// the client leaves).
fn reqlog_reply(log: RequestLog, req: &Incoming, mut reply: Reply) -> Reply {
    let mut meta = std::mem::take(&mut reply.meta);
    let model =
        serde_json::from_slice::<Value>(&req.body).ok().and_then(|b| b.get("model").cloned()).unwrap_or(Value::Null);
    if let Some((provider, _)) = model.as_str().and_then(providers::split_model) {
        meta.insert("provider".into(), json!(provider));
    }
    meta.insert("model".into(), model);
    meta.insert("route".into(), json!(req.path));
    meta.insert("status".into(), json!(reply.status));
    match reply.body {
        Body::Sse(events) => {
            meta.insert("streaming".into(), json!(true));
            reply.body = Body::Sse(Box::new(LoggedStream {
                events,
                log: Some(log),
                meta,
                summary: StreamSummary::default(),
                ended: false,
            }));
        }
        Body::Json(ref bytes) => {
            let response: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            meta.insert("streaming".into(), json!(false));
            meta.insert("usage".into(), response.get("usage").cloned().unwrap_or(Value::Null));
            log.finish(&response, Value::Object(meta));
        }
        Body::Empty | Body::Text { .. } => log.finish(&Value::Null, Value::Object(meta)),
    }
    reply
}

/// Tees a stream into the request log; the log is finished when the stream is dropped,
/// whether it ran to its end or the client left.
struct LoggedStream {
    events: EventStream,
    log: Option<RequestLog>,
    meta: Map<String, Value>,
    summary: StreamSummary,
    ended: bool,
}

impl Iterator for LoggedStream {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let Some(event) = self.events.next() else {
            self.ended = true;
            return None;
        };
        let mut parser = sse::Parser::new();
        let mut parsed = Vec::new();
        let _ = parser.feed(&event, &mut parsed);
        for e in parsed {
            if let Some(log) = self.log.as_mut() {
                log.chunk(&e.data);
            }
            if let Ok(chunk) = serde_json::from_str::<Value>(&e.data) {
                self.summary.add(&chunk);
            }
        }
        Some(event)
    }
}

impl Drop for LoggedStream {
    fn drop(&mut self) {
        let Some(log) = self.log.take() else { return };
        self.meta.insert("usage".into(), self.summary.usage().cloned().unwrap_or(Value::Null));
        self.meta.insert("stream_completed".into(), json!(self.ended));
        log.finish(&self.summary.completion(), Value::Object(std::mem::take(&mut self.meta)));
    }
}
