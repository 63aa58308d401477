//! Grant lifecycle: the store first, the kernel second; reconcile at
//! start, push, revoke, expiry and activation.

use super::*;

impl Engine {
    /// Rebuilds the kernel table from the store: grants that ended while
    /// the agent was down are marked expired, the rest re-armed, and the
    /// whole table swapped in at once.
    pub(super) fn reconcile(&mut self) -> Result<(), EngineError> {
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
        let policy = self.base_entries(None)?;
        // Policy and grants go in together, in one generation swap.
        self.enforcer
            .replace(&policy.entries, policy.classes, live)?;
        tracing::info!(
            protections = policy.entries.len(),
            "kernel table rebuilt from the store"
        );
        Ok(())
    }

    /// A workload grantee must lie in a managed subtree; it is then listed
    /// itself, so the kernel applies its rules to its processes (and to
    /// its subtree's) on top of the managed ancestor's.
    pub(super) fn list_workload(&mut self, grantee: &Grantee) -> Result<(), EngineError> {
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

    pub(super) fn validate_stored(
        &self,
        g: &pb::Grant,
        now: SystemTime,
    ) -> Result<ValidGrant, InvalidGrant> {
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
        if let Some(p) = &self.cedar {
            let start = valid.not_before.max(now);
            let duration = valid.expires_at.duration_since(start).unwrap_or_default();
            if let Err(why) = p.check_grant(&valid.grantee, &valid.targets, duration) {
                self.record(
                    "grant_refused",
                    Some(&g),
                    actor,
                    serde_json::json!({ "why": why.to_string() }),
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
    pub(super) fn end(
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

    /// See [`Enforcer::connections_ended_at`].
    pub fn connections_ended_at(&self) -> u64 {
        self.enforcer.connections_ended_at()
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
    pub(super) fn activate(
        &mut self,
        s: &Stored,
        g: &pb::Grant,
        now: SystemTime,
    ) -> Result<(), EngineError> {
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
            serde_json::json!({ "why": why.to_string() }),
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
}

pub(super) fn grant_detail(g: &pb::Grant, state: GrantState) -> serde_json::Value {
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
        pb::subject::Kind::User(name) => crate::daemon::users::by_name(name).map(|u| u.uid),
        pb::subject::Kind::Workload(_) => None,
    }
}
