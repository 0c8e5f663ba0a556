//! `POST /v1/chat/completions`, streaming and not, for every provider family: the request is
//! built by the provider's translator, relayed through the key pool, and answered in the
//! OpenAI format. `complete` is shared with the other client formats (`/v1/messages`,
//! `/v1/completions`).
//!
//! Every answer leaving `complete` names its model `provider/` + the id the upstream answered
//! with (the id sent, when it names none), whole or chunk by chunk, whatever the family: the
//! same name on every route, and one a client can send back as `model`. A `gemini_cli` request
//! that fell back to its model's preview variant (`relay_or_preview`) is named after the variant.

use super::{Body, Incoming, Reply, parse_object, resolve};
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::json_splice;
use crate::providers::{
    Family, StreamTranslator, Translated, anthropic, azure, bedrock, code_assist, eventstream::Framing, gemini, openai,
    vertex,
};
use crate::relay::{self, stream::UpstreamStream};
use crate::sse;
use crate::state::AppState;
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    let wants_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let (output, meta) = complete(state, config, body)?;
    let body = match output {
        ChatOutput::Whole(completion) => Body::Json(completion.into_bytes()),
        ChatOutput::Stream(stream) => Body::Sse(Box::new(OpenAiEvents { stream, wants_usage, done: false })),
    };
    Ok(Reply { status: 200, headers: Vec::new(), body, meta })
}

/// A chat answer in the OpenAI format.
pub enum ChatOutput {
    Whole(Completion),
    Stream(Box<UpstreamStream>),
}

/// A whole `chat.completion`, its model named (module comment).
pub struct Completion {
    pub value: Value,
    /// The same answer as the OpenAI family's upstream sent it, but for the model's name
    /// (spliced in): answered as it is, never serialised again. None for a translated
    /// answer, or one the normalising changed.
    bytes: Option<Vec<u8>>,
}

impl Completion {
    /// The answer's bytes: the upstream's own when they say it, else `value` serialised.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes.unwrap_or_else(|| serde_json::to_vec(&self.value).expect("a JSON value serialises"))
    }
}

/// Runs an OpenAI-format chat request (`model` is `provider/model`) against its provider,
/// whole or streamed as its `stream` field asks. Also returns what the request log should
/// know (the key used, the failed attempts).
pub fn complete(
    state: &Arc<AppState>,
    config: &Config,
    body: Map<String, Value>,
) -> Result<(ChatOutput, Map<String, Value>), ApiError> {
    if body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        complete_stream(state, config, body).map(|(stream, meta)| (ChatOutput::Stream(stream), meta))
    } else {
        complete_whole(state, config, body).map(|(completion, meta)| (ChatOutput::Whole(completion), meta))
    }
}

/// A chat request made ready to relay.
struct Prepared<'a> {
    provider: &'a ProviderConfig,
    model: String,
    request: UpstreamRequest,
    /// Anthropic answers a `response_format` through a forced tool, unwrapped from the answer.
    answer_tool: Option<String>,
    deadline: Instant,
}

fn prepare<'a>(config: &'a Config, body: Map<String, Value>, stream: bool) -> Result<Prepared<'a>, ApiError> {
    let (provider, model) = resolve(config, &body)?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::invalid_request("missing required field 'messages' (an array)").with_param("messages"));
    }
    let answer_tool =
        (translation(provider, &model) == Translation::Anthropic).then(|| anthropic::answer_tool_name(&body)).flatten();
    let request = build(provider, &model, body, stream)?;
    let deadline = Instant::now() + config.settings.global_timeout;
    Ok(Prepared { provider, model, request, answer_tool, deadline })
}

