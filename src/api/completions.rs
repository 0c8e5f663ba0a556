//! `POST /v1/completions`: OpenAI's legacy completions, served from any provider through the
//! chat hub. Each prompt becomes a one-message chat request run by `chat::complete`, and the
//! chat answer comes back as a `text_completion` (whole, or as `text_completion` chunks and
//! `data: [DONE]`).
//!
//! `prompt` is a string, an array of strings, a token-id array or an array of those (token ids
//! are decoded with `tokens::decode`); an array holds several prompts, run one after the
//! other, one choice each (`index` = the prompt's position). `echo` puts the prompt before
//! the text; `suffix` is ignored, since chat models have no insertion mode; `n` and `best_of`
//! must be 1 and `logprobs` null, because the chat hub gives one choice without log
//! probabilities.

use super::chat;
use super::{Body, Incoming, Reply, parse_object};
use crate::config::Config;
use crate::error::ApiError;
use crate::providers::Translated;
use crate::relay::stream::UpstreamStream;
use crate::sse;
use crate::state::AppState;
use crate::tokens;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::sync::Arc;

/// Fields of a completions request that mean the same in a chat request.
const SHARED_FIELDS: [&str; 10] = [
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "logit_bias",
];

pub fn handle(state: &Arc<AppState>, config: &Config, req: &Incoming) -> Result<Reply, ApiError> {
    let body = parse_object(&req.body)?;
    check_single_choice(&body)?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
    let prompts = prompts(model, body.get("prompt"))?;
    let echo = body.get("echo").and_then(Value::as_bool).unwrap_or(false);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut requests: VecDeque<Prompt> = prompts
        .into_iter()
        .enumerate()
        .map(|(index, text)| Prompt { index, chat: chat_body(&body, &text, stream), echo: echo.then_some(text) })
        .collect();
    let id = chat::unique_id("cmpl-");
    if !stream {
        return whole(state, config, requests, &id);
    }
    let first = requests.pop_front().expect("prompts() answers at least one");
    let (upstream, meta) = chat::complete_stream(state, config, first.chat)?;
    let wants_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    // Later prompts start when the earlier ones have streamed, each with this request's config.
    let later =
        (!requests.is_empty()).then(|| Later { state: state.clone(), config: Arc::new(config.clone()), requests });
    let events = CompletionEvents {
        upstream: Some(upstream),
        current: Current { index: first.index, echo: first.echo },
        later,
        id,
        usage: None,
        wants_usage,
        ready: VecDeque::new(),
        ended: false,
    };
    Ok(Reply { status: 200, headers: Vec::new(), body: Body::Sse(Box::new(events)), meta })
}

/// One prompt's chat request, and the text `echo` puts first.
struct Prompt {
    index: usize,
    chat: Map<String, Value>,
    echo: Option<String>,
}

/// `n`, `best_of` and `logprobs` ask for what one chat answer cannot give.
fn check_single_choice(body: &Map<String, Value>) -> Result<(), ApiError> {
    for field in ["n", "best_of"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(1) => {}
            Some(_) => {
                let message = format!("'{field}' must be 1: keyrelay answers each prompt with one choice");
                return Err(ApiError::invalid_request(message).with_param(field));
            }
        }
    }
    if body.get("logprobs").is_some_and(|v| !v.is_null()) {
        let message = "'logprobs' is not supported: completions are served through chat models";
        return Err(ApiError::invalid_request(message).with_param("logprobs"));
    }
    Ok(())
}

/// The prompts of `prompt`: a string, strings, token ids, or lists of token ids.
fn prompts(model: &str, prompt: Option<&Value>) -> Result<Vec<String>, ApiError> {
    fn bad<T>(why: &str) -> Result<T, ApiError> {
        Err(ApiError::invalid_request(why).with_param("prompt"))
    }
    match prompt {
        None | Some(Value::Null) => bad("missing required field 'prompt'"),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => bad("'prompt' must not be an empty array"),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => Ok(vec![decode(model, items)?]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Array(ids) if !ids.is_empty() => decode(model, ids),
                _ => bad("'prompt' must be a string, an array of strings, or token ids"),
            })
            .collect(),
        Some(_) => bad("'prompt' must be a string, an array of strings, or token ids"),
    }
}

