//! Integration tests: the real binary over loopback against mock upstreams the tests start.

mod support;

mod cli;
mod errors;
mod files;
mod man;
mod native;
mod resilience;
mod routes;
mod streaming;
