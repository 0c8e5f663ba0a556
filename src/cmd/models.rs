//! `keyrelay models`: the `provider/model` ids the proxy would serve, one per line, then the
//! exact `MODEL_ALIASES` names (the JSON form says which target each one stands for).

use crate::cli::ModelsArgs;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::state::AppState;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(config: Config, args: ModelsArgs) -> Result<ExitCode> {
    let wanted = args.provider.as_deref().map(|p| p.to_ascii_lowercase().replace('-', "_"));
    if let Some(name) = &wanted {
        if !config.providers.contains_key(name) {
            return Err(Error::Usage(format!("unknown provider '{name}'")));
        }
    }
    let state = Arc::new(AppState::new(config.clone()));
    let ids = crate::api::model_ids(&state, &config).into_iter().map(|id| (id, None));
    let aliases = crate::api::models::aliases(&config).into_iter().map(|(alias, target)| (alias, Some(target)));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (id, target) in ids.chain(aliases) {
        let provider = target.as_deref().unwrap_or(&id).split('/').next().unwrap_or_default();
        if wanted.as_deref().is_some_and(|w| w != provider) {
            continue;
        }
        if args.json {
            let mut line = json!({"type": "model", "id": id, "provider": provider});
            if let Some(target) = &target {
                line["alias_for"] = json!(target);
            }
            writeln!(out, "{line}")
        } else {
            writeln!(out, "{id}")
        }
        .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
