//! One file per subcommand; each exposes `run`.

pub mod add_key;
pub mod export_env;
pub mod launcher;
pub mod models;
pub mod oauth;
pub mod serve;
pub mod status;
