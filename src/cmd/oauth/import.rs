//! `keyrelay oauth import`: copies the official CLIs' logins (`~/.gemini/oauth_creds.json`,
//! `~/.qwen/oauth_creds.json`, `~/.iflow/oauth_creds.json`) into `oauth_creds/`, byte for byte
//! (so the file keeps every field and its expiry form) but with mode 0600. An account already
//! stored is skipped and its stored file left unchanged: it may hold a newer token than the
//! CLI's copy, and it may carry a `needs_login` mark that must not be lost.

use crate::cli::OauthImportArgs;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::oauth::discovery::cli_file;
use crate::oauth::{OAuthCredential, Provider, Source, identity, store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(config: Config, _args: OauthImportArgs) -> Result<ExitCode> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Error::Config("HOME is not set, so the CLIs' folders cannot be found".into()))?;
    let outcomes = import_cli_logins(&config.data_dir, &home)?;
    if outcomes.is_empty() {
        eprintln!("no login found in {}/.gemini, .qwen or .iflow", home.display());
        return Ok(ExitCode::from(1));
    }
    for outcome in outcomes {
        match outcome {
            Imported::Stored(line) => println!("{line}"),
            Imported::Duplicate(line) | Imported::Unreadable(line) => eprintln!("{line}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What importing one CLI login came to, as a line for people.
pub enum Imported {
    Stored(String),
    /// The account is stored already; its stored file was left as it is.
    Duplicate(String),
    Unreadable(String),
}

/// Copies every official CLI login under `home` into `oauth_creds/` (man/keyrelay.1: discovery at
/// start-up imports them), skipping accounts already stored. `serve` runs this at start, so
/// a refresh later writes the store's copy, never the CLI's own file.
pub fn import_cli_logins(data_dir: &Path, home: &Path) -> Result<Vec<Imported>> {
    let mut stored = stored_accounts(data_dir);
    let mut outcomes = Vec::new();
    for provider in Provider::ALL {
        let source = cli_file(home, provider);
        if source.is_file() {
            outcomes.push(import_one(data_dir, provider, &source, &mut stored)?);
        }
    }
    Ok(outcomes)
}

/// The accounts in the store with their files. A stored file that cannot be read names no
/// account, so it cannot stop an import; discovery warns about it.
fn stored_accounts(data_dir: &Path) -> Vec<((Provider, String), PathBuf)> {
    let files = store::list(data_dir).map(|(files, _)| files).unwrap_or_default();
    files
        .into_iter()
        .filter_map(|f| store::read(f.provider, &f.path).ok().map(|c| (identity::duplicate_key(&c), f.path)))
        .collect()
}

fn import_one(
    data_dir: &Path,
    provider: Provider,
    source: &Path,
    stored: &mut Vec<((Provider, String), PathBuf)>,
) -> Result<Imported> {
    let text = std::fs::read_to_string(source).context(format!("reading {}", source.display()))?;
    let cred = match OAuthCredential::from_json(provider, Source::File(source.to_path_buf()), &text) {
        Ok(cred) => cred,
        Err(why) => return Ok(Imported::Unreadable(format!("skipped {}: {why}", source.display()))),
    };
    let (key, account) = (identity::duplicate_key(&cred), identity::account(&cred));
    if let Some((_, path)) = stored.iter().find(|(k, _)| *k == key) {
        let line = format!("duplicate: {provider} account {account} is already in {}; skipped", path.display());
        return Ok(Imported::Duplicate(line));
    }
    let path = store::create(data_dir, provider, &text).context(format!("storing {provider} account {account}"))?;
    let line = format!("imported {provider} account {account} from {} to {}", source.display(), path.display());
    stored.push((key, path));
    Ok(Imported::Stored(line))
}
