//! Finding every OAuth credential at start-up, in this order: the store (`oauth_creds/*.json`),
//! the official CLIs' own files (`~/.gemini/oauth_creds.json`, `~/.qwen/oauth_creds.json`,
//! `~/.iflow/oauth_creds.json`), then the stateless variables. An account met twice is used
//! once, the first time, with a warning naming both places; the one exception is a CLI file
//! whose account is already in the store, which is the copy `oauth import` made and not worth
//! a warning on every start.
//!
//! Discovery only reads: the CLIs' files are used where they are, and `oauth import` is what
//! copies them into the store. A file that cannot be read is skipped with a warning, so one
//! broken file does not take every other credential down with it.

use super::{OAuthCredential, Provider, Source, identity, stateless, store};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What discovery found, and what it has to say about it (logged once logging is up, since
/// configuration is loaded before it).
#[derive(Debug, Default)]
pub struct Discovery {
    pub credentials: Vec<OAuthCredential>,
    pub warnings: Vec<String>,
}

/// The official CLI's credential file of `provider` under `home`.
pub fn cli_file(home: &Path, provider: Provider) -> PathBuf {
    home.join(provider.home_folder()).join("oauth_creds.json")
}

/// Every credential of the data directory, the CLIs' files under `home` and `env`. Fails only
/// for a malformed stateless variable, like any malformed setting.
pub fn discover(data_dir: &Path, home: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Discovery, String> {
    let mut found = Discovery::default();
    let stored = stored_credentials(data_dir, &mut found.warnings);
    let cli = home.map(|h| cli_credentials(h, &mut found.warnings)).unwrap_or_default();
    let from_env = stateless::read(env)?;
    let stored_accounts: Vec<_> = stored.iter().map(identity::duplicate_key).collect();
    let cli = cli.into_iter().filter(|c| !stored_accounts.contains(&identity::duplicate_key(c)));
    let (credentials, warnings) = dedupe(stored.into_iter().chain(cli).chain(from_env).collect());
    found.credentials = credentials;
    found.warnings.extend(warnings);
    Ok(found)
}

/// Only the stateless variables: what a configuration built without a data directory has.
pub fn from_env_only(env: &BTreeMap<String, String>) -> Result<Discovery, String> {
    let (credentials, warnings) = dedupe(stateless::read(env)?);
    Ok(Discovery { credentials, warnings })
}

fn stored_credentials(data_dir: &Path, warnings: &mut Vec<String>) -> Vec<OAuthCredential> {
    let (files, strays) = match store::list(data_dir) {
        Ok(listed) => listed,
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", data_dir.join(store::DIR).display()));
            return Vec::new();
        }
    };
    for stray in strays {
        warnings.push(format!("{} is not named <provider>_oauth_<N>.json; skipped", stray.display()));
    }
    files.into_iter().filter_map(|f| read_or_warn(f.provider, &f.path, warnings)).collect()
}

fn cli_credentials(home: &Path, warnings: &mut Vec<String>) -> Vec<OAuthCredential> {
    Provider::ALL
        .into_iter()
        .map(|p| (p, cli_file(home, p)))
        .filter(|(_, path)| path.is_file())
        .filter_map(|(p, path)| read_or_warn(p, &path, warnings))
        .collect()
}

fn read_or_warn(provider: Provider, path: &Path, warnings: &mut Vec<String>) -> Option<OAuthCredential> {
    store::read(provider, path).map_err(|why| warnings.push(format!("skipping {}: {why}", path.display()))).ok()
}

/// Keeps the first credential of each account; each later one is dropped with a warning that
/// names both.
pub fn dedupe(creds: Vec<OAuthCredential>) -> (Vec<OAuthCredential>, Vec<String>) {
    let mut first: HashMap<(Provider, String), Source> = HashMap::new();
    let (mut kept, mut warnings) = (Vec::new(), Vec::new());
    for cred in creds {
        let key = identity::duplicate_key(&cred);
        if let Some(earlier) = first.get(&key) {
            warnings.push(format!(
                "{} account {} is in both {} and {}; using {} only",
                cred.provider,
                identity::account(&cred),
                earlier.describe(cred.provider),
                cred.source.describe(cred.provider),
                earlier.describe(cred.provider),
            ));
            continue;
        }
        first.insert(key, cred.source.clone());
        kept.push(cred);
    }
    (kept, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::store::tests::Scratch;
    use std::fs;

    fn gemini(email: &str, refresh: &str) -> String {
        format!(r#"{{"access_token":"at","refresh_token":"{refresh}","email":"{email}","expiry_date":1}}"#)
    }

    #[test]
    fn the_store_then_the_cli_files_then_the_variables_each_account_once() {
        let data = Scratch::new("disc-data");
        let home = Scratch::new("disc-home");
        store::create(&data.0, Provider::GeminiCli, &gemini("a@example.com", "r1")).unwrap();
        store::create(&data.0, Provider::GeminiCli, &gemini("A@example.com", "r2")).unwrap();
        fs::create_dir_all(home.0.join(".gemini")).unwrap();
        fs::write(cli_file(&home.0, Provider::GeminiCli), gemini("a@example.com", "r3")).unwrap();
        fs::create_dir_all(home.0.join(".qwen")).unwrap();
        fs::write(cli_file(&home.0, Provider::QwenCode), r#"{"refresh_token":"q","email":"work"}"#).unwrap();
        fs::write(data.0.join("oauth_creds/stray.json"), "{}").unwrap();
        let env: BTreeMap<String, String> =
            [("QWEN_CODE_1_REFRESH_TOKEN", "q-env"), ("QWEN_CODE_1_EMAIL", "work"), ("IFLOW_1_REFRESH_TOKEN", "i")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let found = discover(&data.0, Some(&home.0), &env).unwrap();
        let got: Vec<(Provider, String)> =
            found.credentials.iter().map(|c| (c.provider, c.source.describe(c.provider))).collect();
        assert_eq!(
            got,
            [
                (Provider::GeminiCli, data.0.join("oauth_creds/gemini_cli_oauth_1.json").display().to_string()),
                (Provider::QwenCode, cli_file(&home.0, Provider::QwenCode).display().to_string()),
                (Provider::Iflow, "IFLOW_1_* variables".to_string()),
            ]
        );
        // The two stored Gemini files and the two Qwen credentials warn; the CLI's Gemini file
        // is the already imported account and does not.
        assert_eq!(found.warnings.len(), 3, "{:?}", found.warnings);
        assert!(found.warnings[0].contains("stray.json"));
        assert!(
            found.warnings[1].contains("gemini_cli_oauth_1.json")
                && found.warnings[1].contains("gemini_cli_oauth_2.json")
        );
        assert!(found.warnings[2].contains("QWEN_CODE_1_* variables") && found.warnings[2].contains("work"));
    }

    #[test]
    fn a_broken_file_is_skipped_with_a_warning_that_hides_its_content() {
        let data = Scratch::new("disc-broken");
        store::create(&data.0, Provider::Iflow, r#"{"refresh_token": "rt-secret-value""#).unwrap();
        let found = discover(&data.0, None, &BTreeMap::new()).unwrap();
        assert!(found.credentials.is_empty());
        assert_eq!(found.warnings.len(), 1);
        assert!(!found.warnings[0].contains("rt-secret-value"), "{:?}", found.warnings);
    }
}
