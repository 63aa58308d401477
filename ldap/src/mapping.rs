//! LDAP entries onto ward's schema: users with their mapped attributes,
//! groups, and membership by DN (nested groups too) or by login name.
//!
//! A bad entry (no name, a value that is not of the attribute's type, two
//! values where one is meant) is reported by DN and attribute, and the rest
//! applies. A user the last good read knew keeps what it had then, so a
//! typo in one entry neither drops nor widens that person's access.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};
use ward_policy::{AttrType, Directory, EntityDef, EntityKey, Kind};

use crate::source::LdapSource;

/// One entry as the server returned it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    /// Attribute names as the server spelled them; looked up without case.
    pub attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    fn values(&self, attr: &str) -> &[String] {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The one value of `attr`: `Ok(None)` if absent, an error if several
    /// differ.
    fn single(&self, attr: &str) -> Result<Option<&str>, String> {
        let values = self.values(attr);
        let distinct: BTreeSet<&str> = values.iter().map(String::as_str).collect();
        match distinct.len() {
            0 => Ok(None),
            1 => Ok(distinct.into_iter().next()),
            n => Err(format!("has {n} different values where one is meant")),
        }
    }
}

/// An entry left out (or kept as last read), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    pub dn: String,
    /// The LDAP attribute at fault, or `-` when it is the entry as a whole.
    pub attribute: String,
    pub problem: String,
    /// Whether the entity kept what the last good read had.
    pub kept_previous: bool,
}

impl std::fmt::Display for BadEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.dn, self.attribute, self.problem)?;
        if self.kept_previous {
            f.write_str(" (its last good version stays)")?;
        }
        Ok(())
    }
}

/// What a read of the server gave: the users and groups, checked against
/// ward's schema, and what was left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    pub defs: Vec<EntityDef>,
    pub bad: Vec<BadEntry>,
}

/// A DN compared as LDAP does for the common case: attribute types and
/// values without case, no spaces around separators.
fn normal_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

