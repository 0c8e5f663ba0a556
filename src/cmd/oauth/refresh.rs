//! `keyrelay oauth refresh [ID]`: refreshes OAuth credentials now, whatever their expiry: all
//! of them, or the one whose pool id (as `status` shows it) or account is ID. Files get the new
//! tokens; a stateless credential is refreshed in memory only, which proves it still works.
//! Exit 0 when every refresh worked, 1 when one was refused (that credential is now marked
//! `needs_login`), 2 when one failed for another reason.

use crate::cli::OauthRefreshArgs;
use crate::clock;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::oauth::endpoint::Http;
use crate::oauth::refresh::{AccessError, CredentialState};
use crate::oauth::{Source, identity};
use crate::upstream::Client;
use std::io::Write;
use std::process::ExitCode;

pub fn run(config: Config, args: OauthRefreshArgs) -> Result<ExitCode> {
    let chosen: Vec<_> = config
        .oauth
        .iter()
        .filter(|c| {
            args.id
                .as_deref()
                .is_none_or(|id| identity::pool_id(c) == id || identity::account(c).eq_ignore_ascii_case(id))
        })
        .collect();
    if chosen.is_empty() {
        return Err(match &args.id {
            Some(id) => {
                Error::Usage(format!("no OAuth credential has the id or account {id:?} (see keyrelay oauth list)"))
            }
            None => Error::Config("no OAuth credentials to refresh (see keyrelay oauth import)".into()),
        });
    }
    let client = Client::new(config.settings.timeouts());
    let endpoint = Http { client: &client, endpoints: &config.oauth_endpoints };
    let (mut refused, mut failed) = (0, 0);
    let mut out = std::io::stdout().lock();
    for cred in chosen {
        let state = CredentialState::new(cred.clone());
        let line = match state.force_refresh(&endpoint, &clock::now_ms) {
            Ok(_) => {
                let fresh = state.credential();
                let seconds = fresh.expires_in_seconds(clock::now_ms()).map_or("unknown".into(), |s| format!("{s}s"));
                let place = match fresh.source {
                    Source::File(_) => "file updated",
                    Source::Env(_) => "in memory only: its variables are not changed",
                };
                format!("{} {}: refreshed, expires in {seconds} ({place})", state.provider, state.account)
            }
            Err(AccessError::NeedsLogin) => {
                refused += 1;
                let command = state.provider.name().replace('_', "-");
                format!("{} {}: needs login: run `keyrelay oauth {command}`", state.provider, state.account)
            }
            Err(AccessError::Failed(why)) => {
                failed += 1;
                format!("{} {}: refresh failed: {why}", state.provider, state.account)
            }
        };
        writeln!(out, "{}", crate::redact::text(&line)).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(match (refused, failed) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(2),
        _ => ExitCode::from(1),
    })
}
