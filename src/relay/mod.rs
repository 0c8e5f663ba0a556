//! The resilience engine's request side: wait for a key, call the upstream, classify the
//! outcome, report it to the pool, and rotate while the failure is the key's. Streams commit
//! to a key once their first event (not an error) is in hand; before that they rotate like any call.
//! The pool's lock is taken only to decide and to record, never across I/O or a sleep.
//! The rules, in prose: docs/key-rotation.md, sections 6 and 7.

pub mod stream;

use crate::clock;
use crate::config::ProviderConfig;
use crate::error::{ApiError, ErrorKind};
use crate::keys::pool::{Counters, Outcome, Pick};
use crate::keys::shared::{Block, Grant, SharedLease};
use crate::oauth::service_account;
use crate::providers::eventstream::Framing;
use crate::providers::{self, Family, code_assist, errors::ErrorClass, vertex};
use crate::secret::Secret;
use crate::state::AppState;
use crate::sync::lock;
use crate::upstream::{self, UpstreamRequest};
use serde_json::Value;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A key in use for one request. Dropping it gives the key's slot back and wakes waiting
/// requests, on every path (success, error, client gone, panic); an attempt never reported
/// counts as cancelled.
pub struct Lease {
    state: Arc<AppState>,
    provider: String,
    model: String,
    pub key_id: String,
    pub masked: String,
    /// For the outgoing request's header only; None for an OAuth credential, whose token is
    /// taken from `AppState::oauth` at attempt time.
    secret: Option<Secret>,
    reported: bool,
    /// The slot taken in the shared store (`STATE_BACKEND=redis://...`), given back after the
    /// local one, with what the attempt adds to the key's shared daily counters.
    shared: Option<SharedLease>,
    counted: Counters,
}

impl Lease {
    pub fn report(&mut self, outcome: Outcome) {
        self.reported = true;
        self.state.metrics.attempt(&self.provider, &outcome);
        self.counted.add(&Counters::of(&outcome));
        let now = clock::now_ms();
        let blocks = {
            let mut pool = lock(&self.state.pool);
            pool.report(&self.provider, &self.key_id, &self.model, &outcome, now);
            let blocking = !matches!(outcome, Outcome::Success { .. } | Outcome::Cancelled | Outcome::RequestError);
            if blocking { pool.blocks_of(&self.provider, &self.key_id, &self.model, now) } else { Vec::new() }
        };
        self.state.pool_changed.notify_all();
        self.state.usage_changed();
        // Told to the other instances after the pool's lock is released.
        for block in &blocks {
            self.state.shared.block(block, now);
        }
    }
}

impl Lease {
    /// The stream on this key opened with a real event: a transient cooldown it was probing
    /// through ends now (`KeyPool::stream_opened`), and waiting requests are woken.
    fn stream_opened(&self) {
        let ended = lock(&self.state.pool).stream_opened(&self.provider, &self.key_id, &self.model);
        if ended {
            self.state.pool_changed.notify_all();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.reported {
            self.report(Outcome::Cancelled);
        }
        lock(&self.state.pool).release(&self.provider, &self.key_id, &self.model);
        self.state.pool_changed.notify_all();
        if let Some(shared) = self.shared.take() {
            let day = clock::day_start(clock::now_ms(), self.state.config().settings.daily_reset_hour);
            self.state.shared.release(shared, day, &self.counted);
        }
    }
}

/// A failed attempt, for error messages and logs (masked key, never the key).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: String,
    pub class: ErrorClass,
    pub what: String,
}

/// A success read whole: the upstream's bytes, checked to be JSON, and that one parse.
pub struct Json {
    pub value: Value,
    pub bytes: Vec<u8>,
}

/// A stream committed to its key: the bytes read up to its first event, and the rest still
/// to come.
pub struct Stream {
    pub first: Vec<u8>,
    pub rest: Box<dyn Read + Send>,
}

/// A relayed success, whole (`relay_whole`, `Relayed<Json>`) or streamed (`relay_stream`,
/// `Relayed<Stream>`): the mode is the entry point's, so no caller matches on it.
pub struct Relayed<B> {
    pub status: u16,
    pub body: B,
    /// For streams, still to be reported when the stream ends.
    pub lease: Lease,
    pub attempts: Vec<Attempt>,
}

