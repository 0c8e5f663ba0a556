//! A Gemini CLI account's tier and the pool priority it gives the credential: an Ultra
//! account's quota is larger than a Pro one's, and a Pro one's than a free one's, so the better
//! accounts take the requests while they can and the others wait as reserve.
//!
//! The tier is learnt with the project (`oauth::project`: `loadCodeAssist`'s `paidTier`, else
//! its `currentTier`, or the tier an account is onboarded to) and kept where the Python proxy
//! keeps it, `_proxy_metadata.tier` (its short name) and `tier_full` (Code Assist's id), which
//! the official CLI ignores; a stateless set carries it as `GEMINI_CLI_<N>_TIER`.

use super::OAuthCredential;
use serde_json::{Map, Value};

const METADATA: &str = "_proxy_metadata";

/// The priority of a key nothing ranks: every API key, and an OAuth credential whose tier is
/// unknown. Lower is better; the pool uses a key only when no better one could take the
/// request.
pub const DEFAULT_PRIORITY: u32 = 10;

/// Lower is better. Both Code Assist's tier ids and the Python proxy's short names are known;
/// anything else (`legacy-tier` included) ranks like an API key.
pub fn priority(tier: &str) -> u32 {
    match tier.trim().to_ascii_lowercase().as_str() {
        "ultra" | "g1-ultra-tier" => 1,
        "pro" | "g1-pro-tier" | "standard-tier" => 2,
        "free" | "free-tier" => 3,
        _ => DEFAULT_PRIORITY,
    }
}

/// The Python proxy's short name of a tier id, when it has one.
fn short_name(tier: &str) -> Option<&'static str> {
    match priority(tier) {
        1 => Some("ULTRA"),
        2 => Some("PRO"),
        3 => Some("FREE"),
        _ => None,
    }
}

/// The credential's tier as remembered: the full id, else the short name.
pub fn of(cred: &OAuthCredential) -> Option<String> {
    let metadata = cred.extra.get(METADATA)?;
    let read = |field: &str| metadata.get(field).and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty());
    read("tier_full").or_else(|| read("tier")).map(str::to_string)
}

/// The credential's pool priority: from its tier, `DEFAULT_PRIORITY` when none is known.
pub fn priority_of(cred: &OAuthCredential) -> u32 {
    of(cred).map_or(DEFAULT_PRIORITY, |t| priority(&t))
}

/// Remembers `tier` (a Code Assist id or a short name) in the credential's metadata, keeping
/// whatever else the metadata holds.
pub fn set(cred: &mut OAuthCredential, tier: &str) {
    let entry = cred.extra.entry(METADATA.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let metadata = entry.as_object_mut().expect("just made an object");
    metadata.insert("tier".into(), Value::String(short_name(tier).unwrap_or(tier).to_string()));
    metadata.insert("tier_full".into(), Value::String(tier.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::{Provider, Source};

    #[test]
    fn tiers_rank_ultra_then_pro_then_free_then_the_rest() {
        let ranks: Vec<u32> = ["g1-ultra-tier", "ULTRA", "g1-pro-tier", "standard-tier", "PRO", "free-tier", "FREE"]
            .iter()
            .map(|t| priority(t))
            .collect();
        assert_eq!(ranks, [1, 1, 2, 2, 2, 3, 3]);
        assert_eq!((priority("legacy-tier"), priority("mystery")), (DEFAULT_PRIORITY, DEFAULT_PRIORITY));
    }

    #[test]
    fn a_tier_is_kept_in_the_python_proxys_metadata_beside_what_is_there() {
        let mut cred = OAuthCredential::new(Provider::GeminiCli, Source::Env(1));
        assert_eq!((of(&cred), priority_of(&cred)), (None, DEFAULT_PRIORITY));
        cred.extra.insert(METADATA.into(), serde_json::json!({"project_id": "p", "tier": "PRO"}));
        assert_eq!((of(&cred).as_deref(), priority_of(&cred)), (Some("PRO"), 2));
        set(&mut cred, "g1-ultra-tier");
        assert_eq!(
            cred.extra[METADATA],
            serde_json::json!({"project_id": "p", "tier": "ULTRA", "tier_full": "g1-ultra-tier"})
        );
        assert_eq!(priority_of(&cred), 1);
        set(&mut cred, "legacy-tier");
        assert_eq!((of(&cred).as_deref(), priority_of(&cred)), (Some("legacy-tier"), DEFAULT_PRIORITY));
    }
}
