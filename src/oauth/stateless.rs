//! Stateless credentials: OAuth credentials carried by variables instead of files, for hosts
//! with no writable disk (containers, CI). A set is `<PREFIX>_<N>_<FIELD>` (`GEMINI_CLI_1_...`),
//! recognised by its `_REFRESH_TOKEN` variable; `GEMINI_CLI_*` and `QWEN_CODE_*` without a
//! number are set 0. iFlow sets are always numbered, because `IFLOW_API_KEY` and
//! `IFLOW_API_KEY_<N>` are plain API keys like every provider's. `export_block` writes the
//! variables `read` reads, quoted for `.env` files.

use super::{OAuthCredential, Provider, Source, credential::Expiry, identity};
use crate::dotenv;
use crate::secret::Secret;
use std::collections::BTreeMap;

/// The fields `export_block` writes, in order (`read` also takes `ID_TOKEN`, `TOKEN_TYPE` and
/// `SCOPE`, which the Python proxy's exports carry).
fn exported(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::GeminiCli => &[
            "ACCESS_TOKEN",
            "REFRESH_TOKEN",
            "EXPIRY_DATE",
            "EMAIL",
            "PROJECT_ID",
            "CLIENT_ID",
            "CLIENT_SECRET",
            "TOKEN_URI",
            "TIER",
        ],
        Provider::QwenCode => &["ACCESS_TOKEN", "REFRESH_TOKEN", "EXPIRY_DATE", "RESOURCE_URL", "EMAIL"],
        Provider::Iflow => &["ACCESS_TOKEN", "REFRESH_TOKEN", "API_KEY", "EXPIRY_DATE", "EMAIL"],
    }
}

const ALSO_READ: [&str; 3] = ["ID_TOKEN", "TOKEN_TYPE", "SCOPE"];

/// The variable of `field` in set `n`.
pub fn var_name(provider: Provider, n: u32, field: &str) -> String {
    match n {
        0 => format!("{}_{field}", provider.env_prefix()),
        n => format!("{}_{n}_{field}", provider.env_prefix()),
    }
}

/// The set a `..._REFRESH_TOKEN` variable opens, if it is one.
fn set_of(provider: Provider, var: &str) -> Option<u32> {
    let rest = var.strip_prefix(provider.env_prefix())?.strip_prefix('_')?;
    if rest == "REFRESH_TOKEN" {
        return (provider != Provider::Iflow).then_some(0);
    }
    let digits = rest.strip_suffix("_REFRESH_TOKEN")?;
    // Only the canonical spelling, so `_01_` and `_1_` cannot both be set 1.
    digits.parse::<u32>().ok().filter(|n| *n >= 1 && n.to_string() == digits)
}

/// Every set in `env`, by provider and then by number. A malformed `_EXPIRY_DATE` is an error
/// naming the variable (never its value).
pub fn read(env: &BTreeMap<String, String>) -> Result<Vec<OAuthCredential>, String> {
    let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut sets: Vec<(Provider, u32)> = env
        .iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .flat_map(|(var, _)| Provider::ALL.into_iter().filter_map(move |p| set_of(p, var).map(|n| (p, n))))
        .collect();
    sets.sort();
    sets.into_iter().map(|(provider, n)| read_set(provider, n, &get)).collect()
}

fn read_set<'a>(provider: Provider, n: u32, get: &impl Fn(&str) -> Option<&'a str>) -> Result<OAuthCredential, String> {
    let mut cred = OAuthCredential::new(provider, Source::Env(n));
    for field in exported(provider).iter().chain(ALSO_READ.iter()) {
        let name = var_name(provider, n, field);
        if let Some(value) = get(&name) {
            set_field(&mut cred, field, value).map_err(|why| format!("{name} {why}"))?;
        }
    }
    Ok(cred)
}