/// The key used and the failed attempts, for the request log.
pub fn meta<B>(relayed: &Relayed<B>) -> serde_json::Map<String, Value> {
    let attempts: Vec<Value> = relayed
        .attempts
        .iter()
        .map(|a| serde_json::json!({"key": a.key, "class": a.class.describe(), "error": a.what}))
        .collect();
    let mut meta = serde_json::Map::new();
    meta.insert("key".into(), Value::String(relayed.lease.masked.clone()));
    meta.insert("provider".into(), Value::String(relayed.lease.provider.clone()));
    meta.insert("model".into(), Value::String(relayed.lease.model.clone()));
    meta.insert("attempts".into(), Value::Array(attempts));
    meta
}

/// How an attempt reads a success before it is accepted: the whole JSON body, or a stream's
/// first event. A failure here is the upstream's, so it is transient, unless what was read is
/// an error that says otherwise.
trait Mode: Sized {
    fn take(body: &mut Box<dyn Read + Send>, family: Family) -> Result<Self, Failure>;
    /// What to report to the pool at once: a whole answer's usage. A stream's outcome is
    /// reported when the stream ends (`stream::UpstreamStream`).
    fn outcome_now(&self) -> Option<Outcome>;
}

impl Mode for Json {
    fn take(body: &mut Box<dyn Read + Send>, _family: Family) -> Result<Json, Failure> {
        read_whole(body)
    }

    fn outcome_now(&self) -> Option<Outcome> {
        Some(usage_outcome(self.value.get("usage").unwrap_or(&Value::Null)))
    }
}

impl Mode for Stream {
    fn take(body: &mut Box<dyn Read + Send>, family: Family) -> Result<Stream, Failure> {
        let first = read_first_event(body, family)?;
        let rest = std::mem::replace(body, Box::new(std::io::empty()));
        Ok(Stream { first, rest })
    }

    fn outcome_now(&self) -> Option<Outcome> {
        None
    }
}

/// One attempt's failure.
struct Failure {
    class: ErrorClass,
    what: String,
    retry_after: Option<u64>,
    /// The upstream's own error, passed to the client for request errors.
    error: Option<Box<ApiError>>,
    /// The upstream's status (0 when none came).
    status: u16,
    /// An OAuth credential whose refresh was refused: not used again until a new login, so it
    /// is left out of rotation rather than locked.
    needs_login: bool,
}

impl Failure {
    fn transient(what: String) -> Failure {
        Failure { class: ErrorClass::Transient, what, retry_after: None, error: None, status: 0, needs_login: false }
    }

    fn outcome(&self) -> Outcome {
        if self.needs_login {
            return Outcome::Cancelled;
        }
        let reason = self.what.clone();
        match self.class {
            ErrorClass::RateLimit => Outcome::RateLimited { retry_after: self.retry_after, reason },
            ErrorClass::Quota => Outcome::QuotaExhausted { retry_after: self.retry_after, reason },
            ErrorClass::Auth => Outcome::AuthFailed { reason },
            ErrorClass::Transient => Outcome::Transient { reason },
            ErrorClass::Request => Outcome::RequestError,
        }
    }
}

/// Sends a non-streaming `request` for `model` until a key succeeds, the failures run out of
/// keys, or the deadline passes (ARCHITECTURE.md, "Request flow", step 4). The answer comes
/// parsed, next to its bytes; its usage is already reported.
pub fn relay_whole(
    state: &Arc<AppState>,
    provider: &ProviderConfig,
    model: &str,
    request: &UpstreamRequest,
    deadline: Instant,
) -> Result<Relayed<Json>, ApiError> {
    relay(state, provider, model, request, deadline)
}

/// Sends a streaming `request` like `relay_whole`, committing to the first key whose stream
/// opens with an event that is not an error. The request's own `stream` flag still sets the
/// upstream's read timeouts (`upstream::Client`); this entry point sets how the answer is read.
pub fn relay_stream(
    state: &Arc<AppState>,
    provider: &ProviderConfig,
    model: &str,
    request: &UpstreamRequest,
    deadline: Instant,
) -> Result<Relayed<Stream>, ApiError> {
    relay(state, provider, model, request, deadline)
}