fn decode(model: &str, ids: &[Value]) -> Result<String, ApiError> {
    tokens::decode_json_ids(model, ids)
        .map_err(|why| ApiError::invalid_request(format!("'prompt': {why}")).with_param("prompt"))
}

/// The chat request for one prompt: the prompt as the one user message, and the fields both
/// APIs share.
fn chat_body(body: &Map<String, Value>, prompt: &str, stream: bool) -> Map<String, Value> {
    let mut chat = Map::new();
    for field in SHARED_FIELDS {
        if let Some(value) = body.get(field).filter(|v| !v.is_null()) {
            chat.insert(field.into(), value.clone());
        }
    }
    chat.insert("messages".into(), json!([{"role": "user", "content": prompt}]));
    chat.insert("stream".into(), json!(stream));
    if stream {
        if let Some(options) = body.get("stream_options").filter(|o| o.is_object()) {
            chat.insert("stream_options".into(), options.clone());
        }
    }
    chat
}

/// Every prompt answered in turn, as one `text_completion` with a choice per prompt and the
/// usage summed.
fn whole(state: &Arc<AppState>, config: &Config, prompts: VecDeque<Prompt>, id: &str) -> Result<Reply, ApiError> {
    let (mut choices, mut usage, mut last) = (Vec::new(), None, None);
    let mut meta = Map::new();
    for prompt in prompts {
        let (completion, prompt_meta) = chat::complete_whole(state, config, prompt.chat)?;
        let answer = completion.value;
        let choice = &answer["choices"][0];
        let text = choice["message"]["content"].as_str().unwrap_or("");
        choices.push(completion_choice(prompt.index, &format!("{}{text}", prompt.echo.unwrap_or_default()), choice));
        add_usage(&mut usage, &answer["usage"]);
        meta = prompt_meta;
        last = Some(answer);
    }
    let last = last.unwrap_or(Value::Null);
    let mut reply = Reply::json(
        200,
        &json!({
            "id": id,
            "object": "text_completion",
            "created": last["created"],
            "model": last["model"],
            "choices": choices,
            "usage": usage.unwrap_or(Value::Null),
        }),
    );
    reply.meta = meta;
    Ok(reply)
}

fn completion_choice(index: usize, text: &str, chat_choice: &Value) -> Value {
    json!({"text": text, "index": index, "logprobs": null, "finish_reason": chat_choice["finish_reason"]})
}

/// Adds a chat answer's token counts to the sum of the answers so far.
fn add_usage(sum: &mut Option<Value>, usage: &Value) {
    if !usage.is_object() {
        return;
    }
    let total = sum.get_or_insert_with(|| json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        let n = total[field].as_u64().unwrap_or(0).saturating_add(usage[field].as_u64().unwrap_or(0));
        total[field] = json!(n);
    }
}

/// The prompt being streamed.
struct Current {
    index: usize,
    /// The prompt, until its echo went out.
    echo: Option<String>,
}

/// What the prompts after the first need to run.
struct Later {
    state: Arc<AppState>,
    config: Arc<Config>,
    requests: VecDeque<Prompt>,
}

/// Chat chunks as `text_completion` events, prompt after prompt, then the summed usage when
/// asked for, then `data: [DONE]`. A failure, of a stream or of a later prompt's start, is an
/// in-band `data: {"error": ...}` before `[DONE]`, as on the chat route.
struct CompletionEvents {
    /// The current prompt's stream; dropped (its key given back) before the next one starts.
    upstream: Option<Box<UpstreamStream>>,
    current: Current,
    later: Option<Later>,
    id: String,
    usage: Option<Value>,
    wants_usage: bool,
    ready: VecDeque<Vec<u8>>,
    /// `[DONE]` is queued: nothing more is read.
    ended: bool,
}

impl Iterator for CompletionEvents {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.upstream.as_mut().and_then(|u| u.next()) {
                Some(Translated::Chunk(chunk)) => self.chunk(&chunk),
                Some(Translated::Error(error)) => self.end(Some(error)),
                None => self.next_prompt(),
            }
        }
    }
}

