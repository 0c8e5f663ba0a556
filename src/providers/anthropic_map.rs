//! The mapping between Anthropic's and OpenAI's vocabularies that both Anthropic translators
//! share: `providers::anthropic` (OpenAI chat to an Anthropic upstream and back) and
//! `api::messages_format` (an Anthropic client to the OpenAI hub and back). One table per
//! pair, both directions side by side, so they cannot drift apart; the round-trip tests below
//! pin what survives a trip through the other format.

use crate::error::ApiError;
use crate::providers::hub;
use serde_json::{Map, Value, json};

/// `reasoning_effort` as an extended-thinking budget. Anthropic's floor is 1024, so minimal
/// and low share it. With the default room for the answer added (`max_tokens`), xhigh and max
/// need a model whose output limit is 64k (Sonnet 4.x, Haiku 4.5, Opus 4.5); Opus 4 and 4.1
/// stop at 32k, and their callers should send `max_tokens` themselves.
pub fn thinking_budget(body: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    let Some(effort) = body.get("reasoning_effort").filter(|v| !v.is_null()) else { return Ok(None) };
    let effort = effort.as_str().ok_or_else(|| hub::bad("reasoning_effort", "'reasoning_effort' must be a string"))?;
    Ok(match effort {
        "none" => None,
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        "xhigh" => Some(24576),
        "max" => Some(32768),
        other => return Err(hub::bad("reasoning_effort", format!("unknown reasoning_effort '{other}'"))),
    })
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`. `refusal` is a content filter to
/// OpenAI; `pause_turn` (a server tool paused a long turn) and anything unknown end the turn
/// as `stop`. `called`: the message holds tool calls (a stream may end without a reason).
pub fn finish_reason(stop_reason: Option<&str>, called: bool) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        None if called => "tool_calls",
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`. OpenAI does not say which stop
/// sequence matched, so `stop_sequence` is never produced; `tool_calls` without a call to
/// answer ends the turn.
pub fn stop_reason(finish: Option<&str>, called: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        _ if called => "tool_use",
        _ => "end_turn",
    }
}

/// The token counts of one exchange in Anthropic's terms: `input` leaves out the prompt
/// tokens read from the cache and those written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

impl TokenCounts {
    /// Anthropic's `usage` object (the cache fields only when not zero).
    pub fn to_anthropic(self) -> Value {
        let mut out = json!({"input_tokens": self.input, "output_tokens": self.output});
        if self.cache_read > 0 {
            out["cache_read_input_tokens"] = json!(self.cache_read);
        }
        if self.cache_creation > 0 {
            out["cache_creation_input_tokens"] = json!(self.cache_creation);
        }
        out
    }
}

/// Anthropic usage as OpenAI usage. OpenAI's `prompt_tokens` counts every prompt token, so
/// it is the sum of Anthropic's three; the cache reads are OpenAI's
/// `prompt_tokens_details.cached_tokens`, and the cache writes, which OpenAI's format has no
/// field for, go in `cache_creation_input_tokens` as LiteLLM reports them (so clients of the
/// Python proxy find them where they did). Saturating: a careless upstream's counts near
/// `u64::MAX` must not overflow.
pub fn openai_usage(usage: &Value) -> Value {
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    let (cached, created) = (count("cache_read_input_tokens"), count("cache_creation_input_tokens"));
    let prompt = count("input_tokens").saturating_add(cached).saturating_add(created);
    let completion = count("output_tokens");
    let mut out = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)});
    if cached > 0 {
        out["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    if created > 0 {
        out["cache_creation_input_tokens"] = json!(created);
    }
    out
}

/// OpenAI usage in Anthropic's terms: the inverse of `openai_usage`. The cache counts can
/// never exceed the prompt (a careless upstream's can; they are capped in that order).
pub fn token_counts(usage: &Value) -> TokenCounts {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let prompt = n(usage.get("prompt_tokens"));
    let cache_read = n(usage.pointer("/prompt_tokens_details/cached_tokens")).min(prompt);
    let cache_creation = n(usage.get("cache_creation_input_tokens")).min(prompt - cache_read);
    TokenCounts {
        input: prompt - cache_read - cache_creation,
        output: n(usage.get("completion_tokens")),
        cache_read,
        cache_creation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_survives_anthropic_to_openai_and_back() {
        for (input, output, read, created) in [(10, 5, 0, 0), (3, 7, 40, 0), (2, 1, 0, 30), (6, 5, 4, 9), (0, 0, 0, 0)]
        {
            let anthropic = json!({"input_tokens": input, "output_tokens": output,
                                   "cache_read_input_tokens": read, "cache_creation_input_tokens": created});
            let openai = openai_usage(&anthropic);
            assert_eq!(openai["prompt_tokens"], input + read + created);
            let back = token_counts(&openai);
            assert_eq!(
                back,
                TokenCounts { input, output, cache_read: read, cache_creation: created },
                "through {openai}"
            );
        }
    }

    #[test]
    fn usage_survives_openai_to_anthropic_and_back() {
        let openai = json!({"prompt_tokens": 50, "completion_tokens": 8, "total_tokens": 58,
                            "prompt_tokens_details": {"cached_tokens": 20}, "cache_creation_input_tokens": 10});
        let anthropic = token_counts(&openai).to_anthropic();
        assert_eq!(
            anthropic,
            json!({"input_tokens": 20, "output_tokens": 8, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 10})
        );
        assert_eq!(openai_usage(&anthropic), openai);
    }

    #[test]
    fn cache_counts_larger_than_the_prompt_are_capped() {
        let counts = token_counts(&json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4},
                                          "cache_creation_input_tokens": 9}));
        assert_eq!(counts, TokenCounts { input: 0, output: 0, cache_read: 4, cache_creation: 1 });
    }

    #[test]
    fn stop_reasons_survive_a_round_trip() {
        for (anthropic, called) in [("end_turn", false), ("max_tokens", false), ("tool_use", true), ("refusal", false)]
        {
            let openai = finish_reason(Some(anthropic), called);
            assert_eq!(stop_reason(Some(openai), called), anthropic, "through {openai}");
        }
        for (openai, called) in [("stop", false), ("length", false), ("tool_calls", true), ("content_filter", false)] {
            let anthropic = stop_reason(Some(openai), called);
            assert_eq!(finish_reason(Some(anthropic), called), openai, "through {anthropic}");
        }
        // What has no counterpart maps to the nearest.
        assert_eq!(finish_reason(Some("stop_sequence"), false), "stop");
        assert_eq!(finish_reason(Some("pause_turn"), false), "stop");
        assert_eq!(finish_reason(Some("model_context_window_exceeded"), false), "length");
        assert_eq!(stop_reason(Some("tool_calls"), false), "end_turn");
    }
}
