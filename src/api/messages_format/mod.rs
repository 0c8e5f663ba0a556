//! The Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) over the
//! OpenAI chat hub: Anthropic requests become OpenAI chat bodies, OpenAI completions and chunk
//! streams become Anthropic messages and named SSE events (Anthropic's Messages API and streaming reference).
//! Pure functions: no I/O, no clock; message ids come from the caller.
//!
//! Everything the current Messages API accepts is accepted: top-level fields this module does
//! not translate (`context_management`, `container`, `service_tier`, `top_k`, ...), content
//! block types it does not know, and `cache_control` on any block are left out, never refused
//! (betas come as `anthropic-beta` headers, which only the Anthropic pass-through uses).
//!
//! Choices where the two formats do not line up:
//! - `system` blocks, the text of `system` turns inside `messages` (Claude Code sends them),
//!   and several assistant text blocks are joined with a blank line into one string (many
//!   OpenAI-compatible hosts take only string content there, and only one leading system
//!   message); the system turns join in their order, after the top-level `system`. A user turn
//!   of a single text block becomes a string, any other user turn an array of parts.
//! - `tool_result` blocks become `role: "tool"` messages ahead of the rest of their user turn.
//!   Tool messages carry text only, so a result's images and documents move to the front of the
//!   user message that follows, after a note naming the tool call; `is_error` prefixes the
//!   content with `[tool error]`.
//! - Documents: a base64 PDF becomes an OpenAI `file` part (`file_data` as a data URI, the
//!   title as its file name, its context as a text part before it); a text or content
//!   document becomes text, its title and context first. URL and Files-API sources of
//!   documents, and Files-API images, are refused with a 400: other providers cannot fetch
//!   them, and quietly leaving the document out would change the question.
//! - `thinking` blocks of assistant turns become `reasoning_content`; signatures and
//!   `redacted_thinking` are dropped (only Anthropic can read them).
//! - `thinking: {type: enabled}` becomes `reasoning_effort` by `budget_tokens`: up to 4096
//!   `low`, up to 16384 `medium`, above that `high`. `output_config.effort` wins over the
//!   budget (`max` as `high`). `disabled` sends nothing, nor does `adaptive` without an effort,
//!   so the provider's default applies.
//! - `output_config.format` (structured outputs) becomes `response_format` json_schema.
//! - Tools: Anthropic's server tools and schema-less built-in tools (`web_search`, `bash`, ...)
//!   are left out, and so is a `tool_choice` naming one of them.
//! - Usage and stop reasons go through `providers::anthropic_map`, the tables the Anthropic
//!   provider uses the other way: `input_tokens` is `prompt_tokens` less the cache reads
//!   (`cache_read_input_tokens`) and writes (`cache_creation_input_tokens`), which Anthropic
//!   counts apart. OpenAI does not say which stop sequence matched, so `stop_sequence` is
//!   always null.
//! - Streams: `message_start` gives the prompt count when known (`with_input_tokens`, or usage
//!   on the first chunk), else 0; the final `message_delta` repeats the input count from the
//!   usage chunk beside `output_tokens`, as Anthropic's may. A tool call that streamed no
//!   arguments gets `partial_json: "{}"` before it closes.
//! - A mid-stream error ends the event stream with `event: error` and leaves open blocks open,
//!   as Anthropic's own mid-stream errors do: closing a tool call's block would present its
//!   half-streamed arguments as complete.

mod request;
mod response;
mod stream;

pub use request::{count_tokens_input, to_openai_request};
pub use response::from_openai_response;
pub use stream::{Event, EventWriter, model_name};

#[cfg(test)]
mod tests;
