//! One file per subcommand; each exposes `run`.

pub mod export_env;
pub mod models;
pub mod oauth;
pub mod serve;
pub mod status;
