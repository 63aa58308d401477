//! `ward`: inspect and operate the ward agent on this host.

mod args;
mod commands;
mod login;
mod render;

use std::process::ExitCode;

use clap::Parser;

/// Exit statuses, documented in `ward --help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    // 2: usage errors, clap's own.
    /// The agent's socket did not answer.
    pub const DAEMON_DOWN: u8 = 3;
    pub const NOT_ALLOWED: u8 = 4;
    pub const INVALID: u8 = 5;
    pub const NOT_FOUND: u8 = 6;
    /// `ward explain`: the answer is deny.
    pub const DENIED: u8 = 10;
    /// `ward audit verify`: a hash chain is broken.
    pub const TAMPERED: u8 = 11;
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ward: error: starting the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ward: error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
