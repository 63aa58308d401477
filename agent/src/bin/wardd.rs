//! `wardd`: the ward agent daemon.
//!
//! Today it offers `--check`, the same kernel report as `ward doctor`; the
//! serving daemon (gRPC control channel, durable grants) is tracked in the
//! agent issue and not built yet.

use std::process::ExitCode;

use clap::Parser;
use ward_agent::doctor;

/// wardd: the ward host agent.
#[derive(Parser)]
#[command(name = "wardd", version)]
struct Args {
    /// Report what the running kernel lets ward enforce, then exit
    /// (0 all available, 2 degraded, 1 a check could not run).
    #[arg(long)]
    check: bool,
    /// With --check: print JSON.
    #[arg(long, requires = "check")]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.check {
        eprintln!(
            "wardd: error: the serving daemon is not built yet; only `wardd --check` is available"
        );
        return ExitCode::from(64);
    }
    match doctor::print(&doctor::run(), args.json) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("wardd: error: encoding report: {e}");
            ExitCode::FAILURE
        }
    }
}
