//! The agent's core: grants from the store, compiled into the kernel.
//!
//! Every change is written to the store first and to the kernel second.
//! On start the kernel table is rebuilt from the store in one atomic swap,
//! so a crash between the two writes heals on restart: the kernel and the
//! store agree, and a grant that expired meanwhile is never re-armed.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use tokio::sync::broadcast;
use ward_abi::{Effect, Op};
use ward_proto::v1::{self as pb, GrantRecord, GrantState};

use super::{
    audit::{Audit, AuditError, Record},
    config::Config,
    grant::{self, Grantee, InvalidGrant, ValidGrant, unix_ms},
    policy::{CedarPolicy, POLICY_BASE, PolicyTable, Reload, host_env},
    repeats::{Pending, Repeats},
    store::{Store, StoreError, Stored},
};
use crate::{
    cgroup,
    enforcer::{
        Caller, Chosen, Enforcer, EnforcerConfig, EnforcerError, Entry, EventKind, EventStream,
        Expiry, Hooks, KernelEvent, NetPattern, Object, PathPattern, Probe, Subject,
    },
};

mod explain;
mod failpoints;
mod ldap;
mod lifecycle;
mod policy_sync;
mod protections;
mod records;

pub use failpoints::failpoint_panic;
use failpoints::{failpoint, failpoint_error};
pub use lifecycle::subject_uid;
use protections::{protection_entries, reaches_own_files};

/// Kernel rule ids at and above this are protections from the config
/// (index added). Cedar policy rules use [`POLICY_BASE`] up to here, and
/// grants the store's ids, below both.
const PROTECTION_BASE: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] InvalidGrant),
    #[error("no grant `{0}`")]
    NotFound(String),
    #[error("grant `{0}` already exists with different contents; grant ids are never reused")]
    Conflict(String),
    #[error("grant `{0}` has already ended")]
    Ended(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kernel: {0}")]
    Enforcer(#[from] EnforcerError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "config: enforce.managed_cgroups names cgroups, and this host has no cgroup v2 hierarchy"
    )]
    NoCgroupHierarchy,
    #[error("config: enforce.managed_cgroups[{index}]: {source}")]
    ManagedCgroup { index: usize, source: EnforcerError },
    #[error("test failpoint {0}")]
    Failpoint(&'static str),
    #[error("not eligible: {0}")]
    NotEligible(#[from] super::policy::Ineligible),
    #[error("policy refused; the previous policy keeps enforcing:\n{0}")]
    Policy(#[from] super::policy::PolicyError),
    #[error(
        "no [policy] section in the agent's config: this agent enforces only [protect] and grants"
    )]
    NoPolicy,
}

/// Facts fixed at start.
#[derive(Debug, Clone)]
pub struct Startup {
    pub kernel: String,
    pub file_and_exec: bool,
    pub network_hook: &'static str,
    pub adopted: bool,
    pub started: SystemTime,
}

pub struct Engine {
    enforcer: Enforcer,
    store: Store,
    audit: Audit,
    /// Denies and refusals counted, not each written.
    repeats: Repeats,
    config: Config,
    /// The config's `[protect]` entries, by name.
    protections: Vec<(String, Entry)>,
    /// The Cedar policy and its compiler, when `[policy]` names one.
    cedar: Option<CedarPolicy>,
    /// The LDAP source of people and groups, when `[policy.ldap]` names one.
    ldap: ldap::LdapState,
    /// When the policy sources were last checked for edits.
    policy_checked: std::time::Instant,
    /// The config file's modification time: host labels are reloaded.
    config_stamp: Option<SystemTime>,
    cgroup_root: Option<PathBuf>,
    events: broadcast::Sender<pb::Event>,
    /// The last events, for watchers that ask for history.
    recent: std::collections::VecDeque<pb::Event>,
    /// Hands memory freed by grant churn back to the kernel.
    trimmer: crate::memory::Trimmer,
    /// When the listed paths were last re-resolved.
    objects_checked: std::time::Instant,
    objects_refreshes: u32,
    /// Cgroups the kernel could not list, as last reported.
    cgroups_missed: u64,
    pub startup: Startup,
    /// What wardd counts as it goes, for `/metrics`.
    pub metrics: std::sync::Arc<super::metrics::Metrics>,
}

