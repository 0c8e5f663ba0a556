//! Google's Generative Language API (v1beta), the `gemini/*` family: OpenAI chat requests
//! become `generateContent` calls, and Gemini's answers and streams come back as OpenAI chat
//! completions and chunks (the Gemini API reference for generateContent and streamGenerateContent). Pure functions: no I/O, no
//! clock, no logging. The same four concerns as every family, in order: build,
//! parse_response, translate_event, classify_error (Gemini's error bodies,
//! `{"error": {"code", "message", "status"}}`, already fit `openai::upstream_error` and
//! `errors::classify`, so there is nothing Gemini-specific to add).
//!
//! Thought signatures (docs/upstream-protocols.md, pitfall 17). Gemini 3 rejects a history whose
//! `functionCall` parts lack the `thoughtSignature` it produced, and an OpenAI client has
//! nowhere to keep one except the tool-call id it echoes back. So a signed call gets the id `call_<stem>_<n>__thought__<sig>`
//! (the `__thought__` delimiter is litellm's too), and a request puts the signature back on
//! its `functionCall` part. The first call of a model turn that has no signature gets Google's
//! documented placeholder `skip_thought_signature_validator` instead, so histories from other
//! models or clients that rewrote ids still pass. Ids are deterministic: `<stem>` is the
//! letters and digits of the completion id (at most 12), `<n>` counts calls in the answer.

/// Separates a tool-call id from the thought signature it carries. The id before it is
/// `call_` plus ASCII letters, digits and single underscores, so the first occurrence splits.
const SIGNATURE_DELIMITER: &str = "__thought__";

/// The signature Google documents for function calls Gemini did not sign itself.
const UNSIGNED: &str = "skip_thought_signature_validator";

mod request;
mod response;
mod schema;
mod stream;

pub use request::{build_chat, build_embeddings};
pub use response::{model_ids, parse_chat, parse_embeddings};
pub use stream::stream_translator;

#[cfg(test)]
mod tests;
