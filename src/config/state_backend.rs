//! `STATE_BACKEND` and its companions (`REDIS_LEASE_TTL`, `REDIS_TIMEOUT`, `INSTANCE_ID`):
//! where the key pool's shared state lives (`keys::shared`).

use crate::secret::Secret;
use std::time::Duration;

/// `STATE_BACKEND`, `REDIS_LEASE_TTL` and `INSTANCE_ID`, parsed.
#[derive(Debug, Clone)]
pub struct StateBackend {
    /// None: the file backend (`key_usage.json` only). The URL may hold a password, so it is
    /// kept as a `Secret` and its password taught to the redactor.
    pub redis: Option<Secret>,
    pub lease_ttl: Duration,
    /// `REDIS_TIMEOUT`: connect, read and write budget of one Redis call; a request waits at
    /// most about this long for a Redis that stopped answering before going on with local
    /// state.
    pub timeout: Duration,
    pub instance: String,
}

impl StateBackend {
    /// From the variables' values (None when unset). `rediss://` is refused: this build has
    /// no TLS for Redis.
    pub fn parse(
        backend: Option<&str>,
        lease_ttl: Duration,
        timeout: Duration,
        instance: Option<&str>,
    ) -> Result<StateBackend, String> {
        let instance = instance.map(|i| i.trim().to_string()).unwrap_or_else(default_instance);
        let redis = match backend.map(str::trim) {
            None | Some("file") => None,
            Some(url) if url.starts_with("rediss://") => {
                return Err("STATE_BACKEND: rediss:// (TLS) is not supported by this build; use redis:// on a private network or through a TLS tunnel".into());
            }
            Some(url) if ["redis://", "redis+unix://", "unix://"].iter().any(|s| url.starts_with(s)) => {
                // The crate's own parser; its error is not shown since it may quote the URL.
                if redis::Client::open(url).is_err() {
                    return Err("STATE_BACKEND is not a valid redis:// URL".into());
                }
                Some(Secret::new(url))
            }
            Some(_) => return Err("STATE_BACKEND must be `file` or a redis://[:password@]host:port/db URL".into()),
        };
        if lease_ttl < Duration::from_millis(300) {
            return Err("REDIS_LEASE_TTL must be at least 0.3 seconds".into());
        }
        Ok(StateBackend { redis, lease_ttl, timeout, instance })
    }

    /// The password in the Redis URL, for the redactor.
    pub fn password(&self) -> Option<Secret> {
        let url = self.redis.as_ref()?.expose();
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let userinfo = rest.split_once('@').map(|(u, _)| u);
        let password = userinfo.map(|u| u.split_once(':').map_or(u, |(_, p)| p));
        let from_query = url.split_once("pass=").map(|(_, p)| p.split('&').next().unwrap_or(p));
        password.filter(|p| !p.is_empty()).or(from_query).filter(|p| !p.is_empty()).map(Secret::new)
    }
}

/// `hostname-pid`: unique per process on a host, and readable in `status`.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}", if host.is_empty() { "keyrelay" } else { host }, std::process::id())
}
