//! `ward-coordinator`: JIT requests, reviews and approvals; signed grants
//! delivered to a fleet of ward agents.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ward_coordinator::{config::Config, server, signer};

/// ward-coordinator: the JIT workflow for a fleet of ward agents.
///
/// People ask for access (`ward request`); Cedar policy decides who is
/// eligible, for how long, and how many reviewers must approve. Approved
/// access becomes an ed25519-signed grant, delivered over mutual TLS to the
/// agents of exactly the hosts it targets; revocation and release reach them
/// at once. Everything is audited.
#[derive(Parser)]
#[command(name = "ward-coordinator", version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve (mutual TLS only).
    Serve {
        #[arg(long, short, default_value = "/etc/ward-coordinator/coordinator.toml")]
        config: PathBuf,
    },
    /// Write a new ed25519 signing key (PKCS#8) and print its public key,
    /// which agents list in `coordinator.public_keys`.
    Keygen {
        /// Where to write the key; refused if it exists.
        out: PathBuf,
    },
    /// Check the config, policy and directory, then exit.
    Check {
        #[arg(long, short, default_value = "/etc/ward-coordinator/coordinator.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    ward_proto::logging::init("ward-coordinator");
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-coordinator: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Keygen { out } => {
            let s = signer::Signer::create(&out)?;
            println!("{}", s.public_hex());
            Ok(())
        }
        Cmd::Check { config } => {
            let c = Config::load(&config)?;
            let wf = server::workflow(&c)?;
            println!(
                "{}: ok; signing key {}",
                config.display(),
                wf.rules.signer.public_hex()
            );
            Ok(())
        }
        Cmd::Serve { config } => {
            let c = Config::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                let shutdown = async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                };
                server::run(c, shutdown).await
            })
        }
    }
}