/// `complete` for a request that is not streamed.
pub fn complete_whole(
    state: &Arc<AppState>,
    config: &Config,
    body: Map<String, Value>,
) -> Result<(Completion, Map<String, Value>), ApiError> {
    let Prepared { provider, model, request, answer_tool, deadline } = prepare(config, body, false)?;
    let (model, relayed) = relay_or_preview(state, provider, model, &request, deadline, relay::relay_whole)?;
    log_relayed(provider, &model, &relayed);
    let meta = relay::meta(&relayed);
    let relay::Json { value: answer, bytes } = relayed.body;
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let translated = match translation(provider, &model) {
        Translation::OpenAi => return Ok((named_openai_answer(answer, bytes, &provider.name, &model), meta)),
        Translation::Anthropic => anthropic::parse_chat(&model, created, &answer),
        Translation::Gemini => gemini::parse_chat(&model, &completion_id(), created, &answer),
        Translation::CodeAssist => code_assist::parse_chat(&model, &completion_id(), created, &answer),
        Translation::Bedrock => bedrock::parse_chat(&model, &completion_id(), created, &answer),
    };
    let mut value = translated.map_err(|why| {
        let message = format!("{} answered something keyrelay cannot translate: {why}", provider.name);
        ApiError::unusable_answer(message)
    })?;
    if let Some(tool) = &answer_tool {
        value = anthropic::json_answer(value, tool);
    }
    name_model(&mut value, &provider.name, &model);
    Ok((Completion { value, bytes: None }, meta))
}

/// `complete` for a streamed request: the stream, committed to its key, in OpenAI chunks.
pub fn complete_stream(
    state: &Arc<AppState>,
    config: &Config,
    body: Map<String, Value>,
) -> Result<(Box<UpstreamStream>, Map<String, Value>), ApiError> {
    let Prepared { provider, model, request, answer_tool, deadline } = prepare(config, body, true)?;
    let (model, relayed) = relay_or_preview(state, provider, model, &request, deadline, relay::relay_stream)?;
    log_relayed(provider, &model, &relayed);
    let meta = relay::meta(&relayed);
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut translator = translator(provider, &model, created);
    if let Some(tool) = &answer_tool {
        translator = anthropic::json_answer_stream(translator, tool);
    }
    let translator = Box::new(NamedModel { inner: translator, provider: provider.name.clone(), sent: model });
    let relay::Stream { first, rest } = relayed.body;
    let stream = UpstreamStream::new(relayed.lease, first, rest, translator, config.settings.timeout_read_streaming);
    Ok((Box::new(stream.framed(Framing::of(provider.family))), meta))
}

fn log_relayed<B>(provider: &ProviderConfig, model: &str, relayed: &relay::Relayed<B>) {
    log::debug!("chat {}/{model} key={} attempts={}", provider.name, relayed.lease.masked, relayed.attempts.len() + 1);
}

/// `relay::relay_whole` or `relay::relay_stream`.
type RelayFn<B> =
    fn(&Arc<AppState>, &ProviderConfig, &str, &UpstreamRequest, Instant) -> Result<relay::Relayed<B>, ApiError>;

/// Relays the request; for `gemini_cli`, when every account is cooling down on the model and
/// it has a preview variant (`code_assist::preview_variant`), tries the variant once, whose
/// cooldowns are its own. Returns the model that answered, which the answer then names.
fn relay_or_preview<B>(
    state: &Arc<AppState>,
    provider: &ProviderConfig,
    model: String,
    request: &UpstreamRequest,
    deadline: Instant,
    relay: RelayFn<B>,
) -> Result<(String, relay::Relayed<B>), ApiError> {
    let error = match relay(state, provider, &model, request, deadline) {
        Ok(relayed) => return Ok((model, relayed)),
        Err(e) => e,
    };
    let cooling = error.code.as_deref() == Some("all_keys_cooling_down");
    let variant = (provider.family == Family::CodeAssist && cooling).then(|| code_assist::preview_variant(&model));
    let Some(variant) = variant.flatten() else { return Err(error) };
    log::info!("{}: every account is cooling down on {model}; trying {variant}", provider.name);
    match relay(state, provider, variant, &code_assist::with_model(request.clone(), variant), deadline) {
        Ok(relayed) => Ok((variant.to_string(), relayed)),
        Err(again) => {
            // The client asked for `model`: its error says when that model is free again.
            log::info!("{}: {variant} failed too: {}", provider.name, again.message);
            Err(error)
        }
    }
}

