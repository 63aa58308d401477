//! A grant's parts as people read them: one spelling for the CLI's tables
//! and `--json`, and for the agents' logs.

use crate::v1::{self as pb, object, subject};

/// `alice`, `uid 1001`, `workload system.slice/backup.service`, or `-`.
pub fn subject(s: Option<&pb::Subject>) -> String {
    match s.and_then(|s| s.kind.as_ref()) {
        Some(subject::Kind::User(u)) => u.clone(),
        Some(subject::Kind::Uid(u)) => format!("uid {u}"),
        Some(subject::Kind::Workload(w)) => format!("workload {w}"),
        None => "-".into(),
    }
}

/// `read`, `write`, `exec`, `connect`, or `?` for a value this build does
/// not know.
pub fn operation(raw: i32) -> &'static str {
    crate::ops::op(raw).map_or("?", ward_abi::Op::name)
}

/// The path, prefix, executable or `CIDR:PORTS`, or `-`.
pub fn object(o: &pb::Object) -> String {
    match &o.kind {
        Some(
            object::Kind::Path(p)
            | object::Kind::PathPrefix(p)
            | object::Kind::Executable(p)
            | object::Kind::Network(p),
        ) => p.clone(),
        None => "-".into(),
    }
}

/// A grant's operations and objects, comma-separated: (`read,write`,
/// `/srv/prod/,10.0.0.5/32:5432`).
pub fn rule(g: &pb::Grant) -> (String, String) {
    let ops: Vec<&str> = g.operations.iter().map(|o| operation(*o)).collect();
    let objects: Vec<String> = g.objects.iter().map(object).collect();
    (ops.join(","), objects.join(","))
}
