//! One log line per audit record, its parts as fields: under systemd they
//! become journal fields (`WARD_EVENT`, `WARD_GRANT_ID`, `WARD_SUBJECT`,
//! `WARD_OBJECT`, `WARD_RULE`, ...; see `ward_proto::logging`), so
//! `journalctl WARD_GRANT_ID=g-42` finds everything about a grant. The
//! audit log stays the record of truth; these lines are for the
//! operators' log pipelines.

use ward_proto::{text, v1 as pb};

/// A grant's lifecycle: pushed, activated, refused, expired, revoked.
pub fn grant(event: &str, g: &pb::Grant, actor: &str) {
    let (operations, object) = text::rule(g);
    let subject = text::subject(g.subject.as_ref());
    tracing::info!(
        event,
        grant_id = %g.id,
        subject = %subject,
        object = %object,
        rule = %format!("grant {}: {operations}", g.id),
        operations = %operations,
        actor,
        "{event}: grant {} for {subject}: {operations} on {object}",
        g.id
    );
}

/// A grant known only by its id (refused before it could be read whole).
pub fn grant_id(event: &str, id: &str, actor: &str, detail: &serde_json::Value) {
    tracing::info!(event, grant_id = %id, actor, detail = %detail, "{event}: grant {id}");
}

/// The kernel's decision on an attempt (a denial, a use of a grant), from
/// the audit record's detail.
pub fn decision(event: &str, grant_id: Option<&str>, detail: &serde_json::Value) {
    // The cgroup is the kernel's id (its cgroup2 inode), as the audit
    // record has it.
    let subject = format!("uid {}", detail["uid"]);
    let cgroup = detail["cgroup"].as_u64().unwrap_or_default();
    let operation = detail["operation"].as_str().unwrap_or("?");
    let object = detail["object"].as_str().unwrap_or("-");
    let rule = detail["rule"].as_str().unwrap_or("-");
    tracing::info!(
        event,
        grant_id = grant_id.unwrap_or_default(),
        subject = %subject,
        cgroup,
        object,
        rule,
        operation,
        pid = %detail["pid"],
        "{event}: {operation} {object} by {subject} in cgroup {cgroup} (rule {rule})"
    );
}

/// Anything else the agent audits (a policy applied or rejected, ...).
pub fn host(event: &str, actor: &str, detail: &serde_json::Value) {
    tracing::info!(event, actor, detail = %detail, "{event}");
}
