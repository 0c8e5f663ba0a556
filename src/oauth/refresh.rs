//! OAuth credentials at run time: each one's current tokens behind a lock of its own (never
//! the pool's), handed out at attempt time and refreshed on demand when expiry is near.
//!
//! Rules, each tested here with time passed in:
//! - near expiry: Qwen under 30 minutes left, Gemini CLI under 5, iFlow under 24 hours; an
//!   unknown expiry or a missing access token counts as expired;
//! - one refresh at a time per credential: callers that find one under way wait for it and use
//!   its result;
//! - the file is read again first, since another process (the official CLI, a second proxy)
//!   may have refreshed it and rotated the refresh token: what it holds is the starting point,
//!   and a token it holds that is not near expiry is used without a refresh;
//! - new tokens (a rotated refresh token included) are written to the file before use;
//!   stateless credentials keep them in memory only;
//! - a refused refresh marks the credential `needs_login`, in its file too, and it is not used
//!   again until a new login.

use super::endpoint::{RefreshError, TokenEndpoint, Tokens};
use super::single_flight::{self, Settled, SingleFlight};
use super::{OAuthCredential, Provider, Source, credential::Expiry, credential::ExpiryForm, identity, store};
use crate::clock::{self, HOUR, MINUTE, SECOND};
use crate::secret::Secret;
use crate::sync::lock;
use std::sync::Mutex;

/// Whether the provider's OAuth credentials join its key pool: every provider's do.
pub fn in_pool(provider: Provider) -> bool {
    matches!(provider, Provider::QwenCode | Provider::GeminiCli | Provider::Iflow)
}

/// How long before expiry a token is refreshed.
pub fn refresh_margin(provider: Provider) -> u64 {
    match provider {
        Provider::QwenCode => 30 * MINUTE,
        Provider::GeminiCli => 5 * MINUTE,
        Provider::Iflow => 24 * HOUR,
    }
}

/// Whether `cred`'s token must be refreshed before use at `now`.
pub fn near_expiry(cred: &OAuthCredential, now: u64) -> bool {
    let usable = match cred.provider {
        // iFlow calls use the API key, but the refresh is what keeps it current.
        Provider::Iflow => cred.api_key.is_some() || cred.access_token.is_some(),
        _ => cred.access_token.is_some(),
    };
    match &cred.expiry {
        Some(e) if usable => e.at_ms < now.saturating_add(refresh_margin(cred.provider)),
        _ => true,
    }
}

/// What an attempt needs from a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The bearer token of API calls: the access token, or iFlow's API key.
    pub token: Secret,
    /// Qwen's `resource_url`, as read.
    pub resource_url: Option<String>,
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessError {
    /// A refresh was refused (now or earlier): run `keyrelay oauth <provider>`.
    NeedsLogin,
    /// The refresh failed for a reason that may pass (network, 5xx).
    Failed(String),
}

/// One credential's tokens, shared by every request and the background refresher.
pub struct CredentialState {
    pub id: String,
    pub provider: Provider,
    pub account: String,
    inner: SingleFlight<OAuthCredential>,
    /// Held while a Gemini CLI account's project is being found, so it is found once.
    discovery: Mutex<()>,
}

impl CredentialState {
    pub fn new(cred: OAuthCredential) -> CredentialState {
        CredentialState {
            id: identity::pool_id(&cred),
            provider: cred.provider,
            account: identity::account(&cred),
            inner: SingleFlight::new(cred),
            discovery: Mutex::new(()),
        }
    }

    /// A copy of the credential as it is now.
    pub fn credential(&self) -> OAuthCredential {
        self.inner.read(OAuthCredential::clone)
    }

    pub fn needs_login(&self) -> bool {
        self.inner.read(|cred| cred.needs_login)
    }

