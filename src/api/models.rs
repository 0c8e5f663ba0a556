//! `GET /v1/models`, `GET /v1/models/{provider/model}`: each configured provider's static
//! models (`<P>_MODELS`) first, then its upstream list, filtered, cached for
//! `MODELS_CACHE_SECONDS`. The exact names of `MODEL_ALIASES` follow as entries of their own
//! (`alias_for` names the target), since a client may send them as `model`; globs are rules,
//! not names, and are not listed.

use super::Reply;
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;
use crate::providers::{self, Family};
use crate::relay;
use crate::state::AppState;
use crate::sync::lock;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A failed upstream list is retried after this long, not after the full cache period.
const FAILED_LIST_RETRY: Duration = Duration::from_secs(30);

pub fn list(state: &Arc<AppState>, config: &Config) -> Reply {
    let mut data: Vec<Value> = all_ids(state, config).iter().map(|id| card_json(id)).collect();
    data.extend(aliases(config).iter().map(|(alias, target)| alias_card(alias, target)));
    Reply::json(200, &json!({"object": "list", "data": data}))
}

pub fn card(state: &Arc<AppState>, config: &Config, raw_id: &str) -> Result<Reply, ApiError> {
    let id = percent_decode(raw_id);
    let named_provider = providers::split_model(&id).is_some_and(|(name, _)| config.providers.contains_key(name));
    if let Some((alias, target)) = aliases(config).into_iter().find(|(alias, _)| *alias == id && !named_provider) {
        return Ok(Reply::json(200, &alias_card(&alias, &target)));
    }
    let Some((name, model)) = providers::split_model(&id) else {
        return Err(ApiError::model_not_found(format!("model '{id}' must be given as provider/model")));
    };
    let Some(provider) = config.providers.get(name) else {
        return Err(ApiError::model_not_found(format!("unknown provider '{name}'")));
    };
    let known = (!provider.has_credentials()).then(Vec::new).unwrap_or_else(|| provider_ids(state, provider));
    if !provider.filter.allows(name, model) || !known.iter().any(|m| m == model) {
        return Err(ApiError::model_not_found(format!(
            "the model '{id}' does not exist or is not served by this proxy"
        )));
    }
    Ok(Reply::json(200, &card_json(&id)))
}

/// Every `provider/model` id served, providers fetched side by side.
pub fn all_ids(state: &Arc<AppState>, config: &Config) -> Vec<String> {
    let providers: Vec<&ProviderConfig> = config.configured().collect();
    let lists: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = providers.iter().map(|p| s.spawn(|| provider_ids(state, p))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    providers.iter().zip(lists).flat_map(|(p, ids)| ids.into_iter().map(move |m| format!("{}/{m}", p.name))).collect()
}

/// One provider's model ids (bare), static ones first, filters applied.
fn provider_ids(state: &Arc<AppState>, provider: &ProviderConfig) -> Vec<String> {
    let mut ids = provider.static_models.clone();
    for id in upstream_ids(state, provider) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.retain(|m| provider.filter.allows(&provider.name, m));
    ids
}

fn upstream_ids(state: &Arc<AppState>, provider: &ProviderConfig) -> Vec<String> {
    // Code Assist has no model list call: `GEMINI_CLI_MODELS` replaces the built-in list.
    if provider.family == Family::CodeAssist {
        let builtin = provider.static_models.is_empty().then_some(providers::code_assist::MODELS);
        return builtin.unwrap_or_default().iter().map(|m| m.to_string()).collect();
    }
    // Vertex and Bedrock list their models on another API than the one their keys call
    // (Vertex's publisher model list, Bedrock's control-plane host `bedrock.<region>`):
    // `VERTEX_MODELS` and `BEDROCK_MODELS` list the models to show.
    if matches!(provider.family, Family::Vertex | Family::Bedrock) {
        return Vec::new();
    }
    let ttl = state.config().settings.models_cache;
    if let Some((fetched, ids)) = lock(&state.models).get(&provider.name) {
        let fresh_for = if ids.is_empty() { FAILED_LIST_RETRY.min(ttl) } else { ttl };
        if fetched.elapsed() < fresh_for {
            return ids.clone();
        }
    }
    // Azure's deployments API lists the models a resource can deploy, not its deployments,
    // which are what `azure/<deployment>` names: `AZURE_MODELS` lists those.
    let azure = provider.name == providers::azure::NAME;
    if azure && !providers::azure::is_v1(&provider.base) {
        return Vec::new();
    }
    let request = if azure {
        providers::azure::models_request(&provider.base, &provider.api_version)
    } else {
        providers::models_request(provider.family, &provider.base)
    };
    let deadline = Instant::now() + state.config().settings.global_timeout;
    let ids = match relay::relay_whole(state, provider, "(model list)", &request, deadline) {
        Ok(relayed) => providers::model_ids(provider.family, &relayed.body.value),
        Err(e) => {
            log::warn!("model list of {} unavailable: {}", provider.name, e.message);
            Vec::new()
        }
    };
    lock(&state.models).insert(provider.name.clone(), (Instant::now(), ids.clone()));
    ids
}

/// The exact `MODEL_ALIASES` names a request could use now, with their targets: the target's
/// provider has keys and its filters let the target through.
pub fn aliases(config: &Config) -> Vec<(String, String)> {
    let servable = |target: &str| {
        let Some((name, model)) = providers::split_model(target) else { return false };
        config.providers.get(name).is_some_and(|p| p.has_credentials() && p.filter.allows(name, model))
    };
    config.aliases.names().filter(|(_, target)| servable(target)).map(|(a, t)| (a.to_string(), t.to_string())).collect()
}

fn alias_card(alias: &str, target: &str) -> Value {
    let mut card = card_json(target);
    card["id"] = json!(alias);
    card["alias_for"] = json!(target);
    card
}

fn card_json(id: &str) -> Value {
    let owner = id.split('/').next().unwrap_or("keyrelay");
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json!({"id": id, "object": "model", "created": created, "owned_by": owner})
}

/// Clients may send `openai%2Fgpt-4o` for `openai/gpt-4o`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
            {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