fn build(
    provider: &ProviderConfig,
    model: &str,
    body: Map<String, Value>,
    stream: bool,
) -> Result<UpstreamRequest, ApiError> {
    match provider.family {
        Family::OpenAi if provider.name == azure::NAME => {
            let request = openai::build_chat(&provider.name, &provider.base, model, body, stream);
            azure::on_azure(request, &provider.base, &provider.api_version, model, "chat/completions")
        }
        Family::OpenAi => Ok(openai::build_chat(&provider.name, &provider.base, model, body, stream)),
        Family::Anthropic => anthropic::build_chat(&provider.base, model, &body, stream),
        Family::Gemini => gemini::build_chat(&provider.base, model, &body, stream),
        Family::CodeAssist => code_assist::build_chat(&provider.base, model, &body, stream),
        Family::Vertex => vertex::build_chat(&provider.base, model, &body, stream),
        Family::Bedrock => bedrock::build_chat(&provider.base, model, &body, stream),
    }
}

/// The translation a model's answers take. The provider's family decides, except on Vertex,
/// where the model's publisher does (Gemini's translation or Anthropic's): so the answer
/// side has one arm per translation, and none for a family that has no translation of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Translation {
    OpenAi,
    Anthropic,
    Gemini,
    CodeAssist,
    Bedrock,
}

fn translation(provider: &ProviderConfig, model: &str) -> Translation {
    match provider.family {
        Family::OpenAi => Translation::OpenAi,
        Family::Anthropic => Translation::Anthropic,
        Family::Gemini => Translation::Gemini,
        Family::CodeAssist => Translation::CodeAssist,
        Family::Bedrock => Translation::Bedrock,
        Family::Vertex => match vertex::publisher(model) {
            vertex::Publisher::Google => Translation::Gemini,
            vertex::Publisher::Anthropic => Translation::Anthropic,
        },
    }
}

/// An OpenAI-family answer, normalised (`openai::normalise_chat`) and its model named
/// (module comment): the value renamed, and the upstream's own bytes with that one string
/// replaced, since the relay has parsed them once already.
fn named_openai_answer(mut value: Value, bytes: Vec<u8>, provider: &str, sent: &str) -> Completion {
    let changed = openai::normalise_chat(&mut value);
    name_model(&mut value, provider, sent);
    let named = value.get("model").and_then(Value::as_str).unwrap_or_default();
    // No `model` string at all (or not an object), or a normalised answer: serialised from
    // the value instead.
    let bytes = if changed { None } else { json_splice::replace_string(&bytes, &["model"], named) };
    Completion { value, bytes }
}

fn translator(provider: &ProviderConfig, model: &str, created: u64) -> Box<dyn StreamTranslator> {
    match translation(provider, model) {
        Translation::Anthropic => anthropic::stream_translator(model, created),
        Translation::Gemini => gemini::stream_translator(model, &completion_id(), created),
        Translation::CodeAssist => code_assist::stream_translator(model, &completion_id(), created),
        Translation::Bedrock => bedrock::stream_translator(model, &completion_id(), created),
        Translation::OpenAi => Box::new(openai::PassThrough::default()),
    }
}

/// The name answers give a model (module comment): `provider/` + the id the upstream answered
/// with, which callers replace by the id sent when the upstream named none.
pub fn answer_model(provider: &str, answered: &str) -> String {
    format!("{provider}/{answered}")
}

/// Names the model of a completion or chunk as every route does (module comment).
fn name_model(answer: &mut Value, provider: &str, sent: &str) {
    let Some(object) = answer.as_object_mut() else { return };
    let answered = object.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(sent);
    let named = answer_model(provider, answered);
    object.insert("model".into(), Value::String(named));
}

/// Names the model of every chunk a translator gives (errors carry none).
struct NamedModel {
    inner: Box<dyn StreamTranslator>,
    provider: String,
    sent: String,
}

impl NamedModel {
    fn name(&self, steps: &mut [Translated]) {
        for step in steps {
            if let Translated::Chunk(chunk) = step {
                name_model(chunk, &self.provider, &self.sent);
            }
        }
    }
}

impl StreamTranslator for NamedModel {
    fn event(&mut self, event: &sse::Event, out: &mut Vec<Translated>) {
        let start = out.len();
        self.inner.event(event, out);
        self.name(&mut out[start..]);
    }

    fn finish(&mut self, out: &mut Vec<Translated>) {
        let start = out.len();
        self.inner.finish(out);
        self.name(&mut out[start..]);
    }
}

/// An id for providers whose answers carry none of their own.
fn completion_id() -> String {
    unique_id("chatcmpl-")
}