    /// The token to use now, refreshed first when expiry is near. `failed` is a token the API
    /// just refused (401): unless a refresh has replaced it meanwhile, a refresh is forced.
    pub fn access(
        &self,
        endpoint: &dyn TokenEndpoint,
        now: &dyn Fn() -> u64,
        failed: Option<&Secret>,
    ) -> Result<Access, AccessError> {
        let usable = |cred: &OAuthCredential| {
            if cred.needs_login {
                return Some(Err(AccessError::NeedsLogin));
            }
            let stale = match failed {
                Some(token) => bearer(cred) == Some(token),
                None => near_expiry(cred, now()),
            };
            (!stale).then(|| Ok(access_of(cred)))
        };
        let settle = |cred: &mut OAuthCredential, result: Refreshed| match result {
            Ok(fresh) => {
                *cred = *fresh;
                Settled::Ready(access_of(cred))
            }
            Err((kept, AccessError::NeedsLogin)) => {
                *cred = *kept;
                Settled::Final(AccessError::NeedsLogin)
            }
            Err((_, AccessError::Failed(why))) => Settled::Transient(why),
        };
        self.inner.get(usable, |start| refresh(&start, endpoint, now, failed), settle, AccessError::Failed)
    }

    /// The Google Cloud project of a Gemini CLI account, when known: `project_id`, or the one
    /// the Python proxy keeps in `_proxy_metadata`.
    pub fn project_id(&self) -> Option<String> {
        self.inner.read(|cred| {
            let metadata = cred.extra.get("_proxy_metadata").and_then(|m| m.get("project_id"));
            let project = cred.project_id.as_deref().or_else(|| metadata.and_then(serde_json::Value::as_str));
            project.map(str::trim).filter(|p| !p.is_empty()).map(str::to_string)
        })
    }

    /// Taken while the project is found (`oauth::project`), so concurrent first uses wait for
    /// one discovery instead of each making their own.
    pub fn discovering(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.discovery)
    }

    /// The account's tier (`oauth::tier`), when known.
    #[cfg(test)]
    pub fn tier(&self) -> Option<String> {
        self.inner.read(super::tier::of)
    }

    /// Keeps a discovered project and the tier learnt with it, in the credential's file too
    /// (read again first, so the write keeps what another process put there); variables keep
    /// them in memory.
    pub fn remember_project(&self, project: &str, tier: Option<&str>) {
        let learn = |cred: &mut OAuthCredential| {
            cred.project_id = Some(project.to_string());
            if let Some(tier) = tier {
                super::tier::set(cred, tier);
            }
        };
        let cred = self.inner.update(|cred| {
            learn(cred);
            cred.clone()
        });
        let Source::File(path) = &cred.source else { return };
        let mut on_disk = store::read(cred.provider, path).unwrap_or_else(|_| cred.clone());
        learn(&mut on_disk);
        if let Err(e) = store::rewrite(&on_disk) {
            log::error!("{} {}: writing project_id to {} failed: {e}", cred.provider, self.account, path.display());
        }
    }

    /// Refreshes now whatever the expiry (`keyrelay oauth refresh`), unless marked `needs_login`.
    pub fn force_refresh(&self, endpoint: &dyn TokenEndpoint, now: &dyn Fn() -> u64) -> Result<Access, AccessError> {
        let current = self.inner.read(|cred| bearer(cred).cloned().unwrap_or_else(|| Secret::new("")));
        self.access(endpoint, now, Some(&current))
    }
}

/// The token API calls carry: iFlow's API key, every other provider's access token.
fn bearer(cred: &OAuthCredential) -> Option<&Secret> {
    match cred.provider {
        Provider::Iflow => cred.api_key.as_ref(),
        _ => cred.access_token.as_ref(),
    }
}

fn access_of(cred: &OAuthCredential) -> Access {
    Access { token: bearer(cred).cloned().unwrap_or_else(|| Secret::new("")), resource_url: cred.resource_url.clone() }
}

