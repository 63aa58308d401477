//! What a policy reads, found by walking its JSON form.
//!
//! Two principals that agree on everything any policy reads of them get the
//! same decisions, so the compiler evaluates one of them and shares the
//! result. That is what makes 10,000 users × 1,000 resources tractable.
//! The walk is conservative: any use it does not understand makes the
//! variable "opaque", and then every principal (or resource) is its own
//! class: slower, never wrong.

use std::collections::BTreeSet;

use serde_json::Value;

/// What the policies read of `principal` or of `resource`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VarUse {
    /// Attributes read or tested with `has`.
    pub attrs: BTreeSet<String>,
    /// Entities compared with `==`: (type, id).
    pub eq: BTreeSet<(String, String)>,
    /// Entities tested with `in`: (type, id).
    pub within: BTreeSet<(String, String)>,
    /// Used some other way: the identity itself matters.
    pub opaque: bool,
}

impl VarUse {
    fn merge(&mut self, o: &VarUse) {
        self.attrs.extend(o.attrs.iter().cloned());
        self.eq.extend(o.eq.iter().cloned());
        self.within.extend(o.within.iter().cloned());
        self.opaque |= o.opaque;
    }
}

/// How a policy uses the clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeUse {
    pub hour: bool,
    pub day_of_week: bool,
    /// Minutes of the day at which a comparison can change its value.
    pub minutes: BTreeSet<i64>,
    /// `context.minute_of_day` used other than against a literal.
    pub unbounded_minute: bool,
    /// `context` used as a whole.
    pub whole_context: bool,
}

impl TimeUse {
    pub fn any(&self) -> bool {
        self.hour || self.day_of_week || !self.minutes.is_empty() || self.whole_context
    }

    pub fn merge(&mut self, o: &TimeUse) {
        self.hour |= o.hour;
        self.day_of_week |= o.day_of_week;
        self.minutes.extend(o.minutes.iter().copied());
        self.unbounded_minute |= o.unbounded_minute;
        self.whole_context |= o.whole_context;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    pub principal: VarUse,
    pub resource: VarUse,
    pub time: TimeUse,
    /// The host's name is read (`context.host.name`, or `context.host` or
    /// `context` used whole): hosts with the same labels and posture may
    /// be decided apart.
    pub host_name: bool,
}

impl Footprint {
    pub fn merge(&mut self, o: &Footprint) {
        self.principal.merge(&o.principal);
        self.resource.merge(&o.resource);
        self.time.merge(&o.time);
        self.host_name |= o.host_name;
    }
}

/// The footprint of one policy, from `Policy::to_json()`.
pub fn of_policy(json: &Value) -> Footprint {
    let mut fp = Footprint::default();
    scope(json.get("principal"), &mut fp.principal);
    scope(json.get("resource"), &mut fp.resource);
    for c in json
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(body) = c.get("body") {
            walk(body, &mut fp);
        }
    }
    fp
}

fn entity_literal(v: &Value) -> Option<(String, String)> {
    let e = v.get("__entity").unwrap_or(v);
    Some((
        e.get("type")?.as_str()?.to_owned(),
        e.get("id")?.as_str()?.to_owned(),
    ))
}

fn scope(s: Option<&Value>, use_: &mut VarUse) {
    let Some(s) = s else { return };
    let op = s.get("op").and_then(Value::as_str).unwrap_or("All");
    let entity = s.get("entity").and_then(entity_literal);
    match op {
        "==" => match entity {
            Some(e) => {
                use_.eq.insert(e);
            }
            None => use_.opaque = true,
        },
        "in" => match entity {
            Some(e) => {
                use_.within.insert(e);
            }
            None => use_.opaque = true,
        },
        "is" => {
            if let Some(e) = s
                .get("in")
                .and_then(|i| i.get("entity"))
                .and_then(entity_literal)
            {
                use_.within.insert(e);
            }
        }
        _ => {}
    }
}

fn var(v: &Value) -> Option<&str> {
    v.get("Var").and_then(Value::as_str)
}

/// The variable a `.`/`has` node reads from directly, and the attribute.
fn access(node: &Value) -> Option<(&str, &str)> {
    Some((var(node.get("left")?)?, node.get("attr")?.as_str()?))
}

fn is_minute(v: &Value) -> bool {
    v.get(".")
        .and_then(access)
        .is_some_and(|a| a == ("context", "minute_of_day"))
}

fn literals(v: &Value) -> Option<Vec<(String, String)>> {
    if let Some(lit) = v.get("Value") {
        return entity_literal(lit).map(|e| vec![e]);
    }
    v.get("Set")?
        .as_array()?
        .iter()
        .map(|x| x.get("Value").and_then(entity_literal))
        .collect()
}

