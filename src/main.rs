//! The binary: runs `keyrelay::run` and turns its result into an exit code and a message.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match keyrelay::run(&args) {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(keyrelay::Error::Usage(msg)) => {
            eprintln!("keyrelay: {msg}");
            let commands = keyrelay::SUBCOMMANDS.join("|");
            eprintln!("usage: keyrelay [--dir DIR] <{commands}> [...]; keyrelay --help for more");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("keyrelay: {e}");
            ExitCode::from(2)
        }
    }
}
