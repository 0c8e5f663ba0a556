//! Integration tests: the real binary over loopback against mock upstreams the tests start.

mod support;

mod add_key;
mod agents_routes;
mod azure;
mod bedrock;
mod cli;
mod errors;
mod files;
mod front_door;
mod gemini_cli;
mod gemini_cli_tiers;
mod iflow;
mod layout;
mod man;
mod messages_api;
mod native;
mod oauth_login;
mod oauth_refresh;
mod oauth_store;
mod redis_scale;
mod resilience;
mod responses;
mod routes;
mod secrets;
mod streaming;
mod vertex;
