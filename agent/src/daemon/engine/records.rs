//! What the engine records and tells: the audit log, the event stream
//! for watchers, and the kernel's decisions as they arrive.

use super::*;

impl Engine {
    /// The last `n` events and a receiver for the ones after them.
    pub fn subscribe(&self, n: usize) -> (Vec<pb::Event>, broadcast::Receiver<pb::Event>) {
        let skip = self.recent.len().saturating_sub(n);
        (
            self.recent.iter().skip(skip).cloned().collect(),
            self.events.subscribe(),
        )
    }

    pub(super) fn emit(&mut self, e: pb::Event) {
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
    pub(super) fn heal_audit(&mut self) -> Result<(), EngineError> {
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
            .get_or_create(&crate::daemon::metrics::EventLabels { kind })
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

    pub(super) fn write_pending(&mut self, records: Vec<Pending>) -> Result<(), EngineError> {
        for p in records {
            if p.detail.get("rule").is_some() {
                crate::daemon::journal::decision(&p.kind, p.grant_id.as_deref(), &p.detail);
            } else {
                crate::daemon::journal::host(&p.kind, &p.actor, &p.detail);
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

    pub(super) fn record(
        &mut self,
        kind: &str,
        grant: Option<&pb::Grant>,
        actor: &str,
        detail: serde_json::Value,
        durable: bool,
    ) -> Result<(), EngineError> {
        match grant {
            Some(g) if g.subject.is_some() => crate::daemon::journal::grant(kind, g, actor),
            Some(g) => crate::daemon::journal::grant_id(kind, &g.id, actor, &detail),
            None => crate::daemon::journal::host(kind, actor, &detail),
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

/// The (grant id, kind) of the lifecycle records in the last `bytes` of
/// the lifecycle log (a partial first line is skipped).
pub(super) fn lifecycle_tail(
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
