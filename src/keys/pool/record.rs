//! What the pool remembers of a key, and the rules that change it: outcomes, counters,
//! cooldowns and their ladder, lockouts, half-open flags (`record_outcome`). Persisted in
//! `key_usage.json`.

use crate::clock::{HOUR, MINUTE, SECOND};
use crate::providers::errors::QUOTA_HINT_MS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Consecutive key-attributable failures of one (key, model) without a hint: 10 s, 30 s,
/// 60 s, 120 s, then 2 h.
pub(super) const LADDER: [u64; 5] = [10 * SECOND, 30 * SECOND, 60 * SECOND, 120 * SECOND, 2 * HOUR];
/// Auth failures lock the whole key out, longer each time within a day.
pub(super) const LOCKOUT_LADDER: [u64; 4] = [5 * MINUTE, 15 * MINUTE, HOUR, 4 * HOUR];
/// After the same-key retry of a transient failure; not counted on the ladder.
pub(super) const TRANSIENT_COOLDOWN: u64 = 30 * SECOND;

/// Three models cooling this long lock the key out for `LONG_COOLDOWN_LOCKOUT`.
pub(super) const LONG_COOLDOWN: u64 = 2 * HOUR;
pub(super) const LONG_COOLDOWN_LOCKOUT: u64 = 5 * MINUTE;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success {
        prompt_tokens: u64,
        completion_tokens: u64,
    },
    /// `retry_after` is the upstream's hint in ms, when it gave one.
    RateLimited {
        retry_after: Option<u64>,
        reason: String,
    },
    QuotaExhausted {
        retry_after: Option<u64>,
        reason: String,
    },
    AuthFailed {
        reason: String,
    },
    Transient {
        reason: String,
    },
    /// The upstream rejected the request itself: not the key's fault.
    RequestError,
    /// The client left: not the key's fault either.
    Cancelled,
}

/// Today's (or lifetime) numbers for one model on one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Counters {
    /// What one attempt's outcome adds to a day's numbers (a cancelled one adds nothing).
    pub fn of(outcome: &Outcome) -> Counters {
        match outcome {
            Outcome::Cancelled => Counters::default(),
            Outcome::Success { prompt_tokens, completion_tokens } => Counters {
                requests: 1,
                successes: 1,
                failures: 0,
                prompt_tokens: *prompt_tokens,
                completion_tokens: *completion_tokens,
            },
            _ => Counters { requests: 1, failures: 1, ..Counters::default() },
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.failures += other.failures;
        // Token counts come from upstreams: saturating, so a careless count cannot overflow.
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Until {
    pub until: u64,
    pub reason: String,
    /// A cooldown for a transient failure (a 5xx, a dropped connection) with no hint from
    /// the upstream: when every key rests only for such reasons, one is tried anyway
    /// (`ProviderKeys::transient_probe`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

/// The persisted part of a (key, model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelState {
    pub cooldown: Option<Until>,
    /// Consecutive failures on the ladder.
    pub step: u32,
    /// Half-open: the cooldown ended but no request has succeeded since, so the key takes
    /// one request at a time for this model.
    pub probe: bool,
    pub today: Counters,
    pub lifetime: Counters,
}

/// The persisted part of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRecord {
    pub provider: String,
    pub masked: String,
    pub lockout: Option<Until>,
    pub lockout_step: u32,
    /// Half-open after a lockout: one request at a time on the whole key.
    pub probe: bool,
    pub models: BTreeMap<String, ModelState>,
}

/// What one outcome does to a key's record.
pub(super) fn record_outcome(record: &mut KeyRecord, model: &str, outcome: &Outcome, now: u64, next_reset: u64) {
    let state = record.models.entry(model.to_string()).or_default();
    state.today.requests += 1;
    match outcome {
        Outcome::Success { prompt_tokens, completion_tokens } => {
            state.today.successes += 1;
            state.today.prompt_tokens = state.today.prompt_tokens.saturating_add(*prompt_tokens);
            state.today.completion_tokens = state.today.completion_tokens.saturating_add(*completion_tokens);
            state.step = 0;
            state.probe = false;
            state.cooldown = None;
            record.probe = false;
        }
        Outcome::Cancelled => {}
        Outcome::RequestError => state.today.failures += 1,
        Outcome::RateLimited { retry_after, reason } => {
            state.today.failures += 1;
            match retry_after {
                Some(hint) if *hint > QUOTA_HINT_MS => cool(state, now + hint, reason),
                Some(hint) => {
                    state.step += 1;
                    cool(state, now + hint, reason);
                }
                None => {
                    let wait = LADDER[(state.step as usize).min(LADDER.len() - 1)];
                    state.step += 1;
                    cool(state, now + wait, reason);
                }
            }
        }
        Outcome::QuotaExhausted { retry_after, reason } => {
            state.today.failures += 1;
            cool(state, retry_after.map_or(next_reset, |h| now + h), reason);
        }
        Outcome::Transient { reason } => {
            state.today.failures += 1;
            cool(state, now + TRANSIENT_COOLDOWN, reason);
            if let Some(cooldown) = &mut state.cooldown {
                cooldown.transient = true;
            }
        }
        Outcome::AuthFailed { reason } => {
            state.today.failures += 1;
            let wait = LOCKOUT_LADDER[(record.lockout_step as usize).min(LOCKOUT_LADDER.len() - 1)];
            record.lockout_step += 1;
            lock_out(record, now + wait, reason);
        }
    }
    let long =
        record.models.values().filter(|m| m.cooldown.as_ref().is_some_and(|c| c.until >= now + LONG_COOLDOWN)).count();
    let locked = record.lockout.as_ref().is_some_and(|l| l.until > now);
    if long >= 3 && !locked {
        lock_out(record, now + LONG_COOLDOWN_LOCKOUT, "three or more models on cooldowns of 2 h or longer");
    }
}

/// A transient failure of the last usable key: counted, and the key half-open for `model`.
pub(super) fn spare(record: &mut KeyRecord, model: &str) {
    let state = record.models.entry(model.to_string()).or_default();
    state.today.requests += 1;
    state.today.failures += 1;
    state.probe = true;
}

pub(super) fn cool(state: &mut ModelState, until: u64, reason: &str) {
    state.cooldown = Some(Until { until, reason: reason.to_string(), transient: false });
    state.probe = true;
}

pub(super) fn lock_out(record: &mut KeyRecord, until: u64, reason: &str) {
    record.lockout = Some(Until { until, reason: reason.to_string(), transient: false });
    record.probe = true;
}
