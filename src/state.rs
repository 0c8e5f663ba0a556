//! What every request handler shares: the current config, the upstream client, the key pool
//! and the model-list cache.

use crate::config::Config;
use crate::keys::pool::KeyPool;
use crate::oauth::refresh::Registry;
use crate::secret::Secret;
use crate::sync::lock;
use crate::upstream::Client;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::Instant;

pub struct AppState {
    config: RwLock<Arc<Config>>,
    pub client: Client,
    pub pool: Mutex<KeyPool>,
    /// Signalled whenever a key is released or an outcome recorded: requests waiting for a
    /// free key wait on it (no polling).
    pub pool_changed: Condvar,
    /// A pending "the pool changed" note for the `key_usage.json` writer (capacity 1: notes
    /// coalesce while one is pending).
    usage_tx: Sender<()>,
    pub usage_rx: Receiver<()>,
    /// Upstream model lists by provider, with when they were fetched.
    pub models: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// Where detailed request logs go, when they are on.
    pub request_logs: Option<PathBuf>,
    /// Embedding requests being batched together.
    pub embedding_batches: crate::embed_batch::Batches,
    /// What `/metrics` reports.
    pub metrics: crate::metrics::Metrics,
    /// Every OAuth credential's current tokens, by pool id; its own locks, never the pool's.
    pub oauth: Registry,
    /// Every Vertex service account's current token, by pool id; its own locks too.
    pub vertex: crate::oauth::service_account::Registry,
    /// The key pool's state shared with other instances (`STATE_BACKEND`); `Local` shares
    /// nothing. Called outside the pool's lock only.
    pub shared: Arc<dyn crate::keys::shared::SharedState>,
}

impl AppState {
    pub fn new(config: Config) -> AppState {
        let (usage_tx, usage_rx) = crossbeam_channel::bounded(1);
        AppState {
            client: Client::new(config.settings.timeouts()),
            pool: Mutex::new(KeyPool::new(&config, crate::clock::now_ms())),
            pool_changed: Condvar::new(),
            usage_tx,
            usage_rx,
            models: Mutex::new(HashMap::new()),
            request_logs: None,
            embedding_batches: Default::default(),
            metrics: Default::default(),
            oauth: Registry::new(&config.oauth),
            vertex: crate::oauth::service_account::Registry::new(&config.vertex.accounts),
            shared: crate::keys::shared::backend(&config.state),
            config: RwLock::new(Arc::new(config)),
        }
    }

    /// Tells the `key_usage.json` writer there is something to save; never blocks.
    pub fn usage_changed(&self) {
        let _ = self.usage_tx.try_send(());
    }

    /// The config in force now; a request keeps the one it started with.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Swaps in a reloaded config (SIGHUP): new keys join the pool, removed ones leave it,
    /// requests under way finish with what they had. Timeouts keep their start-up values.
    /// The redactor learns the new secrets first, so no answer under the new keys escapes it.
    pub fn reload(&self, config: Config) {
        crate::redact::install(config.redactor());
        self.oauth.sync(&config.oauth);
        self.vertex.sync(&config.vertex.accounts);
        // Tokens refreshed in memory only (stateless credentials) are not in the new config.
        let learned = self.oauth.secrets();
        crate::redact::learn(learned.iter().map(Secret::expose));
        let tokens = self.vertex.tokens();
        crate::redact::learn(tokens.iter().map(Secret::expose));
        lock(&self.pool).sync(&config);
        lock(&self.models).clear();
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
    }
}

impl crate::keys::PoolHost for AppState {
    fn pool(&self) -> &Mutex<KeyPool> {
        &self.pool
    }
    fn wake_waiters(&self) {
        self.pool_changed.notify_all();
    }
    fn usage_changed(&self) {
        AppState::usage_changed(self);
    }
    fn usage_signals(&self) -> &Receiver<()> {
        &self.usage_rx
    }
}
