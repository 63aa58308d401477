//! `ward`: inspect and operate the ward agent on this host.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// ward: attribute-based, just-in-time access control enforced in the kernel.
///
/// ward protects files, executables and network destinations on this host.
/// Policies decide who may touch them; everyone else requests access, which
/// is granted for a short window and expires in the kernel at its deadline.
#[derive(Parser)]
#[command(name = "ward", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what the running kernel lets ward enforce.
    ///
    /// Tries the real thing: reads the active LSM list, loads and attaches
    /// a BPF LSM program that allows everything, reads struct layouts from
    /// the kernel's BTF, and attaches a cgroup connect4 program to a
    /// throwaway cgroup. Needs root.
    ///
    /// Exit status: 0 when everything works; 2 when ward can enforce only
    /// part of its model on this kernel (each missing piece is named);
    /// 1 when a check could not run.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ward: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor { json } => ward_agent_cli::doctor(json),
    }
}

mod ward_agent_cli {
    use std::process::ExitCode;

    use anyhow::{Context, Result};
    use ward_agent::doctor;

    pub fn doctor(json: bool) -> Result<ExitCode> {
        let code = doctor::print(&doctor::run(), json).context("encoding report")?;
        Ok(ExitCode::from(code as u8))
    }
}
