//! Human tables and `--json` for every listing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use ward_proto::{text, v1 as pb};

fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn left(ms: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if ms <= now {
        return "ended".into();
    }
    humantime::format_duration(Duration::from_secs(((ms - now) / 1000) as u64)).to_string()
}

fn state(s: i32) -> &'static str {
    match pb::GrantState::try_from(s) {
        Ok(pb::GrantState::Scheduled) => "scheduled",
        Ok(pb::GrantState::Active) => "active",
        Ok(pb::GrantState::Expired) => "expired",
        Ok(pb::GrantState::Revoked) => "revoked",
        _ => "unknown",
    }
}

fn grant_json(r: &pb::GrantRecord) -> Value {
    let g = r.grant.clone().unwrap_or_default();
    json!({
        "id": g.id,
        "subject": text::subject(g.subject.as_ref()),
        "operations": g.operations.iter().map(|o| text::operation(*o)).collect::<Vec<_>>(),
        "objects": g.objects.iter().map(text::object).collect::<Vec<_>>(),
        "state": state(r.state),
        "not_before_unix_ms": g.not_before_unix_ms,
        "expires_at_unix_ms": g.expires_at_unix_ms,
        "received_unix_ms": r.received_unix_ms,
        "ended_unix_ms": r.ended_unix_ms,
        "reason": g.reason,
        "ticket": g.ticket,
        "approvers": g.approvers,
        "issuer": g.issuer,
    })
}

pub fn grants(list: &[pb::GrantRecord], json: bool) {
    if json {
        println!("{}", Value::Array(list.iter().map(grant_json).collect()));
        return;
    }
    if list.is_empty() {
        println!("no grants");
        return;
    }
    println!(
        "{:<24} {:<10} {:<10} {:<14} {:<28} {:<10} REASON",
        "ID", "STATE", "SUBJECT", "OPERATIONS", "OBJECTS", "LEFT"
    );
    for r in list {
        let g = r.grant.clone().unwrap_or_default();
        let ops: Vec<_> = g.operations.iter().map(|o| text::operation(*o)).collect();
        let objs: Vec<_> = g.objects.iter().map(text::object).collect();
        let remaining = if r.state == pb::GrantState::Active as i32
            || r.state == pb::GrantState::Scheduled as i32
        {
            left(g.expires_at_unix_ms)
        } else {
            format!("({})", state(r.state))
        };
        println!(
            "{:<24} {:<10} {:<10} {:<14} {:<28} {:<10} {}",
            g.id,
            state(r.state),
            text::subject(g.subject.as_ref()),
            ops.join(","),
            objs.join(","),
            remaining,
            g.reason
        );
    }
}

pub fn pushed(r: &pb::PushGrantResponse, json: bool) {
    let Some(rec) = &r.record else { return };
    if json {
        let mut v = grant_json(rec);
        v["created"] = json!(r.created);
        println!("{v}");
        return;
    }
    let g = rec.grant.clone().unwrap_or_default();
    let verb = if r.created {
        "granted"
    } else {
        "already granted"
    };
    println!(
        "{verb}: {} for {} until {} ({} left)",
        g.id,
        text::subject(g.subject.as_ref()),
        when(g.expires_at_unix_ms),
        left(g.expires_at_unix_ms)
    );
}

pub fn revoked(r: &pb::GrantRecord, json: bool) {
    if json {
        println!("{}", grant_json(r));
    } else {
        let id = r.grant.as_ref().map(|g| g.id.as_str()).unwrap_or("-");
        println!("revoked: {id}");
    }
}