/// `prefix` + 24 hex digits: unique within the process, and unlikely to repeat across
/// restarts (time and pid seed it).
pub(super) fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = crate::clock::now_ms() ^ (u64::from(std::process::id()) << 40);
    format!("{prefix}{:012x}{:012x}", seed & 0xffff_ffff_ffff, n & 0xffff_ffff_ffff)
}

/// An OpenAI-format stream as SSE events: `data: {chunk}` per chunk, the usage-only chunk
/// only when the client asked for it, an error as `data: {"error": ...}`, and `data: [DONE]`
/// always last.
struct OpenAiEvents {
    stream: Box<UpstreamStream>,
    wants_usage: bool,
    done: bool,
}

impl Iterator for OpenAiEvents {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        loop {
            match self.stream.next() {
                Some(Translated::Chunk(chunk)) => {
                    if is_usage_only(&chunk) && !self.wants_usage {
                        continue;
                    }
                    return Some(sse::data_event(&chunk.to_string()));
                }
                Some(Translated::Error(error)) => return Some(sse::data_event(&error.to_string())),
                None => {
                    self.done = true;
                    return Some(sse::data_event("[DONE]"));
                }
            }
        }
    }
}

/// The chunk `stream_options.include_usage` asks for: usage and no choices.
fn is_usage_only(chunk: &Value) -> bool {
    chunk.get("choices").and_then(Value::as_array).is_none_or(|c| c.is_empty())
        && chunk.get("usage").is_some_and(|u| !u.is_null())
}

/// A client format's stream writer, fed the hub's chunks: `/v1/messages` and `/v1/responses`
/// each have one. Every method returns complete SSE events, ready to write.
pub trait EventFramer: Send {
    fn chunk(&mut self, chunk: &Value) -> Vec<Vec<u8>>;
    /// An in-band error; the stream ends after it.
    fn error(&mut self, error: &Value) -> Vec<Vec<u8>>;
    /// The hub stream ended normally.
    fn finish(&mut self) -> Vec<Vec<u8>>;
}

/// A chat stream in a client format: what the framer makes of each step, until an error or
/// the end. Dropping it drops the upstream stream, which frees its key.
pub struct FramedEvents<F> {
    stream: Box<UpstreamStream>,
    framer: F,
    ready: VecDeque<Vec<u8>>,
    done: bool,
}

impl<F: EventFramer> FramedEvents<F> {
    pub fn new(stream: Box<UpstreamStream>, framer: F) -> FramedEvents<F> {
        FramedEvents { stream, framer, ready: VecDeque::new(), done: false }
    }
}

impl<F: EventFramer> Iterator for FramedEvents<F> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let events = match self.stream.next() {
                Some(Translated::Chunk(chunk)) => self.framer.chunk(&chunk),
                Some(Translated::Error(error)) => {
                    self.done = true;
                    self.framer.error(&error)
                }
                None => {
                    self.done = true;
                    self.framer.finish()
                }
            };
            self.ready.extend(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn relayed(text: &str) -> (Value, Vec<u8>) {
        (serde_json::from_str(text).unwrap(), text.as_bytes().to_vec())
    }

    #[test]
    fn an_openai_answer_keeps_its_bytes_but_the_model_name() {
        let (value, bytes) = relayed(r#"{"model" : "gpt-4o", "z": 1, "a": 2.50}"#);
        let completion = named_openai_answer(value, bytes, "openai", "sent");
        assert_eq!(completion.value["model"], "openai/gpt-4o");
        assert_eq!(completion.into_bytes(), br#"{"model" : "openai/gpt-4o", "z": 1, "a": 2.50}"#.to_vec());
    }

    #[test]
    fn a_normalised_or_unnamed_openai_answer_is_serialised_from_its_value() {
        let (value, bytes) = relayed(r#"{"choices": [{"message": {"content": "<think>hm</think>Yes."}}]}"#);
        let completion = named_openai_answer(value, bytes, "openai", "sent");
        let out: Value = serde_json::from_slice(&completion.into_bytes()).unwrap();
        assert_eq!(out["model"], "openai/sent");
        assert_eq!(out["choices"][0]["message"], json!({"content": "Yes.", "reasoning_content": "hm"}));
    }
}
