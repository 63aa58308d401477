//! `ward-coordinator`: JIT requests, reviews and approvals; signed grants
//! delivered to a fleet of ward agents.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ward_coordinator::{config::Config, enrolment, server, signer, workflow::Workflow};

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
    /// The fleet CA: `client_ca` and `[enrolment] ca_key`.
    Ca {
        #[command(subcommand)]
        command: CaCmd,
    },
    /// One-time join tokens for hosts.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Hosts of the fleet.
    Host {
        #[command(subcommand)]
        command: HostCmd,
    },
    /// People who signed in through an identity provider.
    Person {
        #[command(subcommand)]
        command: PersonCmd,
    },
}

#[derive(Subcommand)]
enum PersonCmd {
    /// Forget who a name is bound to: every session issued for it ends at
    /// its next call (on every replica), its claims stop deciding, and the
    /// next sign-in binds the name afresh. Audited as `person_forgotten`.
    Forget {
        #[arg(long, short, default_value = "/etc/ward-coordinator/coordinator.toml")]
        config: PathBuf,
        name: String,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Make the fleet CA at `client_ca` and `[enrolment] ca_key`, and the
    /// coordinator's own certificate at `cert`/`key` (issued by it, naming
    /// each --name). Existing files are never overwritten.
    Init {
        #[arg(long, short, default_value = "/etc/ward-coordinator/coordinator.toml")]
        config: PathBuf,
        /// The coordinator's DNS names (agents and people dial one).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
    /// Issue a certificate from the fleet CA, its key made here: a person
    /// (`alice`), or with --server another coordinator replica.
    Issue {
        #[arg(long, short, default_value = "/etc/ward-coordinator/coordinator.toml")]
        config: PathBuf,
        /// The one identity the certificate names.
        name: String,
        /// Write NAME.pem and NAME.key here.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[arg(long)]
        server: bool,
        /// How long it lasts, e.g. 90d.
        #[arg(long, default_value = "365d")]
        ttl: humantime::Duration,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make a single-use join token for a host, printed once; the store
    /// keeps only its hash. On the host: `wardd --join`, the token on stdin.
    Create {
        #[arg(long, short, default_value = "/etc/ward-coordinator/coordinator.toml")]
        config: PathBuf,
        /// The host it enrols (its certificate will name HOST.agent).
        #[arg(long)]
        host: String,
        /// How long it may be used, e.g. 15m.
        #[arg(long, default_value = "15m")]
        ttl: humantime::Duration,
        /// Print {"token", "host", "expires_unix_ms"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Revoke a host: its streams close, and it can neither renew its
    /// certificate nor join again. Its certificate ends at its expiry.
    Revoke {
        #[arg(long, short, default_value = "/etc/ward-coordinator/coordinator.toml")]
        config: PathBuf,
        host: String,
    },
}

/// Who runs a local administrative command, for the audit trail.
fn local_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("local:{user}")
}

fn enrolment(c: &Config) -> anyhow::Result<&ward_coordinator::config::EnrolmentSection> {
    c.enrolment
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the config has no [enrolment] section (listen, ca_key)"))
}

/// The workflow `config` (read from `path`) describes, for a local
/// administrative command.
fn workflow(path: &std::path::Path, c: &Config) -> anyhow::Result<Workflow> {
    server::workflow(c).with_context(|| format!("{}", path.display()))
}

/// An error and its causes, `: `-joined, leaving out a cause whose text
/// the message already ends with (several library errors show their
/// source's text as well as returning it).
fn render(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || s.ends_with(&text) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&text);
    }
    s
}

fn main() -> ExitCode {
    ward_proto::logging::init("ward-coordinator");
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-coordinator: error: {}", render(&e));
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
            let wf = workflow(&config, &c)?;
            println!(
                "{}: ok; signing key {}",
                config.display(),
                wf.rules.signer.public_hex()
            );
            Ok(())
        }
        Cmd::Ca {
            command: CaCmd::Init { config, names },
        } => {
            let c = Config::load(&config)?;
            let e = enrolment(&c)?;
            enrolment::init_ca(&c.client_ca, &e.ca_key, "ward fleet CA")?;
            let ca = enrolment::FleetCa::load(&c.client_ca, &e.ca_key, e.agent_cert_ttl)?;
            let first = names.first().cloned().unwrap_or_default();
            enrolment::issue_named(
                &ca,
                &first,
                &names,
                true,
                std::time::Duration::from_secs(365 * 86_400),
                &c.cert,
                &c.key,
            )?;
            println!(
                "fleet CA: {} (key {})",
                c.client_ca.display(),
                e.ca_key.display()
            );
            println!("  sha256 {}", ca.fingerprint);
            println!(
                "coordinator certificate: {} for {}",
                c.cert.display(),
                names.join(", ")
            );
            Ok(())
        }
        Cmd::Ca {
            command:
                CaCmd::Issue {
                    config,
                    name,
                    out,
                    server,
                    ttl,
                },
        } => {
            let c = Config::load(&config)?;
            let e = enrolment(&c)?;
            let ca = enrolment::FleetCa::load(&c.client_ca, &e.ca_key, e.agent_cert_ttl)?;
            let (cert, key) = (
                out.join(format!("{name}.pem")),
                out.join(format!("{name}.key")),
            );
            enrolment::issue_named(
                &ca,
                &name,
                std::slice::from_ref(&name),
                server,
                ttl.into(),
                &cert,
                &key,
            )?;
            println!("{} and {}", cert.display(), key.display());
            Ok(())
        }
        Cmd::Token {
            command:
                TokenCmd::Create {
                    config,
                    host,
                    ttl,
                    json,
                },
        } => {
            let c = Config::load(&config)?;
            let e = enrolment(&c)?;
            let ca = enrolment::FleetCa::load(&c.client_ca, &e.ca_key, e.agent_cert_ttl)?;
            let mut wf = workflow(&config, &c)?;
            let (token, expires) =
                wf.create_join_token(&ca.fingerprint, &host, ttl.into(), &local_actor())?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": token, "host": host, "expires_unix_ms": expires})
                );
            } else {
                println!("{token}");
                eprintln!(
                    "single use, for host {host}, valid {ttl}; on {host}: pipe it into `wardd --join` \
                     (with [coordinator] join_url set in agent.toml)"
                );
            }
            Ok(())
        }
        Cmd::Host {
            command: HostCmd::Revoke { config, host },
        } => {
            let c = Config::load(&config)?;
            let mut wf = workflow(&config, &c)?;
            wf.revoke_host(&host, &local_actor())?;
            println!("host {host} revoked: its streams close within a second on every replica");
            Ok(())
        }
        Cmd::Person {
            command: PersonCmd::Forget { config, name },
        } => {
            let c = Config::load(&config)?;
            let mut wf = workflow(&config, &c)?;
            if wf.forget_person(&name, &local_actor())? {
                println!("{name} forgotten: their sessions end at their next call");
                Ok(())
            } else {
                anyhow::bail!("nobody is bound to the name {name}")
            }
        }
        Cmd::Serve { config } => {
            let c = Config::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .context("handling SIGTERM")?;
                let shutdown = async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                };
                server::run(c, shutdown)
                    .await
                    .with_context(|| format!("serving {}", config.display()))
            })
        }
    }
}