pub fn status(s: &pb::AgentStatus, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "version": s.version, "kernel": s.kernel,
                "file_and_exec_enforced": s.file_and_exec_enforced,
                "network_enforced": s.network_enforced, "network_hook": s.network_hook,
                "active_grants": s.active_grants, "path_rules": s.path_rules, "net_rules": s.net_rules,
                "events_lost": s.events_lost, "started_unix_ms": s.started_unix_ms, "adopted_pins": s.adopted_pins,
            })
        );
        return;
    }
    let yes = |b: bool| {
        if b {
            "enforced"
        } else {
            "NOT ENFORCED on this kernel"
        }
    };
    println!("wardd {} on {}", s.version, s.kernel);
    println!("  files and exec:  {}", yes(s.file_and_exec_enforced));
    println!(
        "  network:         {} ({})",
        yes(s.network_enforced),
        s.network_hook
    );
    println!("  active grants:   {}", s.active_grants);
    println!(
        "  kernel entries:  {} path, {} network",
        s.path_rules, s.net_rules
    );
    println!("  events lost:     {}", s.events_lost);
    println!(
        "  started:         {}{}",
        when(s.started_unix_ms),
        if s.adopted_pins {
            " (adopted pinned enforcement)"
        } else {
            ""
        }
    );
}

pub fn event(e: &pb::Event, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "time_unix_ms": e.time_unix_ms, "kind": e.kind, "pid": e.pid, "uid": e.uid,
                "operation": e.operation, "object": e.object, "grant_id": e.grant_id, "detail": e.detail,
            })
        );
        return;
    }
    let t = when(e.time_unix_ms);
    match e.kind.as_str() {
        "deny" | "allow_by_grant" => println!(
            "{t}  {:<15} uid {:<6} pid {:<7} {:<8} {}  [{}]",
            e.kind,
            e.uid,
            e.pid,
            e.operation,
            e.object,
            if e.grant_id.is_empty() {
                &e.detail
            } else {
                &e.grant_id
            }
        ),
        _ => println!("{t}  {:<15} {}  {}", e.kind, e.grant_id, e.detail),
    }
}

pub fn explanation(r: &pb::ExplainResponse, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "allowed": r.allowed, "decided_by": r.decided_by, "rule_id": r.rule_id,
                "detail": r.detail, "expires_at_unix_ms": r.expires_at_unix_ms,
            })
        );
        return;
    }
    let verdict = if r.allowed { "ALLOW" } else { "DENY" };
    print!("{verdict}: {}", r.detail);
    if !r.rule_id.is_empty() {
        print!(" [{}: {}]", r.decided_by, r.rule_id);
    }
    if r.expires_at_unix_ms > 0 {
        print!(" until {}", when(r.expires_at_unix_ms));
    }
    println!();
}

