//! `keyrelay oauth gemini-cli|qwen-code|iflow`: runs that provider's interactive login
//! (`oauth::login`) and says which account was stored where. A refusal or a timeout is a
//! negative answer (exit 1); every other failure an error (exit 2).

use crate::cli::LoginArgs;
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::oauth::Provider;
use crate::oauth::login::{self, Endpoints, LoginError, Options};
use crate::upstream::Client;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub fn run(config: Config, args: LoginArgs) -> Result<ExitCode> {
    let provider = Provider::parse(args.provider).expect("the login subcommands name known providers");
    let env = config::environment(&config.data_dir)?;
    let endpoints = Endpoints::from_env(&env).map_err(Error::Config)?;
    let options = Options {
        deadline: Instant::now() + Duration::from_secs(args.timeout),
        open_browser: !args.no_browser && has_display(&env),
        label: args.label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty()),
    };
    let client = Client::new(config.settings.timeouts());
    match login::login(&config.data_dir, provider, &endpoints, &client, &options) {
        Ok((account, path)) => {
            println!("saved {provider} account {account} in {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (LoginError::Denied(_) | LoginError::TimedOut)) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
        Err(LoginError::Failed(why)) => Err(Error::Config(format!("{provider} login failed: {why}"))),
    }
}

/// A graphical session is there to open a browser in.
fn has_display(env: &std::collections::BTreeMap<String, String>) -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|name| env.get(*name).is_some_and(|v| !v.is_empty()))
}