/// A refresh's credential; on failure, the credential to keep and why.
type Refreshed = Result<Box<OAuthCredential>, (Box<OAuthCredential>, AccessError)>;

/// One refresh, outside every lock: the file read again, the endpoint called, the result
/// written back. On failure, the credential to keep (marked `needs_login` when refused).
fn refresh(
    start: &OAuthCredential,
    endpoint: &dyn TokenEndpoint,
    now: &dyn Fn() -> u64,
    failed: Option<&Secret>,
) -> Refreshed {
    let base = match &start.source {
        Source::File(path) => match store::read(start.provider, path) {
            Ok(on_disk) => on_disk,
            Err(why) => {
                log::warn!(
                    "{} {}: cannot read {} again ({why}); refreshing from memory",
                    start.provider,
                    identity::account(start),
                    path.display()
                );
                start.clone()
            }
        },
        Source::Env(_) => start.clone(),
    };
    let mut base = base;
    // A project found since the file was last written is not lost by the refresh.
    if base.project_id.is_none() {
        base.project_id = start.project_id.clone();
    }
    if let (None, Some(tier)) = (super::tier::of(&base), super::tier::of(start)) {
        super::tier::set(&mut base, &tier);
    }
    if base.needs_login {
        return Err((Box::new(base), AccessError::NeedsLogin));
    }
    let rotated_elsewhere = bearer(&base) != bearer(start) && bearer(&base) != failed;
    if rotated_elsewhere && !near_expiry(&base, now()) {
        log::info!("{} {}: using the token another process refreshed", base.provider, identity::account(&base));
        return Ok(Box::new(base));
    }
    match endpoint.refresh(&base) {
        Ok(tokens) => {
            let fresh = apply(&base, tokens, now());
            crate::redact::learn(fresh.secrets().map(Secret::expose));
            if let Source::File(path) = &fresh.source {
                if let Err(e) = store::rewrite(&fresh) {
                    log::error!(
                        "{} {}: refreshed, but writing {} failed: {e}",
                        fresh.provider,
                        identity::account(&fresh),
                        path.display()
                    );
                }
            }
            log::info!("{} {}: token refreshed", fresh.provider, identity::account(&fresh));
            Ok(Box::new(fresh))
        }
        Err(RefreshError::Refused(why)) => {
            let mut dead = base;
            dead.needs_login = true;
            if let Source::File(path) = &dead.source {
                if let Err(e) = store::rewrite(&dead) {
                    log::error!(
                        "{} {}: writing needs_login to {} failed: {e}",
                        dead.provider,
                        identity::account(&dead),
                        path.display()
                    );
                }
            }
            log::error!(
                "{} {}: {why}; run `keyrelay oauth {}` to log in again",
                dead.provider,
                identity::account(&dead),
                dead.provider.name().replace('_', "-")
            );
            Err((Box::new(dead), AccessError::NeedsLogin))
        }
        Err(RefreshError::Failed(why)) => {
            log::warn!("{} {}: refresh failed: {why}", base.provider, identity::account(&base));
            Err((Box::new(base), AccessError::Failed(why)))
        }
    }
}

/// The credential with a refresh's tokens in it. The account stays the one it was, even when
/// it was named after the old refresh token, so the pool id does not move.
fn apply(base: &OAuthCredential, tokens: Tokens, now: u64) -> OAuthCredential {
    let account = identity::account(base);
    let mut cred = base.clone();
    cred.access_token = tokens.access_token.or(cred.access_token);
    cred.refresh_token = tokens.refresh_token.or(cred.refresh_token);
    cred.id_token = tokens.id_token.or(cred.id_token);
    cred.resource_url = tokens.resource_url.or(cred.resource_url);
    cred.api_key = tokens.api_key.or(cred.api_key);
    cred.needs_login = false;
    if let Some(seconds) = tokens.expires_in {
        let at_ms = now.saturating_add(seconds.saturating_mul(SECOND));
        let form = match cred.expiry.as_ref().map(|e| &e.form) {
            Some(ExpiryForm::Iso(_)) => ExpiryForm::Iso(clock::rfc3339(at_ms)),
            _ => ExpiryForm::Millis,
        };
        cred.expiry = Some(Expiry { at_ms, form });
    }
    if identity::account(&cred) != account {
        cred.email = Some(account);
    }
    cred
}

