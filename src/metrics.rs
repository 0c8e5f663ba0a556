//! `GET /metrics`: Prometheus text exposition of what the proxy did. Counters are kept under
//! one short lock; gauges (keys by state, requests in flight) are read from the key pool when
//! scraped. Every label set is bounded: providers are the configured ones, models outside the
//! provider's configured or fetched lists fold into `other`, routes are the known ones, so a
//! client sending random model names cannot grow the process.

use crate::keys::pool::{KeyStatus, Outcome};
use crate::sync::lock;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the upstream latency histogram, in seconds (LLM calls take from tens of
/// milliseconds to minutes).
const LATENCY_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// The label value for anything outside a bounded set.
pub const OTHER: &str = "other";

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

/// Nested maps keyed by `String`, so a counter that exists is found by `&str` without
/// allocating: counting costs no allocation once a label set has been seen.
#[derive(Default)]
struct Counters {
    /// route -> provider -> model -> status -> count
    requests: BTreeMap<String, BTreeMap<String, ByModel>>,
    /// provider -> (bucket counts, sum of seconds, count)
    latency: BTreeMap<String, Histogram>,
    /// provider -> outcome class -> count
    attempts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// provider -> same-key retries of transient failures
    retries: BTreeMap<String, u64>,
    /// provider -> reason -> count
    cooldowns: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

/// model -> status -> count
type ByModel = BTreeMap<String, BTreeMap<u16, u64>>;

/// The entry for `key`, made on first use.
fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// What a request's answer is counted under.
pub struct RequestLabels<'a> {
    pub route: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub status: u16,
}

impl Metrics {
    pub fn request(&self, labels: RequestLabels<'_>) {
        let mut counters = lock(&self.counters);
        let by_provider = slot(&mut counters.requests, labels.route);
        let by_model = slot(slot(by_provider, labels.provider), labels.model);
        *by_model.entry(labels.status).or_insert(0) += 1;
    }

    /// How long an upstream took to answer (status and headers, or a stream's start).
    pub fn upstream_latency(&self, provider: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut counters = lock(&self.counters);
        let histogram = slot(&mut counters.latency, provider);
        for (count, bound) in histogram.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// An attempt's outcome, and the cooldown or lockout it starts, if any.
    pub fn attempt(&self, provider: &str, outcome: &Outcome) {
        let (class, cooldown) = match outcome {
            Outcome::Success { .. } => ("success", None),
            Outcome::RateLimited { .. } => ("rate_limit", Some("rate_limit")),
            Outcome::QuotaExhausted { .. } => ("quota", Some("quota")),
            Outcome::AuthFailed { .. } => ("auth", Some("auth_lockout")),
            Outcome::Transient { .. } => ("transient", Some("transient")),
            Outcome::RequestError => ("request_error", None),
            Outcome::Cancelled => ("cancelled", None),
        };
        let mut counters = lock(&self.counters);
        *slot(&mut counters.attempts, provider).entry(class).or_insert(0) += 1;
        if let Some(reason) = cooldown {
            *slot(&mut counters.cooldowns, provider).entry(reason).or_insert(0) += 1;
        }
    }

    /// A transient failure retried once on the same key.
    pub fn retry(&self, provider: &str) {
        *slot(&mut lock(&self.counters).retries, provider) += 1;
    }

    /// The exposition: the counters, then the gauges from `keys` (the pool's status now).
    pub fn render(&self, keys: &[KeyStatus], log_lines_dropped: u64) -> String {
        let mut out = String::with_capacity(4096);
        let counters = lock(&self.counters);
        family(
            &mut out,
            "keyrelay_requests_total",
            "counter",
            "Requests answered, by route, provider, model and status.",
        );
        for (route, by_provider) in &counters.requests {
            for (provider, by_model) in by_provider {
                for (model, by_status) in by_model {
                    for (status, n) in by_status {
                        let status = status.to_string();
                        let set =
                            labels(&[("route", route), ("provider", provider), ("model", model), ("status", &status)]);
                        let _ = writeln!(out, "keyrelay_requests_total{set} {n}");
                    }
                }
            }
        }
        render_latency(&mut out, &counters.latency);
        family(
            &mut out,
            "keyrelay_upstream_attempts_total",
            "counter",
            "Upstream attempts, by provider and outcome class.",
        );
        for (provider, by_class) in &counters.attempts {
            for (class, n) in by_class {
                let set = labels(&[("provider", provider), ("class", class)]);
                let _ = writeln!(out, "keyrelay_upstream_attempts_total{set} {n}");
            }
        }
        family(
            &mut out,
            "keyrelay_retries_total",
            "counter",
            "Failures retried once on the same key, by provider and class (only transient ones are).",
        );
        for (provider, n) in &counters.retries {
            let _ = writeln!(
                out,
                "keyrelay_retries_total{} {n}",
                labels(&[("provider", provider), ("class", "transient")])
            );
        }
        family(&mut out, "keyrelay_cooldowns_started_total", "counter", "Cooldowns and lockouts started, by reason.");
        for (provider, by_reason) in &counters.cooldowns {
            for (reason, n) in by_reason {
                let set = labels(&[("provider", provider), ("reason", reason)]);
                let _ = writeln!(out, "keyrelay_cooldowns_started_total{set} {n}");
            }
        }
        drop(counters);
        render_keys(&mut out, keys);
        family(
            &mut out,
            "keyrelay_log_lines_dropped_total",
            "counter",
            "Log lines dropped because the log writer was behind.",
        );
        let _ = writeln!(out, "keyrelay_log_lines_dropped_total {log_lines_dropped}");
        out
    }
}

fn render_latency(out: &mut String, latency: &BTreeMap<String, Histogram>) {
    family(
        out,
        "keyrelay_upstream_latency_seconds",
        "histogram",
        "Time until an upstream's answer began, by provider.",
    );
    for (provider, h) in latency {
        for (count, bound) in h.buckets.iter().zip(LATENCY_BUCKETS) {
            let le = bound.to_string();
            let _ = writeln!(
                out,
                "keyrelay_upstream_latency_seconds_bucket{} {count}",
                labels(&[("provider", provider), ("le", &le)])
            );
        }
        let provider_label = labels(&[("provider", provider)]);
        let all = labels(&[("provider", provider), ("le", "+Inf")]);
        let _ = writeln!(out, "keyrelay_upstream_latency_seconds_bucket{all} {}", h.count);
        let _ = writeln!(out, "keyrelay_upstream_latency_seconds_sum{provider_label} {}", h.sum);
        let _ = writeln!(out, "keyrelay_upstream_latency_seconds_count{provider_label} {}", h.count);
    }
}

/// Keys by state and requests in flight, per provider, from the pool's status.
fn render_keys(out: &mut String, keys: &[KeyStatus]) {
    let mut states: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut in_flight: BTreeMap<&str, u64> = BTreeMap::new();
    for key in keys {
        for state in ["ready", "busy", "cooldown", "locked"] {
            *states.entry((&key.provider, state)).or_insert(0) += u64::from(key.state == state);
        }
        *in_flight.entry(&key.provider).or_insert(0) += u64::from(key.in_flight);
    }
    family(out, "keyrelay_keys", "gauge", "Keys by provider and state.");
    for ((provider, state), n) in states {
        let _ = writeln!(out, "keyrelay_keys{} {n}", labels(&[("provider", provider), ("state", state)]));
    }
    family(out, "keyrelay_in_flight", "gauge", "Upstream requests in flight, by provider.");
    for (provider, n) in in_flight {
        let _ = writeln!(out, "keyrelay_in_flight{} {n}", labels(&[("provider", provider)]));
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` with values escaped as the text format wants (backslash, quote, newline).
fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{name}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_and_escapes() {
        let m = Metrics::default();
        m.request(RequestLabels { route: "/v1/chat/completions", provider: "openai", model: "gpt\"x", status: 200 });
        m.request(RequestLabels { route: "/v1/chat/completions", provider: "openai", model: "gpt\"x", status: 200 });
        m.upstream_latency("openai", Duration::from_millis(300));
        m.attempt("openai", &Outcome::RateLimited { retry_after: None, reason: "r".into() });
        m.retry("openai");
        let text = m.render(&[], 7);
        assert!(
            text.contains(r#"keyrelay_requests_total{route="/v1/chat/completions",provider="openai",model="gpt\"x",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"keyrelay_upstream_latency_seconds_bucket{provider="openai",le="0.25"} 0"#), "{text}");
        assert!(text.contains(r#"keyrelay_upstream_latency_seconds_bucket{provider="openai",le="0.5"} 1"#), "{text}");
        assert!(text.contains(r#"keyrelay_upstream_attempts_total{provider="openai",class="rate_limit"} 1"#), "{text}");
        assert!(
            text.contains(r#"keyrelay_cooldowns_started_total{provider="openai",reason="rate_limit"} 1"#),
            "{text}"
        );
        assert!(text.contains("keyrelay_log_lines_dropped_total 7"), "{text}");
    }
}