fn set_field(cred: &mut OAuthCredential, field: &str, value: &str) -> Result<(), String> {
    let text = Some(value.to_string());
    let secret = Some(Secret::new(value));
    match field {
        "ACCESS_TOKEN" => cred.access_token = secret,
        "REFRESH_TOKEN" => cred.refresh_token = secret,
        "ID_TOKEN" => cred.id_token = secret,
        "API_KEY" => cred.api_key = secret,
        "EXPIRY_DATE" => {
            let parsed = Expiry::parse(&serde_json::Value::String(value.to_string()));
            cred.expiry = Some(parsed.ok_or("must be milliseconds since the epoch or an ISO 8601 time")?);
        }
        "EMAIL" => cred.email = text,
        "PROJECT_ID" => cred.project_id = text,
        "TIER" => super::tier::set(cred, value),
        "CLIENT_ID" => cred.client_id = text,
        "CLIENT_SECRET" => cred.client_secret = text,
        "TOKEN_URI" => cred.token_uri = text,
        "RESOURCE_URL" => cred.resource_url = text,
        "TOKEN_TYPE" => cred.token_type = text,
        _ => cred.scope = text,
    }
    Ok(())
}

/// The value `export_block` writes for `field`, if the credential has one. `EMAIL` is the
/// account, so the set read back names the same account even when it was derived (from an
/// id_token, or a Qwen refresh token that a refresh will rotate).
fn field_value(cred: &OAuthCredential, field: &str) -> Option<String> {
    let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string());
    match field {
        "ACCESS_TOKEN" => expose(&cred.access_token),
        "REFRESH_TOKEN" => expose(&cred.refresh_token),
        "API_KEY" => expose(&cred.api_key),
        "EXPIRY_DATE" => cred.expiry.as_ref().map(|e| e.at_ms.to_string()),
        "EMAIL" => Some(identity::account(cred)),
        "PROJECT_ID" => cred.project_id.clone().or_else(|| {
            let meta = cred.extra.get("_proxy_metadata")?.get("project_id")?;
            meta.as_str().map(String::from)
        }),
        "TIER" => super::tier::of(cred),
        "CLIENT_ID" => cred.client_id.clone(),
        "CLIENT_SECRET" => cred.client_secret.clone(),
        "TOKEN_URI" => cred.token_uri.clone(),
        "RESOURCE_URL" => cred.resource_url.clone(),
        _ => None,
    }
}

