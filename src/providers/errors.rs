//! Upstream failures: which class a failure is in (what it says about the key), and how long
//! the upstream asked us to wait, from every hint format providers use. Decided by the
//! provider's error type, code, status and reason, not by the HTTP status alone.

use crate::clock::{self, SECOND};
use serde_json::Value;

/// What an upstream failure says about the key that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Too many requests right now: cool the key down for this model, try another.
    RateLimit,
    /// The key's quota or credit is spent: cool it down until the hint or the daily reset.
    Quota,
    /// The key is bad, revoked or not allowed: lock the whole key out.
    Auth,
    /// The upstream failed (5xx, overloaded, network): retry once, then a short cooldown.
    Transient,
    /// The request itself is wrong: every key would fail the same way; no rotation.
    Request,
}

impl ErrorClass {
    pub fn describe(self) -> &'static str {
        match self {
            ErrorClass::RateLimit => "rate limited",
            ErrorClass::Quota => "quota exhausted",
            ErrorClass::Auth => "auth failed",
            ErrorClass::Transient => "upstream error",
            ErrorClass::Request => "request rejected",
        }
    }
}

/// A hint longer than this means the quota is gone, not a passing rate limit.
pub const QUOTA_HINT_MS: u64 = clock::HOUR;

pub fn classify(status: u16, body: &Value) -> ErrorClass {
    let error = body.get("error").unwrap_or(body);
    let text = |field: &str| match error.get(field) {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let (kind, code, grpc_status) = (text("type"), text("code"), text("status"));
    let message = text("message");
    let reasons: Vec<String> = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("reason").and_then(Value::as_str))
        .map(str::to_ascii_lowercase)
        .collect();
    let says = |needle: &str| kind.contains(needle) || code.contains(needle);
    // Anthropic's spend limit names itself in `error.details.error_code`.
    let detail_code = error.get("details").and_then(|d| d.get("error_code")).and_then(Value::as_str).unwrap_or("");

    // Gemini answers a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID.
    if reasons.iter().any(|r| r == "api_key_invalid") || message.contains("api key not valid") {
        return ErrorClass::Auth;
    }
    if says("insufficient_quota")
        || says("billing")
        // Code Assist's quota errors (429s) name themselves in an ErrorInfo reason.
        || reasons.iter().any(|r| r == "quota_exhausted" || r == "insufficient_g1_credits_balance")
        || code == "enforced_spend_limit_reached"
        || detail_code == "enforced_spend_limit_reached"
        || message.contains("spend limit")
        || message.contains("exceeded your current quota")
        || status == 402
        || (status == 403 && (message.contains("quota") || says("quota")))
    {
        return ErrorClass::Quota;
    }
    match status {
        401 | 403 => ErrorClass::Auth,
        429 => ErrorClass::RateLimit,
        408 | 409 | 425 | 500..=599 => ErrorClass::Transient,
        _ if says("rate_limit") || grpc_status == "resource_exhausted" => ErrorClass::RateLimit,
        _ if says("overloaded") => ErrorClass::Transient,
        _ => ErrorClass::Request,
    }
}

/// How long the upstream asked us to wait, in ms, from (in order of trust): `retry-after-ms`,
/// `retry-after` (seconds or HTTP date), `x-ratelimit-reset-*` (Go durations),
/// `anthropic-ratelimit-*-reset` (RFC 3339), Gemini's `RetryInfo.retryDelay` and
/// `quotaResetDelay`, and "retry in 12.3s" in the message.
pub fn retry_hint(headers: &[(String, String)], body: &Value, now: u64) -> Option<u64> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(ms.max(0.0) as u64);
    }
    if let Some(v) = header("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return Some((secs.max(0.0) * 1000.0) as u64);
        }
        if let Some(at) = clock::parse_http_date(v) {
            return Some(at.saturating_sub(now));
        }
    }
    if let Some(ms) = ratelimit_reset(headers) {
        return Some(ms);
    }
    let anthropic = headers
        .iter()
        .filter(|(n, _)| n.starts_with("anthropic-ratelimit-") && n.ends_with("-reset"))
        .filter_map(|(_, v)| clock::parse_rfc3339(v))
        .max();
    if let Some(at) = anthropic {
        return Some(at.saturating_sub(now));
    }
    body_hint(body)
}

