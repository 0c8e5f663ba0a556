//! `keyrelay export-env [PROVIDER] [--output FILE]`: every OAuth credential as the stateless
//! variables, one numbered block per credential (numbered from 1 per provider), quoted so that
//! python-dotenv and keyrelay's own `.env` reader both read the same values back. With
//! `--output` the text goes to a file written atomically with mode 0600 (it holds tokens).

use crate::cli::ExportEnvArgs;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::oauth::{OAuthCredential, Provider, identity, stateless, store};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

pub fn run(config: Config, args: ExportEnvArgs) -> Result<ExitCode> {
    let wanted = match args.provider.as_deref() {
        None => None,
        Some(name) => Some(Provider::parse(name).ok_or_else(|| {
            Error::Usage(format!("unknown OAuth provider '{name}'; use gemini_cli, qwen_code or iflow"))
        })?),
    };
    let (chosen, dead): (Vec<&OAuthCredential>, Vec<&OAuthCredential>) =
        config.oauth.iter().filter(|c| wanted.is_none_or(|w| c.provider == w)).partition(|c| !c.needs_login);
    // A refused refresh left a dead refresh token: exporting it would only move the failure to
    // another host.
    for cred in dead {
        eprintln!("skipped {} account {}: it needs a new login", cred.provider, identity::account(cred));
    }
    if chosen.is_empty() {
        eprintln!("no OAuth credentials to export");
        return Ok(ExitCode::from(1));
    }
    let text = render(&chosen)?;
    match &args.output {
        Some(path) => {
            store::write_atomic(path, text.as_bytes()).context(format!("writing {}", path.display()))?;
            let plural = if chosen.len() == 1 { "" } else { "s" };
            eprintln!("wrote {} credential{plural} to {}", chosen.len(), path.display());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("writing to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The blocks, numbered from 1 within each provider, a blank line between them.
fn render(creds: &[&OAuthCredential]) -> Result<String> {
    let mut numbers: BTreeMap<Provider, u32> = BTreeMap::new();
    let mut blocks = Vec::with_capacity(creds.len());
    for cred in creds {
        let n = numbers.entry(cred.provider).or_insert(0);
        *n += 1;
        blocks.push(stateless::export_block(cred, *n).map_err(|why| Error::Config(format!("cannot export {why}")))?);
    }
    Ok(blocks.join("\n"))
}
