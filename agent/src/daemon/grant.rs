//! Validating a pushed grant: refused whole, with the bad field named.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ward_abi::{Effect, Op};
use ward_proto::v1::{Grant, Object as PbObject, Subject as PbSubject, object, subject};

use super::users;
use crate::enforcer::{
    Entry, Expiry, NetPattern, Object, PathPattern, Subject, wall_minus_boot_ns,
};

/// Why a grant was refused: `field` is the protobuf field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidGrant {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidGrant {
    InvalidGrant {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Whom a grant is for, resolved on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    User {
        uid: u32,
        name: Option<String>,
    },
    /// A cgroup path, and the workload key its rules name.
    Workload {
        path: String,
        key: u64,
    },
}

impl Grantee {
    pub fn subject(&self) -> Subject {
        match self {
            Grantee::User { uid, .. } => Subject::Uid(*uid),
            Grantee::Workload { key, .. } => Subject::Cgroup(*key),
        }
    }

    pub fn uid(&self) -> Option<u32> {
        match self {
            Grantee::User { uid, .. } => Some(*uid),
            Grantee::Workload { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ValidGrant {
    pub grantee: Grantee,
    pub targets: Vec<(Op, Object)>,
    pub not_before: SystemTime,
    pub expires_at: SystemTime,
}

impl ValidGrant {
    /// The kernel entries for this grant, expiring on the boot clock.
    pub fn entries(&self, kernel_id: u64) -> Vec<Entry> {
        let expires = Expiry::AtBootNs(to_boot_ns(self.expires_at));
        self.targets
            .iter()
            .map(|(op, object)| Entry {
                subject: self.grantee.subject(),
                op: *op,
                object: object.clone(),
                effect: Effect::Allow,
                expires,
                rule_id: kernel_id,
                from_grant: true,
            })
            .collect()
    }
}

/// Wall-clock time to the kernel's boot clock, by the offset between them
/// now: the kernel compares against the boot clock, which cannot be set.
pub fn to_boot_ns(t: SystemTime) -> u64 {
    let wall = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    (wall - wall_minus_boot_ns()).clamp(0, i128::from(u64::MAX)) as u64
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Checks a grant as pushed.
pub fn validate(
    g: &Grant,
    now: SystemTime,
    max_duration: Duration,
    cgroup_root: Option<&Path>,
) -> Result<ValidGrant, InvalidGrant> {
    if g.id.is_empty() {
        return Err(invalid("id", "is empty"));
    }
    if g.id.len() > 128
        || !g
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    {
        return Err(invalid(
            "id",
            "must be 1-128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    let grantee = grantee(g.subject.as_ref(), cgroup_root)?;
    if g.operations.is_empty() {
        return Err(invalid("operations", "is empty"));
    }
    let mut ops = Vec::new();
    for (i, raw) in g.operations.iter().enumerate() {
        let Some(op) = ward_proto::ops::op(*raw) else {
            return Err(invalid(
                format!("operations[{i}]"),
                format!("unknown operation {raw}"),
            ));
        };
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    if g.objects.is_empty() {
        return Err(invalid(
            "objects",
            "is empty: name at least one path, executable or network",
        ));
    }
    let objects = g
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| parse_object(i, o))
        .collect::<Result<Vec<_>, _>>()?;
    let mut targets = Vec::new();
    for (i, (object, kind)) in objects.iter().enumerate() {
        let fitting: Vec<Op> = ops.iter().copied().filter(|op| kind.accepts(*op)).collect();
        if fitting.is_empty() {
            return Err(invalid(
                format!("objects[{i}]"),
                format!(
                    "no requested operation applies to {} `{object}`",
                    kind.name()
                ),
            ));
        }
        targets.extend(fitting.into_iter().map(|op| (op, object.clone())));
    }
    for (i, op) in ops.iter().enumerate() {
        if !objects.iter().any(|(_, k)| k.accepts(*op)) {
            return Err(invalid(
                format!("operations[{i}]"),
                format!("{op:?} applies to none of the objects"),
            ));
        }
    }
    let not_before = if g.not_before_unix_ms == 0 {
        now
    } else {
        from_unix_ms(g.not_before_unix_ms)
    };
    if g.expires_at_unix_ms <= 0 {
        return Err(invalid("expires_at_unix_ms", "is missing"));
    }
    let expires_at = from_unix_ms(g.expires_at_unix_ms);
    if expires_at <= now {
        return Err(invalid("expires_at_unix_ms", "is in the past"));
    }
    if expires_at <= not_before {
        return Err(invalid(
            "not_before_unix_ms",
            "is not before expires_at_unix_ms",
        ));
    }
    let start = not_before.max(now);
    let length = expires_at.duration_since(start).unwrap_or_default();
    if length > max_duration {
        return Err(invalid(
            "expires_at_unix_ms",
            format!(
                "grant lasts {}, beyond the maximum of {}",
                humantime::format_duration(Duration::from_secs(length.as_secs())),
                humantime::format_duration(max_duration)
            ),
        ));
    }
    if g.reason.trim().is_empty() {
        return Err(invalid("reason", "is required"));
    }
    Ok(ValidGrant {
        grantee,
        targets,
        not_before,
        expires_at,
    })
}

/// Resolves a subject on this host: a user through the user database, a
/// workload to its cgroup id.
pub fn grantee(s: Option<&PbSubject>, cgroup_root: Option<&Path>) -> Result<Grantee, InvalidGrant> {
    match s.and_then(|s| s.kind.as_ref()) {
        None => Err(invalid("subject", "is missing")),
        Some(subject::Kind::User(name)) => users::by_name(name)
            .map(|u| Grantee::User {
                uid: u.uid,
                name: Some(u.name),
            })
            .ok_or_else(|| invalid("subject.user", format!("unknown user `{name}`"))),
        Some(subject::Kind::Uid(uid)) => Ok(Grantee::User {
            uid: *uid,
            name: users::by_uid(*uid).map(|u| u.name),
        }),
        Some(subject::Kind::Workload(path)) => {
            let bad = |r: &str| invalid("subject.workload", format!("`{path}`: {r}"));
            crate::cgroup::check_path(path).map_err(bad)?;
            if cgroup_root.is_none() {
                return Err(bad("no cgroup v2 hierarchy on this host"));
            }
            // The cgroup need not exist yet: its path is followed, and the
            // grant holds whenever it does (see `Engine::list_workload`).
            Ok(Grantee::Workload {
                path: path.clone(),
                key: crate::cgroup::path_key(path),
            })
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Tree,
    Executable,
    Network,
}

impl Kind {
    fn accepts(self, op: Op) -> bool {
        match self {
            Kind::File | Kind::Tree => matches!(op, Op::Read | Op::Write | Op::Exec),
            Kind::Executable => op == Op::Exec,
            Kind::Network => op == Op::Connect,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::File => "path",
            Kind::Tree => "path prefix",
            Kind::Executable => "executable",
            Kind::Network => "network",
        }
    }
}

fn parse_object(i: usize, o: &PbObject) -> Result<(Object, Kind), InvalidGrant> {
    let field = |name: &str| format!("objects[{i}].{name}");
    match o.kind.as_ref() {
        None => Err(invalid(format!("objects[{i}]"), "is empty")),
        Some(object::Kind::Path(p)) => match PathPattern::parse(p) {
            Ok(pp @ PathPattern::File(_)) => Ok((Object::Path(pp), Kind::File)),
            Ok(PathPattern::Subtree(_)) => Err(invalid(
                field("path"),
                format!("`{p}` ends in `/`; use path_prefix for a tree"),
            )),
            Err(e) => Err(invalid(field("path"), e.to_string())),
        },
        Some(object::Kind::PathPrefix(p)) => match PathPattern::parse(p) {
            Ok(pp @ PathPattern::Subtree(_)) => Ok((Object::Path(pp), Kind::Tree)),
            Ok(PathPattern::File(_)) => Err(invalid(
                field("path_prefix"),
                format!("`{p}` must end in `/`"),
            )),
            Err(e) => Err(invalid(field("path_prefix"), e.to_string())),
        },
        Some(object::Kind::Executable(p)) => match PathPattern::parse(p) {
            Ok(pp @ PathPattern::File(_)) => Ok((Object::Path(pp), Kind::Executable)),
            Ok(PathPattern::Subtree(_)) => Err(invalid(
                field("executable"),
                format!("`{p}` is a directory"),
            )),
            Err(e) => Err(invalid(field("executable"), e.to_string())),
        },
        Some(object::Kind::Network(n)) => NetPattern::parse(n)
            .map(|np| (Object::Net(np), Kind::Network))
            .map_err(|e| invalid(field("network"), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_proto::v1::Operation;

    fn base() -> Grant {
        let now = unix_ms(SystemTime::now());
        Grant {
            id: "g-1".into(),
            subject: Some(PbSubject {
                kind: Some(subject::Kind::User("root".into())),
            }),
            operations: vec![Operation::Read as i32],
            objects: vec![PbObject {
                kind: Some(object::Kind::PathPrefix("/srv/prod/".into())),
            }],
            expires_at_unix_ms: now + 15 * 60_000,
            reason: "INC-123".into(),
            ..Default::default()
        }
    }

    fn check(g: &Grant) -> Result<ValidGrant, InvalidGrant> {
        validate(g, SystemTime::now(), Duration::from_secs(3600), None)
    }

    #[test]
    fn a_good_grant_resolves_its_user() {
        let v = check(&base()).unwrap();
        assert_eq!(v.grantee.uid(), Some(0));
        assert_eq!(v.targets.len(), 1);
    }

    #[test]
    fn every_bad_field_is_named() {
        let now = unix_ms(SystemTime::now());
        type Edit = Box<dyn Fn(&mut Grant)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "subject.user",
                Box::new(|g| {
                    g.subject = Some(PbSubject {
                        kind: Some(subject::Kind::User("nobody-here".into())),
                    })
                }),
            ),
            (
                "objects[0].path_prefix",
                Box::new(|g| {
                    g.objects[0].kind = Some(object::Kind::PathPrefix("srv/prod/".into()))
                }),
            ),
            (
                "objects[0].path_prefix",
                Box::new(|g| {
                    g.objects[0].kind = Some(object::Kind::PathPrefix("/srv/../etc/".into()))
                }),
            ),
            ("objects", Box::new(|g| g.objects.clear())),
            (
                "expires_at_unix_ms",
                Box::new(move |g| g.expires_at_unix_ms = now - 1000),
            ),
            (
                "expires_at_unix_ms",
                Box::new(move |g| g.expires_at_unix_ms = now + 2 * 3600 * 1000),
            ),
            (
                "objects[0].network",
                Box::new(|g| {
                    g.operations = vec![Operation::Connect as i32];
                    g.objects[0].kind = Some(object::Kind::Network("10.0.0.0/33:443".into()));
                }),
            ),
            (
                "objects[0]",
                Box::new(|g| g.operations = vec![Operation::Connect as i32]),
            ),
            ("id", Box::new(|g| g.id = "has spaces".into())),
            ("reason", Box::new(|g| g.reason = " ".into())),
            ("subject", Box::new(|g| g.subject = None)),
            ("operations", Box::new(|g| g.operations.clear())),
        ];
        for (field, edit) in cases {
            let mut g = base();
            edit(&mut g);
            let err = check(&g).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }
}