/// OpenAI's `x-ratelimit-reset-requests` / `-tokens`: the reset of the exhausted limit (its
/// `remaining` is 0), else the later of the two.
fn ratelimit_reset(headers: &[(String, String)]) -> Option<u64> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    let resets: Vec<(u64, bool)> = ["requests", "tokens"]
        .iter()
        .filter_map(|kind| {
            let reset = go_duration(header(&format!("x-ratelimit-reset-{kind}"))?)?;
            let exhausted = header(&format!("x-ratelimit-remaining-{kind}")) == Some("0");
            Some((reset, exhausted))
        })
        .collect();
    let exhausted = resets.iter().filter(|(_, e)| *e).map(|(r, _)| *r).max();
    exhausted.or_else(|| resets.iter().map(|(r, _)| *r).max())
}

/// The body's hint: a `RetryInfo.retryDelay` in any detail first, then an `ErrorInfo`'s
/// `metadata.quotaResetDelay` (Code Assist sends both, in either order), then the message.
fn body_hint(body: &Value) -> Option<u64> {
    let error = body.get("error").unwrap_or(body);
    let details = || error.get("details").and_then(Value::as_array).into_iter().flatten();
    let retry_delay = details().find_map(|d| d.get("retryDelay").and_then(Value::as_str).and_then(go_duration));
    let reset_delay =
        || details().find_map(|d| d.get("metadata")?.get("quotaResetDelay")?.as_str().and_then(go_duration));
    retry_delay.or_else(reset_delay).or_else(|| error.get("message").and_then(Value::as_str).and_then(message_hint))
}

/// "Please retry in 54.88s", "try again in 3.89s", "retry after 20 seconds", "in 500ms",
/// "Your quota will reset after 19h14m47s.".
fn message_hint(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    for marker in ["retry in ", "try again in ", "retry after ", "try again after ", "reset after "] {
        let Some(i) = lower.find(marker) else { continue };
        let rest = &lower[i + marker.len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).unwrap_or(rest.len());
        let word = &rest[..end];
        if let Some(ms) = go_duration(word) {
            return Some(ms);
        }
        if let Ok(secs) = word.trim_end_matches('.').parse::<f64>() {
            let unit = rest[end..].trim_start();
            let scale = if unit.starts_with("ms") || unit.starts_with("milli") {
                1.0
            } else if unit.starts_with("min") {
                60_000.0
            } else {
                1000.0
            };
            return Some((secs * scale) as u64);
        }
    }
    None
}

