//! The account a credential belongs to: what duplicates are detected by and what people see
//! (never a token). Gemini: the email of the id_token's claims, else the file's `email`.
//! iFlow: the email, else the phone number. Qwen: the label given at login (kept as `email`),
//! else the `email` or `sub` claim of the access token when it is a JWT, else
//! `qwen-<first 8 hex digits of SHA-256 of the refresh token>`, since Qwen's token answer names
//! no account. Gemini and iFlow credentials that name no account fall back to the same hash, so
//! two copies of one file are still recognised.

use super::{OAuthCredential, Provider};
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The account name of `cred`.
pub fn account(cred: &OAuthCredential) -> String {
    let named = match cred.provider {
        Provider::GeminiCli => claim(cred.id_token.as_ref(), &["email"]).or_else(|| stored_email(cred)),
        Provider::Iflow => stored_email(cred).or_else(|| extra_text(cred, "phone")),
        Provider::QwenCode => stored_email(cred).or_else(|| claim(cred.access_token.as_ref(), &["email", "sub"])),
    };
    named.unwrap_or_else(|| hashed(cred))
}

/// The key duplicates are compared by: provider and account, ignoring ASCII case (emails).
pub fn duplicate_key(cred: &OAuthCredential) -> (Provider, String) {
    (cred.provider, account(cred).to_ascii_lowercase())
}

/// The credential's id in the key pool and `key_usage.json`: `<provider>:<12 hex digits>` of
/// SHA-256 over the provider and the account (as duplicates compare it), so a refresh, which
/// changes every token, keeps the id and the usage recorded under it.
pub fn pool_id(cred: &OAuthCredential) -> String {
    let (provider, account) = duplicate_key(cred);
    Secret::new(&format!("oauth:{provider}:{account}")).id(provider.name())
}

/// `email`, else the Python proxy's `_proxy_metadata.email`.
fn stored_email(cred: &OAuthCredential) -> Option<String> {
    let meta = cred.extra.get("_proxy_metadata").and_then(|m| m.get("email")).and_then(Value::as_str);
    cred.email.as_deref().or(meta).map(str::trim).filter(|e| !e.is_empty()).map(String::from)
}

fn extra_text(cred: &OAuthCredential, name: &str) -> Option<String> {
    cred.extra.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(String::from)
}

/// The first of `names` found as a non-empty string claim of a JWT. The signature is not
/// checked: the claim only names the account, it grants nothing.
pub fn claim(token: Option<&Secret>, names: &[&str]) -> Option<String> {
    let payload = token?.expose().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    names.iter().find_map(|n| claims.get(*n).and_then(Value::as_str).filter(|v| !v.is_empty()).map(String::from))
}

fn hashed(cred: &OAuthCredential) -> String {
    let prefix = cred.provider.name().split('_').next().unwrap_or_default();
    let Some(refresh) = &cred.refresh_token else {
        return format!("{prefix}-unknown");
    };
    let digest = Sha256::digest(refresh.expose().as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Source;
    use std::path::PathBuf;

    fn jwt(claims: &str) -> Secret {
        Secret::new(&format!("eyJhbGciOiJub25lIn0.{}.sig", URL_SAFE_NO_PAD.encode(claims)))
    }

    fn cred(provider: Provider) -> OAuthCredential {
        let mut c = OAuthCredential::new(provider, Source::File(PathBuf::from("x.json")));
        c.refresh_token = Some(Secret::new("rt-abc"));
        c
    }

    #[test]
    fn gemini_prefers_the_id_token_email_then_the_stored_one() {
        let mut c = cred(Provider::GeminiCli);
        c.email = Some("file@example.com".into());
        assert_eq!(account(&c), "file@example.com");
        c.id_token = Some(jwt(r#"{"email":"claims@example.com","sub":"1"}"#));
        assert_eq!(account(&c), "claims@example.com");
        let mut c = cred(Provider::GeminiCli);
        c.extra.insert("_proxy_metadata".into(), serde_json::json!({"email": "py@example.com"}));
        assert_eq!(account(&c), "py@example.com");
    }

    #[test]
    fn iflow_takes_the_email_else_the_phone() {
        let mut c = cred(Provider::Iflow);
        c.extra.insert("phone".into(), "13800000000".into());
        assert_eq!(account(&c), "13800000000");
        c.email = Some("i@example.com".into());
        assert_eq!(account(&c), "i@example.com");
    }

    #[test]
    fn qwen_takes_the_label_then_the_jwt_claims_then_the_refresh_token_hash() {
        let mut c = cred(Provider::QwenCode);
        let digest = Sha256::digest(b"rt-abc");
        let want = format!("qwen-{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3]);
        assert_eq!(account(&c), want);
        c.access_token = Some(Secret::new("not-a-jwt"));
        assert_eq!(account(&c), want);
        c.access_token = Some(jwt(r#"{"sub":"user-42"}"#));
        assert_eq!(account(&c), "user-42");
        c.access_token = Some(jwt(r#"{"sub":"user-42","email":"q@example.com"}"#));
        assert_eq!(account(&c), "q@example.com");
        c.email = Some("work".into());
        assert_eq!(account(&c), "work");
    }

    #[test]
    fn the_pool_id_follows_the_account_not_the_tokens() {
        let mut a = cred(Provider::QwenCode);
        a.email = Some("Work".into());
        let id = pool_id(&a);
        assert!(id.starts_with("qwen_code:") && id.len() == "qwen_code:".len() + 12, "{id}");
        a.refresh_token = Some(Secret::new("rt-rotated"));
        a.access_token = Some(Secret::new("at-new"));
        a.email = Some("work".into());
        assert_eq!(pool_id(&a), id);
        a.email = Some("other".into());
        assert_ne!(pool_id(&a), id);
    }

    #[test]
    fn duplicates_compare_emails_without_case() {
        let mut a = cred(Provider::GeminiCli);
        a.email = Some("A@Example.com".into());
        let mut b = cred(Provider::GeminiCli);
        b.email = Some("a@example.com".into());
        assert_eq!(duplicate_key(&a), duplicate_key(&b));
        b.provider = Provider::Iflow;
        assert_ne!(duplicate_key(&a), duplicate_key(&b));
    }
}
