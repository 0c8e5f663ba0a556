//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API served
//! from any provider. The request is translated to the OpenAI format, run like any chat
//! request, and the answer (or stream) translated back; errors use Anthropic's shape.

use super::chat::{self, ChatOutput};
use super::messages_format::{self, EventWriter};
use super::{Body, Incoming, Reply};
use crate::config::Config;
use crate::error::ApiError;
use crate::providers::Translated;
use crate::relay::stream::UpstreamStream;
use crate::state::AppState;
use crate::tokens;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse(&req.body)?;
    let openai = messages_format::to_openai_request(&body)?;
    let model = super::resolve(config, &openai).map(|(p, id)| chat::answer_model(&p.name, &id)).unwrap_or_default();
    let id = chat::unique_id("msg_");
    let (output, meta) = chat::complete(state, config, openai)?;
    let body = match output {
        ChatOutput::Whole(bytes) => {
            let completion: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(502, "api_error", "upstream_error", format!("the upstream's answer is not JSON: {e}"))
            })?;
            let model = completion["model"].as_str().unwrap_or(&model);
            Body::Json(messages_format::from_openai_response(&completion, model, &id).to_string().into_bytes())
        }
        ChatOutput::Stream(stream) => Body::Sse(Box::new(AnthropicEvents {
            stream,
            writer: EventWriter::new(&model, &id),
            ready: VecDeque::new(),
            done: false,
        })),
    };
    Ok(Reply { status: 200, headers: Vec::new(), body, meta })
}

/// `{"input_tokens": N}`, counted exactly for OpenAI models and approximately for others.
pub fn count_tokens(req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse(&req.body)?;
    let (model, messages, tools) = messages_format::count_tokens_input(&body)?;
    let (count, method) = tokens::count_chat(&model, &messages, tools.as_ref());
    Ok(Reply::json(200, &json!({"input_tokens": count, "method": method.name()})))
}

fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::invalid_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid_request(format!("request body is not valid JSON: {e}"))),
    }
}

/// An OpenAI stream as Anthropic SSE events (`event: <name>\ndata: <json>\n\n`).
struct AnthropicEvents {
    stream: Box<UpstreamStream>,
    writer: EventWriter,
    ready: VecDeque<Vec<u8>>,
    done: bool,
}

impl Iterator for AnthropicEvents {
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
                Some(Translated::Chunk(chunk)) => self.writer.chunk(&chunk),
                Some(Translated::Error(error)) => {
                    self.done = true;
                    self.writer.error(&error)
                }
                None => {
                    self.done = true;
                    self.writer.finish()
                }
            };
            self.ready
                .extend(events.into_iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n").into_bytes()));
        }
    }
}