/// Go-style durations (`6m0s`, `12ms`, `1h2m3.5s`, `0.539477544s`) and plain `40s`.
pub fn go_duration(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches('.');
    if text.is_empty() {
        return None;
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..split].parse().ok()?;
        let unit_end = rest[split..].find(|c: char| c.is_ascii_digit() || c == '.').map_or(rest.len(), |i| split + i);
        let scale = match &rest[split..unit_end] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => SECOND as f64,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn classes() {
        let quota = json!({"error": {"type": "insufficient_quota", "code": "insufficient_quota"}});
        assert_eq!(classify(429, &quota), ErrorClass::Quota);
        assert_eq!(classify(429, &json!({"error": {"type": "rate_limit_error"}})), ErrorClass::RateLimit);
        let spend = json!({"type": "error", "error": {"type": "rate_limit_error", "details": {"error_code": "enforced_spend_limit_reached"}}});
        assert_eq!(classify(429, &spend), ErrorClass::Quota);
        assert_eq!(
            classify(429, &json!({"error": {"code": "RESOURCE_EXHAUSTED", "status": "RESOURCE_EXHAUSTED"}})),
            ErrorClass::RateLimit
        );
        assert_eq!(classify(401, &json!({})), ErrorClass::Auth);
        assert_eq!(classify(403, &json!({"error": {"message": "forbidden"}})), ErrorClass::Auth);
        assert_eq!(classify(403, &json!({"error": {"message": "Free allocated quota exceeded."}})), ErrorClass::Quota);
        let gemini = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid. Please pass a valid API key.",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}});
        assert_eq!(classify(400, &gemini), ErrorClass::Auth);
        assert_eq!(
            classify(529, &json!({"type": "error", "error": {"type": "overloaded_error"}})),
            ErrorClass::Transient
        );
        for s in [500, 502, 503, 504] {
            assert_eq!(classify(s, &json!({})), ErrorClass::Transient);
        }
        assert_eq!(classify(400, &json!({"error": {"code": "context_length_exceeded"}})), ErrorClass::Request);
        assert_eq!(classify(404, &json!({})), ErrorClass::Request);
        assert_eq!(classify(422, &json!({})), ErrorClass::Request);
    }

    #[test]
    fn hints_in_every_format() {
        let now = clock::parse_rfc3339("2026-11-25T01:00:00Z").unwrap();
        let none = json!({});
        assert_eq!(retry_hint(&h(&[("retry-after", "12")]), &none, now), Some(12_000));
        assert_eq!(retry_hint(&h(&[("retry-after", "1.5")]), &none, now), Some(1_500));
        assert_eq!(retry_hint(&h(&[("retry-after", "Wed, 25 Nov 2026 01:01:00 GMT")]), &none, now), Some(60_000));
        assert_eq!(retry_hint(&h(&[("retry-after-ms", "250"), ("retry-after", "9")]), &none, now), Some(250));
        let openai = h(&[
            ("x-ratelimit-reset-requests", "12ms"),
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-tokens", "0"),
        ]);
        assert_eq!(retry_hint(&openai, &none, now), Some(360_000));
        let anthropic = h(&[("anthropic-ratelimit-requests-reset", "2026-11-25T01:00:30Z")]);
        assert_eq!(retry_hint(&anthropic, &none, now), Some(30_000));
        let gemini =
            json!({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "40s"}]}});
        assert_eq!(retry_hint(&[], &gemini, now), Some(40_000));
        let reset = json!({"error": {"details": [{"metadata": {"quotaResetDelay": "539.477544ms"}}]}});
        assert_eq!(retry_hint(&[], &reset, now), Some(539));
        let text = json!({"error": {"message": "Rate limit reached. Please try again in 3.89s. Visit ..."}});
        assert_eq!(retry_hint(&[], &text, now), Some(3_890));
        assert_eq!(retry_hint(&[], &json!({"error": {"message": "Please retry in 54.88s."}}), now), Some(54_880));
        assert_eq!(retry_hint(&[], &json!({"error": {"message": "retry after 20 seconds"}}), now), Some(20_000));
        assert_eq!(retry_hint(&[], &json!({"error": {"message": "slow down"}}), now), None);
        let capacity = json!({"error": {"message": "You have exhausted your capacity on this model. Your quota will reset after 19h14m47s."}});
        assert_eq!(retry_hint(&[], &capacity, now), Some(69_287_000));
    }

    /// Code Assist's 429s: an ErrorInfo (reason, `quotaResetDelay`) and maybe a RetryInfo, in
    /// either order; the RetryInfo wins, as the Gemini CLI reads them.
    #[test]
    fn code_assist_quota_errors() {
        let now = 0;
        let info = |reason: &str| {
            json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "cloudcode-pa.googleapis.com",
                   "metadata": {"model": "gemini-2.5-pro", "quotaResetDelay": "539.477544ms"}})
        };
        let retry = json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"});
        let body = |details: Vec<Value>| json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": details}});
        let rate = body(vec![info("RATE_LIMIT_EXCEEDED"), retry.clone()]);
        assert_eq!(classify(429, &rate), ErrorClass::RateLimit);
        assert_eq!(retry_hint(&[], &rate, now), Some(3_000));
        let exhausted = body(vec![info("QUOTA_EXHAUSTED")]);
        assert_eq!(classify(429, &exhausted), ErrorClass::Quota);
        assert_eq!(retry_hint(&[], &exhausted, now), Some(539));
        assert_eq!(classify(429, &body(vec![info("INSUFFICIENT_G1_CREDITS_BALANCE")])), ErrorClass::Quota);
        assert_eq!(classify(429, &body(vec![info("MODEL_CAPACITY_EXHAUSTED")])), ErrorClass::RateLimit);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("6m0s"), Some(360_000));
        assert_eq!(go_duration("1h2m3.5s"), Some(3_723_500));
        assert_eq!(go_duration("0.539477544s"), Some(539));
        assert_eq!(go_duration("40"), None);
        assert_eq!(go_duration("soon"), None);
    }
}
