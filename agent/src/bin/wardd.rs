//! `wardd`: the ward agent daemon.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use ward_agent::{
    daemon::{config, server},
    doctor,
};

/// wardd: the ward host agent.
///
/// Enforces ward's decision table in the kernel (BPF LSM, or the cgroup
/// connect hooks where BPF LSM is unavailable), keeps grants durably, and
/// serves the ward.v1.Agent gRPC API on a unix socket and, if configured,
/// over mutual TLS. Enforcement is pinned under agent.pin_dir and outlives
/// the daemon: stopping or restarting it never opens anything.
#[derive(Parser)]
#[command(name = "wardd", version)]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Check the configuration file, and the Cedar policy and directory it
    /// names, then exit (0 valid, 1 invalid). Offline: a `[policy.ldap]`
    /// server is not contacted unless --read-ldap is given.
    #[arg(long)]
    check_config: bool,
    /// With --check-config: also read the `[policy.ldap]` server once, as
    /// the daemon would. An unreachable server or a failed bind is then an
    /// error; refused entries are listed by DN and attribute.
    #[arg(long, requires = "check_config")]
    read_ldap: bool,
    /// Report what the running kernel lets ward enforce, then exit
    /// (0 all available, 2 degraded, 1 a check could not run).
    #[arg(long)]
    check: bool,
    /// With --check: print JSON.
    #[arg(long, requires = "check")]
    json: bool,
    /// Join the coordinator's fleet with a one-time token (from
    /// `ward-coordinator token create`), read from standard input (or
    /// `WARD_JOIN_TOKEN`), never from the command line, where any local
    /// user could read it and join first. Then exit: makes this host's key,
    /// gets its certificate from `coordinator.join_url`, and writes the
    /// key, certificate, CA and signing keys where `[coordinator]` names
    /// them. wardd renews the certificate itself from then on.
    #[arg(long, conflicts_with_all = ["check", "check_config"])]
    join: bool,
}

/// The join token: `WARD_JOIN_TOKEN`, else the first line of stdin.
fn join_token() -> Result<String> {
    if let Ok(t) = std::env::var("WARD_JOIN_TOKEN") {
        return Ok(t);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the join token from standard input")?;
    let token = line.trim().to_owned();
    if token.is_empty() {
        anyhow::bail!("no join token: pipe it in (`wardd --join < token`) or set WARD_JOIN_TOKEN");
    }
    Ok(token)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match doctor::print(&doctor::run(), args.json) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => {
                eprintln!("wardd: error: encoding report: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // No core dumps (they would hold its keys) and no ptrace by non-root;
    // managed root is refused by the kernel hooks.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    ward_proto::logging::init("wardd");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    ward_agent::memory::limit_arenas();
    let config = config::Config::load(&args.config)?;
    if args.join {
        let token = join_token()?;
        let section = config
            .coordinator
            .as_ref()
            .context("joining needs a [coordinator] section with join_url")?;
        let host = config.host_name();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let until = rt
            .block_on(ward_agent::enrol::join(section, &host, &token))
            .context("joining the fleet")?;
        println!(
            "joined as {host}.agent; certificate {} until {} (renewed by wardd)",
            section.cert.display(),
            humantime::format_rfc3339_seconds(until)
        );
        return Ok(());
    }
    if args.check_config {
        if let Some(section) = &config.policy {
            let summary = ward_agent::daemon::policy::check_sources(
                section,
                &config.agent.host_labels,
                args.read_ldap,
            )
            .map_err(|e| anyhow::anyhow!("policy:\n{e}"))?;
            println!("policy: {summary}");
        }
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        server::run(config, shutdown).await.context("wardd")
    })
}
