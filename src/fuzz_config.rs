//! The configuration every property test (the `fuzz` modules) runs with: proptest's default
//! of 256 cases, enough for `cargo test` to stay quick, or the number in the environment
//! variable proptest reads for it (`scripts/fuzz.sh` asks for many more). Failures are not
//! saved to files: a failure found is pinned as an ordinary unit test instead.

use proptest::test_runner::Config;

pub fn config() -> Config {
    Config { failure_persistence: None, ..Config::default() }
}