/// Every OAuth credential's state, by pool id.
pub type Registry = single_flight::Registry<CredentialState>;

impl Registry {
    pub fn new(creds: &[OAuthCredential]) -> Registry {
        let registry = Registry::default();
        registry.sync(creds);
        registry
    }

    /// Takes a reloaded credential list. A state is kept when the reload brings nothing newer:
    /// a stateless credential (its variables still hold the tokens its refreshes replaced in
    /// memory), or a file with the refresh token and `needs_login` the state has. A file changed
    /// by someone else (a new login) replaces it; gone accounts are dropped.
    pub fn sync(&self, creds: &[OAuthCredential]) {
        let keep = |state: &CredentialState, cred: &OAuthCredential| {
            let had = state.credential();
            matches!(cred.source, Source::Env(_))
                || (had.refresh_token == cred.refresh_token && had.needs_login == cred.needs_login)
        };
        self.replace(creds, identity::pool_id, keep, |cred| Some(CredentialState::new(cred.clone())));
    }

    /// The secrets every state holds now, for the redactor after a reload.
    pub fn secrets(&self) -> Vec<Secret> {
        self.all().iter().flat_map(|s| s.credential().secrets().cloned().collect::<Vec<_>>()).collect()
    }

    /// Refreshes every credential near expiry that can still be refreshed; returns how many
    /// were refused. The background refresher's one step.
    pub fn refresh_due(&self, endpoint: &dyn TokenEndpoint, now: &dyn Fn() -> u64) -> usize {
        let mut refused = 0;
        for state in self.all() {
            let cred = state.credential();
            if cred.needs_login || !near_expiry(&cred, now()) {
                continue;
            }
            if state.access(endpoint, now, None) == Err(AccessError::NeedsLogin) {
                refused += 1;
            }
        }
        refused
    }
}

