//! `keyrelay oauth list [--json]`: one line per OAuth credential the proxy would use (each
//! account once): provider, account, state, expiry and where it comes from. Never a token.

use crate::cli::OauthListArgs;
use crate::clock;
use crate::config::Config;
use crate::error::{Context, Result};
use crate::oauth::{OAuthCredential, Source, identity};
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;

pub fn run(config: Config, args: OauthListArgs) -> Result<ExitCode> {
    let now = clock::now_ms();
    let mut out = std::io::stdout().lock();
    for cred in &config.oauth {
        let line = if args.json { json_line(cred, now).to_string() } else { text_line(cred, now) };
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    if config.oauth.is_empty() {
        eprintln!("no OAuth credentials (see 'keyrelay oauth import')");
    }
    Ok(ExitCode::SUCCESS)
}

/// `file` is always there (the path, or `"env"`), so a script can read it without a check;
/// a credential from variables also names its set in `env` (`GEMINI_CLI_2`).
fn json_line(cred: &OAuthCredential, now: u64) -> Value {
    let mut line = json!({
        "type": "credential",
        "provider": cred.provider.name(),
        "account": identity::account(cred),
        "file": "env",
        "expires_in_seconds": cred.expires_in_seconds(now),
        "state": cred.state(now),
    });
    match &cred.source {
        Source::File(path) => line["file"] = json!(path.display().to_string()),
        Source::Env(0) => line["env"] = json!(cred.provider.env_prefix()),
        Source::Env(n) => line["env"] = json!(format!("{}_{n}", cred.provider.env_prefix())),
    }
    line
}

fn text_line(cred: &OAuthCredential, now: u64) -> String {
    format!(
        "{:<10}  {:<32}  {:<11}  {:<18}  {}",
        cred.provider.name(),
        identity::account(cred),
        cred.state(now),
        expiry_text(cred.expires_in_seconds(now)),
        cred.source.describe(cred.provider)
    )
}

fn expiry_text(seconds: Option<i64>) -> String {
    match seconds {
        None => "expiry unknown".into(),
        Some(s) if s > 0 => format!("expires in {}", span(s)),
        Some(s) => format!("expired {} ago", span(-s)),
    }
}

/// `45s`, `12m`, `3h05m`, `2d04h`: precise enough to plan by, short enough for a column.
fn span(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_expiry_texts() {
        assert_eq!(expiry_text(None), "expiry unknown");
        assert_eq!(expiry_text(Some(45)), "expires in 45s");
        assert_eq!(expiry_text(Some(3 * 3600 + 5 * 60)), "expires in 3h05m");
        assert_eq!(expiry_text(Some(-(2 * 86_400 + 4 * 3600))), "expired 2d04h ago");
        assert_eq!(expiry_text(Some(0)), "expired 0s ago");
    }
}
