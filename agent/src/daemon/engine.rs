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
    config::{Config, HookMode},
    grant::{self, Grantee, InvalidGrant, ValidGrant, unix_ms},
    policy::{POLICY_BASE, PolicyEngine, Reload, host_env},
    repeats::{Pending, Repeats},
    store::{Store, StoreError, Stored},
};
use crate::{
    cgroup,
    enforcer::{
        Caller, Enforcer, EnforcerConfig, EnforcerError, Entry, EventKind, EventStream, Expiry,
        Hooks, KernelEvent, NetPattern, Object, PathPattern, Probe, Subject,
    },
};

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
    #[error("config: {0}")]
    Config(String),
    #[error("not eligible: {0}")]
    NotEligible(String),
    #[error("policy refused; the previous policy keeps enforcing:\n{0}")]
    Policy(String),
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
    protection: Vec<(String, Entry)>,
    policy: Option<PolicyEngine>,
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
        let (mut enforcer, file_and_exec, network_hook) =
            load_enforcer(&config, cgroup_root.as_deref())?;
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
            let root = cgroup_root
                .as_ref()
                .ok_or_else(|| EngineError::Config("no cgroup v2 hierarchy".into()))?;
            // Followed by path: a unit's cgroup that does not exist yet (a
            // oneshot), or is created again on restart, is managed from
            // the moment it exists.
            enforcer
                .manage_path(root, path)
                .map_err(|e| EngineError::Config(format!("enforce.managed_cgroups[{i}]: {e}")))?;
            if !root.join(path).exists() {
                tracing::info!(cgroup = %path, "managed cgroup does not exist yet; managed from its creation");
            }
        }
        let protection = protection_entries(&config);
        let policy = match &config.policy {
            None => None,
            Some(section) => {
                let env = host_env(&config.agent.host_labels, file_and_exec);
                let p = PolicyEngine::load(section, env, cgroup_root.clone())
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
        let mut engine = Engine {
            enforcer,
            store,
            audit,
            repeats: Repeats::default(),
            config,
            protection,
            policy,
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

    /// The last `n` events and a receiver for the ones after them.
    pub fn subscribe(&self, n: usize) -> (Vec<pb::Event>, broadcast::Receiver<pb::Event>) {
        let skip = self.recent.len().saturating_sub(n);
        (
            self.recent.iter().skip(skip).cloned().collect(),
            self.events.subscribe(),
        )
    }

    fn emit(&mut self, e: pb::Event) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(e.clone());
        let _ = self.events.send(e);
    }

    /// Every change is stored first, put in the kernel second and audited
    /// third, so one that wardd died in the middle of may lack its audit
    /// record. Only the last changes can (one runs at a time): each is
    /// looked up in the lifecycle log's tail, and a missing record is
    /// written now, marked `recovered`. A retried call finds the change
    /// stored and writes nothing, so each change is audited once.
    fn heal_audit(&mut self) -> Result<(), EngineError> {
        const CHANGES: usize = 8;
        const TAIL_BYTES: u64 = 256 * 1024;
        let latest = self.store.latest(CHANGES)?;
        if latest.is_empty() {
            return Ok(());
        }
        let written = lifecycle_tail(&self.config.agent.lifecycle_log(), TAIL_BYTES);
        for s in latest {
            let Some(g) = &s.record.grant else { continue };
            let kind = match GrantState::try_from(s.record.state) {
                Ok(GrantState::Active | GrantState::Scheduled) => "grant_pushed",
                Ok(GrantState::Revoked) => "grant_revoked",
                Ok(GrantState::Expired) => "grant_expired",
                _ => continue,
            };
            if written.contains(&(g.id.clone(), kind.to_owned())) {
                continue;
            }
            tracing::warn!(grant_id = %g.id, kind, "audit record missing after a restart; writing it");
            self.record(
                kind,
                Some(g),
                "agent",
                serde_json::json!({
                    "recovered": true,
                    "why": "wardd stopped between storing this change and auditing it",
                }),
                true,
            )?;
        }
        Ok(())
    }

    /// Rebuilds the kernel table from the store: grants that ended while
    /// the agent was down are marked expired, the rest re-armed, and the
    /// whole table swapped in at once.
    fn reconcile(&mut self) -> Result<(), EngineError> {
        let now = SystemTime::now();
        let mut live = std::collections::BTreeMap::new();
        for s in self
            .store
            .list(&[GrantState::Active, GrantState::Scheduled])?
        {
            let g = s.record.grant.clone().unwrap_or_default();
            let expired = grant::from_unix_ms(g.expires_at_unix_ms) <= now;
            if expired {
                self.end(
                    &s,
                    GrantState::Expired,
                    "agent",
                    "expired while the agent was down",
                )?;
                continue;
            }
            let valid =
                self.validate_stored(&g, now)
                    .and_then(|v| match self.list_workload(&v.grantee) {
                        Ok(()) => Ok(v),
                        Err(EngineError::Invalid(e)) => Err(e),
                        Err(e) => Err(InvalidGrant {
                            field: "subject.workload".into(),
                            reason: e.to_string(),
                        }),
                    });
            match valid {
                Ok(v) if v.not_before <= now => {
                    if s.record.state != GrantState::Active as i32 {
                        self.store.set_state(&g.id, GrantState::Active, 0)?;
                    }
                    live.insert(s.kernel_id, v.entries(s.kernel_id));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(grant_id = %g.id, error = %e, "stored grant no longer valid on this host; revoking");
                    self.end(
                        &s,
                        GrantState::Revoked,
                        "agent",
                        &format!("no longer valid: {e}"),
                    )?;
                }
            }
        }
        let policy = self.policy_entries(None)?;
        // Policy and grants go in together, in one generation swap.
        self.enforcer.replace(&policy, live)?;
        tracing::info!(
            protections = policy.len(),
            "kernel table rebuilt from the store"
        );
        Ok(())
    }

    /// A workload grantee must lie in a managed subtree; it is then listed
    /// itself, so the kernel applies its rules to its processes (and to
    /// its subtree's) on top of the managed ancestor's.
    fn list_workload(&mut self, grantee: &Grantee) -> Result<(), EngineError> {
        let Grantee::Workload { path, .. } = grantee else {
            return Ok(());
        };
        let root = self.cgroup_root.clone().ok_or_else(|| InvalidGrant {
            field: "subject.workload".into(),
            reason: "no cgroup v2 hierarchy on this host".into(),
        })?;
        if !self.enforcer.cgroup_managed(&root, path)? {
            return Err(InvalidGrant {
                field: "subject.workload".into(),
                reason: format!(
                    "`{path}` is not in a cgroup subtree ward manages \
                     (enforce.managed_cgroups or a policy workload); a grant there would \
                     reach processes ward does not enforce on"
                ),
            }
            .into());
        }
        self.enforcer.manage_path(&root, path)?;
        Ok(())
    }

    fn validate_stored(&self, g: &pb::Grant, now: SystemTime) -> Result<ValidGrant, InvalidGrant> {
        // A stored grant was valid when pushed; only its subject can have
        // gone away since, so the duration limit is not applied again.
        grant::validate(
            g,
            now,
            Duration::from_secs(u64::MAX / 4),
            self.cgroup_root.as_deref(),
        )
    }

    pub fn push(
        &mut self,
        g: pb::Grant,
        actor: &str,
    ) -> Result<pb::PushGrantResponse, EngineError> {
        let now = SystemTime::now();
        if let Some(existing) = self.store.get(&g.id)? {
            if existing.record.grant.as_ref() == Some(&g) {
                return Ok(pb::PushGrantResponse {
                    record: Some(existing.record),
                    created: false,
                });
            }
            return Err(EngineError::Conflict(g.id));
        }
        let valid = grant::validate(
            &g,
            now,
            self.config.agent.max_grant_duration,
            self.cgroup_root.as_deref(),
        )?;
        reaches_own_files(&self.config, &valid)?;
        self.list_workload(&valid.grantee)?;
        if let Some(p) = &self.policy {
            let start = valid.not_before.max(now);
            let duration = valid.expires_at.duration_since(start).unwrap_or_default();
            if let Err(why) = p.check_grant(&valid.grantee, &valid.targets, duration) {
                self.record(
                    "grant_refused",
                    Some(&g),
                    actor,
                    serde_json::json!({ "why": why }),
                    true,
                )?;
                return Err(EngineError::NotEligible(why));
            }
        }
        let state = if valid.not_before <= now {
            GrantState::Active
        } else {
            GrantState::Scheduled
        };
        // Durable first: a crash after this line is healed by reconcile().
        let stored = self.store.insert(&g, state, unix_ms(now))?;
        failpoint("after-store-insert");
        if state == GrantState::Active
            && let Err(e) = self
                .enforcer
                .grant(stored.kernel_id, valid.entries(stored.kernel_id))
        {
            self.store.delete(&g.id)?;
            return Err(e.into());
        }
        self.trimmer.changed();
        self.record(
            "grant_pushed",
            Some(&g),
            actor,
            grant_detail(&g, state),
            true,
        )?;
        Ok(pb::PushGrantResponse {
            record: Some(stored.record),
            created: true,
        })
    }

    pub fn revoke(
        &mut self,
        id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<GrantRecord, EngineError> {
        let stored = self
            .store
            .get(id)?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let state = stored.record.state;
        if state != GrantState::Active as i32 && state != GrantState::Scheduled as i32 {
            return Err(EngineError::Ended(id.to_owned()));
        }
        self.end(&stored, GrantState::Revoked, actor, reason)?;
        Ok(self
            .store
            .get(id)?
            .map(|s| s.record)
            .unwrap_or(stored.record))
    }

    /// Marks a grant ended (store first), then removes it from the kernel.
    fn end(
        &mut self,
        s: &Stored,
        state: GrantState,
        actor: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let id = s
            .record
            .grant
            .as_ref()
            .map(|g| g.id.clone())
            .unwrap_or_default();
        self.store
            .set_state(&id, state, unix_ms(SystemTime::now()))?;
        failpoint("after-store-end");
        self.enforcer.revoke(s.kernel_id)?;
        self.trimmer.changed();
        let kind = if state == GrantState::Expired {
            "grant_expired"
        } else {
            "grant_revoked"
        };
        self.record(
            kind,
            s.record.grant.as_ref(),
            actor,
            serde_json::json!({ "reason": reason }),
            true,
        )
    }

    /// Ends grants past their deadline (the kernel already denies them) and
    /// starts scheduled ones whose time has come.
    pub fn tick(&mut self) -> Result<(), EngineError> {
        failpoint_panic("tick");
        self.trimmer.tick();
        let ended = self.repeats.due(unix_ms(SystemTime::now()));
        self.write_pending(ended)?;
        // Protected paths that appeared, were replaced, or got a mount
        // inside them: listed within a second.
        if self.objects_checked.elapsed() >= Duration::from_secs(1) {
            self.objects_checked = std::time::Instant::now();
            // Trees are scanned for hard-linked files every 30 s.
            self.objects_refreshes = self.objects_refreshes.wrapping_add(1);
            let scan = self.objects_refreshes.is_multiple_of(30);
            let changed = self.enforcer.refresh_objects(scan)?;
            if changed > 0 {
                tracing::info!(changed, "protected inodes re-resolved");
            }
            // A cgroup created at a managed path that the kernel could not
            // list ran unmanaged: say so, every time it happens.
            let missed = self.enforcer.cgroups_missed()?;
            if missed > self.cgroups_missed {
                let new = missed - self.cgroups_missed;
                self.cgroups_missed = missed;
                tracing::error!(
                    new,
                    total = missed,
                    "cgroups created at managed paths were NOT managed: the managed-cgroup map is full (raise limits.max_cgroups)"
                );
                self.record(
                    "cgroups_unmanaged",
                    None,
                    "kernel",
                    serde_json::json!({ "new": new, "total": missed }),
                    true,
                )?;
            }
        }
        let now = SystemTime::now();
        // Each grant on its own: one that cannot be ended or started must
        // not hold up the others.
        for s in self.store.due(grant::unix_ms(now))? {
            let g = s.record.grant.clone().unwrap_or_default();
            if grant::from_unix_ms(g.expires_at_unix_ms) <= now {
                if let Err(e) = self.end(&s, GrantState::Expired, "agent", "reached expires_at") {
                    tracing::error!(grant_id = %g.id, error = %e, "could not expire a grant");
                }
            } else if s.record.state == GrantState::Scheduled as i32
                && grant::from_unix_ms(g.not_before_unix_ms) <= now
                && let Err(e) = self.activate(&s, &g, now)
            {
                // Refused whole and ended, so a restart never meets it.
                tracing::error!(grant_id = %g.id, error = %e, "a scheduled grant could not start");
                self.store
                    .set_state(&g.id, GrantState::Revoked, unix_ms(now))?;
                self.refuse_grant(&g.id, "agent", &format!("at its start: {e}"));
            }
        }
        Ok(())
    }

    /// The next deadline (boot clock) at which a held connection may have
    /// to be reset; see [`Enforcer::next_connect_deadline`].
    pub fn next_connect_deadline(&self, after: u64) -> Option<u64> {
        self.enforcer.next_connect_deadline(after)
    }

    /// Resets held connections whose permission has ended.
    pub fn end_connections(&mut self) {
        self.enforcer.end_connections_logged();
    }

    /// See [`Enforcer::teardown_handle`].
    pub fn teardown_handle(&self) -> Result<crate::enforcer::TeardownHandle, EngineError> {
        Ok(self.enforcer.teardown_handle()?)
    }

    /// Starts a scheduled grant: validated again, into the kernel (which
    /// refuses a conflict), and only then marked active in the store.
    fn activate(&mut self, s: &Stored, g: &pb::Grant, now: SystemTime) -> Result<(), EngineError> {
        failpoint_error("activate")?;
        let v = self.validate_stored(g, now)?;
        self.list_workload(&v.grantee)?;
        self.enforcer.grant(s.kernel_id, v.entries(s.kernel_id))?;
        self.store.set_state(&g.id, GrantState::Active, 0)?;
        self.record(
            "grant_activated",
            Some(g),
            "agent",
            serde_json::Value::Null,
            true,
        )
    }

    /// Grants, newest last; `uid` limits them to one user's.
    /// The uid a stored grant is for, if it is for a user.
    pub fn grant_uid(&self, id: &str) -> Result<Option<u32>, EngineError> {
        Ok(self.store.get(id)?.and_then(|s| subject_uid(&s.record)))
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
                ("held_files", stats.held_files, u64::from(l.max_held)),
                ("held_sockets", stats.held_sockets, u64::from(l.max_held)),
            ],
            grants,
            programs: stats.programs,
        })
    }

    /// The kernel's answer, from the kernel's own walk, maps and clock,
    /// through the decision function the hooks run.
    pub fn explain(
        &mut self,
        caller: &Caller,
        op: Op,
        object: &str,
    ) -> Result<pb::ExplainResponse, EngineError> {
        let probe = if op == Op::Connect {
            Probe::Addr(object.parse().map_err(|_| InvalidGrant {
                field: "object".into(),
                reason: format!("`{object}` is not ADDR:PORT"),
            })?)
        } else {
            if !object.starts_with('/') {
                return Err(InvalidGrant {
                    field: "object".into(),
                    reason: format!("`{object}` is not an absolute path"),
                }
                .into());
            }
            Probe::Path(object.to_owned())
        };
        let x = self.enforcer.explain(caller, op, &probe)?;
        if x.subjects.is_none() {
            return Ok(pb::ExplainResponse {
                allowed: true,
                decided_by: "unmanaged".into(),
                detail: "ward does not manage this subject: its uid, login uid and cgroup \
                         are in no managed range or subtree"
                    .into(),
                ..Default::default()
            });
        }
        let Some(v) = x.verdict else {
            return Ok(pb::ExplainResponse {
                allowed: true,
                decided_by: "unprotected".into(),
                detail: format!("no protection covers {object}"),
                ..Default::default()
            });
        };
        if v.rule_id == ward_abi::decision::RULE_WALK_INCOMPLETE {
            return Ok(pb::ExplainResponse {
                allowed: false,
                decided_by: "protection".into(),
                rule_id: "walk-incomplete".into(),
                detail: format!(
                    "{object} is more than {} levels deep or under more than {} nested \
                     objects; managed callers are denied what the kernel cannot walk",
                    ward_abi::MAX_WALK_DEPTH,
                    ward_abi::MAX_CHAIN
                ),
                ..Default::default()
            });
        }
        let protection = self.rule_name(v.protection.rule_id)?;
        let decided = v.decided;
        Ok(if v.allow && v.by_grant {
            pb::ExplainResponse {
                allowed: true,
                decided_by: "grant".into(),
                rule_id: self.rule_name(decided.rule_id)?,
                detail: format!("{object} is protected by {protection}; a grant allows it"),
                expires_at_unix_ms: boot_to_unix_ms(decided.expires_ns),
            }
        } else if v.allow {
            let by = self.rule_name(decided.rule_id)?;
            pb::ExplainResponse {
                allowed: true,
                decided_by: "policy".into(),
                detail: format!("{object} is protected by {protection}; {by}"),
                rule_id: by,
                expires_at_unix_ms: boot_to_unix_ms(decided.expires_ns),
            }
        } else if v.decided_subject != 0 {
            let by = self.rule_name(decided.rule_id)?;
            pb::ExplainResponse {
                allowed: false,
                decided_by: "deny".into(),
                detail: format!("an explicit deny covers it: {by}"),
                rule_id: by,
                ..Default::default()
            }
        } else {
            pb::ExplainResponse {
                allowed: false,
                decided_by: "protection".into(),
                rule_id: protection.clone(),
                detail: format!(
                    "{object} is protected by {protection} and no active grant allows it"
                ),
                ..Default::default()
            }
        })
    }

    /// A kernel rule id as people know it: a grant id or a config entry.
    fn rule_name(&self, id: u64) -> Result<String, EngineError> {
        if (POLICY_BASE..PROTECTION_BASE).contains(&id) {
            return Ok(self
                .policy
                .as_ref()
                .and_then(|p| p.rule_name(id))
                .map_or_else(
                    || format!("policy rule #{}", id - POLICY_BASE),
                    str::to_owned,
                ));
        }
        if id >= PROTECTION_BASE {
            let i = (id - PROTECTION_BASE) as usize;
            return Ok(self
                .protection
                .get(i)
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| format!("protection #{i}")));
        }
        Ok(self
            .store
            .id_of(id)?
            .unwrap_or_else(|| format!("rule #{id}")))
    }

    /// The policy part of the table: `[protect]` entries, then the
    /// compiled Cedar entries (`fresh` if the caller just computed them).
    fn policy_entries(&mut self, fresh: Option<Vec<Entry>>) -> Result<Vec<Entry>, EngineError> {
        let mut out: Vec<Entry> = self.protection.iter().map(|(_, e)| e.clone()).collect();
        match (fresh, self.policy.as_mut()) {
            (Some(f), _) => out.extend(f),
            (None, Some(p)) => out.extend(p.entries().map_err(EngineError::Policy)?),
            (None, None) => {}
        }
        Ok(out)
    }

    /// The host as policies see it now: labels from the config, posture
    /// from start-up.
    fn host_env(&self) -> ward_policy::Env {
        host_env(&self.config.agent.host_labels, self.startup.file_and_exec)
    }

    /// When the compiled policy next changes with the clock.
    pub fn policy_boundary(&self) -> Option<SystemTime> {
        self.policy.as_ref().and_then(PolicyEngine::next_boundary)
    }

    /// Called often: recompiles at a time boundary, and picks up edited
    /// policy sources every `policy.reload_interval`.
    pub fn policy_tick(&mut self) -> Result<(), EngineError> {
        let Some(p) = self.policy.as_mut() else {
            return Ok(());
        };
        if p.next_boundary().is_some_and(|b| b <= SystemTime::now()) {
            let entries = p.recompile_now().map_err(EngineError::Policy)?;
            return self.apply_policy_entries(Reload::Full(entries), "agent", "time boundary");
        }
        let interval = self
            .config
            .policy
            .as_ref()
            .map_or(Duration::from_secs(1), |s| s.reload_interval);
        if self.policy_checked.elapsed() < interval {
            return Ok(());
        }
        self.policy_checked = std::time::Instant::now();
        self.reload_host_labels();
        let env = self.host_env();
        let Some(p) = self.policy.as_mut() else {
            return Ok(());
        };
        match p.reload_if_changed(&env) {
            Ok(Reload::Unchanged) => Ok(()),
            Ok(r) => {
                let applied = self.apply_policy_entries(r, "agent", "source changed");
                self.metrics.policy_reload(applied.is_ok());
                applied
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                tracing::error!(error = %e, "policy reload refused; the previous policy keeps enforcing");
                self.record(
                    "policy_rejected",
                    None,
                    "agent",
                    serde_json::json!({ "error": e }),
                    true,
                )
            }
        }
    }

    /// Host labels live in the agent's config: an edit to them is picked
    /// up like any policy source. Other settings need a restart, said so.
    fn reload_host_labels(&mut self) {
        let stamp = config_mtime(&self.config);
        if stamp == self.config_stamp {
            return;
        }
        self.config_stamp = stamp;
        let Some(path) = self.config.source.clone() else {
            return;
        };
        match Config::load(&path) {
            Ok(new) => {
                if new.agent.host_labels != self.config.agent.host_labels {
                    tracing::info!(labels = ?new.agent.host_labels, "host labels changed");
                    self.config.agent.host_labels = new.agent.host_labels.clone();
                }
                let mut rest = new;
                rest.agent.host_labels = self.config.agent.host_labels.clone();
                if rest != self.config {
                    tracing::warn!(
                        config = %path.display(),
                        "the config changed beyond agent.host_labels; restart wardd to apply the rest"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "config edit refused; host labels unchanged");
                let detail = serde_json::json!({
                    "config": path.display().to_string(),
                    "error": e.to_string(),
                });
                if let Err(e) = self.record("config_rejected", None, "agent", detail, true) {
                    tracing::error!(error = %e, "could not audit a refused config edit");
                }
            }
        }
    }

    /// `ward policy apply`: re-read every source now.
    pub fn apply_policy(&mut self, actor: &str) -> Result<pb::PolicyStatus, EngineError> {
        self.reload_host_labels();
        let env = self.host_env();
        let p = self.policy.as_mut().ok_or(EngineError::NoPolicy)?;
        match p.reload_now(&env) {
            Ok(r) => {
                let applied = self.apply_policy_entries(r, actor, "ward policy apply");
                self.metrics.policy_reload(applied.is_ok());
                applied?
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                self.record(
                    "policy_rejected",
                    None,
                    actor,
                    serde_json::json!({ "error": e }),
                    true,
                )?;
                return Err(EngineError::Policy(e));
            }
        }
        self.policy_status()
    }

    fn apply_policy_entries(
        &mut self,
        r: Reload,
        actor: &str,
        why: &str,
    ) -> Result<(), EngineError> {
        if matches!(r, Reload::Unchanged) {
            return Ok(());
        }
        // Workloads the policy names are managed before their entries land.
        if let (Some(p), Some(root)) = (&self.policy, &self.cgroup_root) {
            for path in &p.workload_paths {
                self.enforcer.manage_path(root, path)?;
            }
        }
        let (mode, changed) = match r {
            Reload::Unchanged => return Ok(()),
            Reload::Full(entries) => {
                let n = entries.len();
                let all = self.policy_entries(Some(entries))?;
                self.enforcer.apply(&all)?;
                // A full compile's scratch can be large: trim on the next
                // tick, off this path (the audit record comes first).
                self.trimmer.request();
                ("full", n)
            }
            Reload::Delta { remove, add } => {
                let n = remove.len() + add.len();
                if let Err(e) = self.enforcer.update_policy(&remove, &add) {
                    tracing::warn!(error = %e, "incremental policy update failed; rebuilding the table");
                    let all = self.policy_entries(None)?;
                    self.enforcer.apply(&all)?;
                }
                ("incremental", n)
            }
        };
        tracing::info!(mode, entries = changed, why, "policy applied");
        self.record(
            "policy_applied",
            None,
            actor,
            serde_json::json!({ "mode": mode, "entries": changed, "why": why }),
            true,
        )?;
        self.enforce_guardrails()
    }

    /// A forbid is a guardrail: grants that fall under one now end.
    fn enforce_guardrails(&mut self) -> Result<(), EngineError> {
        let Some(p) = &self.policy else {
            return Ok(());
        };
        let now = SystemTime::now();
        let mut doomed = Vec::new();
        for s in self
            .store
            .list(&[GrantState::Active, GrantState::Scheduled])?
        {
            let g = s.record.grant.clone().unwrap_or_default();
            if let Ok(v) = self.validate_stored(&g, now)
                && let Some(by) = p.forbidding(&v.grantee, &v.targets)
            {
                doomed.push((s, by));
            }
        }
        for (s, by) in doomed {
            self.end(
                &s,
                GrantState::Revoked,
                "agent",
                &format!("forbidden by {by}"),
            )?;
        }
        Ok(())
    }

    /// `ward policy show`.
    pub fn policy_status(&self) -> Result<pb::PolicyStatus, EngineError> {
        let Some(p) = &self.policy else {
            return Ok(pb::PolicyStatus::default());
        };
        let c = p.compiler();
        let mut per_policy: std::collections::HashMap<&str, u64> = Default::default();
        for d in c.decisions() {
            for id in &d.outcome.reason {
                *per_policy.entry(id.as_str()).or_default() += 1;
            }
        }
        let stats = c.stats();
        Ok(pb::PolicyStatus {
            configured: true,
            files: p.files().iter().map(|f| f.display().to_string()).collect(),
            directory: p
                .directory_path()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            policies: c
                .policies()
                .info
                .values()
                .map(|i| pb::PolicySummary {
                    id: i.id.clone(),
                    effect: if i.permit { "permit" } else { "forbid" }.into(),
                    file: i.file.clone(),
                    line: i.position.line as u32,
                    entries: per_policy.get(i.id.as_str()).copied().unwrap_or(0),
                    text: i.text.clone(),
                })
                .collect(),
            principals: stats.principals as u64,
            resources: stats.resources as u64,
            principal_classes: stats.principal_classes as u64,
            resource_classes: stats.resource_classes as u64,
            decisions: stats.decisions as u64,
            applied_unix_ms: unix_ms(p.applied_at),
            next_boundary_unix_ms: p.next_boundary().map_or(0, unix_ms),
            last_error: p.last_error.clone().unwrap_or_default(),
            unresolved: p.unresolved.clone(),
            host_labels: c
                .env()
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        })
    }

    /// Audits a kernel decision and passes it to watchers.
    pub fn kernel_event(&mut self, e: KernelEvent) -> Result<(), EngineError> {
        let rule = match e.kind {
            EventKind::Tamper => "self-protection".to_owned(),
            _ => self.rule_name(e.rule_id)?,
        };
        let grant_id = (e.kind == EventKind::AllowByGrant).then(|| rule.clone());
        let (kind, audit_kind) = match e.kind {
            EventKind::Deny => ("deny", "deny"),
            EventKind::AllowByGrant => ("allow_by_grant", "grant_used"),
            EventKind::Tamper => ("tamper", "tamper"),
        };
        self.metrics
            .events
            .get_or_create(&super::metrics::EventLabels { kind })
            .inc();
        if e.kind == EventKind::Tamper {
            tracing::warn!(pid = e.pid, uid = e.uid, login_uid = ?e.login_uid, tried = e.op, object = %e.object, "refused an attempt on ward itself");
        }
        let detail = serde_json::json!({
            "pid": e.pid, "uid": e.uid, "login_uid": e.login_uid, "cgroup": e.cgroup,
            "operation": e.op, "object": e.object, "rule": rule,
        });
        // One run per subject, object and rule: the pid is the first's.
        let key = format!(
            "{audit_kind}|{}|{:?}|{}|{}|{}|{rule}",
            e.uid, e.login_uid, e.cgroup, e.op, e.object
        );
        let pending = Pending {
            time_unix_ms: boot_to_unix_ms(e.time_boot_ns),
            kind: audit_kind.into(),
            grant_id: grant_id.clone(),
            actor: "kernel".into(),
            detail,
        };
        let (now, ended) = self.repeats.note(key, &pending);
        if now {
            self.write_pending(vec![pending])?;
        }
        self.write_pending(ended)?;
        self.emit(pb::Event {
            time_unix_ms: boot_to_unix_ms(e.time_boot_ns),
            kind: kind.into(),
            pid: e.pid,
            uid: e.uid,
            operation: e.op.into(),
            object: e.object,
            grant_id: grant_id.unwrap_or_default(),
            detail: rule,
        });
        Ok(())
    }

    /// Audits a grant that arrived but was refused (bad signature, wrong
    /// host, expired, ...).
    pub fn refuse_grant(&mut self, id: &str, actor: &str, why: &str) {
        tracing::warn!(grant_id = %id, actor, why, "grant refused");
        let grant = (!id.is_empty()).then(|| pb::Grant {
            id: id.to_owned(),
            ..Default::default()
        });
        if let Err(e) = self.record(
            "grant_refused",
            grant.as_ref(),
            actor,
            serde_json::json!({ "why": why }),
            true,
        ) {
            tracing::error!(error = %e, "could not audit a refused grant");
        }
    }

    /// After a coordinator snapshot: grants from `issuer` that it no longer
    /// lists end now.
    pub fn resync_issuer(&mut self, issuer: &str, keep: &std::collections::BTreeSet<String>) {
        let stale: Vec<Stored> = match self
            .store
            .list(&[GrantState::Active, GrantState::Scheduled])
        {
            Ok(l) => l
                .into_iter()
                .filter(|s| {
                    s.record
                        .grant
                        .as_ref()
                        .is_some_and(|g| g.issuer == issuer && !keep.contains(&g.id))
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "resync: cannot list grants");
                return;
            }
        };
        for s in stale {
            if let Err(e) = self.end(
                &s,
                GrantState::Revoked,
                "coordinator",
                "not in the coordinator's snapshot",
            ) {
                tracing::error!(error = %e, "resync: cannot end a stale grant");
            }
        }
    }

    /// Audits a refused call: the first of a run per caller and call, and
    /// a count of the rest (see `repeats`).
    pub fn refused(&mut self, actor: &str, call: &str, why: &str) {
        let pending = Pending {
            time_unix_ms: unix_ms(SystemTime::now()),
            kind: "call_refused".into(),
            grant_id: None,
            actor: actor.into(),
            detail: serde_json::json!({ "call": call, "why": why }),
        };
        let (now, mut ended) = self
            .repeats
            .note(format!("call_refused|{actor}|{call}"), &pending);
        if now {
            ended.insert(0, pending);
        }
        if let Err(e) = self.write_pending(ended) {
            tracing::error!(error = %e, "could not audit a refused call");
        }
    }

    /// Writes the summaries of every run still counting (at shutdown).
    pub fn flush_audit(&mut self) {
        let ended = self.repeats.drain();
        if let Err(e) = self.write_pending(ended) {
            tracing::error!(error = %e, "could not write the last audit counts");
        }
    }

    fn write_pending(&mut self, records: Vec<Pending>) -> Result<(), EngineError> {
        for p in records {
            if p.detail.get("rule").is_some() {
                super::journal::decision(&p.kind, p.grant_id.as_deref(), &p.detail);
            } else {
                super::journal::host(&p.kind, &p.actor, &p.detail);
            }
            self.audit.write(
                &Record {
                    time_unix_ms: p.time_unix_ms,
                    kind: &p.kind,
                    grant_id: p.grant_id.as_deref(),
                    actor: &p.actor,
                    detail: p.detail,
                },
                false,
            )?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        kind: &str,
        grant: Option<&pb::Grant>,
        actor: &str,
        detail: serde_json::Value,
        durable: bool,
    ) -> Result<(), EngineError> {
        match grant {
            Some(g) if g.subject.is_some() => super::journal::grant(kind, g, actor),
            Some(g) => super::journal::grant_id(kind, &g.id, actor, &detail),
            None => super::journal::host(kind, actor, &detail),
        }
        let grant_id = grant.map(|g| g.id.as_str());
        let now = unix_ms(SystemTime::now());
        self.audit.write(
            &Record {
                time_unix_ms: now,
                kind,
                grant_id,
                actor,
                detail: detail.clone(),
            },
            durable,
        )?;
        self.emit(pb::Event {
            time_unix_ms: now,
            kind: kind.into(),
            grant_id: grant_id.unwrap_or_default().into(),
            detail: detail.to_string(),
            ..Default::default()
        });
        Ok(())
    }
}

/// Crash tests: `WARD_TEST_FAILPOINT=NAME` makes the agent SIGKILL itself
/// at the named point, between a store write and the kernel update.
/// Tests: `WARD_TEST_FAILPOINT=NAME` makes this step fail with an error.
fn failpoint_error(name: &str) -> Result<(), EngineError> {
    if std::env::var("WARD_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        return Err(EngineError::Config(format!("test failpoint {name}")));
    }
    Ok(())
}

/// Tests: `WARD_TEST_FAILPOINT=panic-NAME` panics here, as a bug would.
pub fn failpoint_panic(name: &str) {
    if std::env::var("WARD_TEST_FAILPOINT").is_ok_and(|v| v.strip_prefix("panic-") == Some(name)) {
        panic!("test failpoint panic-{name}");
    }
}

fn failpoint(name: &str) {
    if std::env::var("WARD_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!(failpoint = name, "test failpoint: killing wardd");
        // SAFETY: raising a signal at ourselves has no preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

fn grant_detail(g: &pb::Grant, state: GrantState) -> serde_json::Value {
    serde_json::json!({
        "state": state.as_str_name(),
        "reason": g.reason, "ticket": g.ticket, "approvers": g.approvers, "issuer": g.issuer,
        "expires_at_unix_ms": g.expires_at_unix_ms,
    })
}

pub fn subject_uid(r: &GrantRecord) -> Option<u32> {
    let s = r.grant.as_ref()?.subject.as_ref()?.kind.as_ref()?;
    match s {
        pb::subject::Kind::Uid(u) => Some(*u),
        pb::subject::Kind::User(name) => super::users::by_name(name).map(|u| u.uid),
        pb::subject::Kind::Workload(_) => None,
    }
}

/// Boot-clock ns to Unix ms, by the offset between the clocks now.
fn boot_to_unix_ms(boot: u64) -> i64 {
    if boot == ward_abi::NEVER {
        return 0;
    }
    ((boot as i128 + crate::enforcer::wall_minus_boot_ns()) / 1_000_000) as i64
}

/// The configured protections, as kernel entries with stable rule ids.
fn protection_entries(config: &Config) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    let mut push = |name: String, op: Op, object: Object| {
        let rule_id = PROTECTION_BASE + out.len() as u64;
        out.push((
            name,
            Entry {
                subject: Subject::Protected,
                op,
                object,
                effect: Effect::Deny,
                expires: Expiry::Never,
                rule_id,
                from_grant: false,
            },
        ));
    };
    // Config::parse already checked every pattern.
    for (i, p) in config.protect.paths.iter().enumerate() {
        if let Ok(pp) = PathPattern::parse(p) {
            push(
                format!("protect.paths[{i}] {p}"),
                Op::Read,
                Object::Path(pp.clone()),
            );
            push(
                format!("protect.paths[{i}] {p}"),
                Op::Write,
                Object::Path(pp),
            );
        }
    }
    // An executable's code must not run by a copy either: it is protected
    // for read too, so only a policy or grant for read lets it be copied.
    for (i, p) in config.protect.executables.iter().enumerate() {
        if let Ok(pp) = PathPattern::parse(p) {
            push(
                format!("protect.executables[{i}] {p}"),
                Op::Exec,
                Object::Path(pp.clone()),
            );
            push(
                format!("protect.executables[{i}] {p}"),
                Op::Read,
                Object::Path(pp),
            );
        }
    }
    for (i, n) in config.protect.networks.iter().enumerate() {
        if let Ok(np) = NetPattern::parse(n) {
            push(
                format!("protect.networks[{i}] {n}"),
                Op::Connect,
                Object::Net(np),
            );
        }
    }
    for (what, path, ops) in own_files(config) {
        match PathPattern::parse(&path) {
            Ok(pp) => {
                for op in ops {
                    push(
                        format!("self-protection: {what} {path}"),
                        *op,
                        Object::Path(pp.clone()),
                    );
                }
            }
            Err(e) => tracing::warn!(%path, error = %e, "cannot protect ward's own file"),
        }
    }
    out
}

/// The (grant id, kind) of the lifecycle records in the last `bytes` of
/// the lifecycle log (a partial first line is skipped).
fn lifecycle_tail(
    path: &std::path::Path,
    bytes: u64,
) -> std::collections::HashSet<(String, String)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = std::collections::HashSet::new();
    let Ok(mut f) = std::fs::File::open(path) else {
        return out;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(bytes);
    let mut raw = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut raw).is_err() {
        return out;
    }
    // The cut may fall inside a character: lossy, and that line is skipped.
    let text = String::from_utf8_lossy(&raw);
    let lines = text.lines().skip(usize::from(start > 0));
    for line in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(id), Some(kind)) = (v["grant_id"].as_str(), v["kind"].as_str()) {
            out.insert((id.to_owned(), kind.to_owned()));
        }
    }
    out
}

