//! Upstream failures: which class a failure is in (what it says about the key), and how long
//! the upstream asked us to wait, from every hint format providers use. Decided by the
//! provider's error type, code, status and reason, not by the HTTP status alone.
//! The classes and what each does to a key: docs/key-rotation.md, sections 3 and 4.

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

/// The longest wait a hint can ask for; a longer one (a careless `retry-after: 1e300`, a
/// date in the year 10000) is taken as this. A week is longer than any reset providers
/// document, and `now + hint` stays far from overflowing.
pub const MAX_HINT_MS: u64 = 7 * clock::DAY;

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

    // Azure OpenAI's content filter refused the prompt (400 `content_filter`, inner code
    // `ResponsibleAIPolicyViolation`): the request's fault, every key would get the same.
    let inner_code = error.get("innererror").and_then(|i| i.get("code")).and_then(Value::as_str).unwrap_or("");
    if code == "content_filter" || inner_code.eq_ignore_ascii_case("ResponsibleAIPolicyViolation") {
        return ErrorClass::Request;
    }
    if let Some(class) = aws_exception(&kind) {
        return class;
    }
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

/// AWS's exception types (Bedrock Runtime's, as `providers::bedrock::error_body` puts them in
/// `type`), which say more than their statuses: a 400 `ServiceQuotaExceededException` is the
/// account's quota, a 429 `ModelNotReadyException` is the model's, not the key's, and the
/// signature and token errors are the key pair's.
fn aws_exception(kind: &str) -> Option<ErrorClass> {
    let name = kind.strip_suffix("exception")?;
    Some(match name {
        "throttling" | "toomanyrequests" => ErrorClass::RateLimit,
        "servicequotaexceeded" => ErrorClass::Quota,
        "accessdenied"
        | "unrecognizedclient"
        | "invalidsignature"
        | "incompletesignature"
        | "expiredtoken"
        | "missingauthenticationtoken" => ErrorClass::Auth,
        "modelnotready" | "modeltimeout" | "modelerror" | "modelstreamerror" | "internalserver"
        | "serviceunavailable" => ErrorClass::Transient,
        "validation" | "resourcenotfound" | "conflict" => ErrorClass::Request,
        _ => return None,
    })
}

/// How long the upstream asked us to wait, in ms, from (in order of trust): `retry-after-ms`,
/// `retry-after` (seconds or HTTP date), `x-ratelimit-reset-*` (Go durations),
/// `anthropic-ratelimit-*-reset` (RFC 3339), Gemini's `RetryInfo.retryDelay` and
/// `quotaResetDelay`, and "retry in 12.3s" in the message. At most `MAX_HINT_MS`.
pub fn retry_hint(headers: &[(String, String)], body: &Value, now: u64) -> Option<u64> {
    any_hint(headers, body, now).map(|ms| ms.min(MAX_HINT_MS))
}

