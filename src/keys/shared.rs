//! Key-pool state shared by several keyrelay instances (`STATE_BACKEND=redis://...`).
//!
//! The local `KeyPool` still decides which key a request gets; this module only asks the
//! shared store to confirm it, outside the pool's lock. With the default `file` backend
//! (`Local`) every call is a no-op and the pool alone decides, as it always did.
//!
//! In Redis, each (key, model) has a sorted set of leases scored by their expiry: one Lua
//! script purges the expired ones, checks the key's shared cooldown and lockout, and takes a
//! lease only while fewer than the limit are held, all in one atomic step
//! (<https://redis.io/docs/latest/develop/interact/programmability/eval-intro/>). A renewal
//! thread pushes every live lease's expiry forward each third of `REDIS_LEASE_TTL`, so a
//! killed instance's slots come back by themselves within the TTL. Cooldowns and lockouts are
//! keys with a time to live, published on a channel that every instance's subscriber thread
//! applies to its own pool, waking its waiting requests, as do published releases.
//!
//! Redis being down or slow never fails a request: every call has a budget of `REDIS_TIMEOUT`
//! (200 ms), a failure switches this instance to its local state alone (one warning per
//! outage, the `keyrelay_state_backend_up` gauge at 0), and calls are retried with a back-off;
//! when Redis answers again the shared cooldowns and lockouts are taken in and the local ones
//! pushed back to it.

use super::PoolHost;
use crate::config::StateBackend;
use crate::keys::pool::Counters;
use crate::secret::Secret;
use crate::sync::lock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The pub/sub channel every instance listens on.
const CHANNEL: &str = "keyrelay:events";
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the subscriber looks up from its socket to see whether it should stop.
const SUBSCRIBER_TICK: Duration = Duration::from_millis(250);

/// The shared store's answer to "may this instance use (key, model) now?".
#[derive(Debug)]
pub enum Grant {
    /// A slot taken across instances: give it back with `release`.
    Leased(SharedLease),
    /// No shared store, or it cannot be reached now: the local pool's decision stands.
    Local,
    /// Every slot is held across instances; the soonest lease expires in this many ms.
    Full { expires_in: u64 },
    /// Cooling down (or, with `lockout`, the whole key locked out) for this many ms more;
    /// `transient`: a cooldown for transient failures only, which a probe may pass.
    Blocked { for_ms: u64, lockout: bool, transient: bool, reason: String },
}

/// One slot of (key, model) held in the shared store.
#[derive(Debug)]
pub struct SharedLease {
    id: String,
    set: String,
    key: String,
}

/// A block to tell the other instances about: a cooldown of (key, model), or with no model a
/// lockout of the whole key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub key: String,
    pub model: Option<String>,
    /// ms since the epoch.
    pub until: u64,
    pub reason: String,
    /// Where the ladder (or the lockout ladder) stands, so the next failure anywhere rests
    /// the key longer.
    pub step: u32,
    /// A cooldown for transient failures only (`Until::transient`): kept in Redis under a key
    /// of its own, which a half-open probe may pass and nothing else.
    pub transient: bool,
}

/// What the pool shares; `Local` (the file backend) shares nothing.
pub trait SharedState: Send + Sync {
    /// Takes one of (key, model)'s `limit` slots across instances. A `probe` (the local pool
    /// hands the key out while it rests for transient failures only) may pass a transient
    /// cooldown, one at a time.
    fn acquire(&self, key: &str, model: &str, limit: u32, probe: bool) -> Grant;
    /// Gives a slot back, adds what its request did to the key's counters for the day that
    /// began at `day`, and wakes the other instances' waiting requests.
    fn release(&self, lease: SharedLease, day: u64, counted: &Counters);
    /// Publishes a cooldown or lockout this instance has just recorded.
    fn block(&self, block: &Block, now: u64);
    /// Adds the shared view (leases by instance, shared cooldowns, the counters of the day
    /// that began at `day`) to a key report.
    fn annotate(&self, report: &mut Value, day: u64);
    /// Appends this backend's lines to the `/metrics` text.
    fn metrics(&self, out: &mut String);
    /// Starts the background threads (lease renewal, the subscriber).
    fn start(self: Arc<Self>, app: Arc<dyn PoolHost>) -> Background;
}