/// The rotation loop both entry points share, read in mode `M`.
fn relay<M: Mode>(
    state: &Arc<AppState>,
    provider: &ProviderConfig,
    model: &str,
    request: &UpstreamRequest,
    deadline: Instant,
) -> Result<Relayed<M>, ApiError> {
    let mut excluded: Vec<String> = Vec::new();
    let mut second_chances: Vec<String> = Vec::new();
    let mut attempts: Vec<Attempt> = Vec::new();
    for (id, attempt) in needs_login(state, provider) {
        excluded.push(id);
        attempts.push(attempt);
    }
    loop {
        let mut lease = match wait_for_key(state, provider, model, &excluded, deadline) {
            Ok(lease) => lease,
            Err(stop) => return Err(final_error(state, provider, model, stop, &attempts)),
        };
        let mut result = attempt::<M>(state, provider, request, &lease);
        if let Err(f) = &result {
            if f.class == ErrorClass::Transient {
                let backoff = Duration::from_millis(200 + clock::now_ms() % 200);
                if Instant::now() + backoff < deadline {
                    log::info!("{} key {} failed ({}); retrying it once", provider.name, lease.masked, f.what);
                    std::thread::sleep(backoff);
                    state.metrics.retry(&provider.name);
                    result = attempt::<M>(state, provider, request, &lease);
                }
            }
        }
        let mut failure = match result {
            Ok((status, body)) => {
                match body.outcome_now() {
                    Some(outcome) => lease.report(outcome),
                    // A stream is reported when it ends; that it opened already shows the key
                    // works, so a probe through a transient cooldown need not hold the others
                    // back for the stream's whole length.
                    None => lease.stream_opened(),
                }
                return Ok(Relayed { status, body, lease, attempts });
            }
            Err(f) => f,
        };
        // Built from redacted upstream text already; redacted again because it becomes the
        // cooldown reason (`key_usage.json`, `status`) and part of the client's error message.
        failure.what = crate::redact::text(&failure.what).into_owned();
        lease.report(failure.outcome());
        if failure.class == ErrorClass::Request {
            return Err(failure.error.map_or_else(|| ApiError::invalid_request(failure.what), |e| *e));
        }
        log::warn!("{} key {} failed: {}", provider.name, lease.masked, failure.what);
        // A rate limit that ends before the deadline may be waited out once; any other
        // failure takes the key out of this request's rotation.
        let ends_in_time = failure.retry_after.is_some_and(|h| Instant::now() + Duration::from_millis(h) < deadline);
        if failure.class == ErrorClass::RateLimit && ends_in_time && !second_chances.contains(&lease.key_id) {
            second_chances.push(lease.key_id.clone());
        } else {
            excluded.push(lease.key_id.clone());
        }
        attempts.push(Attempt { key: lease.masked.clone(), class: failure.class, what: failure.what });
    }
}

/// Why no further attempt could start.
enum Stop {
    Busy,
    CoolingUntil(u64),
    NoneLeft,
    Deadline,
}

