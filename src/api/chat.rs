//! `POST /v1/chat/completions`, streaming and not.

use super::{Body, Incoming, Reply, parse_object, resolve};
use crate::config::Config;
use crate::error::ApiError;
use crate::keys::pool::Outcome;
use crate::providers::openai;
use crate::relay::{self, Lease};
use crate::sse;
use crate::state::AppState;
use crate::upstream::{self, Method, UpstreamRequest};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    let (provider, model) = resolve(config, &body)?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::invalid_request("missing required field 'messages' (an array)").with_param("messages"));
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let wants_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let request = UpstreamRequest {
        method: Method::Post,
        url: format!("{}/chat/completions", provider.base),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(openai::chat_body(body, &model, stream)),
        stream,
    };
    let deadline = Instant::now() + config.settings.global_timeout;
    let relayed = relay::relay(state, provider, &model, &request, deadline)?;
    log::debug!(
        "chat {}/{model} key={} status={} attempts={}",
        provider.name,
        relayed.lease.masked,
        relayed.status,
        relayed.attempts.len() + 1
    );
    let meta = relay::meta(&relayed);
    let body = match relayed.body {
        relay::Body::Whole(bytes) => Body::Json(bytes),
        relay::Body::Stream { first, rest } => {
            let timeout = config.settings.timeout_read_streaming;
            Body::Sse(Box::new(PassThrough::new(first, rest, relayed.lease, wants_usage, timeout)))
        }
    };
    Ok(Reply { status: 200, headers: Vec::new(), body, meta })
}

/// Relays an OpenAI-format upstream stream event by event: comments dropped, each event
/// re-framed as `data: ...\n\n`, the usage-only chunk kept only when the client asked for it,
/// and the stream always closed with `data: [DONE]` (after an in-band error if it broke).
struct PassThrough {
    /// Held for the stream's whole life. First field, so it is dropped first: the key is free
    /// before the upstream connection closes (a client that leaves frees it at once).
    lease: Lease,
    first: Option<Vec<u8>>,
    upstream: Box<dyn Read + Send>,
    parser: sse::Parser,
    ready: VecDeque<Vec<u8>>,
    wants_usage: bool,
    saw_finish: bool,
    done: bool,
    idle_limit: Duration,
    /// The last usage the upstream reported, for the key's counters.
    usage: Value,
}

impl PassThrough {
    fn new(
        first: Vec<u8>,
        upstream: Box<dyn Read + Send>,
        lease: Lease,
        wants_usage: bool,
        idle_limit: Duration,
    ) -> PassThrough {
        PassThrough {
            first: Some(first),
            upstream,
            parser: sse::Parser::new(),
            ready: VecDeque::new(),
            wants_usage,
            saw_finish: false,
            done: false,
            idle_limit,
            usage: Value::Null,
            lease,
        }
    }

    fn read_more(&mut self) {
        let bytes = match self.first.take() {
            Some(first) => first,
            None => {
                let mut buf = vec![0u8; 16 * 1024];
                match self.upstream.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        buf
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
                    Err(e) if upstream::is_timeout(&e) => {
                        let secs = self.idle_limit.as_secs_f64();
                        return self.fail(
                            "stream_stalled",
                            &format!("upstream sent nothing for {secs} s (TIMEOUT_READ_STREAMING)"),
                        );
                    }
                    Err(e) => {
                        return self.fail("stream_interrupted", &format!("upstream stream broke: {e}"));
                    }
                }
            }
        };
        let mut events = Vec::new();
        if bytes.is_empty() {
            self.parser.finish(&mut events);
        } else if self.parser.feed(&bytes, &mut events).is_err() {
            return self.fail("stream_interrupted", "upstream sent an SSE line longer than 64 MiB");
        }
        for event in events {
            self.relay_event(event);
            if self.done {
                return;
            }
        }
        if bytes.is_empty() {
            self.end_without_done();
        }
    }

    fn relay_event(&mut self, event: sse::Event) {
        if event.data.trim() == "[DONE]" {
            return self.complete();
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            log::warn!("dropped a stream event that is not JSON ({} bytes)", event.data.len());
            return;
        };
        if chunk.get("error").is_some() || event.name.as_deref() == Some("error") {
            self.ready.push_back(sse::data_event(&event.data));
            self.lease.report(Outcome::Transient { reason: "error event in the stream".into() });
            return self.finish();
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = usage.clone();
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        let usage_only = choices.is_none_or(|c| c.is_empty()) && chunk.get("usage").is_some_and(|u| !u.is_null());
        if usage_only && !self.wants_usage {
            return;
        }
        if choices.is_some_and(|c| c.iter().any(|choice| choice.get("finish_reason").is_some_and(|f| !f.is_null()))) {
            self.saw_finish = true;
        }
        self.ready.push_back(sse::data_event(&event.data));
    }

    /// The upstream closed without `[DONE]`: fine after a finish reason, an error before one.
    fn end_without_done(&mut self) {
        if self.saw_finish {
            self.complete();
        } else {
            self.fail("stream_interrupted", "upstream closed the stream before it finished");
        }
    }

    /// The stream ended as it should: the key succeeded.
    fn complete(&mut self) {
        self.lease.report(relay::usage_outcome(&self.usage));
        self.finish();
    }

    /// The stream broke after its first byte: an in-band error, then `[DONE]`.
    fn fail(&mut self, code: &str, message: &str) {
        log::warn!("stream ended early: {message}");
        self.lease.report(Outcome::Transient { reason: message.to_string() });
        let error = json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
        self.ready.push_back(sse::data_event(&error.to_string()));
        self.finish();
    }

    fn finish(&mut self) {
        self.ready.push_back(sse::data_event("[DONE]"));
        self.done = true;
    }
}

impl Iterator for PassThrough {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            self.read_more();
        }
    }
}
