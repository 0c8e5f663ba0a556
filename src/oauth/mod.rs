//! OAuth accounts as credentials: the three providers that log in with an account rather than
//! an API key (`gemini_cli`, `qwen_code`, `iflow`), their credential files (`credential`), the
//! account each one belongs to (`identity`), the `oauth_creds/` store (`store`), the stateless
//! variables that carry credentials without files (`stateless`), discovery at start-up
//! (`discovery`), the interactive logins that create them (`login`), and at run time the
//! tokens of each credential, refreshed before expiry (`refresh`) at the token endpoints
//! (`endpoint`), and a Gemini CLI account's tier as the pool's priority (`tier`); `login` and
//! `endpoint` are the only parts that talk to the network. Google service accounts (Vertex AI)
//! are not accounts one logs in with, but their tokens follow the same rules
//! (`service_account`, which talks to their token endpoints).

pub mod credential;
pub mod discovery;
pub mod endpoint;
pub mod identity;
pub mod login;
pub mod project;
pub mod refresh;
pub mod service_account;
pub mod single_flight;
pub mod stateless;
pub mod store;
pub mod tier;

pub use credential::OAuthCredential;
pub use discovery::discover;

use std::fmt;
use std::path::PathBuf;

/// A provider whose credentials are OAuth accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Provider {
    GeminiCli,
    QwenCode,
    Iflow,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::GeminiCli, Provider::QwenCode, Provider::Iflow];

    /// The provider's name in model ids, file names and `status`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::GeminiCli => "gemini_cli",
            Provider::QwenCode => "qwen_code",
            Provider::Iflow => "iflow",
        }
    }

    /// The prefix of its stateless variables (`GEMINI_CLI_1_REFRESH_TOKEN`).
    pub fn env_prefix(self) -> &'static str {
        match self {
            Provider::GeminiCli => "GEMINI_CLI",
            Provider::QwenCode => "QWEN_CODE",
            Provider::Iflow => "IFLOW",
        }
    }

    /// The folder under the home directory where the official CLI keeps its login.
    pub fn home_folder(self) -> &'static str {
        match self {
            Provider::GeminiCli => ".gemini",
            Provider::QwenCode => ".qwen",
            Provider::Iflow => ".iflow",
        }
    }

    /// Accepts `gemini_cli` and `gemini-cli` alike (and so for the others), in any case.
    pub fn parse(name: &str) -> Option<Provider> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a credential came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A JSON file: one in `oauth_creds/`, or an official CLI's own file in the home directory.
    File(PathBuf),
    /// The stateless variables of set `n` (0 for the un-numbered set).
    Env(u32),
}

impl Source {
    /// How people see it: the file's path, or the variables' pattern (`GEMINI_CLI_2_*`).
    pub fn describe(&self, provider: Provider) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Env(0) => format!("{}_* variables", provider.env_prefix()),
            Source::Env(n) => format!("{}_{n}_* variables", provider.env_prefix()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_take_either_separator() {
        assert_eq!(Provider::parse("qwen-code"), Some(Provider::QwenCode));
        assert_eq!(Provider::parse("QWEN_CODE"), Some(Provider::QwenCode));
        assert_eq!(Provider::parse("gemini-cli"), Some(Provider::GeminiCli));
        assert_eq!(Provider::parse("iflow"), Some(Provider::Iflow));
        assert_eq!(Provider::parse("gemini"), None);
    }
}
