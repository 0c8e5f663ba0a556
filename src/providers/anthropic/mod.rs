//! Anthropic's Messages API, the `anthropic/*` family: OpenAI chat requests become
//! `POST {base}/messages` calls, and Anthropic's messages and event streams come back as
//! OpenAI chat completions and chunks (Anthropic's Messages API reference and OpenAI's Chat Completions reference). Pure functions:
//! no I/O, no clock, no logging. The same four concerns as every family, in order: build,
//! parse_response, translate_event, classify_error (Anthropic's error bodies,
//! `{"type": "error", "error": {"type", "message"}}`, already fit `openai::upstream_error` and
//! `errors::classify`, so there is nothing Anthropic-specific to add).
//!
//! Thinking. Anthropic signs every thinking block and only accepts one back with its
//! signature; an OpenAI history carries at most the text (`reasoning_content`), so assistant
//! reasoning is never sent upstream. Anthropic accepts a history without earlier turns'
//! thinking, except inside an open tool loop: there, with thinking on, the last assistant turn
//! must start with its signed thinking block, which keyrelay cannot rebuild. So a request whose
//! last assistant turn called tools is sent without thinking (the loop finishes unthought and
//! the next user turn thinks again), and so is one whose `tool_choice` forces a tool call,
//! which Anthropic refuses with thinking on.
//!
//! Structured output. Anthropic's documented way to get JSON of a given shape is a tool the
//! model is forced to call: `response_format` (`json_schema`, or `json_object` with a schema
//! that takes any object) becomes one tool whose `input_schema` is the schema, with
//! `tool_choice: {"type": "tool"}`, and `json_answer` (whole) or `json_answer_stream`
//! (streamed) turn that call back into the answer's `content` with `finish_reason: stop`. The
//! client's own tools cannot be offered next to it (the forced call would shut them out), so
//! the two together are a 400 unless the client's `tool_choice` is `none`.

mod passthrough;
mod request;
mod response;
mod stream;

pub use passthrough::build_passthrough;
pub use request::{answer_tool_name, build_chat};
pub use response::{json_answer, model_ids, parse_chat};
pub use stream::{json_answer_stream, stream_translator};

#[cfg(test)]
mod tests;
