//! Integration tests: the real binary over loopback against mock upstreams the tests start.

mod support;

mod cli;
mod errors;
mod routes;
mod streaming;