pub fn policy_errors(errors: &[ward_policy::PolicyError], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "valid": false, "errors": errors })
        );
        return;
    }
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!(
        "{} error{}; nothing applied",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

pub fn policy_checked(
    p: &ward_policy::Policies,
    compiled: Option<&ward_policy::Compiler>,
    json: bool,
) {
    let stats = compiled.map(|c| c.stats().clone());
    if json {
        let ids: Vec<&String> = p.info.keys().collect();
        println!(
            "{}",
            serde_json::json!({ "valid": true, "policies": ids, "compiled": stats })
        );
        return;
    }
    println!("ok: {} policies valid against ward's schema", p.len());
    for i in p.info.values() {
        println!(
            "  {:<24} {:<6} {}:{}",
            i.id,
            if i.permit { "permit" } else { "forbid" },
            i.file,
            i.position.line
        );
    }
    if let Some(s) = stats {
        println!(
            "compiled: {} principals ({} classes) x {} resources ({} classes): {} decisions, {} Cedar evaluations",
            s.principals,
            s.principal_classes,
            s.resources,
            s.resource_classes,
            s.decisions,
            s.evaluations
        );
    }
}

fn policy_json(s: &pb::PolicyStatus, full: bool) -> Value {
    serde_json::json!({
        "configured": s.configured,
        "files": s.files,
        "directory": s.directory,
        "policies": s.policies.iter().map(|p| {
            let mut v = serde_json::json!({
                "id": p.id, "effect": p.effect, "file": p.file, "line": p.line, "entries": p.entries,
            });
            if full {
                v["text"] = p.text.clone().into();
            }
            v
        }).collect::<Vec<_>>(),
        "principals": s.principals,
        "resources": s.resources,
        "principal_classes": s.principal_classes,
        "resource_classes": s.resource_classes,
        "decisions": s.decisions,
        "class_decisions": s.class_decisions,
        "classed_principals": s.classed_principals,
        "applied_at_unix_ms": s.applied_unix_ms,
        "next_boundary_unix_ms": s.next_boundary_unix_ms,
        "last_error": s.last_error,
        "unresolved": s.unresolved,
        "host_labels": s.host_labels,
        "ldap": s.ldap.as_ref().map(|l| serde_json::json!({
            "url": l.url,
            "read_at_unix_ms": l.read_unix_ms,
            "users": l.users,
            "groups": l.groups,
            "bad_entries": l.bad_entries,
            "unreachable": l.unreachable,
        })),
    })
}

pub fn policy(s: &pb::PolicyStatus, full: bool, json: bool) {
    if json {
        println!("{}", policy_json(s, full));
        return;
    }
    if !s.configured {
        println!("no Cedar policy: the agent's config has no [policy] section");
        return;
    }
    println!("files:       {}", s.files.join(", "));
    println!(
        "directory:   {}",
        if s.directory.is_empty() {
            "-"
        } else {
            &s.directory
        }
    );
    if let Some(l) = &s.ldap {
        let read = if l.read_unix_ms > 0 {
            format!(
                "{} users, {} groups, read {}",
                l.users,
                l.groups,
                when(l.read_unix_ms)
            )
        } else {
            "never read yet".to_owned()
        };
        println!("ldap:        {} ({read})", l.url);
        if !l.unreachable.is_empty() {
            println!(
                "             UNREACHABLE (the last good directory still enforces): {}",
                l.unreachable
            );
        }
        for b in &l.bad_entries {
            println!("warning: ldap entry: {b}");
        }
    }
    println!(
        "host labels: {}",
        if s.host_labels.is_empty() {
            "-".to_owned()
        } else {
            s.host_labels.join(", ")
        }
    );
    println!("applied:     {}", when(s.applied_unix_ms));
    println!(
        "compiled:    {} principals ({} classes) x {} resources ({} classes): {} decisions",
        s.principals, s.principal_classes, s.resources, s.resource_classes, s.decisions
    );
    println!(
        "in kernel:   {} class entries; {} users and workloads in a class",
        s.class_decisions, s.classed_principals
    );
    if s.next_boundary_unix_ms > 0 {
        println!(
            "next window boundary: {} ({})",
            when(s.next_boundary_unix_ms),
            left(s.next_boundary_unix_ms)
        );
    }
    println!();
    println!("{:<24} {:<7} {:>8}  SOURCE", "POLICY", "EFFECT", "ENTRIES");
    for p in &s.policies {
        println!(
            "{:<24} {:<7} {:>8}  {}:{}",
            p.id, p.effect, p.entries, p.file, p.line
        );
        if full {
            for line in p.text.lines() {
                println!("    {line}");
            }
        }
    }
    for u in &s.unresolved {
        println!("warning: not enforced: {u}");
    }
    if !s.last_error.is_empty() {
        println!(
            "\nlast reload REFUSED (the policy above still enforces):\n{}",
            s.last_error
        );
    }
}

pub fn policy_applied(s: &pb::PolicyStatus, json: bool) {
    if json {
        println!("{}", policy_json(s, false));
        return;
    }
    println!(
        "applied: {} policies, {} decisions over {} principals and {} resources",
        s.policies.len(),
        s.decisions,
        s.principals,
        s.resources
    );
    for u in &s.unresolved {
        println!("warning: not enforced: {u}");
    }
}

fn request_state(s: i32) -> String {
    pb::RequestState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("REQUEST_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

fn request_json(r: &pb::AccessRequest) -> Value {
    serde_json::json!({
        "id": r.id,
        "requester": r.requester,
        "state": request_state(r.state),
        "operations": r.operations.iter().map(|o| text::operation(*o)).collect::<Vec<_>>(),
        "objects": r.objects.iter().map(text::object).collect::<Vec<_>>(),
        "hosts": r.hosts,
        "workload": r.workload,
        "duration_ms": r.duration_ms,
        "reason": r.reason,
        "ticket": r.ticket,
        "approvals_required": r.approvals_required,
        "reviews": r.reviews.iter().map(|v| serde_json::json!({
            "reviewer": v.reviewer, "approve": v.approve, "reason": v.reason, "time_unix_ms": v.time_unix_ms,
        })).collect::<Vec<_>>(),
        "policies": r.policies,
        "created_unix_ms": r.created_unix_ms,
        "approved_unix_ms": r.approved_unix_ms,
        "expires_at_unix_ms": r.expires_at_unix_ms,
        "ended_unix_ms": r.ended_unix_ms,
    })
}

pub fn access_request(r: &pb::AccessRequest, json: bool) {
    if json {
        println!("{}", request_json(r));
        return;
    }
    let approvals = r.reviews.iter().filter(|v| v.approve).count();
    println!(
        "{} {} for {} on {}: {} approval(s) of {} needed{}",
        r.id,
        request_state(r.state),
        r.requester,
        r.hosts.join(","),
        approvals,
        r.approvals_required,
        if r.expires_at_unix_ms > 0 {
            format!(
                "; access until {} ({})",
                when(r.expires_at_unix_ms),
                left(r.expires_at_unix_ms)
            )
        } else {
            String::new()
        }
    );
}

pub fn access_requests(list: &[pb::AccessRequest], json: bool) {
    if json {
        println!("{}", Value::Array(list.iter().map(request_json).collect()));
        return;
    }
    println!(
        "{:<8} {:<9} {:<10} {:<14} {:<28} {:<12} {:<9} REASON",
        "ID", "STATE", "REQUESTER", "OPERATIONS", "OBJECTS", "HOSTS", "APPROVALS"
    );
    for r in list {
        let ops: Vec<&str> = r.operations.iter().map(|o| text::operation(*o)).collect();
        let objects: Vec<String> = r.objects.iter().map(text::object).collect();
        println!(
            "{:<8} {:<9} {:<10} {:<14} {:<28} {:<12} {:<9} {}",
            r.id,
            request_state(r.state),
            r.requester,
            ops.join(","),
            objects.join(","),
            r.hosts.join(","),
            format!(
                "{}/{}",
                r.reviews.iter().filter(|v| v.approve).count(),
                r.approvals_required
            ),
            r.reason
        );
    }
}

pub fn audit(entries: &[pb::AuditEntry], json: bool) {
    if json {
        let v: Vec<Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "time_unix_ms": e.time_unix_ms, "request_id": e.request_id, "actor": e.actor,
                    "kind": e.kind, "detail": e.detail,
                })
            })
            .collect();
        println!("{}", Value::Array(v));
        return;
    }
    for e in entries {
        println!(
            "{}  {:<9} {:<8} {:<10} {}",
            when(e.time_unix_ms),
            e.kind,
            e.request_id,
            e.actor,
            e.detail
        );
    }
}

