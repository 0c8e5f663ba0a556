//! The configuration every property test (the `fuzz` modules) runs with: 256 cases, enough
//! for `cargo test` to stay quick; `PROPTEST_CASES` asks for more (`scripts/fuzz.sh`). Failures
//! are not saved to files: a failure found is pinned as an ordinary unit test instead.

use proptest::test_runner::Config;

pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    Config { cases, failure_persistence: None, ..Config::default() }
}