/// What `status` and `/v1/quota-stats` show of a credential: never a token.
pub fn describe(cred: &OAuthCredential, now: u64) -> serde_json::Value {
    serde_json::json!({
        "account": identity::account(cred),
        "expires_in_seconds": cred.expires_in_seconds(now),
        "state": cred.state(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::single_flight::tests::four_callers;
    use crate::oauth::store::tests::Scratch;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    const NOW: u64 = 1_800_000_000_000;

    fn qwen(expiry: Option<u64>) -> OAuthCredential {
        let mut c = OAuthCredential::new(Provider::QwenCode, Source::Env(1));
        c.access_token = Some(Secret::new("at-old"));
        c.refresh_token = Some(Secret::new("rt-old"));
        c.email = Some("work".into());
        c.expiry = expiry.map(Expiry::millis);
        c
    }

    /// Answers every refresh with `at-<n>` / `rt-<n>`, counting calls; optionally holds each
    /// call until the test lets it go.
    struct Fake {
        calls: AtomicUsize,
        answer: Result<(), RefreshError>,
        gate: Option<Mutex<mpsc::Receiver<()>>>,
        entered: Option<Mutex<mpsc::Sender<()>>>,
    }

    impl Fake {
        fn ok() -> Fake {
            Fake { calls: AtomicUsize::new(0), answer: Ok(()), gate: None, entered: None }
        }
    }

    impl TokenEndpoint for Fake {
        fn refresh(&self, _: &OAuthCredential) -> Result<Tokens, RefreshError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(entered) = &self.entered {
                lock(entered).send(()).unwrap();
            }
            if let Some(gate) = &self.gate {
                lock(gate).recv().unwrap();
            }
            self.answer.clone()?;
            Ok(Tokens {
                access_token: Some(Secret::new(&format!("at-{n}"))),
                refresh_token: Some(Secret::new(&format!("rt-{n}"))),
                expires_in: Some(3600),
                ..Tokens::default()
            })
        }
    }

    #[test]
    fn near_expiry_follows_each_providers_margin() {
        let mut c = qwen(Some(NOW + 30 * MINUTE));
        assert!(!near_expiry(&c, NOW));
        assert!(near_expiry(&c, NOW + 1));
        c.provider = Provider::GeminiCli;
        assert!(!near_expiry(&c, NOW + 25 * MINUTE));
        assert!(near_expiry(&c, NOW + 25 * MINUTE + 1));
        c.provider = Provider::Iflow;
        c.api_key = Some(Secret::new("sk"));
        c.expiry = Some(Expiry::millis(NOW + 25 * HOUR));
        assert!(!near_expiry(&c, NOW));
        assert!(near_expiry(&c, NOW + HOUR + 1));
        assert!(near_expiry(&qwen(None), NOW), "an unknown expiry is expired");
        let mut no_token = qwen(Some(NOW + 10 * HOUR));
        no_token.access_token = None;
        assert!(near_expiry(&no_token, NOW), "no access token: refresh first");
    }

    #[test]
    fn a_fresh_token_is_used_and_a_near_one_refreshed_in_memory_for_variables() {
        let fake = Fake::ok();
        let state = CredentialState::new(qwen(Some(NOW + HOUR)));
        assert_eq!(state.access(&fake, &|| NOW, None).unwrap().token.expose(), "at-old");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        let later = NOW + 31 * MINUTE;
        assert_eq!(state.access(&fake, &|| later, None).unwrap().token.expose(), "at-1");
        let cred = state.credential();
        assert_eq!((cred.refresh_token.unwrap().expose(), cred.expiry.unwrap().at_ms), ("rt-1", later + HOUR));
        assert_eq!(state.id, identity::pool_id(&qwen(None)), "the id survives the refresh");
    }

    #[test]
    fn one_refresh_at_a_time_and_the_others_wait_for_it() {
        let (gate_tx, gate_rx) = mpsc::channel();
        let (entered_tx, entered_rx) = mpsc::channel();
        let fake = Fake {
            calls: AtomicUsize::new(0),
            answer: Ok(()),
            gate: Some(Mutex::new(gate_rx)),
            entered: Some(Mutex::new(entered_tx)),
        };
        let state = CredentialState::new(qwen(Some(NOW)));
        let access = || state.access(&fake, &|| NOW, None);
        let (first, others) = four_callers(access, || state.inner.waiting(), entered_rx, gate_tx);
        assert_eq!(first.unwrap().token.expose(), "at-1");
        for other in others {
            assert_eq!(other.unwrap().token.expose(), "at-1");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_forced_refresh_replaces_only_the_token_that_failed() {
        let fake = Fake::ok();
        let state = CredentialState::new(qwen(Some(NOW + 10 * HOUR)));
        let old = Secret::new("at-old");
        assert_eq!(state.access(&fake, &|| NOW, Some(&old)).unwrap().token.expose(), "at-1");
        // A second caller that saw the same 401 gets the new token without another refresh.
        assert_eq!(state.access(&fake, &|| NOW, Some(&old)).unwrap().token.expose(), "at-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_refused_refresh_marks_the_file_and_stops_further_refreshes() {
        let scratch = Scratch::new("refused");
        let mut cred = qwen(Some(NOW));
        let path = store::create(&scratch.0, Provider::QwenCode, &cred.to_file_text()).unwrap();
        cred.source = Source::File(path.clone());
        let fake = Fake { answer: Err(RefreshError::Refused("400".into())), ..Fake::ok() };
        let state = CredentialState::new(cred);
        assert_eq!(state.access(&fake, &|| NOW, None), Err(AccessError::NeedsLogin));
        assert_eq!(state.access(&fake, &|| NOW, None), Err(AccessError::NeedsLogin));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert!(store::read(Provider::QwenCode, &path).unwrap().needs_login);
    }

    #[test]
    fn the_file_is_read_first_and_a_token_rotated_elsewhere_is_used() {
        let scratch = Scratch::new("reread");
        let mut cred = qwen(Some(NOW));
        let path = store::create(&scratch.0, Provider::QwenCode, &cred.to_file_text()).unwrap();
        cred.source = Source::File(path.clone());
        let state = CredentialState::new(cred.clone());
        let mut elsewhere = cred;
        elsewhere.access_token = Some(Secret::new("at-cli"));
        elsewhere.refresh_token = Some(Secret::new("rt-cli"));
        elsewhere.expiry = Some(Expiry::millis(NOW + 5 * HOUR));
        store::rewrite(&elsewhere).unwrap();
        let fake = Fake::ok();
        assert_eq!(state.access(&fake, &|| NOW, None).unwrap().token.expose(), "at-cli");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        // Once that one nears expiry too, the refresh writes the file before the token is used.
        assert_eq!(state.access(&fake, &|| NOW + 5 * HOUR, None).unwrap().token.expose(), "at-1");
        let on_disk = store::read(Provider::QwenCode, &path).unwrap();
        assert_eq!(on_disk.refresh_token.unwrap().expose(), "rt-1");
        assert_eq!(on_disk.email.as_deref(), Some("work"));
    }

    #[test]
    fn a_found_project_is_written_to_the_file_and_survives_a_refresh() {
        let scratch = Scratch::new("project");
        let mut cred = qwen(Some(NOW));
        cred.provider = Provider::GeminiCli;
        let path = store::create(&scratch.0, Provider::GeminiCli, &cred.to_file_text()).unwrap();
        cred.source = Source::File(path.clone());
        let state = CredentialState::new(cred.clone());
        assert_eq!(state.project_id(), None);
        // A refresh that read the file before the project was written must not lose it.
        state.remember_project("proj-1", Some("standard-tier"));
        store::rewrite(&cred).unwrap();
        assert_eq!(state.project_id().as_deref(), Some("proj-1"));
        assert_eq!(state.access(&Fake::ok(), &|| NOW, None).unwrap().token.expose(), "at-1");
        assert_eq!(state.project_id().as_deref(), Some("proj-1"));
        let on_disk = store::read(Provider::GeminiCli, &path).unwrap();
        assert_eq!(on_disk.project_id.as_deref(), Some("proj-1"));
        // The tier learnt with it too, where the Python proxy keeps it.
        assert_eq!(state.tier().as_deref(), Some("standard-tier"));
        assert_eq!(on_disk.extra["_proxy_metadata"]["tier"], "PRO");
        assert_eq!(crate::oauth::tier::priority_of(&on_disk), 2);
    }

    #[test]
    fn the_python_proxys_project_is_read_from_its_metadata() {
        let mut cred = qwen(Some(NOW));
        cred.provider = Provider::GeminiCli;
        cred.extra.insert("_proxy_metadata".into(), serde_json::json!({"project_id": "py-proj", "tier": "FREE"}));
        assert_eq!(CredentialState::new(cred).project_id().as_deref(), Some("py-proj"));
    }

    #[test]
    fn an_account_named_after_the_refresh_token_keeps_its_name() {
        let mut cred = qwen(Some(NOW));
        cred.email = None;
        let before = identity::account(&cred);
        let fresh = apply(
            &cred,
            Tokens { refresh_token: Some(Secret::new("rt-new")), expires_in: Some(60), ..Tokens::default() },
            NOW,
        );
        assert_eq!((identity::account(&fresh), identity::pool_id(&fresh)), (before, identity::pool_id(&cred)));
    }
}
