//! The compiled Cedar policy kept in step with its sources, the host's
//! labels and the clock, and the guardrails applied over it.

use super::*;

impl Engine {
    /// The table's entries not from grants: the `[protect]` protections,
    /// then the compiled Cedar policy (`fresh` if the caller just
    /// computed it), with its class memberships.
    pub(super) fn base_entries(
        &mut self,
        fresh: Option<PolicyTable>,
    ) -> Result<PolicyTable, EngineError> {
        let mut out: Vec<Entry> = self.protections.iter().map(|(_, e)| e.clone()).collect();
        let table = match (fresh, self.cedar.as_mut()) {
            (Some(f), _) => f,
            (None, Some(p)) => p.table().map_err(EngineError::Policy)?,
            (None, None) => PolicyTable::default(),
        };
        out.extend(table.entries);
        Ok(PolicyTable {
            entries: out,
            classes: table.classes,
        })
    }

    /// The host as policies see it now: labels from the config, posture
    /// from start-up.
    pub(super) fn host_env(&self) -> ward_policy::Env {
        host_env(&self.config.agent.host_labels, self.startup.file_and_exec)
    }

    /// When the compiled policy next changes with the clock.
    pub fn policy_boundary(&self) -> Option<SystemTime> {
        self.cedar.as_ref().and_then(CedarPolicy::next_boundary)
    }

    /// Called often: recompiles at a time boundary, and picks up edited
    /// policy sources every `policy.reload_interval`.
    pub fn policy_tick(&mut self) -> Result<(), EngineError> {
        let Some(p) = self.cedar.as_mut() else {
            return Ok(());
        };
        if p.next_boundary().is_some_and(|b| b <= SystemTime::now()) {
            let table = p.recompile_now().map_err(EngineError::Policy)?;
            return self.apply_policy_entries(Reload::Full(table), "agent", "time boundary");
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
        let Some(p) = self.cedar.as_mut() else {
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
                    serde_json::json!({ "error": e.to_string() }),
                    true,
                )
            }
        }
    }

    /// Host labels live in the agent's config: an edit to them is picked
    /// up like any policy source. Other settings need a restart, said so.
    pub(super) fn reload_host_labels(&mut self) {
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
        let p = self.cedar.as_mut().ok_or(EngineError::NoPolicy)?;
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
                    serde_json::json!({ "error": e.to_string() }),
                    true,
                )?;
                return Err(EngineError::Policy(e));
            }
        }
        self.policy_status()
    }

    pub(super) fn apply_policy_entries(
        &mut self,
        r: Reload,
        actor: &str,
        why: &str,
    ) -> Result<(), EngineError> {
        if matches!(r, Reload::Unchanged) {
            return Ok(());
        }
        // Workloads the policy names are managed before their entries land.
        if let (Some(p), Some(root)) = (&self.cedar, &self.cgroup_root) {
            for path in &p.workload_paths {
                self.enforcer.manage_path(root, path)?;
            }
        }
        let changed = r.size();
        let compile_time = self
            .cedar
            .as_ref()
            .map_or(Duration::ZERO, |p| p.compile_time);
        let started = std::time::Instant::now();
        let mode = match r {
            Reload::Unchanged => return Ok(()),
            Reload::Full(table) => {
                let all = self.base_entries(Some(table))?;
                self.enforcer.apply_with(&all.entries, all.classes)?;
                // A full compile's scratch can be large: trim on the next
                // tick, off this path (the audit record comes first).
                self.trimmer.request();
                "full"
            }
            Reload::Delta(edit) => {
                if let Err(e) = self.enforcer.update_base(&edit) {
                    tracing::warn!(error = %e, "incremental policy update failed; rebuilding the table");
                    let all = self.base_entries(None)?;
                    self.enforcer.apply_with(&all.entries, all.classes)?;
                }
                "incremental"
            }
        };
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let (compile_ms, kernel_ms) = (ms(compile_time), ms(started.elapsed()));
        tracing::info!(
            mode,
            entries = changed,
            why,
            compile_ms,
            kernel_ms,
            "policy applied"
        );
        self.record(
            "policy_applied",
            None,
            actor,
            serde_json::json!({
                "mode": mode,
                "entries": changed,
                "why": why,
                "compile_ms": compile_ms,
                "kernel_ms": kernel_ms,
            }),
            true,
        )?;
        self.enforce_guardrails()
    }

    /// A forbid is a guardrail: grants that fall under one now end.
    pub(super) fn enforce_guardrails(&mut self) -> Result<(), EngineError> {
        let Some(p) = &self.cedar else {
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
        let Some(p) = &self.cedar else {
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
            class_decisions: stats.class_decisions as u64,
            classed_principals: p.classed_principals() as u64,
            applied_unix_ms: unix_ms(p.applied_at),
            next_boundary_unix_ms: p.next_boundary().map_or(0, unix_ms),
            last_error: p.last_error.clone().unwrap_or_default(),
            unresolved: p.unresolved.clone(),
            ldap: (!self.ldap.url.is_empty()).then(|| self.ldap.status()),
            host_labels: c
                .env()
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        })
    }
}