/// The file backend: the local pool is the whole truth.
pub struct Local;

impl SharedState for Local {
    fn acquire(&self, _: &str, _: &str, _: u32, _: bool) -> Grant {
        Grant::Local
    }
    fn release(&self, _: SharedLease, _: u64, _: &Counters) {}
    fn block(&self, _: &Block, _: u64) {}
    fn annotate(&self, _: &mut Value, _: u64) {}
    fn metrics(&self, _: &mut String) {}
    fn start(self: Arc<Self>, _: Arc<dyn PoolHost>) -> Background {
        Background::default()
    }
}

/// The backend for these settings.
pub fn backend(settings: &StateBackend) -> Arc<dyn SharedState> {
    match &settings.redis {
        Some(url) => match RedisState::new(url, settings) {
            Some(redis) => Arc::new(redis),
            None => Arc::new(Local),
        },
        None => Arc::new(Local),
    }
}

/// The background threads of a backend; `stop` ends and joins them.
#[derive(Default)]
pub struct Background {
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    pub fn stop(mut self) {
        drop(self.stop.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Where the link to Redis stands.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

pub struct RedisState {
    client: redis::Client,
    instance: String,
    ttl: Duration,
    timeout: Duration,
    /// Idle connections, one taken per call, so concurrent requests do not queue on one.
    idle: Mutex<Vec<redis::Connection>>,
    link: AtomicU8,
    /// While down: when the next call may try Redis again, and the back-off after that.
    retry: Mutex<(Instant, Duration)>,
    errors: AtomicU64,
    /// Push this instance's cooldowns and lockouts to Redis at the next chance (at start, and
    /// when Redis is back).
    resync: AtomicBool,
    next_lease: AtomicU64,
    /// Leases held by this instance: lease id -> its sorted set, for renewal.
    live: Mutex<HashMap<String, String>>,
    scripts: Scripts,
}

struct Scripts {
    acquire: redis::Script,
    renew: redis::Script,
    block: redis::Script,
    view: redis::Script,
}

/// KEYS: leases, cooldown, lockout, the key's models, transient cooldown. ARGV: lease id,
/// limit, TTL ms, model, '1' for a probe. Answers {0, 0} (leased), {1, ms until the soonest
/// lease expires}, {2, lockout ms, reason}, {3, cooldown ms, reason} or {4, transient
/// cooldown ms, reason} (which a probe passes, with a limit of one). Time is the server's, so
/// the instances' clocks do not matter.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local locked = redis.call('PTTL', KEYS[3])
if locked > 0 then return {2, locked, redis.call('GET', KEYS[3]) or ''} end
local cooling = redis.call('PTTL', KEYS[2])
if cooling > 0 then return {3, cooling, redis.call('GET', KEYS[2]) or ''} end
local soft = redis.call('PTTL', KEYS[5])
local limit = tonumber(ARGV[2])
if soft > 0 then
  if ARGV[5] ~= '1' then return {4, soft, redis.call('GET', KEYS[5]) or ''} end
  limit = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, math.max(1, tonumber(first[2]) - now), ''}
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('SADD', KEYS[4], ARGV[4])
return {0, 0, ''}
";

/// KEYS: lease sets. ARGV: TTL ms, then one lease id per key. Only leases still there are
/// renewed (XX): one released meanwhile stays released.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, set in ipairs(KEYS) do
  redis.call('ZADD', set, 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', set, 2 * ttl)
end
return #KEYS
";

/// KEYS: the cooldown or lockout key, the key's models. ARGV: reason, ms, model ('' for a
/// lockout), the event to publish. A shorter block never shortens a longer one.
const BLOCK: &str = r"
local ms = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
end
if ARGV[3] ~= '' then redis.call('SADD', KEYS[2], ARGV[3]) end
redis.call('PUBLISH', 'keyrelay:events', ARGV[4])
return 1
";

/// ARGV: today's start, then key ids. Per key: {lease model, lease id, ...}, {cooling model,
/// ms, `cool` or `soft` (transient), ...}, lockout ms, {counter, value, ...} of today.
const VIEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local leases, cooling = {}, {}
  for _, model in ipairs(redis.call('SMEMBERS', 'keyrelay:models:' .. id)) do
    for _, lease in ipairs(redis.call('ZRANGEBYSCORE', 'keyrelay:lease:' .. id .. '|' .. model, '(' .. now, '+inf')) do
      table.insert(leases, model)
      table.insert(leases, lease)
    end
    for _, kind in ipairs({'cool', 'soft'}) do
      local ms = redis.call('PTTL', 'keyrelay:' .. kind .. ':' .. id .. '|' .. model)
      if ms > 0 then
        table.insert(cooling, model)
        table.insert(cooling, tostring(ms))
        table.insert(cooling, kind)
      end
    end
  end
  local today = redis.call('HGETALL', 'keyrelay:today:' .. ARGV[1] .. ':' .. id)
  out[i - 1] = {leases, cooling, math.max(0, redis.call('PTTL', 'keyrelay:lock:' .. id)), today}
end
return out
";

/// One key in Redis: its leases as (model, lease id) pairs, its cooldowns as (model, ms left)
/// pairs, its lockout's ms left, and today's counters.
type KeyView = (Vec<String>, Vec<String>, u64, HashMap<String, u64>);

fn lease_set(key: &str, model: &str) -> String {
    format!("keyrelay:lease:{key}|{model}")
}

fn cooldown_key(key: &str, model: &str) -> String {
    format!("keyrelay:cool:{key}|{model}")
}

/// A cooldown for transient failures only: apart from the others, so a probe can pass it.
fn transient_key(key: &str, model: &str) -> String {
    format!("keyrelay:soft:{key}|{model}")
}

fn lockout_key(key: &str) -> String {
    format!("keyrelay:lock:{key}")
}

fn models_key(key: &str) -> String {
    format!("keyrelay:models:{key}")
}

/// A key's shared counters for the day that began at `day` (ms since the epoch).
fn today_key(key: &str, day: u64) -> String {
    format!("keyrelay:today:{day}:{key}")
}

/// Two days: long enough for the day's `status`, short enough to clean up after itself.
const COUNTERS_KEPT_MS: i64 = 2 * 24 * 3600 * 1000;

const COUNTER_NAMES: [&str; 5] = ["requests", "successes", "failures", "prompt_tokens", "completion_tokens"];

fn counter_fields(c: &Counters) -> [(&'static str, i64); 5] {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let values = [c.requests, c.successes, c.failures, c.prompt_tokens, c.completion_tokens];
    let mut out = [("", 0); 5];
    for (slot, (name, v)) in out.iter_mut().zip(COUNTER_NAMES.iter().zip(values)) {
        *slot = (name, n(v));
    }
    out
}

/// A published event: a release (just a wake-up) or a block to apply.
fn event(kind: &str, from: &str, block: Option<(&Block, u64)>) -> String {
    match block {
        Some((b, ms)) => {
            json!({"kind": kind, "from": from, "key": b.key, "model": b.model, "ms": ms, "reason": b.reason, "step": b.step,
                   "transient": b.transient})
        }
        None => json!({"kind": kind, "from": from}),
    }
    .to_string()
}

impl RedisState {
    fn new(url: &Secret, settings: &StateBackend) -> Option<RedisState> {
        let client = redis::Client::open(url.expose()).ok()?;
        Some(RedisState {
            client,
            instance: settings.instance.clone(),
            ttl: settings.lease_ttl,
            timeout: settings.timeout,
            idle: Mutex::new(Vec::new()),
            link: AtomicU8::new(UNKNOWN),
            retry: Mutex::new((Instant::now(), FIRST_BACKOFF)),
            errors: AtomicU64::new(0),
            resync: AtomicBool::new(true),
            next_lease: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            scripts: Scripts {
                acquire: redis::Script::new(ACQUIRE),
                renew: redis::Script::new(RENEW),
                block: redis::Script::new(BLOCK),
                view: redis::Script::new(VIEW),
            },
        })
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Runs `f` on a connection, or answers None at once while Redis is down and its next
    /// try is not due, and None after a failure (which marks it down).
    /// One Redis call on an idle connection, or a new one. A connection kept from before an
    /// outage (or a restart of Redis) fails at its first use: then every idle connection is
    /// dropped, since they all led to the same server, and the call is tried once more on a
    /// new connection before it counts as a failure.
    fn call<T>(&self, what: &str, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>) -> Option<T> {
        if !self.may_try() {
            return None;
        }
        let idle = lock(&self.idle).pop();
        let reused = idle.is_some();
        let mut conn = match idle.map_or_else(|| self.connect(), Ok) {
            Ok(conn) => conn,
            Err(e) => {
                self.failed(what, &e);
                return None;
            }
        };
        let mut result = f(&mut conn);
        if result.is_err() {
            lock(&self.idle).clear();
            if reused {
                result = self.connect().and_then(|mut fresh| {
                    let again = f(&mut fresh);
                    conn = fresh;
                    again
                });
            }
        }
        match result {
            Ok(value) => {
                lock(&self.idle).push(conn);
                self.succeeded();
                Some(value)
            }
            Err(e) => {
                self.failed(what, &e);
                None
            }
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    /// Up: always. Down: only once the back-off has passed, and then only this caller until
    /// the next back-off, so an outage costs requests nothing but one probe per period.
    fn may_try(&self) -> bool {
        if self.link.load(Ordering::Relaxed) != DOWN {
            return true;
        }
        let mut retry = lock(&self.retry);
        let now = Instant::now();
        if now < retry.0 {
            return false;
        }
        retry.0 = now + retry.1;
        retry.1 = (retry.1 * 2).min(MAX_BACKOFF);
        true
    }

    fn failed(&self, what: &str, e: &redis::RedisError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let unreachable = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error();
        if !unreachable {
            // Redis answered, with an error: a bug or a misconfigured server, not an outage.
            log::warn!("STATE_BACKEND: Redis refused {what}: {}", crate::redact::text(&e.to_string()));
            return;
        }
        if self.link.swap(DOWN, Ordering::Relaxed) != DOWN {
            lock(&self.idle).clear();
            *lock(&self.retry) = (Instant::now() + FIRST_BACKOFF, FIRST_BACKOFF * 2);
            let why = crate::redact::text(&e.to_string()).into_owned();
            log::warn!(
                "STATE_BACKEND: Redis is not answering ({what}: {why}); this instance goes on with its own key state, so the instances may together exceed a key's limits until Redis is back"
            );
        }
    }

    fn succeeded(&self) {
        match self.link.swap(UP, Ordering::Relaxed) {
            UP => {}
            DOWN => {
                *lock(&self.retry) = (Instant::now(), FIRST_BACKOFF);
                self.resync.store(true, Ordering::Relaxed);
                log::warn!("STATE_BACKEND: Redis answers again; sharing key state with the other instances");
            }
            _ => log::info!("STATE_BACKEND: sharing key state through Redis as instance {}", self.instance),
        }
    }

    fn is_up(&self) -> bool {
        self.link.load(Ordering::Relaxed) == UP
    }

    /// Pushes the expiry of every lease this instance holds; when Redis has just come back,
    /// first this instance's cooldowns and lockouts.
    /// What Redis holds for these keys (None when it cannot be reached).
    fn view(&self, ids: &[String], day: u64) -> Option<Vec<KeyView>> {
        if ids.is_empty() {
            return Some(Vec::new());
        }
        let mut invocation = self.scripts.view.prepare_invoke();
        invocation.arg(day);
        for id in ids {
            invocation.arg(id);
        }
        self.call("view", |c| invocation.invoke::<Vec<KeyView>>(c))
    }

    /// Takes in the cooldowns and lockouts Redis holds for this instance's keys (set while
    /// this instance could not hear of them), then pushes its own.
    fn resync(&self, app: &dyn PoolHost) {
        let now = crate::clock::now_ms();
        let ids: Vec<String> = lock(app.pool()).status(now).into_iter().map(|k| k.id).collect();
        let Some(view) = self.view(&ids, 0) else { return };
        let mut shared = Vec::new();
        for (id, (_, cooling, locked, _)) in ids.iter().zip(view) {
            let block = |model: Option<&str>, ms: u64, transient: bool| Block {
                key: id.clone(),
                model: model.map(String::from),
                until: now + ms,
                reason: "cooling down on another instance".into(),
                step: 0,
                transient,
            };
            for triple in cooling.chunks(3) {
                shared.push(block(Some(&triple[0]), triple[1].parse().unwrap_or(0), triple[2] == "soft"));
            }
            if locked > 0 {
                shared.push(block(None, locked, false));
            }
        }
        if !shared.is_empty() {
            let mut pool = lock(app.pool());
            shared.iter().for_each(|b| pool.apply_block(b));
            drop(pool);
            log::info!("STATE_BACKEND: took in {} cooldowns and lockouts from Redis", shared.len());
        }
        app.wake_waiters();
        app.usage_changed();
        let blocks = lock(app.pool()).blocks(now);
        for block in &blocks {
            self.block(block, now);
        }
    }

    fn renew(&self, app: &dyn PoolHost) {
        if self.resync.swap(false, Ordering::Relaxed) {
            self.resync(app);
            if !self.is_up() {
                self.resync.store(true, Ordering::Relaxed);
            }
        }
        let live: Vec<(String, String)> = lock(&self.live).iter().map(|(id, set)| (id.clone(), set.clone())).collect();
        if live.is_empty() {
            if !self.is_up() {
                self.call("ping", |c| redis::cmd("PING").query::<String>(c));
            }
            return;
        }
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation.arg(self.ttl_ms());
        for (id, set) in &live {
            invocation.key(set).arg(id);
        }
        self.call("renew", |c| invocation.invoke::<i64>(c));
    }

    /// Reads the channel until told to stop, reconnecting after a back-off when it breaks.
    fn subscribe(&self, app: &dyn PoolHost, stop: &Receiver<()>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.listen(app, stop) {
                Ok(()) => return,
                Err(_) => match stop.recv_timeout(backoff) {
                    Err(RecvTimeoutError::Timeout) => backoff = (backoff * 2).min(MAX_BACKOFF),
                    _ => return,
                },
            }
        }
    }

    /// One subscription: Ok when told to stop, Err when the connection broke.
    fn listen(&self, app: &dyn PoolHost, stop: &Receiver<()>) -> redis::RedisResult<()> {
        let mut conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(SUBSCRIBER_TICK))?;
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(CHANNEL)?;
        // Events missed while unsubscribed may have freed slots: let waiters look again.
        app.wake_waiters();
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return Ok(());
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    let payload: String = msg.get_payload().unwrap_or_default();
                    self.apply(app, &payload);
                }
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies another instance's event to the local pool, and wakes waiting requests.
    fn apply(&self, app: &dyn PoolHost, payload: &str) {
        let Ok(event) = serde_json::from_str::<Value>(payload) else { return };
        if event["kind"] == "block" && event["from"] != self.instance.as_str() {
            let (Some(key), Some(ms)) = (event["key"].as_str(), event["ms"].as_u64()) else { return };
            let block = Block {
                key: key.to_string(),
                model: event["model"].as_str().map(String::from),
                until: crate::clock::now_ms() + ms,
                reason: event["reason"].as_str().unwrap_or("shared").to_string(),
                step: event["step"].as_u64().map_or(0, |s| s.min(u64::from(u32::MAX)) as u32),
                transient: event["transient"].as_bool().unwrap_or(false),
            };
            lock(app.pool()).apply_block(&block);
            app.usage_changed();
        }
        app.wake_waiters();
    }
}

impl SharedState for RedisState {
    fn acquire(&self, key: &str, model: &str, limit: u32, probe: bool) -> Grant {
        let lease = format!("{}#{}", self.instance, self.next_lease.fetch_add(1, Ordering::Relaxed));
        let set = lease_set(key, model);
        let mut invocation = self.scripts.acquire.prepare_invoke();
        invocation.key(&set).key(cooldown_key(key, model)).key(lockout_key(key)).key(models_key(key));
        invocation.key(transient_key(key, model));
        invocation.arg(&lease).arg(limit).arg(self.ttl_ms()).arg(model).arg(if probe { "1" } else { "0" });
        let Some(answer) = self.call("acquire", |c| invocation.invoke::<(i64, u64, String)>(c)) else {
            return Grant::Local;
        };
        let reason = || crate::redact::text(&answer.2).into_owned();
        match answer.0 {
            0 => {
                lock(&self.live).insert(lease.clone(), set.clone());
                Grant::Leased(SharedLease { id: lease, set, key: key.to_string() })
            }
            1 => Grant::Full { expires_in: answer.1 },
            2 => Grant::Blocked { for_ms: answer.1, lockout: true, transient: false, reason: reason() },
            4 => Grant::Blocked { for_ms: answer.1, lockout: false, transient: true, reason: reason() },
            _ => Grant::Blocked { for_ms: answer.1, lockout: false, transient: false, reason: reason() },
        }
    }

    fn release(&self, lease: SharedLease, day: u64, counted: &Counters) {
        lock(&self.live).remove(&lease.id);
        let message = event("release", &self.instance, None);
        let mut pipe = redis::pipe();
        pipe.atomic().zrem(&lease.set, &lease.id).ignore();
        if counted.requests > 0 {
            let today = today_key(&lease.key, day);
            for (field, n) in counter_fields(counted) {
                pipe.hincr(&today, field, n).ignore();
            }
            pipe.pexpire(&today, COUNTERS_KEPT_MS).ignore();
        }
        pipe.publish(CHANNEL, message).ignore();
        self.call("release", |c| pipe.query::<()>(c));
    }

    fn block(&self, block: &Block, now: u64) {
        let ms = block.until.saturating_sub(now);
        if ms == 0 {
            return;
        }
        let (name, model) = match &block.model {
            Some(model) if block.transient => (transient_key(&block.key, model), model.as_str()),
            Some(model) => (cooldown_key(&block.key, model), model.as_str()),
            None => (lockout_key(&block.key), ""),
        };
        let message = event("block", &self.instance, Some((block, ms)));
        let mut invocation = self.scripts.block.prepare_invoke();
        invocation.key(name).key(models_key(&block.key)).arg(&block.reason).arg(ms).arg(model).arg(message);
        self.call("block", |c| invocation.invoke::<i64>(c));
    }

    fn annotate(&self, report: &mut Value, day: u64) {
        let ids: Vec<String> = report["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["id"].as_str().map(String::from))
            .collect();
        let view = self.view(&ids, day);
        report["state_backend"] = json!({"kind": "redis", "up": view.is_some(), "instance": self.instance});
        let Some(view) = view else { return };
        let keys = report["keys"].as_array_mut().into_iter().flatten();
        for (key, (leases, cooling, locked, today)) in keys.zip(view) {
            let leases: Vec<Value> = leases
                .chunks(2)
                .map(|pair| {
                    let instance = pair[1].rsplit_once('#').map_or(pair[1].as_str(), |(i, _)| i);
                    json!({"model": pair[0], "instance": instance})
                })
                .collect();
            let cooldowns: Vec<Value> = cooling
                .chunks(3)
                .map(|triple| {
                    let ms: u64 = triple[1].parse().unwrap_or(0);
                    json!({"model": triple[0], "seconds_left": ms.div_ceil(1000), "transient": triple[2] == "soft"})
                })
                .collect();
            let today: serde_json::Map<String, Value> =
                COUNTER_NAMES.iter().map(|n| (n.to_string(), json!(today.get(*n).copied().unwrap_or(0)))).collect();
            key["shared"] = json!({"in_flight": leases.len(), "leases": leases, "cooldowns": cooldowns,
                "locked_seconds_left": locked.div_ceil(1000), "today": today});
        }
    }

    fn metrics(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP keyrelay_state_backend_up Whether the shared state backend (Redis) answers.");
        let _ = writeln!(out, "# TYPE keyrelay_state_backend_up gauge");
        let _ = writeln!(out, "keyrelay_state_backend_up {}", u8::from(self.is_up()));
        let _ = writeln!(out, "# HELP keyrelay_state_backend_errors_total Failed calls to the shared state backend.");
        let _ = writeln!(out, "# TYPE keyrelay_state_backend_errors_total counter");
        let _ = writeln!(out, "keyrelay_state_backend_errors_total {}", self.errors.load(Ordering::Relaxed));
    }

    fn start(self: Arc<Self>, app: Arc<dyn PoolHost>) -> Background {
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let period = self.ttl / 3;
        let renewer = {
            let (me, app, stop) = (self.clone(), app.clone(), stop.clone());
            std::thread::spawn(move || {
                me.renew(app.as_ref());
                while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(period) {
                    me.renew(app.as_ref());
                }
            })
        };
        let subscriber = std::thread::spawn(move || self.subscribe(app.as_ref(), &stop));
        Background { stop: Some(stop_tx), threads: vec![renewer, subscriber] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const TIMEOUT: Duration = Duration::from_millis(200);

    #[test]
    fn file_is_the_default_and_redis_urls_are_checked() {
        assert!(StateBackend::parse(None, TTL, TIMEOUT, None).unwrap().redis.is_none());
        assert!(StateBackend::parse(Some("file"), TTL, TIMEOUT, None).unwrap().redis.is_none());
        let s = StateBackend::parse(Some("redis://:hunter2-pass@127.0.0.1:6379/0"), TTL, TIMEOUT, Some("a")).unwrap();
        assert_eq!(s.instance, "a");
        assert_eq!(s.password().map(|p| p.expose().to_string()), Some("hunter2-pass".into()));
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
        let unix = StateBackend::parse(Some("redis+unix:///tmp/r.sock?pass=sekret-xyz"), TTL, TIMEOUT, None).unwrap();
        assert_eq!(unix.password().map(|p| p.expose().to_string()), Some("sekret-xyz".into()));
        assert!(StateBackend::parse(Some("redis://127.0.0.1"), TTL, TIMEOUT, None).unwrap().password().is_none());
        let tls = StateBackend::parse(Some("rediss://h:6380"), TTL, TIMEOUT, None).unwrap_err();
        assert!(tls.contains("not supported"), "{tls}");
        assert!(StateBackend::parse(Some("memcached://x"), TTL, TIMEOUT, None).is_err());
        assert!(StateBackend::parse(Some("redis://h"), Duration::from_millis(10), TIMEOUT, None).is_err());
    }

    #[test]
    fn the_default_instance_names_the_process() {
        let s = StateBackend::parse(None, TTL, TIMEOUT, None).unwrap();
        assert!(s.instance.ends_with(&format!("-{}", std::process::id())), "{}", s.instance);
    }

    #[test]
    fn an_unreachable_redis_grants_locally_and_says_so_in_metrics() {
        // Port 1 on loopback refuses at once.
        let settings = StateBackend::parse(Some("redis://127.0.0.1:1/0"), TTL, TIMEOUT, Some("t")).unwrap();
        let redis = RedisState::new(settings.redis.as_ref().unwrap(), &settings).unwrap();
        assert!(matches!(redis.acquire("openai:k", "m", 1, false), Grant::Local));
        // The next call is inside the back-off: answered without trying.
        assert!(matches!(redis.acquire("openai:k", "m", 1, false), Grant::Local));
        let mut out = String::new();
        redis.metrics(&mut out);
        assert!(out.contains("keyrelay_state_backend_up 0"), "{out}");
        assert!(out.contains("keyrelay_state_backend_errors_total 1\n"), "{out}");
    }
}