/// A grant must not give a managed subject what would switch ward off:
/// write on (or read of a key among) ward's own files, by naming one, a
/// tree inside one, or a tree above one (`/etc/` holds `/etc/ward/`).
fn reaches_own_files(config: &Config, valid: &grant::ValidGrant) -> Result<(), InvalidGrant> {
    let own = own_files(config);
    let mut index: Vec<&Object> = Vec::new();
    for (op, object) in &valid.targets {
        let Object::Path(p) = object else { continue };
        if !index.contains(&object) {
            index.push(object);
        }
        let i = index.len() - 1;
        // Compared as the files are reached: through symlinks too.
        let resolved = canonical(p.as_str());
        let granted = resolved.as_str();
        for (what, path, ops) in &own {
            if !ops.contains(op) {
                continue;
            }
            let path = &canonical(path);
            let overlaps = granted == path
                || (granted.ends_with('/') && path.starts_with(granted))
                || (path.ends_with('/') && granted.starts_with(path.as_str()));
            if overlaps {
                return Err(InvalidGrant {
                    field: format!("objects[{i}]"),
                    reason: format!(
                        "`{granted}` reaches ward's own {what} `{path}` for {}; \
                         ward does not grant what would let it be switched off",
                        format!("{op:?}").to_lowercase()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `path` with its symlinks resolved, keeping a tree's trailing `/`; as
/// given when it does not exist.
fn canonical(path: &str) -> String {
    match std::fs::canonicalize(path) {
        Ok(p) => {
            let mut s = p.to_string_lossy().into_owned();
            if path.ends_with('/') && !s.ends_with('/') {
                s.push('/');
            }
            s
        }
        Err(_) => path.to_owned(),
    }
}

/// ward's own files, which no managed subject may change (keys: nor
/// read), as (what, path pattern, operations). A directory is a tree.
fn own_files(config: &Config) -> Vec<(&'static str, String, &'static [Op])> {
    const W: &[Op] = &[Op::Write];
    const RW: &[Op] = &[Op::Read, Op::Write];
    let mut out: Vec<(&'static str, String, &'static [Op])> = Vec::new();
    let mut file = |what, p: &std::path::Path, ops| {
        if p.is_absolute() {
            out.push((what, p.to_string_lossy().into_owned(), ops));
        }
    };
    let tree = |p: &std::path::Path| {
        let mut s = p.to_string_lossy().into_owned();
        if !s.ends_with('/') {
            s.push('/');
        }
        std::path::PathBuf::from(s)
    };
    let a = &config.agent;
    if let Some(src) = &config.source {
        file("config", src, W);
        // ward's own configuration directory (/etc/ward/) as a whole, so
        // that it cannot be renamed away and replaced; a shared directory
        // (the config sits in /etc itself, say) keeps only the files.
        if let Some(dir) = src.parent()
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("ward"))
            // Not when the control socket lies inside: connecting to it
            // is a write, and every user must reach it.
            && !a.socket.starts_with(dir)
        {
            file("config directory", &tree(dir), W);
        }
    }
    // Kernel settings: core_pattern and modprobe name helpers the kernel
    // runs as unmanaged root, ns_last_pid picks pids, and so on.
    file("kernel settings", std::path::Path::new("/proc/sys/"), W);
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        file("binary", &exe, W);
        file("binary", &exe.with_file_name("ward"), W);
    }
    file("pins", &tree(&a.pin_dir), W);
    file("state", &tree(&a.state_dir), W);
    file("audit log", &a.audit_log, W);
    file("lifecycle log", &config.agent.lifecycle_log(), W);
    if let Some(p) = &config.policy {
        for f in &p.files {
            file("policy", f, W);
        }
        if let Some(d) = &p.directory {
            file("directory", d, W);
        }
    }
    if let Some(c) = &config.coordinator {
        file("coordinator key", &c.key, RW);
        file("coordinator certificate", &c.cert, W);
        file("coordinator CA", &c.ca, W);
    }
    if let Some(t) = &config.tls {
        file("TLS key", &t.key, RW);
        file("TLS certificate", &t.cert, W);
        file("TLS client CA", &t.client_ca, W);
    }
    for unit in [
        "/etc/systemd/system/wardd.service",
        "/lib/systemd/system/wardd.service",
        "/usr/lib/systemd/system/wardd.service",
    ] {
        let unit = std::path::Path::new(unit);
        if unit.exists() {
            file("unit", unit, W);
        }
    }
    // The kernel's memory, by its device files.
    for dev in ["/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore"] {
        let dev = std::path::Path::new(dev);
        if dev.exists() {
            file("kernel memory", dev, RW);
        }
    }
    out
}

/// BPF LSM where possible; else the cgroup connect hooks, said loudly.
fn load_enforcer(
    config: &Config,
    cgroup_root: Option<&std::path::Path>,
) -> Result<(Enforcer, bool, &'static str), EngineError> {
    let connect_cgroup = cgroup_root.map(|r| r.join(&config.enforce.connect_cgroup));
    let base = EnforcerConfig {
        pin_dir: Some(config.agent.pin_dir.clone()),
        max_path_rules: config.limits.max_path_rules,
        max_objects: config.limits.max_objects,
        max_net_rules: config.limits.max_net_rules,
        max_cgroups: config.limits.max_cgroups,
        max_held: config.limits.max_held,
        uid_ranges: config
            .enforce
            .managed_uids
            .iter()
            .map(|[a, b]| (*a, *b))
            .collect(),
        hooks: Hooks {
            lsm: true,
            cgroup_connect: None,
        },
    };
    let cgroup_mode =
        |base: EnforcerConfig| -> Result<(Enforcer, bool, &'static str), EngineError> {
            let e = Enforcer::load(EnforcerConfig {
                hooks: Hooks {
                    lsm: false,
                    cgroup_connect: connect_cgroup.clone(),
                },
                ..base
            })?;
            Ok((e, false, "cgroup-connect"))
        };
    match config.enforce.hooks {
        HookMode::Lsm => Ok((Enforcer::load(base)?, true, "bpf-lsm")),
        HookMode::Cgroup => cgroup_mode(base),
        HookMode::Auto => match Enforcer::load(base.clone()) {
            Ok(e) => Ok((e, true, "bpf-lsm")),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "BPF LSM is unavailable: files and executables are NOT protected on this host; \
                     network enforcement falls back to the cgroup connect hooks"
                );
                cgroup_mode(base)
            }
        },
    }
}

fn config_mtime(c: &Config) -> Option<SystemTime> {
    let path = c.source.as_ref()?;
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