/// How many past events the agent keeps in memory.
const RECENT_EVENTS: usize = 1000;

impl Engine {
    /// Loads (or adopts) the enforcer, opens the store and the audit log,
    /// and makes the kernel match the store.
    pub fn start(config: Config) -> Result<(Engine, EventStream), EngineError> {
        let cgroup_root = cgroup::cgroup2_mount().ok();
        let Chosen {
            mut enforcer,
            file_and_exec,
            network_hook,
        } = load_enforcer(&config, cgroup_root.as_deref())?;
        // Self-protection: no managed subject signals or traces this
        // process, or unmounts the pins' filesystem (the hooks; ward's
        // files are protections below).
        enforcer.guard(std::process::id())?;
        let adopted = enforcer.adopted();
        let stream = enforcer.events()?;
        let store = Store::open(&config.agent.state_dir)?;
        let audit = Audit::open(
            &config.agent.audit_log,
            &config.agent.lifecycle_log(),
            config.agent.audit_max_bytes,
            config.agent.audit_keep,
        )?;
        for (i, path) in config.enforce.managed_cgroups.iter().enumerate() {
            let root = cgroup_root.as_ref().ok_or(EngineError::NoCgroupHierarchy)?;
            // Followed by path: a unit's cgroup that does not exist yet (a
            // oneshot), or is created again on restart, is managed from
            // the moment it exists.
            enforcer
                .manage_path(root, path)
                .map_err(|source| EngineError::ManagedCgroup { index: i, source })?;
            if !root.join(path).exists() {
                tracing::info!(cgroup = %path, "managed cgroup does not exist yet; managed from its creation");
            }
        }
        let protections = protection_entries(&config);
        let cedar = match &config.policy {
            None => None,
            Some(section) => {
                let env = host_env(&config.agent.host_labels, file_and_exec);
                // With an LDAP source, its last good read until the first
                // read of this run.
                let ldap_defs = if section.ldap.is_some() {
                    ldap::read_cache(&config)
                } else {
                    Vec::new()
                };
                let p = CedarPolicy::load(section, env, cgroup_root.clone(), ldap_defs)
                    .map_err(EngineError::Policy)?;
                for u in &p.unresolved {
                    tracing::warn!(principal = %u, "policy principal not enforced");
                }
                if let Some(root) = &cgroup_root {
                    for path in &p.workload_paths {
                        enforcer.manage_path(root, path)?;
                    }
                }
                Some(p)
            }
        };
        let (events, _) = broadcast::channel(4096);
        let config_stamp = config_mtime(&config);
        let ldap_url = config
            .policy
            .as_ref()
            .and_then(|p| p.ldap.as_ref())
            .map(|l| l.url.clone())
            .unwrap_or_default();
        let mut engine = Engine {
            enforcer,
            store,
            audit,
            repeats: Repeats::default(),
            config,
            protections,
            cedar,
            ldap: ldap::LdapState {
                url: ldap_url,
                ..Default::default()
            },
            policy_checked: std::time::Instant::now(),
            config_stamp,
            cgroup_root,
            events,
            recent: std::collections::VecDeque::with_capacity(RECENT_EVENTS),
            trimmer: crate::memory::Trimmer::new(Duration::from_secs(1)),
            objects_checked: std::time::Instant::now(),
            objects_refreshes: 0,
            cgroups_missed: 0,
            metrics: Default::default(),
            startup: Startup {
                kernel: crate::kernel::release(),
                file_and_exec,
                network_hook,
                adopted,
                started: SystemTime::now(),
            },
        };
        engine.heal_audit()?;
        engine.reconcile()?;
        Ok((engine, stream))
    }

