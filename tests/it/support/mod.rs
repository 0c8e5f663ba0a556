//! Test harness: a scripted mock upstream (tiny_http on 127.0.0.1:0), the keyrelay binary run
//! as a process against a temporary data directory, and a small raw HTTP client that can read
//! a streamed answer event by event. Everything is bounded by timeouts; nothing sleeps.

pub mod client;
pub mod eventstream;
pub mod mock;
pub mod proxy;
pub mod redis;

pub use client::{Answer, Client};
pub use mock::{Mock, MockReply, Recorded};
pub use proxy::{Proxy, TempDir, run_cli, run_cli_with_env};
pub use redis::Redis;

use std::time::Duration;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);
