//! `keyrelay add-key PROVIDER [KEY] [--validate]`: appends a provider key to `.env` as the next
//! `<PROVIDER>_API_KEY_<N>`, every other byte of the file kept. The key comes from the argument
//! or from standard input (so it stays out of shell history), is never echoed, and is refused
//! when it is configured already. With `--validate` it must first pass one cheap authenticated
//! call, the provider's model list.

use crate::cli::AddKeyArgs;
use crate::config::{self, Config, ProviderConfig};
use crate::dotenv;
use crate::error::{Context, Error, Result};
use crate::providers::{self, Family};
use crate::redact::Redactor;
use crate::secret::Secret;
use crate::upstream::{self, Client};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

pub fn run(config: Config, args: AddKeyArgs) -> Result<ExitCode> {
    let name = args.provider.trim().to_ascii_lowercase().replace('-', "_");
    let provider = provider(&config, &name)?;
    let key = match args.key {
        Some(key) => key.trim().to_string(),
        None => read_key()?,
    };
    if key.is_empty() {
        return Err(Error::Usage("no key given (as an argument or on standard input)".into()));
    }
    let env = config::environment(&config.data_dir)?;
    if let Some(var) = configured_as(&env, &key) {
        eprintln!("keyrelay: that key is already configured, as {var}; nothing added");
        return Ok(ExitCode::from(1));
    }
    if args.validate && matches!(provider.family, Family::Bedrock | Family::Vertex) {
        // Their inference hosts have no model list to ask, and a chat call would cost money.
        return Err(Error::Usage(format!(
            "--validate cannot check a {name} key (its API has no model list to ask); add it without --validate"
        )));
    }
    if args.validate {
        if let Err(why) = validate(&config, provider, &key) {
            eprintln!("keyrelay: the key did not pass validation ({why}); nothing added");
            return Ok(ExitCode::from(1));
        }
        eprintln!("keyrelay: the key works ({} answered its model list)", provider.name);
    }
    let var = next_var(&env, &name.to_ascii_uppercase());
    let line = format!(
        "{var}={}\n",
        dotenv::quote(&key).map_err(|why| Error::Usage(format!("cannot store this key: {why}")))?
    );
    let path = config.data_dir.join(".env");
    append_atomically(&path, &line).context(format!("writing {}", path.display()))?;
    eprintln!("keyrelay: added {var} ({}) to {}", Secret::new(&key).masked(), path.display());
    println!("{var}");
    Ok(ExitCode::SUCCESS)
}

/// The provider a key is for: built in, or defined by its `<NAME>_API_BASE`; not one that
/// takes OAuth accounts only.
fn provider<'a>(config: &'a Config, name: &str) -> Result<&'a ProviderConfig> {
    let Some(provider) = config.providers.get(name) else {
        return Err(Error::Usage(format!(
            "unknown provider '{name}': not built in; set {}_API_BASE in .env first for a custom one",
            name.to_ascii_uppercase()
        )));
    };
    if provider.family == Family::CodeAssist {
        return Err(Error::Usage(format!(
            "{name} takes Google accounts, not API keys: run 'keyrelay oauth gemini-cli'"
        )));
    }
    Ok(provider)
}

/// The first line of standard input. On a terminal the key is typed without echo (`stty`
/// turns it off for the read), after a prompt on stderr.
fn read_key() -> Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("Key (not shown): ");
        set_echo(false);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if terminal {
        set_echo(true);
        eprintln!();
    }
    read.context("reading the key from standard input")?;
    Ok(line.trim().to_string())
}

/// Turns the terminal's echo on or off (through `stty`; nothing happens without a terminal).
pub fn set_echo(on: bool) {
    let _ = Command::new("stty").arg(if on { "echo" } else { "-echo" }).stdin(Stdio::inherit()).status();
}

/// The variable that holds `key` already, for any provider.
fn configured_as<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    env.iter().find(|(name, value)| config::is_key_var(name) && value.trim() == key).map(|(name, _)| name.as_str())
}

/// `<PREFIX>_API_KEY_<N>`, N one more than the highest in use (gaps are not filled).
fn next_var(env: &BTreeMap<String, String>, prefix: &str) -> String {
    let numbered = format!("{prefix}_API_KEY_");
    let highest = env.keys().filter_map(|name| name.strip_prefix(&numbered)?.parse::<u64>().ok()).max().unwrap_or(0);
    format!("{numbered}{}", highest + 1)
}

/// One authenticated model-list call with the new key. The answer is read through a redactor
/// that knows the key, which is not configured yet.
fn validate(config: &Config, provider: &ProviderConfig, key: &str) -> std::result::Result<(), String> {
    let secret = Secret::new(key);
    let request = if provider.name == providers::azure::NAME {
        providers::azure::with_key(providers::azure::models_request(&provider.base, &provider.api_version), &secret)
    } else {
        providers::with_key(provider.family, providers::models_request(provider.family, &provider.base), &secret)
    };
    let clean = |text: String| Redactor::new([key]).text(&text).into_owned();
    let mut response = Client::new(config.settings.timeouts()).send(&request).map_err(|e| clean(e.to_string()))?;
    if (200..300).contains(&response.status) {
        return Ok(());
    }
    let body = upstream::read_all(&mut response.body).unwrap_or_default();
    let parsed = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let class = providers::errors::classify(response.status, &parsed);
    let detail = clean(String::from_utf8_lossy(&body).chars().take(200).collect());
    Err(format!("{}, {} {}: {detail}", class.describe(), provider.name, response.status))
}

/// `path` with `line` appended, written to a temporary file and renamed over it: a crash
/// leaves the old file or the new one. The file keeps its mode (0600 when it is new), and a
/// missing final newline is added before the new line, so no byte of the old file changes.
fn append_atomically(path: &Path, line: &str) -> std::io::Result<()> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let (mut bytes, mode) = match fs::read(&target) {
        Ok(bytes) => (bytes, fs::metadata(&target)?.permissions().mode() & 0o7777),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0o600),
        Err(e) => return Err(e),
    };
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(line.as_bytes());
    let tmp = target.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_continues_after_the_highest_and_leaves_gaps() {
        let env: BTreeMap<String, String> =
            [("OPENAI_API_KEY", "a"), ("OPENAI_API_KEY_2", "b"), ("OPENAI_API_KEY_7", "c")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(next_var(&env, "OPENAI"), "OPENAI_API_KEY_8");
        assert_eq!(next_var(&env, "GROQ"), "GROQ_API_KEY_1");
        assert_eq!(configured_as(&env, "b"), Some("OPENAI_API_KEY_2"));
        assert_eq!(configured_as(&env, "z"), None);
    }
}
