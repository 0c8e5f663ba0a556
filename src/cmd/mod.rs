//! One file per subcommand; each exposes `run`.

pub mod models;
pub mod serve;
pub mod status;