/// Set `n` of `cred` as `.env` lines: a `#` comment naming the account, then one quoted
/// `NAME=value` line per field the credential has. Fails only for a value no quoting can
/// carry through both dotenv readers; the error names the variable, not the value.
pub fn export_block(cred: &OAuthCredential, n: u32) -> Result<String, String> {
    let account = identity::account(cred).replace(['\n', '\r'], " ");
    let mut block = format!("# {} credential {n}: {account}\n", cred.provider);
    for field in exported(cred.provider) {
        let Some(value) = field_value(cred, field) else { continue };
        let name = var_name(cred.provider, n, field);
        let quoted = dotenv::quote(&value).map_err(|why| format!("{name}: {why}"))?;
        block.push_str(&format!("{name}={quoted}\n"));
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn numbered_and_unnumbered_sets_are_recognised_by_their_refresh_token() {
        let e = env(&[
            ("GEMINI_CLI_2_REFRESH_TOKEN", "g2"),
            ("GEMINI_CLI_2_EMAIL", "two@example.com"),
            ("GEMINI_CLI_2_EXPIRY_DATE", "1767225600000"),
            ("GEMINI_CLI_2_TIER", "PRO"),
            ("GEMINI_CLI_REFRESH_TOKEN", "g0"),
            ("GEMINI_CLI_ACCESS_TOKEN", "a0"),
            ("GEMINI_CLI_3_ACCESS_TOKEN", "no refresh token, no set"),
            ("GEMINI_CLI_02_REFRESH_TOKEN", "not canonical"),
            ("QWEN_CODE_REFRESH_TOKEN", "q0"),
            ("QWEN_CODE_RESOURCE_URL", "portal.qwen.ai"),
            ("GEMINI_CLI_4_REFRESH_TOKEN", " "),
        ]);
        let creds = read(&e).unwrap();
        let got: Vec<(Provider, &Source)> = creds.iter().map(|c| (c.provider, &c.source)).collect();
        assert_eq!(
            got,
            [
                (Provider::GeminiCli, &Source::Env(0)),
                (Provider::GeminiCli, &Source::Env(2)),
                (Provider::QwenCode, &Source::Env(0))
            ]
        );
        assert_eq!(creds[0].access_token.as_ref().unwrap().expose(), "a0");
        assert_eq!(creds[1].email.as_deref(), Some("two@example.com"));
        assert_eq!(creds[1].expiry.as_ref().unwrap().at_ms, 1_767_225_600_000);
        assert_eq!((crate::oauth::tier::priority_of(&creds[1]), crate::oauth::tier::priority_of(&creds[0])), (2, 10));
        assert_eq!(creds[2].resource_url.as_deref(), Some("portal.qwen.ai"));
    }

    #[test]
    fn iflow_sets_are_numbered_only_and_take_their_api_key() {
        let e = env(&[
            ("IFLOW_REFRESH_TOKEN", "ignored"),
            ("IFLOW_API_KEY", "a plain API key"),
            ("IFLOW_1_REFRESH_TOKEN", "r1"),
            ("IFLOW_1_API_KEY", "sk-1"),
            ("IFLOW_1_EXPIRY_DATE", "2026-12-01T10:00:00Z"),
        ]);
        let creds = read(&e).unwrap();
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].source, Source::Env(1));
        assert_eq!(creds[0].api_key.as_ref().unwrap().expose(), "sk-1");
        assert!(creds[0].expiry.is_some());
    }

    #[test]
    fn a_bad_expiry_names_the_variable_not_the_value() {
        let e = env(&[("QWEN_CODE_1_REFRESH_TOKEN", "r"), ("QWEN_CODE_1_EXPIRY_DATE", "tomorrow-ish")]);
        let err = read(&e).unwrap_err();
        assert!(err.starts_with("QWEN_CODE_1_EXPIRY_DATE must be"), "{err}");
        assert!(!err.contains("tomorrow-ish"));
    }

    #[test]
    fn an_exported_block_reads_back_through_the_dotenv_parser() {
        let mut cred = OAuthCredential::new(Provider::GeminiCli, Source::Env(0));
        cred.access_token = Some(Secret::new("ya29.a0-tok$en'with\"quotes\\"));
        cred.refresh_token = Some(Secret::new("1//0g-refresh #not a comment"));
        cred.expiry = Some(Expiry::millis(1_767_225_600_000));
        cred.email = Some("me@example.com".into());
        cred.client_id = Some("681255809395.apps.googleusercontent.com".into());
        crate::oauth::tier::set(&mut cred, "g1-ultra-tier");
        let block = export_block(&cred, 3).unwrap();
        assert!(block.contains("GEMINI_CLI_3_TIER=") && block.contains("g1-ultra-tier"), "{block}");
        assert!(block.starts_with("# gemini_cli credential 3: me@example.com\n"), "{block}");
        let pairs: BTreeMap<String, String> = dotenv::parse(&block, &|_| None).unwrap().into_iter().collect();
        let back = read(&pairs).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].source, Source::Env(3));
        assert_eq!(back[0].access_token, cred.access_token);
        assert_eq!(back[0].refresh_token, cred.refresh_token);
        assert_eq!(back[0].expiry, cred.expiry);
        assert_eq!(crate::oauth::tier::priority_of(&back[0]), 1);
        assert_eq!(
            (back[0].email.as_deref(), back[0].client_id.as_deref()),
            (Some("me@example.com"), cred.client_id.as_deref())
        );
    }
}
