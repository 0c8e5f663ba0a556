//! `keyrelay oauth ...`: the OAuth account commands, one file each.

pub mod import;
pub mod list;
pub mod login;
pub mod refresh;

use crate::cli::{OauthArgs, OauthCommand};
use crate::config::Config;
use crate::error::Result;
use std::process::ExitCode;

pub fn run(config: Config, args: OauthArgs) -> Result<ExitCode> {
    match args.command {
        OauthCommand::List(args) => list::run(config, args),
        OauthCommand::Import(args) => import::run(config, args),
        OauthCommand::GeminiCli(args) => login::run(config, args.into()),
        OauthCommand::GeminiCliAlias(args) => login::run(config, args.into()),
        OauthCommand::QwenCode(args) => login::run(config, args.into()),
        OauthCommand::QwenCodeAlias(args) => login::run(config, args.into()),
        OauthCommand::Iflow(args) => login::run(config, args.into()),
        OauthCommand::Refresh(args) => refresh::run(config, args),
    }
}