/// `ward audit verify`'s report.
pub fn audit_verified(
    reports: &[(std::path::PathBuf, ward_agent::daemon::audit::Verified)],
    json: bool,
) {
    if json {
        let v: Vec<_> = reports
            .iter()
            .map(|(path, v)| {
                serde_json::json!({
                    "path": path, "files": v.files, "records": v.records,
                    "intact": v.broken.is_none(), "starts_mid_chain": v.starts_mid_chain,
                    "broken": v.broken.as_ref().map(|(file, line, why)| serde_json::json!({
                        "file": file, "line": line, "why": why,
                    })),
                    "head": v.head,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    for (path, v) in reports {
        match &v.broken {
            None => println!(
                "ok: {}: {} records in {} files, chain intact{}; head {}",
                path.display(),
                v.records,
                v.files.len(),
                if v.starts_mid_chain {
                    " (starts mid-chain: older files were rotated away)"
                } else {
                    ""
                },
                v.head
            ),
            Some((file, line, why)) => println!(
                "BROKEN: {}: the chain breaks at {}:{line}: {why}",
                path.display(),
                file.display()
            ),
        }
    }
}

/// Where to sign in, printed while `ward login` waits. The human form goes
/// to stderr so that stdout carries only the result.
pub fn login_prompt(p: &pb::LoginPrompt, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "user_code": p.user_code,
                "verification_uri": p.verification_uri,
                "verification_uri_complete": p.verification_uri_complete,
                "expires_unix_ms": p.expires_unix_ms,
            })
        );
        return;
    }
    if p.verification_uri_complete.is_empty() {
        eprintln!("To sign in, open {}", p.verification_uri);
    } else {
        eprintln!("To sign in, open {}", p.verification_uri_complete);
        eprintln!("(or open {} and enter the code)", p.verification_uri);
    }
    eprintln!(
        "Code: {}   (expires in {})\nWaiting for you to sign in...",
        p.user_code,
        left(p.expires_unix_ms)
    );
}

fn identity_json(i: &pb::Identity) -> Value {
    let attributes: serde_json::Map<String, Value> = i
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v).unwrap_or(Value::String(v.clone())),
            )
        })
        .collect();
    json!({
        "name": i.name, "via": i.via, "issuer": i.issuer, "subject": i.subject,
        "groups": i.groups, "attributes": attributes,
        "session_expires_unix_ms": i.session_expires_unix_ms,
    })
}