    pub fn status(&mut self) -> Result<pb::AgentStatus, EngineError> {
        let stats = self.enforcer.stats()?;
        Ok(pb::AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel: self.startup.kernel.clone(),
            file_and_exec_enforced: self.startup.file_and_exec,
            network_enforced: self.startup.network_hook != "none",
            network_hook: self.startup.network_hook.to_owned(),
            active_grants: self.store.count(GrantState::Active)?,
            path_rules: stats.path_rules as u64,
            net_rules: stats.net_rules as u64,
            events_lost: stats.events_lost,
            started_unix_ms: unix_ms(self.startup.started),
            adopted_pins: self.startup.adopted,
        })
    }

    /// Whether the kernel's maps and the store answer, cheaply: for
    /// `/healthz`, which may be probed often and must not hold the engine
    /// while every table is walked.
    pub fn health(&mut self) -> Result<(), EngineError> {
        self.enforcer.check()?;
        self.store.count(GrantState::Active)?;
        Ok(())
    }

    /// What the kernel and the store hold now, for one metrics scrape.
    pub fn snapshot(&mut self) -> Result<super::metrics::Snapshot, EngineError> {
        let stats = self.enforcer.stats()?;
        let l = &self.config.limits;
        let mut grants = Vec::new();
        for (state, name) in [
            (GrantState::Active, "active"),
            (GrantState::Scheduled, "scheduled"),
            (GrantState::Expired, "expired"),
            (GrantState::Revoked, "revoked"),
        ] {
            grants.push((name, self.store.count(state)?));
        }
        Ok(super::metrics::Snapshot {
            decisions: stats
                .decisions
                .iter()
                .map(|d| (d.op, d.outcome, d.n))
                .collect(),
            events_lost: stats.events_lost,
            tables: vec![
                (
                    "path_rules",
                    stats.path_rules as u64,
                    u64::from(l.max_path_rules),
                ),
                ("objects", stats.objects as u64, u64::from(l.max_objects)),
                (
                    "net_rules",
                    stats.net_rules as u64,
                    u64::from(l.max_net_rules),
                ),
                (
                    "managed_cgroups",
                    stats.managed_cgroups as u64,
                    u64::from(l.max_cgroups),
                ),
                (
                    "classed_principals",
                    stats.classed_subjects as u64,
                    u64::from(l.max_principals),
                ),
                ("held_files", stats.held_files, u64::from(l.max_held)),
                ("held_sockets", stats.held_sockets, u64::from(l.max_held)),
            ],
            grants,
            programs: stats.programs,
        })
    }
}

/// Boot-clock ns to Unix ms, by the offset between the clocks now.
fn boot_to_unix_ms(boot: u64) -> i64 {
    if boot == ward_abi::NEVER {
        return 0;
    }
    ((boot as i128 + crate::enforcer::wall_minus_boot_ns()) / 1_000_000) as i64
}

/// The enforcer, with the hooks the config asks for.
fn load_enforcer(
    config: &Config,
    cgroup_root: Option<&std::path::Path>,
) -> Result<Chosen, EngineError> {
    let sizes = EnforcerConfig {
        pin_dir: Some(config.agent.pin_dir.clone()),
        max_path_rules: config.limits.max_path_rules,
        max_objects: config.limits.max_objects,
        max_net_rules: config.limits.max_net_rules,
        max_cgroups: config.limits.max_cgroups,
        max_principals: config.limits.max_principals,
        max_held: config.limits.max_held,
        uid_ranges: config
            .enforce
            .managed_uids
            .iter()
            .map(|[a, b]| (*a, *b))
            .collect(),
        hooks: Hooks {
            lsm: false,
            cgroup_connect: None,
        },
    };
    let connect_cgroup = cgroup_root.map(|r| r.join(&config.enforce.connect_cgroup));
    Ok(Enforcer::load_with(
        config.enforce.hooks,
        sizes,
        connect_cgroup,
    )?)
}

fn config_mtime(c: &Config) -> Option<SystemTime> {
    let path = c.source.as_ref()?;
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
