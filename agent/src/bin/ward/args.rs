//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ward: attribute-based, just-in-time access control enforced in the kernel.
///
/// ward protects files, executables and network destinations on this host.
/// Policies decide who may touch them; everyone else gets time-boxed grants
/// that expire in the kernel at their deadline.
///
/// Exit status: 0 success; 1 error; 2 usage error; 3 wardd is not running;
/// 4 not allowed; 5 invalid argument (the message names the field); 6 no
/// such grant; 10 `explain` answered deny.
#[derive(Parser)]
#[command(name = "ward", version, propagate_version = true)]
pub struct Cli {
    /// wardd's local socket.
    #[arg(
        long,
        global = true,
        env = "WARD_SOCKET",
        default_value = "/run/ward/agent.sock"
    )]
    pub socket: PathBuf,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the coordinator (login, whoami, request, requests,
/// approve, deny, release, audit; and revoke when given). You are your
/// client certificate when --tls-cert and --tls-key are given, and else
/// the session `ward login` saved.
#[derive(Args, Clone, Default)]
pub struct CoordinatorArgs {
    /// The coordinator, e.g. https://coordinator.example:7444.
    #[arg(long, global = true, env = "WARD_COORDINATOR")]
    pub coordinator: Option<String>,
    /// The name in the coordinator's certificate, if not the URL's host.
    #[arg(long, global = true, env = "WARD_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// CA that signed the coordinator's certificate.
    #[arg(long, global = true, env = "WARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Your client certificate (its name is who you are) and key.
    #[arg(long, global = true, env = "WARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "WARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show the agent's state: enforcement hooks, grants, table sizes.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List grants: yours, or all for root and the admin group.
    Grants {
        /// Include expired and revoked grants.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Grant time-boxed access (root or the admin group).
    ///
    /// Paths ending in `/` grant the whole tree. Example:
    /// ward grant --user alice --read /var/log/prod/ --for 15m --reason "INC-123"
    Grant(GrantArgs),
    /// Sign in to the coordinator through your identity provider.
    ///
    /// The coordinator starts the sign-in (OAuth device grant, RFC 8628)
    /// and ward shows an address and a code: open it in any browser, sign
    /// in there, and ward saves the session it gets back to
    /// $XDG_CONFIG_HOME/ward/session.json (else ~/.config/ward/), readable
    /// by you only. Later coordinator commands without --tls-cert use it
    /// until it expires. With --json, the prompt and the result are each
    /// one JSON line on stdout.
    ///
    /// Example: ward login --coordinator https://ward.example:7444 --tls-ca ca.pem
    Login {
        /// The issuer to sign in through, when the coordinator trusts
        /// several; the first configured by default.
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// End the saved session at the coordinator that issued it (refused
    /// from then on, on every replica), then forget it here. Your other
    /// sessions (another terminal, the web page) go on.
    ///
    /// If the coordinator cannot be reached, the session file is kept and
    /// the command fails: the session would still hold there. --local
    /// forgets it here only.
    ///
    /// Example: ward logout --tls-ca ca.pem
    Logout {
        /// Only forget the session here; it stays valid at the coordinator
        /// until it expires.
        #[arg(long)]
        local: bool,
        #[arg(long)]
        json: bool,
    },
    /// Who the coordinator says you are: your name, how you signed in, and
    /// the groups and attributes policy sees from your identity provider.
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// Ask the coordinator for access (JIT).
    ///
    /// Example: ward request --read /srv/prod/ --on host=db1 --for 30m --reason "INC-42".
    /// Refused (exit 4) if policy does not make you eligible or you ask for
    /// longer than it allows; an unknown host is exit 5.
    Request(RequestArgs),
    /// List requests at the coordinator.
    Requests {
        /// Only yours.
        #[arg(long)]
        mine: bool,
        /// Only those waiting for review.
        #[arg(long)]
        pending: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve someone else's request (reviewers whom policy allows).
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Deny a request: one denial denies.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// End your own access early.
    Release {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The coordinator's audit trail; `ward audit verify` checks this
    /// host's.
    Audit {
        #[command(subcommand)]
        action: Option<AuditCommand>,
        /// How far back, e.g. 1h.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        since: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// End a grant at once: at the coordinator when --coordinator is set
    /// (the request id), else on this host's agent (the grant id).
    Revoke {
        /// The grant id.
        id: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "revoked with ward revoke")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Show kernel decisions and grant lifecycle events.
    Events {
        /// Keep watching for new events.
        #[arg(short, long)]
        follow: bool,
        /// How many recent events to show first.
        #[arg(long, default_value_t = 50)]
        recent: u32,
        #[arg(long)]
        json: bool,
    },
    /// Would a subject be allowed an operation on an object, and why?
    ///
    /// Answers from the kernel's own tables and clock. Exit status 0 when
    /// allowed, 10 when denied.
    Explain(ExplainArgs),
    /// Check, apply and show the Cedar policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Report what the running kernel lets ward enforce (needs root).
    ///
    /// Exit status: 0 everything works; 2 ward can enforce only part of its
    /// model here (each missing piece is named); 1 a check could not run.
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of this host's audit files, without the agent.
    ///
    /// Every record names the SHA-256 of the one before it, across
    /// rotations, so an edited, inserted or deleted record breaks the
    /// chain; the first break is named by file and line. "Starts mid-chain"
    /// means older files were rotated away. The head printed is the last
    /// record's hash: compare it with the "audit chain head" lines wardd
    /// logs to the journal. Exit status 0 intact, 11 broken.
    Verify {
        /// Audit files (each with its rotated .N files).
        #[arg(
            value_name = "FILE",
            default_values = ["/var/log/ward/audit.jsonl", "/var/log/ward/lifecycle.jsonl"]
        )]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check Cedar policy files without the agent: syntax, ward's schema,
    /// and what the kernel table can express.
    ///
    /// Every error names the file, line, column and policy id. With
    /// --directory, the policies are also compiled over that directory and
    /// the size of the result is reported. Exit status 0 valid, 5 invalid.
    Check {
        /// Cedar policy files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// An attribute directory (TOML, or Cedar entities JSON) to compile
        /// against.
        #[arg(long, value_name = "FILE")]
        directory: Option<PathBuf>,
        /// Host labels the policies may test, e.g. --label env=prod.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make the agent re-read its policy files and directory now and apply
    /// them (root or the admin group).
    ///
    /// The new table is swapped in at once. If anything is wrong, nothing
    /// changes: the previous policy keeps enforcing, and every error is
    /// printed. Exit status 0 applied, 5 refused.
    Apply {
        #[arg(long)]
        json: bool,
    },
    /// Show the policy in force: each policy, how many kernel entries it
    /// decided, the next time-window boundary, and any refused reload.
    Show {
        /// Print each policy's text too.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone, Default)]
#[group(required = true, multiple = false)]
pub struct SubjectArgs {
    /// A user name.
    #[arg(long)]
    pub user: Option<String>,
    /// A numeric uid.
    #[arg(long)]
    pub uid: Option<u32>,
    /// A workload: cgroup path relative to the cgroup root.
    #[arg(long)]
    pub workload: Option<String>,
}

#[derive(Args)]
pub struct GrantArgs {
    #[command(flatten)]
    pub subject: SubjectArgs,
    #[command(flatten)]
    pub targets: TargetArgs,
    /// How long, e.g. 15m or 2h.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Why (required): a ticket or an incident.
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub ticket: Option<String>,
    /// Grant id; generated when absent.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// What access is for: operations on objects (grants and requests alike).
#[derive(Args, Clone, Default)]
pub struct TargetArgs {
    /// Read access to a file, or a tree ending in `/` (repeatable).
    #[arg(long, value_name = "PATH")]
    pub read: Vec<String>,
    /// Write access (repeatable).
    #[arg(long, value_name = "PATH")]
    pub write: Vec<String>,
    /// Exec of an executable (repeatable).
    #[arg(long, value_name = "PATH")]
    pub exec: Vec<String>,
    /// Connect to ADDR[/PREFIX]:PORTS, e.g. 10.0.0.5:5432 (repeatable).
    #[arg(long, value_name = "NET")]
    pub connect: Vec<String>,
}

#[derive(Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Where: host=NAME, or KEY=VALUE host labels (repeatable).
    #[arg(long = "on", value_name = "host=NAME|KEY=VALUE", required = true)]
    pub on: Vec<String>,
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Why (required unless policy waives it with @reason("optional")).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub ticket: Option<String>,
    /// Start later, e.g. 2026-12-01T09:00:00Z (default: at approval).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub at: Option<std::time::SystemTime>,
    /// For a workload instead of yourself: a directory workload, by name or
    /// cgroup path. The request is decided for the workload, and you must
    /// be permitted `request_for` on it.
    #[arg(long)]
    pub workload: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub subject: ExplainSubject,
    /// The caller's audit login uid, as the kernel checks it: a human who
    /// ran `sudo` keeps their login uid, and their rules with it.
    #[arg(long, value_name = "UID")]
    pub login_uid: Option<u32>,
    /// A cgroup the user's process runs in (relative to the cgroup root),
    /// e.g. `system.slice/app.service`: its workload rules apply too.
    #[arg(long, value_name = "CGROUP", conflicts_with = "workload")]
    pub in_cgroup: Option<String>,
    #[command(flatten)]
    pub target: ExplainTarget,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone, Default)]
#[group(required = false, multiple = false)]
pub struct ExplainSubject {
    /// A user name (default: yourself).
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub uid: Option<u32>,
    #[arg(long)]
    pub workload: Option<String>,
}

#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct ExplainTarget {
    #[arg(long, value_name = "PATH")]
    pub read: Option<String>,
    #[arg(long, value_name = "PATH")]
    pub write: Option<String>,
    #[arg(long, value_name = "PATH")]
    pub exec: Option<String>,
    /// ADDR:PORT
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: Option<String>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 15m or 2h: {e}"))?;
    if d.is_zero() {
        return Err("a grant must last longer than 0s".into());
    }
    Ok(d)
}

fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is not a time like 2026-12-01T09:00:00Z: {e}"))
}