fn identity_lines(i: &pb::Identity) {
    println!("name:        {}", i.name);
    println!(
        "signed in:   {}",
        match i.via.as_str() {
            "session" => format!("session through {} (subject {})", i.issuer, i.subject),
            _ => "client certificate".to_owned(),
        }
    );
    if i.via == "certificate" && !i.issuer.is_empty() {
        println!(
            "provider:    {} (subject {}), last sign-in",
            i.issuer, i.subject
        );
    }
    println!(
        "groups:      {}",
        if i.groups.is_empty() {
            "-".into()
        } else {
            i.groups.join(", ")
        }
    );
    let attrs: Vec<String> = i
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "attributes:  {}",
        if attrs.is_empty() {
            "-".into()
        } else {
            attrs.join(", ")
        }
    );
    if i.session_expires_unix_ms > 0 {
        println!(
            "expires:     {} (in {})",
            when(i.session_expires_unix_ms),
            left(i.session_expires_unix_ms)
        );
    }
}

/// `ward login`'s result.
pub fn signed_in(i: &pb::Identity, path: &std::path::Path, json: bool) {
    if json {
        let mut v = identity_json(i);
        v["session_file"] = json!(path.display().to_string());
        println!("{v}");
        return;
    }
    identity_lines(i);
    println!("session:     saved to {}", path.display());
}

/// `ward whoami`.
pub fn identity(i: &pb::Identity, json: bool) {
    if json {
        println!("{}", identity_json(i));
    } else {
        identity_lines(i);
    }
}

/// `ward logout`: `signed_out` is whose session the file held and what
/// became of it at the coordinator; `None` when there was no file.
pub fn logged_out(
    path: &std::path::Path,
    signed_out: Option<(&str, crate::login::Ended)>,
    json: bool,
) {
    use crate::login::Ended;
    let at_coordinator = match signed_out {
        None => "none",
        Some((_, Ended::Now)) => "ended",
        Some((_, Ended::Already)) => "already-over",
        Some((_, Ended::NotAsked)) => "still-valid",
    };
    if json {
        println!(
            "{}",
            json!({
                "session_file": path.display().to_string(),
                "removed": signed_out.is_some(),
                "name": signed_out.map(|(n, _)| n).filter(|n| !n.is_empty()),
                "session": at_coordinator,
            })
        );
        return;
    }
    match signed_out {
        None => println!("Not signed in (no {})", path.display()),
        Some((name, ended)) => {
            let how = match ended {
                Ended::Now => "the session is ended at the coordinator",
                Ended::Already => "the session had already ended",
                Ended::NotAsked => {
                    "the session stays valid at the coordinator until it expires (--local)"
                }
            };
            let who = if name.is_empty() {
                String::new()
            } else {
                format!(" {name}")
            };
            println!("Signed out{who}: {how}; removed {}", path.display());
        }
    }
}