fn walk(e: &Value, fp: &mut Footprint) {
    match e {
        Value::Array(items) => items.iter().for_each(|i| walk(i, fp)),
        Value::Object(map) => {
            if let Some(v) = map.get("Var").and_then(Value::as_str) {
                match v {
                    "principal" => fp.principal.opaque = true,
                    "resource" => fp.resource.opaque = true,
                    "context" => {
                        fp.time.whole_context = true;
                        fp.host_name = true;
                    }
                    _ => {}
                }
                return;
            }
            for (op, node) in map {
                match op.as_str() {
                    // `context.host.labels` tells hosts apart by what
                    // they share; any other use of `context.host` may
                    // read its name.
                    "." | "has"
                        if node.get("left").and_then(|l| l.get(".")).and_then(access)
                            == Some(("context", "host")) =>
                    {
                        if node.get("attr").and_then(Value::as_str) != Some("labels") {
                            fp.host_name = true;
                        }
                    }
                    "." | "has" => match access(node) {
                        Some(("principal", a)) => {
                            fp.principal.attrs.insert(a.to_owned());
                        }
                        Some(("resource", a)) => {
                            fp.resource.attrs.insert(a.to_owned());
                        }
                        Some(("context", a)) => match a {
                            "hour" => fp.time.hour = true,
                            "day_of_week" => fp.time.day_of_week = true,
                            "minute_of_day" => fp.time.unbounded_minute = true,
                            "host" => fp.host_name = true,
                            _ => {}
                        },
                        _ => walk(node, fp),
                    },
                    "<" | "<=" | ">" | ">=" | "==" | "!=" => {
                        let (l, r) = (&node["left"], &node["right"]);
                        let lit = |v: &Value| v.get("Value").and_then(Value::as_i64);
                        let minute = if is_minute(l) {
                            lit(r).map(|n| (n, r))
                        } else if is_minute(r) {
                            lit(l).map(|n| (n, l))
                        } else {
                            None
                        };
                        if let Some((n, _)) = minute {
                            fp.time.minutes.insert(n);
                            fp.time.minutes.insert(n + 1);
                            continue;
                        }
                        if op == "=="
                            && let Some(done) = identity(l, r, "eq", fp)
                        {
                            if !done {
                                walk(node, fp);
                            }
                            continue;
                        }
                        walk(node, fp);
                    }
                    "in" => {
                        if identity(&node["left"], &node["right"], "in", fp) != Some(true) {
                            walk(node, fp);
                        }
                    }
                    "is" => {
                        let left = &node["left"];
                        if matches!(var(left), Some("principal" | "resource")) {
                            if let Some(inner) = node.get("in")
                                && identity(left, inner, "in", fp) != Some(true)
                            {
                                walk(inner, fp);
                            }
                        } else {
                            walk(node, fp);
                        }
                    }
                    _ => walk(node, fp),
                }
            }
        }
        _ => {}
    }
}

/// `principal == User::"x"`, `resource in [Path::"/a/", Path::"/b/"]`:
/// records the literals; `Some(true)` when fully handled.
fn identity(l: &Value, r: &Value, how: &str, fp: &mut Footprint) -> Option<bool> {
    let use_ = match var(l) {
        Some("principal") => &mut fp.principal,
        Some("resource") => &mut fp.resource,
        _ => return None,
    };
    let lits = literals(r)?;
    let set = if how == "eq" {
        &mut use_.eq
    } else {
        &mut use_.within
    };
    set.extend(lits);
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(src: &str) -> Footprint {
        let p = cedar_policy::Policy::parse(None, src).unwrap();
        of_policy(&p.to_json().unwrap())
    }

    #[test]
    fn attributes_literals_and_time_are_found() {
        let f = fp(
            r#"permit(principal in Group::"eng", action, resource in Path::"/srv/")
            when { principal.department == resource.department && principal has clearance
                   && context.hour >= 9 && context.minute_of_day < 1080
                   && ["mon"].contains(context.day_of_week) && principal in [Group::"a", Group::"b"] };"#,
        );
        assert_eq!(
            f.principal.attrs.iter().collect::<Vec<_>>(),
            ["clearance", "department"]
        );
        assert!(f.principal.within.contains(&("Group".into(), "eng".into())));
        assert!(f.principal.within.contains(&("Group".into(), "b".into())));
        assert!(f.resource.within.contains(&("Path".into(), "/srv/".into())));
        assert!(!f.principal.opaque && !f.resource.opaque);
        assert!(f.time.hour && f.time.day_of_week);
        assert_eq!(
            f.time.minutes.iter().copied().collect::<Vec<_>>(),
            [1080, 1081]
        );
        assert!(!f.time.unbounded_minute);
    }

    #[test]
    fn identity_uses_and_unbounded_minutes_are_flagged() {
        let f = fp(
            r#"permit(principal, action, resource) when { resource.owner == principal.department || principal == resource };"#,
        );
        assert!(f.principal.opaque && f.resource.opaque);
        let f = fp(
            r#"permit(principal == User::"alice", action, resource) when { context.minute_of_day + 1 > 600 };"#,
        );
        assert!(f.principal.eq.contains(&("User".into(), "alice".into())));
        assert!(f.time.unbounded_minute);
    }

    /// Labels and posture tell hosts apart by what they share; the name,
    /// or the host or context used whole, may tell each apart.
    #[test]
    fn reading_the_host_name_is_flagged() {
        let labels = fp(
            r#"permit(principal, action, resource) when { context.host.labels.contains("env=prod")
                   && context.posture.file_enforcement && context.hour > 8 };"#,
        );
        assert!(!labels.host_name);
        for src in [
            r#"permit(principal, action, resource) when { context.host.name == "db1" };"#,
            r#"permit(principal, action, resource) when { context.host has name };"#,
            r#"permit(principal, action, resource) when { context.host == { name: "a", labels: [] } };"#,
            r#"permit(principal, action, resource) when { context == {} };"#,
        ] {
            assert!(fp(src).host_name, "{src}");
        }
    }
}