/// Maps `users` and `groups` onto ward's schema. `previous` is the last
/// good read's entities: a bad user entry keeps its previous attributes.
pub fn map_entries(
    source: &LdapSource,
    users: &[Entry],
    groups: &[Entry],
    previous: &[EntityDef],
) -> Mapped {
    let previous: BTreeMap<EntityKey, &EntityDef> = previous.iter().map(|d| (d.key(), d)).collect();
    let mut bad = Vec::new();
    // name -> (dn, attributes)
    let mut user_defs: BTreeMap<String, (String, Map<String, Value>)> = BTreeMap::new();
    let mut user_by_dn: HashMap<String, String> = HashMap::new();
    for e in users {
        let name = match e.single(&source.users.name) {
            Ok(Some(n)) if !n.is_empty() => n.to_owned(),
            Ok(_) => {
                bad.push(BadEntry {
                    dn: e.dn.clone(),
                    attribute: source.users.name.clone(),
                    problem: "missing: the entry has no login name".into(),
                    kept_previous: false,
                });
                continue;
            }
            Err(problem) => {
                bad.push(BadEntry {
                    dn: e.dn.clone(),
                    attribute: source.users.name.clone(),
                    problem,
                    kept_previous: false,
                });
                continue;
            }
        };
        if let Some((other, _)) = user_defs.get(&name) {
            bad.push(BadEntry {
                dn: e.dn.clone(),
                attribute: source.users.name.clone(),
                problem: format!("`{name}` is also the name of {other}"),
                kept_previous: false,
            });
            continue;
        }
        let attrs = match user_attributes(source, e) {
            Ok(attrs) => attrs,
            Err((attribute, problem)) => {
                let last = previous.get(&EntityKey::new(Kind::User, &name));
                bad.push(BadEntry {
                    dn: e.dn.clone(),
                    attribute,
                    problem,
                    kept_previous: last.is_some(),
                });
                match last {
                    Some(d) => d.attrs.clone(),
                    None => continue,
                }
            }
        };
        user_by_dn.insert(normal_dn(&e.dn), name.clone());
        user_defs.insert(name, (e.dn.clone(), attrs));
    }

    let mut group_defs: BTreeMap<String, String> = BTreeMap::new();
    let mut group_by_dn: HashMap<String, String> = HashMap::new();
    let mut members: Vec<(String, &Entry)> = Vec::new();
    if let Some(g) = &source.groups {
        for e in groups {
            let name = match e.single(&g.name) {
                Ok(Some(n)) if !n.is_empty() => n.to_owned(),
                Ok(_) => {
                    bad.push(BadEntry {
                        dn: e.dn.clone(),
                        attribute: g.name.clone(),
                        problem: "missing: the group has no name".into(),
                        kept_previous: false,
                    });
                    continue;
                }
                Err(problem) => {
                    bad.push(BadEntry {
                        dn: e.dn.clone(),
                        attribute: g.name.clone(),
                        problem,
                        kept_previous: false,
                    });
                    continue;
                }
            };
            if let Some(other) = group_defs.get(&name) {
                bad.push(BadEntry {
                    dn: e.dn.clone(),
                    attribute: g.name.clone(),
                    problem: format!("`{name}` is also the name of {other}"),
                    kept_previous: false,
                });
                continue;
            }
            group_by_dn.insert(normal_dn(&e.dn), name.clone());
            group_defs.insert(name.clone(), e.dn.clone());
            members.push((name, e));
        }
    }

    // Membership: a user's groups, a group's parent groups.
    let mut user_groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut group_parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(g) = &source.groups {
        for (group, e) in &members {
            for m in e.values(&g.members) {
                let m = normal_dn(m);
                if let Some(user) = user_by_dn.get(&m) {
                    user_groups
                        .entry(user.clone())
                        .or_default()
                        .insert(group.clone());
                } else if let Some(child) = group_by_dn.get(&m) {
                    group_parents
                        .entry(child.clone())
                        .or_default()
                        .insert(group.clone());
                }
            }
            for uid in e.values(&g.member_uids) {
                if user_defs.contains_key(uid.as_str()) {
                    user_groups
                        .entry(uid.clone())
                        .or_default()
                        .insert(group.clone());
                }
            }
        }
    }

    let mut defs = Vec::new();
    let mut dn_of: HashMap<EntityKey, String> = HashMap::new();
    for (name, dn) in &group_defs {
        let parents = group_parents
            .get(name)
            .into_iter()
            .flatten()
            .map(|p| EntityKey::new(Kind::Group, p))
            .collect();
        let def = EntityDef {
            kind: Kind::Group,
            id: name.clone(),
            parents,
            attrs: Map::new(),
        };
        dn_of.insert(def.key(), dn.clone());
        defs.push(def);
    }
    for (name, (dn, attrs)) in user_defs {
        let parents = user_groups
            .get(&name)
            .into_iter()
            .flatten()
            .map(|p| EntityKey::new(Kind::Group, p))
            .collect();
        let def = EntityDef {
            kind: Kind::User,
            id: name,
            parents,
            attrs,
        };
        dn_of.insert(def.key(), dn);
        defs.push(def);
    }

    // What the schema or the hierarchy refuses (a group cycle, say) is
    // left out too, named by DN.
    let (kept, refused) = Directory::check_each(defs);
    for e in refused {
        let dn = e
            .entity()
            .and_then(|k| dn_of.get(k).cloned())
            .unwrap_or_else(|| "-".into());
        bad.push(BadEntry {
            dn,
            attribute: "-".into(),
            problem: e.to_string(),
            kept_previous: false,
        });
    }
    Mapped { defs: kept, bad }
}

