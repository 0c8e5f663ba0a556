//! The background refresher: every `OAUTH_REFRESH_INTERVAL` it refreshes the OAuth tokens near
//! expiry, so requests seldom wait for a refresh. It starts with `serve` and is joined at
//! shutdown. Its first check runs at start (the start-up validation `SKIP_OAUTH_INIT_CHECK`
//! turns off), in its own thread so the server does not wait for token endpoints; with the
//! check skipped the first comes one interval after start (a request refreshes on demand
//! meanwhile).

use crate::clock;
use crate::oauth::endpoint::Http;
use crate::state::AppState;
use crossbeam_channel::{RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Refresher {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Refresher {
    pub fn start(state: Arc<AppState>) -> Refresher {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let check_at_start = !state.config().skip_oauth_init_check;
        let thread = std::thread::Builder::new()
            .name("oauth-refresh".into())
            .spawn(move || {
                if check_at_start {
                    refresh_due(&state);
                }
                // The interval is read each round, so a reload that changes it takes effect.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(state.config().oauth_refresh_interval) {
                    refresh_due(&state);
                }
            })
            .expect("spawning the OAuth refresher");
        Refresher { stop, thread }
    }

    /// Stops the thread (a refresh under way finishes first) and joins it.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Refreshes every credential near expiry, and says how many need a new login.
fn refresh_due(state: &AppState) {
    let config = state.config();
    let endpoint = Http { client: &state.client, endpoints: &config.oauth_endpoints };
    let refused = state.oauth.refresh_due(&endpoint, &clock::now_ms);
    if refused > 0 {
        log::warn!("{refused} OAuth credentials need a new login (see keyrelay status)");
    }
}
