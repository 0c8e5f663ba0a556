//! The OpenAI Responses API (`POST /v1/responses`) over the OpenAI chat hub: Responses
//! requests become chat bodies, `chat.completion`s become Response objects, and chat chunk
//! streams become the Responses event sequence (OpenAI's Responses API reference and its
//! streaming events reference). Pure functions: no I/O, no clock; ids and times come from the
//! caller.
//!
//! Choices where the two formats do not line up:
//! - keyrelay keeps no responses: `previous_response_id` is a 400 that says to send the whole
//!   conversation; `store`, `include`, `truncation`, `metadata` and `prompt_cache_key` have no
//!   chat equivalent and are ignored (`metadata` and `truncation` are echoed in the answer).
//! - `instructions` is the first message, as `system`; `developer` messages become `system`
//!   ones, since many OpenAI-compatible hosts refuse the newer role.
//! - Consecutive `function_call` items (and an assistant message just before them) make one
//!   assistant message with `tool_calls`. A `function_call_output` without `call_id` (some
//!   clients send one) answers the oldest call still unanswered; with no call waiting it
//!   becomes a user message, since a tool message must follow its call. Images in a tool
//!   output move to a user message after the tool messages (tool messages carry text).
//! - `reasoning` items are dropped: they hold a summary (and OpenAI's encrypted content), not
//!   the model's reasoning, and no chat family can take either back as its own thinking.
//! - Only function tools are sent. Built-in and custom tools (`custom`, `local_shell`,
//!   `web_search`, `file_search`, `mcp`, ...) need a server that runs them or a grammar, which
//!   chat-completions upstreams do not have: they are dropped, never refused, so agents that
//!   always offer them still work. Calls to such tools in the history (`custom_tool_call`)
//!   become function calls whose arguments are `{"input": ...}`; `local_shell_call` items and
//!   other built-in history are left out with their outputs.
//! - A `tool_choice` that names a dropped tool becomes the default (`auto`); `allowed_tools`
//!   keeps only the allowed function tools and its mode. With no tool left, `tools`,
//!   `tool_choice` and `parallel_tool_calls` are not sent.
//! - `text.format` becomes `response_format`; `text.verbosity` is dropped (an OpenAI-only
//!   chat field other hosts refuse). `max_output_tokens` becomes `max_tokens`.
//! - Answers: chat `reasoning_content` becomes a reasoning item with one summary part, text a
//!   message with one `output_text` part (a refusal too), tool calls `function_call` items;
//!   `length` and `content_filter` make the response `incomplete`. Item ids are made from the
//!   response id and the item's output index, so they stay the same from `added` to
//!   `completed`.
//! - A mid-stream error ends the events with `response.failed` (carrying `error.code` and the
//!   items finished so far); items still open stay unfinished, as a half-streamed call must
//!   not look complete.

use serde_json::{Map, Value};

mod request;
mod response;
mod stream;

pub use request::to_chat_request;
pub use response::{Frame, from_chat_completion, response_error};
pub use stream::{EventWriter, model_name};

/// A field's value, with `null` taken as absent.
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests;