impl CompletionEvents {
    fn chunk(&mut self, chunk: &Value) {
        let choice = chunk["choices"].as_array().and_then(|c| c.first());
        let Some(choice) = choice else {
            add_usage(&mut self.usage, &chunk["usage"]);
            return;
        };
        let mut text = self.current.echo.take().unwrap_or_default();
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if text.is_empty() && choice["finish_reason"].is_null() {
            return;
        }
        let out = json!({
            "id": self.id,
            "object": "text_completion",
            "created": chunk["created"],
            "model": chunk["model"],
            "choices": [completion_choice(self.current.index, &text, choice)],
        });
        self.ready.push_back(sse::data_event(&out.to_string()));
    }

    /// The current prompt's stream ended: start the next prompt, or end.
    fn next_prompt(&mut self) {
        // The finished stream still holds its key, which the next prompt may need.
        self.upstream = None;
        let Some(later) = self.later.as_mut() else { return self.end(None) };
        let Some(prompt) = later.requests.pop_front() else { return self.end(None) };
        match chat::complete_stream(&later.state, &later.config, prompt.chat) {
            Ok((upstream, _)) => {
                self.upstream = Some(upstream);
                self.current = Current { index: prompt.index, echo: prompt.echo };
            }
            Err(e) => self.end(Some(e.to_openai_json())),
        }
    }

    fn end(&mut self, error: Option<Value>) {
        match error {
            Some(error) => self.ready.push_back(sse::data_event(&error.to_string())),
            None if self.wants_usage => {
                let usage = self.usage.take().unwrap_or(Value::Null);
                let chunk = json!({"id": self.id, "object": "text_completion", "choices": [], "usage": usage});
                self.ready.push_back(sse::data_event(&chunk.to_string()));
            }
            None => {}
        }
        self.ready.push_back(sse::data_event("[DONE]"));
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn prompts_of_every_shape() {
        assert_eq!(prompts("m", Some(&json!("hi"))).unwrap(), ["hi"]);
        assert_eq!(prompts("m", Some(&json!(["a", "b"]))).unwrap(), ["a", "b"]);
        assert_eq!(prompts("gpt-4", Some(&json!([9906, 11, 1917, 0]))).unwrap(), ["Hello, world!"]);
        assert_eq!(prompts("gpt-4", Some(&json!([[9906], "x"]))).unwrap(), ["Hello", "x"]);
        for bad in [json!(null), json!([]), json!([[]]), json!(3), json!([{}]), json!([-1])] {
            let e = prompts("m", Some(&bad)).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("prompt")), "{bad}");
        }
        assert!(prompts("m", None).is_err());
    }

    #[test]
    fn one_choice_only() {
        assert!(check_single_choice(&object(json!({"n": 1, "best_of": 1, "logprobs": null}))).is_ok());
        for (body, param) in
            [(json!({"n": 2}), "n"), (json!({"best_of": 3}), "best_of"), (json!({"logprobs": 2}), "logprobs")]
        {
            assert_eq!(check_single_choice(&object(body)).unwrap_err().param.as_deref(), Some(param));
        }
    }

    #[test]
    fn chat_request_of_a_prompt() {
        let body = object(json!({"model": "openai/m", "prompt": "p", "max_tokens": 5, "temperature": 0.5,
            "stop": ["\n"], "suffix": "s", "echo": true, "stream_options": {"include_usage": true}, "seed": null}));
        let chat = chat_body(&body, "p", false);
        assert_eq!(
            Value::Object(chat),
            json!({"model": "openai/m", "max_tokens": 5, "temperature": 0.5, "stop": ["\n"],
                "messages": [{"role": "user", "content": "p"}], "stream": false})
        );
        let chat = chat_body(&body, "p", true);
        assert_eq!(
            (chat["stream"].clone(), chat["stream_options"].clone()),
            (json!(true), json!({"include_usage": true}))
        );
    }

    #[test]
    fn usage_adds_up() {
        let mut sum = None;
        add_usage(&mut sum, &json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}));
        add_usage(&mut sum, &Value::Null);
        add_usage(&mut sum, &json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}));
        assert_eq!(sum.unwrap(), json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}));
    }
}