/// A user's mapped attributes, each converted to its schema type; the
/// first that cannot be is `(LDAP attribute, problem)`.
fn user_attributes(source: &LdapSource, e: &Entry) -> Result<Map<String, Value>, (String, String)> {
    let mut attrs = Map::new();
    for (ward, ldap) in &source.users.attributes {
        let Some(value) = e.single(ldap).map_err(|p| (ldap.clone(), p))? else {
            continue;
        };
        let value = match ward_policy::attribute_type(Kind::User, ward) {
            Some(AttrType::Long) => value.trim().parse::<i64>().map(Value::from).map_err(|_| {
                (
                    ldap.clone(),
                    format!("`{value}` is not a whole number, which {ward} is"),
                )
            })?,
            Some(AttrType::Bool) => match value.to_ascii_uppercase().as_str() {
                "TRUE" => Value::Bool(true),
                "FALSE" => Value::Bool(false),
                _ => {
                    return Err((
                        ldap.clone(),
                        format!("`{value}` is not TRUE or FALSE, which {ward} is"),
                    ));
                }
            },
            Some(AttrType::String) => Value::String(value.to_owned()),
            None => {
                return Err((
                    ldap.clone(),
                    format!("{ward} is not an attribute of User in ward's schema"),
                ));
            }
        };
        attrs.insert(ward.clone(), value);
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> LdapSource {
        toml::from_str(
            r#"
url = "ldap://127.0.0.1:3389"
[users]
base = "ou=people,dc=ward,dc=test"
attributes = { department = "departmentNumber", clearance = "employeeType" }
[groups]
base = "ou=groups,dc=ward,dc=test"
"#,
        )
        .unwrap()
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> Entry {
        Entry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        }
    }

    fn user(name: &str, dept: &str, clearance: &str) -> Entry {
        entry(
            &format!("uid={name},ou=people,dc=ward,dc=test"),
            &[
                ("uid", &[name]),
                ("departmentNumber", &[dept]),
                ("employeeType", &[clearance]),
            ],
        )
    }

    fn def<'a>(m: &'a Mapped, kind: Kind, id: &str) -> Option<&'a EntityDef> {
        m.defs.iter().find(|d| d.kind == kind && d.id == id)
    }

    #[test]
    fn users_groups_and_nested_groups_map_onto_the_schema() {
        let users = [user("alice", "eng", "3"), user("bob", "ops", "1")];
        let groups = [
            entry(
                "cn=oncall,ou=groups,dc=ward,dc=test",
                &[
                    ("cn", &["oncall"]),
                    ("member", &["UID=alice, ou=People,dc=ward,dc=test"]),
                ],
            ),
            entry(
                "cn=staff,ou=groups,dc=ward,dc=test",
                &[
                    ("cn", &["staff"]),
                    ("member", &["cn=oncall,ou=groups,dc=ward,dc=test"]),
                    ("memberUid", &["bob"]),
                ],
            ),
        ];
        let m = map_entries(&source(), &users, &groups, &[]);
        assert!(m.bad.is_empty(), "{:?}", m.bad);
        let alice = def(&m, Kind::User, "alice").unwrap();
        assert_eq!(alice.attrs["department"], "eng");
        assert_eq!(alice.attrs["clearance"], 3);
        assert_eq!(alice.parents, [EntityKey::new(Kind::Group, "oncall")]);
        let oncall = def(&m, Kind::Group, "oncall").unwrap();
        assert_eq!(oncall.parents, [EntityKey::new(Kind::Group, "staff")]);
        let bob = def(&m, Kind::User, "bob").unwrap();
        assert_eq!(bob.parents, [EntityKey::new(Kind::Group, "staff")]);
    }

    #[test]
    fn a_bad_entry_is_named_by_dn_and_attribute_and_the_rest_applies() {
        let users = [
            user("alice", "eng", "high"),
            user("bob", "ops", "1"),
            entry("cn=nameless,ou=people,dc=ward,dc=test", &[("cn", &["x"])]),
        ];
        let m = map_entries(&source(), &users, &[], &[]);
        assert!(def(&m, Kind::User, "bob").is_some());
        assert!(
            def(&m, Kind::User, "alice").is_none(),
            "never read good: left out"
        );
        let alice = m
            .bad
            .iter()
            .find(|b| b.dn.starts_with("uid=alice"))
            .unwrap();
        assert_eq!(alice.attribute, "employeeType");
        assert!(alice.problem.contains("`high`"), "{alice}");
        assert!(
            m.bad
                .iter()
                .any(|b| b.dn.starts_with("cn=nameless") && b.attribute == "uid")
        );

        // Read good once, alice keeps that version through a bad edit.
        let good = map_entries(&source(), &[user("alice", "eng", "3")], &[], &[]);
        let m = map_entries(&source(), &users, &[], &good.defs);
        let alice = def(&m, Kind::User, "alice").unwrap();
        assert_eq!(alice.attrs["clearance"], 3);
        assert!(m.bad.iter().any(|b| b.kept_previous));
    }

    #[test]
    fn a_group_cycle_is_left_out_by_dn() {
        let groups = [
            entry(
                "cn=a,ou=groups,dc=ward,dc=test",
                &[
                    ("cn", &["a"]),
                    ("member", &["cn=b,ou=groups,dc=ward,dc=test"]),
                ],
            ),
            entry(
                "cn=b,ou=groups,dc=ward,dc=test",
                &[
                    ("cn", &["b"]),
                    ("member", &["cn=a,ou=groups,dc=ward,dc=test"]),
                ],
            ),
            entry("cn=c,ou=groups,dc=ward,dc=test", &[("cn", &["c"])]),
        ];
        let m = map_entries(&source(), &[], &groups, &[]);
        assert!(def(&m, Kind::Group, "c").is_some());
        assert!(!m.bad.is_empty());
        assert!(
            m.bad
                .iter()
                .all(|b| b.dn.starts_with("cn=a") || b.dn.starts_with("cn=b")),
            "{:?}",
            m.bad
        );
    }
}
