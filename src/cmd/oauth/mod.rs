//! `keyrelay oauth ...`: the OAuth account commands, one file each.

pub mod import;
pub mod list;
pub mod refresh;

use crate::cli::{OauthArgs, OauthCommand};
use crate::config::Config;
use crate::error::Result;
use std::process::ExitCode;

pub fn run(config: Config, args: OauthArgs) -> Result<ExitCode> {
    match args.command {
        OauthCommand::List(args) => list::run(config, args),
        OauthCommand::Import(args) => import::run(config, args),
        OauthCommand::Refresh(args) => refresh::run(config, args),
    }
}
