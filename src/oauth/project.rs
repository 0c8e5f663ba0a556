//! The Google Cloud project a Gemini CLI account's Code Assist calls name. Known when the
//! credential has a `project_id`; else found once, at the account's first use, the way the
//! Gemini CLI finds it: `loadCodeAssist`, and for an account that was never onboarded
//! `onboardUser` and its operation, polled until done. The project found is remembered in the
//! credential (its file too), with the account's tier learnt on the way (`oauth::tier`). `GEMINI_CLI_PROJECT_ID`, which wins over all of this, is the
//! relay's to apply. The calls carry the account's token and run outside the pool's lock;
//! the request and answer shapes are `providers::code_assist`'s.

use super::refresh::CredentialState;
use crate::providers::code_assist::{self, Loaded};
use crate::providers::{self, Family, errors, errors::ErrorClass};
use crate::secret::Secret;
use crate::upstream::{self, Client, UpstreamRequest};
use serde_json::Value;
use std::time::Duration;

/// How often an onboarding operation is polled, and how many times before giving up.
const POLL_EVERY: Duration = Duration::from_secs(2);
const POLLS: u32 = 30;

/// Why no project could be had, classified like any failed call: an account that must act
/// first (validate, pick a project) fails as `Auth`, a network or server failure as `Transient`.
#[derive(Debug)]
pub struct ProjectError {
    pub class: ErrorClass,
    pub what: String,
}

impl ProjectError {
    fn transient(what: String) -> ProjectError {
        ProjectError { class: ErrorClass::Transient, what }
    }
}

/// The account's project, and its tier when this call learnt it: the project it has, or one
/// found now (once per credential: concurrent first uses wait for the first one's discovery).
pub fn find(
    client: &Client,
    base: &str,
    cred: &CredentialState,
    token: &Secret,
) -> Result<(String, Option<String>), ProjectError> {
    if let Some(project) = cred.project_id() {
        return Ok((project, None));
    }
    let _one_at_a_time = cred.discovering();
    if let Some(project) = cred.project_id() {
        return Ok((project, None));
    }
    let (project, tier) = discover(client, base, token)?;
    let shown = tier.as_deref().unwrap_or("unknown");
    log::info!("{} {}: Code Assist project {project}, tier {shown}", cred.provider, cred.account);
    cred.remember_project(&project, tier.as_deref());
    Ok((project, tier))
}

/// The project and tier of an onboarded account (`paidTier`, else `currentTier`), or of one
/// onboarded now (the tier it was onboarded to).
fn discover(client: &Client, base: &str, token: &Secret) -> Result<(String, Option<String>), ProjectError> {
    let loaded = call(client, code_assist::load_request(base), token)?;
    match code_assist::read_load(&loaded) {
        Loaded::Project(project) => Ok((project, code_assist::tier_of(&loaded))),
        Loaded::Refused(why) => Err(ProjectError { class: ErrorClass::Auth, what: why }),
        Loaded::Onboard(tier) => Ok((onboard(client, base, &tier, token)?, Some(tier))),
    }
}

/// Onboards the account to `tier` and waits for the operation to name its project.
fn onboard(client: &Client, base: &str, tier: &str, token: &Secret) -> Result<String, ProjectError> {
    let mut operation = call(client, code_assist::onboard_request(base, tier), token)?;
    for _ in 0..POLLS {
        if let Some(done) = code_assist::read_operation(&operation) {
            return done.map_err(|what| ProjectError { class: ErrorClass::Auth, what });
        }
        std::thread::sleep(POLL_EVERY);
        let name = operation.get("name").and_then(Value::as_str).unwrap_or("");
        // An operation without a usable name is asked about by calling onboardUser again.
        let poll =
            code_assist::operation_request(base, name).unwrap_or_else(|| code_assist::onboard_request(base, tier));
        operation = call(client, poll, token)?;
    }
    Err(ProjectError::transient("onboarding the account did not finish in time".into()))
}

/// One onboarding call with the account's token; its JSON answer, or the failure classified.
fn call(client: &Client, request: UpstreamRequest, token: &Secret) -> Result<Value, ProjectError> {
    let keyed = providers::with_key(Family::CodeAssist, request, token);
    let mut response = client.send(&keyed).map_err(|e| ProjectError::transient(format!("upstream error ({e})")))?;
    let bytes = upstream::read_all(&mut response.body)
        .map_err(|e| ProjectError::transient(format!("response body cut off: {e}")))?;
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !(200..300).contains(&response.status) {
        let class = match errors::classify(response.status, &parsed) {
            ErrorClass::Request => ErrorClass::Auth,
            other => other,
        };
        let message = providers::openai::upstream_error(response.status, &bytes).message;
        return Err(ProjectError { class, what: format!("{}: {message}", response.status) });
    }
    if parsed.is_object() { Ok(parsed) } else { Err(ProjectError::transient("answer is not a JSON object".into())) }
}