fn any_hint(headers: &[(String, String)], body: &Value, now: u64) -> Option<u64> {
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
        // Azure OpenAI's content filter, in its documented shape and with the inner code only.
        let filtered = json!({"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {"hate": {"filtered": true, "severity": "high"}}}}});
        assert_eq!(classify(400, &filtered), ErrorClass::Request);
        let inner_only = json!({"error": {"code": "invalid_prompt", "message": "blocked", "innererror": {"code": "ResponsibleAIPolicyViolation"}}});
        assert_eq!(classify(400, &inner_only), ErrorClass::Request);
        let retry_ms = h(&[("retry-after-ms", "1500"), ("x-ratelimit-reset-requests", "9s")]);
        assert_eq!(retry_hint(&retry_ms, &json!({}), 0), Some(1_500));
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
    fn aws_exceptions() {
        let aws = |status: u16, kind: &str| classify(status, &json!({"error": {"type": kind, "message": "m"}}));
        assert_eq!(aws(429, "ThrottlingException"), ErrorClass::RateLimit);
        assert_eq!(aws(400, "ServiceQuotaExceededException"), ErrorClass::Quota);
        assert_eq!(aws(429, "ModelNotReadyException"), ErrorClass::Transient);
        assert_eq!(aws(408, "ModelTimeoutException"), ErrorClass::Transient);
        assert_eq!(aws(403, "AccessDeniedException"), ErrorClass::Auth);
        assert_eq!(aws(403, "UnrecognizedClientException"), ErrorClass::Auth);
        assert_eq!(aws(403, "InvalidSignatureException"), ErrorClass::Auth);
        assert_eq!(aws(400, "ValidationException"), ErrorClass::Request);
        assert_eq!(aws(404, "ResourceNotFoundException"), ErrorClass::Request);
        assert_eq!(aws(500, "InternalServerException"), ErrorClass::Transient);
        assert_eq!(aws(503, "ServiceUnavailableException"), ErrorClass::Transient);
        assert_eq!(aws(424, "modelStreamErrorException"), ErrorClass::Transient);
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

    /// Regression: a careless hint (`1e300` seconds, `inf`, a thousand years of hours) gave a
    /// hint near `u64::MAX`, and the key pool's `now + hint` overflowed.
    #[test]
    fn absurd_hints_are_capped() {
        let none = Value::Null;
        for (name, value) in
            [("retry-after", "1e300"), ("retry-after-ms", "inf"), ("x-ratelimit-reset-tokens", "9999999999h")]
        {
            assert_eq!(retry_hint(&h(&[(name, value)]), &none, 0), Some(MAX_HINT_MS), "{name}: {value}");
        }
        let far = json!({"error": {"message": "Please retry in 1e30 seconds"}});
        assert_eq!(retry_hint(&[], &far, 0), Some(MAX_HINT_MS));
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

/// Property tests over generated headers and bodies (`scripts/fuzz.sh` runs them with more
/// cases).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Numbers as upstreams might send them, careless ones included.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{1,25}(\\.[0-9]{0,6})?",
            "-?[0-9]{1,4}(e[+-]?[0-9]{1,4})?",
            Just("inf".to_string()),
            Just("NaN".to_string()),
            Just("1e400".to_string()),
            Just("18446744073709551616".to_string()),
            "[ -~]{0,10}",
        ]
    }

    fn duration() -> impl Strategy<Value = String> {
        proptest::collection::vec((number(), prop_oneof!["h", "m", "s", "ms", "us", "ns", "µs", "[a-z]{0,2}"]), 1..4)
            .prop_map(|parts| parts.into_iter().map(|(n, u)| n + &u).collect())
    }

    fn date() -> impl Strategy<Value = String> {
        let n = || prop_oneof!["[0-9]{1,2}", "-?[0-9]{1,20}"];
        prop_oneof![
            (n(), "[A-Z][a-z]{2}", n(), n(), n(), n())
                .prop_map(|(d, m, y, h, mi, s)| format!("Wed, {d} {m} {y} {h}:{mi}:{s} GMT")),
            (n(), n(), n(), n(), n(), number(), prop_oneof!["Z", "[+-][0-9]{1,20}(:[0-9]{1,20})?"])
                .prop_map(|(y, mo, d, h, mi, s, z)| format!("{y}-{mo}-{d}T{h}:{mi}:{s}{z}")),
        ]
    }

    fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
        let field = prop_oneof![
            number().prop_map(|v| ("retry-after-ms".to_string(), v)),
            prop_oneof![number(), date()].prop_map(|v| ("retry-after".to_string(), v)),
            duration().prop_map(|v| ("x-ratelimit-reset-requests".to_string(), v)),
            duration().prop_map(|v| ("x-ratelimit-reset-tokens".to_string(), v)),
            number().prop_map(|v| ("x-ratelimit-remaining-tokens".to_string(), v)),
            date().prop_map(|v| ("anthropic-ratelimit-tokens-reset".to_string(), v)),
            ("[a-z-]{1,12}", "[ -~]{0,12}"),
        ];
        proptest::collection::vec(field, 0..5)
    }

    fn body() -> impl Strategy<Value = Value> {
        let marker = prop_oneof!["retry in ", "try again in ", "retry after ", "reset after ", "[a-z ]{0,6}"];
        let unit = prop_oneof!["s", " seconds", "ms", " minutes", "", "[ -~]{0,4}"];
        let message =
            (marker, prop_oneof![number(), duration()], unit).prop_map(|(m, n, u)| format!("Please {m}{n}{u}."));
        prop_oneof![
            message.prop_map(|m| json!({"error": {"message": m}})),
            duration().prop_map(|d| json!({"error": {"details": [{"@type": "RetryInfo", "retryDelay": d}]}})),
            duration().prop_map(|d| json!({"error": {"details": [{"metadata": {"quotaResetDelay": d}}]}})),
            any::<i64>().prop_map(|n| json!({"error": {"details": [{"retryDelay": n}], "message": n}})),
            Just(Value::Null),
        ]
    }

    proptest! {
        #![proptest_config(crate::fuzz_config::config())]

        /// Whatever the headers and body say, the hint is at most `MAX_HINT_MS`, so a
        /// cooldown of `now + hint` cannot overflow or bench a key for years.
        #[test]
        fn hints_are_bounded(headers in headers(), body in body(), now in 0u64..(1u64 << 60)) {
            if let Some(hint) = retry_hint(&headers, &body, now) {
                prop_assert!(hint <= MAX_HINT_MS, "{} ms from {:?} {}", hint, headers, body);
            }
        }

        /// A hint in range comes through exactly.
        #[test]
        fn hints_in_range_are_exact(ms in 0..=MAX_HINT_MS, headers in headers(), body in body()) {
            let mut first = vec![("retry-after-ms".to_string(), ms.to_string())];
            first.extend(headers);
            prop_assert_eq!(retry_hint(&first, &body, 0), Some(ms));
        }

        /// Go durations from arbitrary text never panic, and whole hours, minutes and seconds
        /// add up exactly.
        #[test]
        fn go_durations(text in prop_oneof![duration(), "\\PC{0,16}"], h in 0u64..1000, m in 0u64..1000, sec in 0u64..1000) {
            let _ = go_duration(&text);
            prop_assert_eq!(go_duration(&format!("{h}h{m}m{sec}s")), Some(h * clock::HOUR + m * clock::MINUTE + sec * SECOND));
        }
    }
}