/// Takes a key for (provider, model), waiting on the pool's condition variable while keys
/// are busy or cooling down briefly; gives up at once when the answer is already known.
/// The local pool proposes a key; with a shared store, the store must grant it too (outside
/// the pool's lock): a key whose slots other instances hold is passed over until a release
/// is published or its soonest lease expires, and a key cooling down elsewhere cools here.
fn wait_for_key(
    state: &Arc<AppState>,
    provider: &ProviderConfig,
    model: &str,
    excluded: &[String],
    deadline: Instant,
) -> Result<Lease, Stop> {
    let mut pool = lock(&state.pool);
    let mut busy = false;
    // Keys every slot of which other instances hold, and when the first of those frees.
    let mut held_elsewhere: Vec<String> = Vec::new();
    let mut soonest_expiry = u64::MAX;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(if busy { Stop::Busy } else { Stop::Deadline });
        }
        let pick = if held_elsewhere.is_empty() {
            pool.acquire(&provider.name, model, clock::now_ms(), excluded)
        } else {
            let skip: Vec<String> = excluded.iter().chain(&held_elsewhere).cloned().collect();
            pool.acquire(&provider.name, model, clock::now_ms(), &skip)
        };
        let wait = match pick {
            Pick::Key(candidate) => {
                drop(pool);
                let limit = if candidate.probe { 1 } else { provider.max_concurrent };
                let grant = state.shared.acquire(&candidate.id, model, limit, candidate.probe);
                let shared = match grant {
                    Grant::Leased(lease) => Some(lease),
                    Grant::Local => None,
                    Grant::Full { expires_in } => {
                        pool = lock(&state.pool);
                        pool.release(&provider.name, &candidate.id, model);
                        soonest_expiry = soonest_expiry.min(clock::now_ms() + expires_in);
                        held_elsewhere.push(candidate.id);
                        state.pool_changed.notify_all();
                        continue;
                    }
                    Grant::Blocked { for_ms, lockout, transient, reason } => {
                        pool = lock(&state.pool);
                        pool.release(&provider.name, &candidate.id, model);
                        let model = (!lockout).then(|| model.to_string());
                        let until = clock::now_ms() + for_ms;
                        pool.apply_block(&Block { key: candidate.id, model, until, reason, step: 0, transient });
                        state.pool_changed.notify_all();
                        continue;
                    }
                };
                return Ok(Lease {
                    state: state.clone(),
                    provider: provider.name.clone(),
                    model: model.to_string(),
                    key_id: candidate.id,
                    masked: candidate.masked,
                    secret: candidate.secret,
                    reported: false,
                    shared,
                    counted: Counters::default(),
                });
            }
            _ if !held_elsewhere.is_empty() => {
                // Woken by a release another instance publishes, or when its lease expires.
                busy = true;
                let until_expiry = Duration::from_millis(soonest_expiry.saturating_sub(clock::now_ms()));
                held_elsewhere.clear();
                soonest_expiry = u64::MAX;
                until_expiry.min(deadline - now)
            }
            Pick::NoneLeft => return Err(Stop::NoneLeft),
            Pick::Busy => {
                busy = true;
                deadline - now
            }
            Pick::CoolingUntil(until) => {
                busy = false;
                let wait = Duration::from_millis(until.saturating_sub(clock::now_ms()));
                if now + wait >= deadline {
                    return Err(Stop::CoolingUntil(until));
                }
                wait
            }
        };
        pool = state.pool_changed.wait_timeout(pool, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// The provider's OAuth credentials marked `needs_login`: left out of rotation from the
/// start, each with the failure that says how to log in again.
fn needs_login(state: &AppState, provider: &ProviderConfig) -> Vec<(String, Attempt)> {
    provider
        .oauth
        .iter()
        .filter(|o| state.oauth.get(&o.id).is_some_and(|s| s.needs_login()))
        .map(|o| {
            let what = login_hint(&provider.name);
            (o.id.clone(), Attempt { key: o.account.clone(), class: ErrorClass::Auth, what })
        })
        .chain(provider.oauth.iter().filter_map(|o| {
            let account = state.vertex.get(&o.id)?;
            let what = refused_hint(&account, &account.refused()?);
            Some((o.id.clone(), Attempt { key: o.account.clone(), class: ErrorClass::Auth, what }))
        }))
        .collect()
}

/// What to do about a Vertex service account whose token exchange was refused.
fn refused_hint(account: &service_account::AccountState, why: &str) -> String {
    format!(
        "{why}; the service account key may be disabled or deleted, or the clock wrong: fix it or replace {}",
        account.account.var
    )
}

fn login_hint(provider: &str) -> String {
    format!("needs login: its refresh was refused; run `keyrelay oauth {}`", provider.replace('_', "-"))
}

/// One call on one key: the key attached, the answer checked (the whole JSON body, or the
/// first bytes of a stream). Every failure is classified.
fn attempt<M: Mode>(
    state: &AppState,
    provider: &ProviderConfig,
    request: &UpstreamRequest,
    lease: &Lease,
) -> Result<(u16, M), Failure> {
    match &lease.secret {
        Some(secret) => {
            let request = match (provider.family, &state.config().gemini_cli_project) {
                (Family::CodeAssist, Some(project)) => code_assist::with_project(request.clone(), project),
                _ => request.clone(),
            };
            // A Vertex API key is an express-mode key: express mode's base, not a project's.
            let request = match provider.family {
                Family::Vertex if !provider.base_from_env => {
                    vertex::rebase(request, &provider.base, vertex::EXPRESS_BASE)
                }
                _ => request,
            };
            call(state, provider, with_key(provider, request, secret))
        }
        None if provider.family == Family::Vertex => vertex_attempt(state, provider, request, &lease.key_id),
        None => oauth_attempt(state, provider, request, &lease.key_id),
    }
}

/// A call with a Vertex service account: sent to its project's base (unless `VERTEX_API_BASE`
/// is set) with its token, taken now (exchanged first when expiry is near); after a 401 one
/// forced exchange and one more call.
fn vertex_attempt<M: Mode>(
    state: &AppState,
    provider: &ProviderConfig,
    request: &UpstreamRequest,
    id: &str,
) -> Result<(u16, M), Failure> {
    let account =
        state.vertex.get(id).ok_or_else(|| Failure::transient("service account no longer configured".into()))?;
    let request = match provider.base_from_env {
        true => request.clone(),
        false => vertex::rebase(request.clone(), &provider.base, &state.config().vertex.account_base(&account.account)),
    };
    let endpoint = service_account::Http { client: &state.client };
    let token = account.access(&endpoint, &clock::now_ms, None).map_err(|e| exchange_failure(&account, e))?;
    match call(state, provider, vertex::with_token(request.clone(), &token)) {
        Err(f) if f.status == 401 => {
            log::info!("vertex {}: 401 from the API; exchanging for a new token once", account.masked);
            let again =
                account.access(&endpoint, &clock::now_ms, Some(&token)).map_err(|e| exchange_failure(&account, e))?;
            call(state, provider, vertex::with_token(request.clone(), &again))
        }
        other => other,
    }
}

fn exchange_failure(account: &service_account::AccountState, e: service_account::AccessError) -> Failure {
    match e {
        service_account::AccessError::Refused(why) => Failure {
            class: ErrorClass::Auth,
            what: refused_hint(account, &why),
            retry_after: None,
            error: None,
            status: 0,
            needs_login: true,
        },
        service_account::AccessError::Failed(why) => Failure::transient(format!("token exchange failed: {why}")),
    }
}

/// A call with an OAuth credential: its token taken now (refreshed first when expiry is near),
/// and after a 401 one forced refresh and one more call; a second 401 fails like any.
fn oauth_attempt<M: Mode>(
    state: &AppState,
    provider: &ProviderConfig,
    request: &UpstreamRequest,
    id: &str,
) -> Result<(u16, M), Failure> {
    let cred = state.oauth.get(id).ok_or_else(|| Failure::transient("OAuth credential no longer configured".into()))?;
    let config = state.config();
    let endpoint = crate::oauth::endpoint::Http { client: &state.client, endpoints: &config.oauth_endpoints };
    let access = cred.access(&endpoint, &clock::now_ms, None).map_err(|e| access_failure(provider, e))?;
    let scoped;
    let request = match provider.family {
        Family::CodeAssist => {
            scoped = with_account_project(state, provider, &cred, &access.token, request)?;
            &scoped
        }
        _ => request,
    };
    match call(state, provider, oauth_request(provider, request, &access)) {
        Err(f) if f.status == 401 => {
            log::info!("{} {}: 401 from the API; refreshing its token once", provider.name, cred.account);
            let again =
                cred.access(&endpoint, &clock::now_ms, Some(&access.token)).map_err(|e| access_failure(provider, e))?;
            call(state, provider, oauth_request(provider, request, &again))
        }
        other => other,
    }
}

/// A Code Assist request with the project of its call: `GEMINI_CLI_PROJECT_ID`, else the
/// account's own, found at its first use (`oauth::project`) with the token just taken.
fn with_account_project(
    state: &AppState,
    provider: &ProviderConfig,
    cred: &crate::oauth::refresh::CredentialState,
    token: &Secret,
    request: &UpstreamRequest,
) -> Result<UpstreamRequest, Failure> {
    let project = match &state.config().gemini_cli_project {
        Some(project) => project.clone(),
        None => {
            let found = crate::oauth::project::find(&state.client, &provider.base, cred, token);
            let (project, tier) = found.map_err(|e| Failure {
                class: e.class,
                what: format!("{} (finding its Code Assist project)", e.what),
                retry_after: None,
                error: None,
                status: 0,
                needs_login: false,
            })?;
            // The tier just learnt ranks the credential from the next pick on.
            if let Some(tier) = tier {
                let priority = crate::oauth::tier::priority(&tier);
                lock(&state.pool).set_priority(&provider.name, &cred.id, priority);
            }
            project
        }
    };
    Ok(code_assist::with_project(request.clone(), &project))
}

/// The request with the credential's bearer token, sent to the credential's own base when
/// it names one (Qwen's `resource_url`) and `<PROVIDER>_API_BASE` is not set.
fn oauth_request(
    provider: &ProviderConfig,
    request: &UpstreamRequest,
    access: &crate::oauth::refresh::Access,
) -> UpstreamRequest {
    let mut req = with_key(provider, request.clone(), &access.token);
    let base = access.resource_url.as_deref().filter(|_| !provider.base_from_env).map(providers::resource_base);
    if let (Some(base), Some(path)) = (base, req.url.strip_prefix(&provider.base)) {
        req.url = format!("{base}{path}");
    }
    req
}

fn access_failure(provider: &ProviderConfig, e: crate::oauth::refresh::AccessError) -> Failure {
    match e {
        crate::oauth::refresh::AccessError::NeedsLogin => Failure {
            class: ErrorClass::Auth,
            what: login_hint(&provider.name),
            retry_after: None,
            error: None,
            status: 0,
            needs_login: true,
        },
        crate::oauth::refresh::AccessError::Failed(why) => Failure::transient(format!("token refresh failed: {why}")),
    }
}

/// `request` with `key` attached the way the provider expects it (Azure's in `api-key`). iFlow's calls are signed with
/// the key too, each in a session of its own and stamped now.
fn with_key(provider: &ProviderConfig, request: UpstreamRequest, key: &Secret) -> UpstreamRequest {
    if provider.name == providers::azure::NAME {
        return providers::azure::with_key(request, key);
    }
    // Bedrock's key pairs sign each attempt with the time it is sent (SigV4).
    if provider.family == Family::Bedrock {
        return providers::bedrock::with_key(request, key, &provider.region, clock::now_ms());
    }
    if provider.name != "iflow" {
        return providers::with_key(provider.family, request, key);
    }
    // A session id needs to be unique, not secret: without the random source, the clock's
    // nanoseconds will do.
    let random = crate::oauth::login::random_bytes(16).ok().and_then(|b| <[u8; 16]>::try_from(b).ok());
    let random = random.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        nanos.to_le_bytes()
    });
    providers::iflow::sign(request, key, &providers::iflow::session_id(random), clock::now_ms())
}

