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
    let mut stored = stored_accounts(&config.data_dir);
    let mut found = 0;
    for provider in Provider::ALL {
        let source = cli_file(&home, provider);
        if source.is_file() {
            found += 1;
            import_one(&config.data_dir, provider, &source, &mut stored)?;
        }
    }
    if found == 0 {
        eprintln!("no login found in {}/.gemini, .qwen or .iflow", home.display());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
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
) -> Result<()> {
    let text = std::fs::read_to_string(source).context(format!("reading {}", source.display()))?;
    let cred = match OAuthCredential::from_json(provider, Source::File(source.to_path_buf()), &text) {
        Ok(cred) => cred,
        Err(why) => {
            eprintln!("skipped {}: {why}", source.display());
            return Ok(());
        }
    };
    let (key, account) = (identity::duplicate_key(&cred), identity::account(&cred));
    if let Some((_, path)) = stored.iter().find(|(k, _)| *k == key) {
        eprintln!("duplicate: {provider} account {account} is already in {}; skipped", path.display());
        return Ok(());
    }
    let path = store::create(data_dir, provider, &text).context(format!("storing {provider} account {account}"))?;
    println!("imported {provider} account {account} from {} to {}", source.display(), path.display());
    stored.push((key, path));
    Ok(())
}