/// Sends a request that carries its credential and checks the answer (`Mode::take`).
fn call<M: Mode>(state: &AppState, provider: &ProviderConfig, keyed: UpstreamRequest) -> Result<(u16, M), Failure> {
    let started = Instant::now();
    let mut response = state.client.send(&keyed).map_err(|e| Failure::transient(format!("upstream error ({e})")))?;
    state.metrics.upstream_latency(&provider.name, started.elapsed());
    if (200..300).contains(&response.status) {
        let body = M::take(&mut response.body, provider.family)?;
        return Ok((response.status, body));
    }
    let mut bytes = upstream::read_all(&mut response.body).unwrap_or_default();
    let parsed: Value = if provider.family == Family::Bedrock {
        // Bedrock names the error in a header or `__type`: put it where the classifier reads.
        let normalised = providers::bedrock::error_body(&response.headers, &bytes);
        bytes = normalised.to_string().into_bytes();
        normalised
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let class = providers::errors::classify(response.status, &parsed);
    let retry_after = providers::errors::retry_hint(&response.headers, &parsed, clock::now_ms());
    let error = providers::openai::upstream_error(response.status, &bytes);
    let what = format!("{} ({}: {})", class.describe(), response.status, error.message);
    Err(Failure { class, what, retry_after, error: Some(Box::new(error)), status: response.status, needs_login: false })
}

/// Reads a whole answer and checks it is JSON and no error object.
fn read_whole(body: &mut Box<dyn Read + Send>) -> Result<Json, Failure> {
    let bytes = upstream::read_all(body).map_err(|e| {
        Failure::transient(if upstream::is_timeout(&e) {
            "timed out reading the response".into()
        } else {
            format!("response body cut off: {e}")
        })
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        // Some OpenAI-compatible upstreams answer 200 with an error object.
        Ok(v)
            if v.get("error").is_some_and(|e| !e.is_null())
                && v.get("choices").is_none()
                && v.get("data").is_none() =>
        {
            Err(error_in_body(&v, &bytes))
        }
        Ok(value) => Ok(Json { value, bytes }),
        Err(_) => Err(Failure::transient("upstream answered 2xx with a body that is not JSON".into())),
    }
}

/// The most a stream may send before its first event (keep-alive comments, an unfinished
/// event): an upstream that never sends one cannot grow the proxy's memory, since the read
/// timeout never fires while bytes keep coming.
const MAX_BEFORE_FIRST_EVENT: usize = 4 << 20;

/// Reads until the stream's first event is complete (comments and pings before it do not
/// commit the stream to the key); returns every byte read, for the stream relay to parse
/// again. An error as the first event is a failure before the first byte reached the client,
/// so it still rotates (or answers with a proper status).
fn read_first_event(body: &mut Box<dyn Read + Send>, family: Family) -> Result<Vec<u8>, Failure> {
    let mut seen = Vec::new();
    let mut parser = Framing::of(family);
    let mut events = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while events.is_empty() {
        match body.read(&mut buf) {
            Ok(0) => {
                parser.finish(&mut events);
                if events.is_empty() {
                    return Err(Failure::transient("stream closed before its first event".into()));
                }
            }
            Ok(n) => {
                if seen.len() + n > MAX_BEFORE_FIRST_EVENT {
                    return Err(Failure::transient("the stream sent 4 MiB without an event".into()));
                }
                seen.extend_from_slice(&buf[..n]);
                // Bytes that cannot be read after a whole first event are the committed
                // stream's problem (an in-band error after that event), not this attempt's.
                if let Err(why) = parser.feed(&buf[..n], &mut events) {
                    if events.is_empty() {
                        return Err(Failure::transient(why));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if upstream::is_timeout(&e) => {
                return Err(Failure::transient("timed out waiting for the first event of the stream".into()));
            }
            Err(e) => return Err(Failure::transient(format!("stream failed before its first event: {e}"))),
        }
    }
    let first = &events[0];
    if family == Family::Bedrock && providers::bedrock::is_exception(first) {
        let parsed: Value = serde_json::from_str(&first.data).unwrap_or(Value::Null);
        let message = parsed.get("message").and_then(Value::as_str).unwrap_or(&first.data);
        let kind = first.name.as_deref().unwrap_or("");
        let error = providers::bedrock::error_value(kind, message);
        // The status the same exception has outside a stream decides its class.
        let mut classified = error.clone();
        classified["error"]["code"] = Value::from(providers::bedrock::exception_status(kind));
        return Err(error_in_body(&classified, error.to_string().as_bytes()));
    }
    if let Ok(v) = serde_json::from_str::<Value>(&first.data) {
        if v.get("error").is_some_and(|e| !e.is_null()) || first.name.as_deref() == Some("error") {
            return Err(error_in_body(&v, first.data.as_bytes()));
        }
    }
    Ok(seen)
}

/// An error object that came with a 2xx status (in the body or as a stream's first event):
/// classified by the status it names (`code`), else as an upstream failure.
fn error_in_body(v: &Value, bytes: &[u8]) -> Failure {
    let error = v.get("error").unwrap_or(v);
    let status = error.get("code").and_then(Value::as_u64).filter(|c| (400..600).contains(c)).map_or(502, |c| c as u16);
    let class = providers::errors::classify(status, v);
    let retry_after = providers::errors::retry_hint(&[], v, clock::now_ms());
    let api_error = providers::openai::upstream_error(status, bytes);
    let what = format!("{} ({status} in a 2xx answer: {})", class.describe(), api_error.message);
    Failure { class, what, retry_after, error: Some(Box::new(api_error)), status, needs_login: false }
}

/// A success with the tokens of a usage object in OpenAI's names, or in Anthropic's (whose
/// `input_tokens` leaves out the prompt tokens read from or written to the cache).
pub fn usage_outcome(usage: &Value) -> Outcome {
    let n = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    // Bedrock's Converse names them `inputTokens`, `outputTokens`, `cacheReadInputTokens`, ...
    if usage.get("prompt_tokens").is_none() && usage.get("inputTokens").is_some() {
        return usage_outcome(&providers::bedrock::openai_usage(usage));
    }
    if usage.get("prompt_tokens").is_none() && usage.get("input_tokens").is_some() {
        let prompt = n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens");
        return Outcome::Success { prompt_tokens: prompt, completion_tokens: n("output_tokens") };
    }
    Outcome::Success { prompt_tokens: n("prompt_tokens"), completion_tokens: n("completion_tokens") }
}

fn list(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no attempt was made".into();
    }
    attempts.iter().map(|a| format!("{} {}", a.key, a.what)).collect::<Vec<_>>().join("; ")
}

/// Picks the status (man/keyrelay.1, HTTP API, errors) for a request that got no answer.
fn final_error(state: &AppState, provider: &ProviderConfig, model: &str, stop: Stop, attempts: &[Attempt]) -> ApiError {
    let name = &provider.name;
    let retry_after = |until: u64| until.saturating_sub(clock::now_ms()).div_ceil(clock::SECOND).max(1);
    match stop {
        Stop::Busy => {
            ApiError::of(ErrorKind::KeysBusy, format!("every key of {name} stayed busy until GLOBAL_TIMEOUT"))
                .with_retry_after(1)
        }
        Stop::Deadline => ApiError::of(
            ErrorKind::Timeout,
            format!("GLOBAL_TIMEOUT passed while rotating the keys of {name}: {}", list(attempts)),
        ),
        Stop::CoolingUntil(until) => cooling(name, retry_after(until), attempts),
        Stop::NoneLeft => {
            let all_limits = !attempts.is_empty()
                && attempts.iter().all(|a| matches!(a.class, ErrorClass::RateLimit | ErrorClass::Quota));
            let soonest = lock(&state.pool).soonest_free(name, model, clock::now_ms());
            match (all_limits, soonest) {
                (true, Some(until)) => cooling(name, retry_after(until), attempts),
                _ => {
                    let n = attempts.len();
                    let keys = if n == 1 { "key" } else { "keys" };
                    ApiError::of(
                        ErrorKind::UpstreamError,
                        format!("all {n} {keys} of {name} failed: {}", list(attempts)),
                    )
                }
            }
        }
    }
}

fn cooling(provider: &str, seconds: u64, attempts: &[Attempt]) -> ApiError {
    ApiError::of(
        ErrorKind::AllKeysCooling,
        format!("every key of {provider} is cooling down; the soonest is free in {seconds} s ({})", list(attempts)),
    )
    .with_retry_after(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_under_either_naming() {
        let success = |p, c| Outcome::Success { prompt_tokens: p, completion_tokens: c };
        assert_eq!(usage_outcome(&serde_json::json!({"prompt_tokens": 3, "completion_tokens": 4})), success(3, 4));
        assert_eq!(usage_outcome(&serde_json::json!({"input_tokens": 5, "output_tokens": 6})), success(5, 6));
        assert_eq!(usage_outcome(&Value::Null), success(0, 0));
        let bedrock = serde_json::json!({"inputTokens": 5, "outputTokens": 6, "cacheReadInputTokens": 10});
        assert_eq!(usage_outcome(&bedrock), success(15, 6));
    }
}
