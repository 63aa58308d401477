//! The attribute directory: users, groups, workloads, and the resources
//! ward protects, from a TOML file or Cedar's entities JSON.
//!
//! ```toml
//! [groups.oncall]
//! parents = ["staff"]
//!
//! [users.alice]
//! groups = ["oncall"]
//! department = "eng"
//! clearance = 3
//!
//! [workloads.backup]
//! cgroup = "system.slice/backup.service"
//!
//! [paths."/srv/prod/"]
//! classification = "secret"
//!
//! [executables."/usr/bin/psql"]
//! [networks."10.0.0.0/8:5432"]
//! ```
//!
//! Every resource listed is protected: managed subjects reach it only
//! through a permit or a grant. Paths nest by prefix, so a policy on
//! `Path::"/srv/"` covers what is inside it.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt,
    path::Path,
};

use cedar_policy::{Entity, EntityUid};
use serde_json::{Map, Value, json};

use crate::{net::NetPattern, schema::schema};

/// The entity types of ward's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    User,
    Group,
    Workload,
    Path,
    Executable,
    Network,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::User,
        Kind::Group,
        Kind::Workload,
        Kind::Path,
        Kind::Executable,
        Kind::Network,
    ];

    /// The Cedar type name.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
            Kind::Workload => "Workload",
            Kind::Path => "Path",
            Kind::Executable => "Executable",
            Kind::Network => "Network",
        }
    }

    /// The section of the TOML directory.
    pub fn section(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Group => "groups",
            Kind::Workload => "workloads",
            Kind::Path => "paths",
            Kind::Executable => "executables",
            Kind::Network => "networks",
        }
    }

    fn from_type_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_name() == s)
    }

    fn from_section(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.section() == s)
    }

    pub fn is_principal(self) -> bool {
        matches!(self, Kind::User | Kind::Workload)
    }

    pub fn is_resource(self) -> bool {
        matches!(self, Kind::Path | Kind::Executable | Kind::Network)
    }

    /// The TOML key that lists parents.
    fn parents_key(self) -> &'static str {
        if self == Kind::Group {
            "parents"
        } else {
            "groups"
        }
    }
}

/// An entity's identity: its type and id.
pub type Key = (Kind, String);

/// One entity as written in the directory.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityDef {
    pub kind: Kind,
    pub id: String,
    /// Declared parents (groups); path nesting is added on load.
    pub parents: Vec<Key>,
    pub attrs: Map<String, Value>,
}

impl EntityDef {
    pub fn key(&self) -> Key {
        (self.kind, self.id.clone())
    }
}

/// An entity, checked against the schema, with every ancestor.
#[derive(Debug, Clone)]
pub struct Record {
    pub def: EntityDef,
    pub ancestors: BTreeSet<Key>,
    /// What Cedar evaluates: attributes, and ancestors as parents.
    pub cedar: Entity,
}

/// Where in the directory something is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{entity}: {message}")]
    Entity { entity: String, message: String },
}

fn entity_err(kind: Kind, id: &str, message: impl Into<String>) -> DirectoryError {
    DirectoryError::Entity {
        entity: display_key(&(kind, id.to_owned())),
        message: message.into(),
    }
}

/// `users.alice`, `paths."/srv/prod/"`.
pub fn display_key((kind, id): &Key) -> String {
    if id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("{}.{id}", kind.section())
    } else {
        format!("{}.{id:?}", kind.section())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

/// Users, groups, workloads and resources, checked and closed over their
/// ancestors.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    records: BTreeMap<Key, Record>,
}

impl Directory {
    /// Reads a `.toml` directory or, for `.json`, Cedar's entities format.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| DirectoryError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let defs = if path.extension().is_some_and(|e| e == "json") {
            parse_json(&text)
        } else {
            parse_toml(&text)
        }
        .map_err(|e| match e {
            DirectoryError::File { message, .. } => DirectoryError::File {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?;
        Directory::from_defs(defs)
    }

    pub fn parse_toml(text: &str) -> Result<Directory, DirectoryError> {
        Directory::from_defs(parse_toml(text)?)
    }

    pub fn parse_json(text: &str) -> Result<Directory, DirectoryError> {
        Directory::from_defs(parse_json(text)?)
    }

    /// Checks every entity against the schema and closes the hierarchy.
    pub fn from_defs(defs: Vec<EntityDef>) -> Result<Directory, DirectoryError> {
        let mut by_key: BTreeMap<Key, EntityDef> = BTreeMap::new();
        for mut d in defs {
            fill_implied_attrs(&mut d)?;
            let key = d.key();
            if by_key.insert(key.clone(), d).is_some() {
                return Err(entity_err(key.0, &key.1, "listed twice"));
            }
        }
        add_path_nesting(&mut by_key);
        add_network_nesting(&mut by_key)?;
        for d in by_key.values() {
            for (i, p) in d.parents.iter().enumerate() {
                if !by_key.contains_key(p) {
                    return Err(entity_err(
                        d.kind,
                        &d.id,
                        format!(
                            "{}[{i}]: no {} `{}` in the directory",
                            d.kind.parents_key(),
                            p.0.type_name(),
                            p.1
                        ),
                    ));
                }
            }
        }
        let mut records = BTreeMap::new();
        for (key, def) in &by_key {
            let ancestors = ancestors(&by_key, key)?;
            let cedar = to_cedar(def, &ancestors)?;
            records.insert(
                key.clone(),
                Record {
                    def: def.clone(),
                    ancestors,
                    cedar,
                },
            );
        }
        Ok(Directory { records })
    }

    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.records.get(key)
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Record> {
        self.records.values().filter(move |r| r.def.kind == kind)
    }

    pub fn principals(&self) -> impl Iterator<Item = &Record> {
        self.records.values().filter(|r| r.def.kind.is_principal())
    }

    pub fn resources(&self) -> impl Iterator<Item = &Record> {
        self.records.values().filter(|r| r.def.kind.is_resource())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The entity a grant's object stands for: the listed resource itself,
    /// or, for something inside a listed tree, a stand-in that carries the
    /// tree's attributes and sits in it.
    pub fn resource_for(&self, kind: Kind, object: &str) -> Result<Record, DirectoryError> {
        if let Some(r) = self.records.get(&(kind, object.to_owned())) {
            return Ok(r.clone());
        }
        let mut def = EntityDef {
            kind,
            id: object.to_owned(),
            parents: Vec::new(),
            attrs: Map::new(),
        };
        if matches!(kind, Kind::Path | Kind::Executable)
            && let Some(tree) = enclosing_tree(object, |k| self.records.contains_key(k))
        {
            let tree = &self.records[&(Kind::Path, tree)];
            def.attrs = tree.def.attrs.clone();
            def.attrs.remove("path");
            def.parents.push(tree.def.key());
        }
        if kind == Kind::Network
            && let Ok(pattern) = NetPattern::parse(object)
        {
            // In every listed network that contains it, with the nearest
            // one's attributes: a forbid on 10.9.0.0/16 covers 10.9.1.1/32.
            let listed = self.of_kind(Kind::Network).filter_map(|r| {
                let p = NetPattern::parse(&r.def.id).ok()?;
                (p != pattern && p.contains(&pattern)).then_some((p, r))
            });
            let mut nearest: Option<(NetPattern, &Record)> = None;
            for (p, r) in listed {
                def.parents.push(r.def.key());
                if nearest.as_ref().is_none_or(|(n, _)| n.contains(&p)) {
                    nearest = Some((p, r));
                }
            }
            if let Some((_, r)) = nearest {
                def.attrs = r.def.attrs.clone();
                def.attrs.remove("cidr");
                def.attrs.remove("ports");
            }
        }
        self.stand_in(def)
    }

    /// A record for an entity the directory does not list, checked against
    /// the schema like any other, in the listed parents it names.
    pub fn stand_in(&self, mut def: EntityDef) -> Result<Record, DirectoryError> {
        fill_implied_attrs(&mut def)?;
        let mut ancestors = BTreeSet::new();
        for p in &def.parents {
            ancestors.insert(p.clone());
            if let Some(r) = self.records.get(p) {
                ancestors.extend(r.ancestors.iter().cloned());
            }
        }
        let cedar = to_cedar(&def, &ancestors)?;
        Ok(Record {
            def,
            ancestors,
            cedar,
        })
    }

    /// The entities that differ between two directories, by key: changed,
    /// added (only in `new`) or removed (only in `self`).
    pub fn changed(&self, new: &Directory) -> BTreeSet<Key> {
        let mut out = BTreeSet::new();
        for (k, r) in &self.records {
            match new.records.get(k) {
                Some(n) if n.def == r.def && n.ancestors == r.ancestors => {}
                _ => {
                    out.insert(k.clone());
                }
            }
        }
        for k in new.records.keys() {
            if !self.records.contains_key(k) {
                out.insert(k.clone());
            }
        }
        out
    }
}

/// The Cedar uid of an entity.
pub fn uid((kind, id): &Key) -> EntityUid {
    EntityUid::from_type_name_and_id(
        kind.type_name()
            .parse()
            .expect("ward's type names are valid"),
        cedar_policy::EntityId::new(id),
    )
}

fn parse_toml(text: &str) -> Result<Vec<EntityDef>, DirectoryError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| DirectoryError::File {
        path: String::new(),
        message: e.to_string(),
    })?;
    let mut defs = Vec::new();
    for (section, entries) in table {
        let kind = Kind::from_section(&section).ok_or_else(|| DirectoryError::File {
            path: String::new(),
            message: format!(
                "unknown section `{section}`; expected users, groups, workloads, paths, executables or networks"
            ),
        })?;
        let toml::Value::Table(entries) = entries else {
            return Err(DirectoryError::File {
                path: String::new(),
                message: format!("`{section}` must be a table of entries"),
            });
        };
        for (id, value) in entries {
            let toml::Value::Table(fields) = value else {
                return Err(entity_err(kind, &id, "must be a table of attributes"));
            };
            let mut def = EntityDef {
                kind,
                id: id.clone(),
                parents: Vec::new(),
                attrs: Map::new(),
            };
            for (name, v) in fields {
                if name == kind.parents_key() && matches!(kind, Kind::User | Kind::Group) {
                    let toml::Value::Array(items) = v else {
                        return Err(entity_err(
                            kind,
                            &id,
                            format!("{name}: must be a list of group names"),
                        ));
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let toml::Value::String(g) = item else {
                            return Err(entity_err(
                                kind,
                                &id,
                                format!("{name}[{i}]: must be a group name"),
                            ));
                        };
                        def.parents.push((Kind::Group, g));
                    }
                    continue;
                }
                let json = serde_json::to_value(&v)
                    .map_err(|e| entity_err(kind, &id, format!("{name}: {e}")))?;
                def.attrs.insert(name, json);
            }
            defs.push(def);
        }
    }
    Ok(defs)
}

fn parse_json(text: &str) -> Result<Vec<EntityDef>, DirectoryError> {
    let file_err = |message: String| DirectoryError::File {
        path: String::new(),
        message,
    };
    let items: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| file_err(format!("not Cedar entities JSON: {e}")))?;
    let key_of = |v: &Value, what: &str| -> Result<Key, DirectoryError> {
        let ty = v.get("type").and_then(Value::as_str);
        let id = v.get("id").and_then(Value::as_str);
        match (ty.and_then(Kind::from_type_name), id) {
            (Some(k), Some(id)) => Ok((k, id.to_owned())),
            _ => Err(file_err(format!(
                "{what}: expected {{\"type\": one of User, Group, Workload, Path, Executable, Network, \"id\": ...}}, got {v}"
            ))),
        }
    };
    let mut defs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (kind, id) = key_of(
            item.get("uid").unwrap_or(&Value::Null),
            &format!("[{i}].uid"),
        )?;
        let mut parents = Vec::new();
        for (j, p) in item
            .get("parents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            parents.push(key_of(p, &format!("[{i}].parents[{j}]"))?);
        }
        let attrs = item
            .get("attrs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        defs.push(EntityDef {
            kind,
            id,
            parents,
            attrs,
        });
    }
    Ok(defs)
}

/// Attributes that follow from the id: a path's `path`, a network's
/// `cidr` and `ports`.
fn fill_implied_attrs(d: &mut EntityDef) -> Result<(), DirectoryError> {
    match d.kind {
        Kind::Path | Kind::Executable => {
            if !d.id.starts_with('/') {
                return Err(entity_err(d.kind, &d.id, "not an absolute path"));
            }
            if d.kind == Kind::Executable && d.id.ends_with('/') {
                return Err(entity_err(
                    d.kind,
                    &d.id,
                    "is a directory; name the executable file",
                ));
            }
            d.attrs.entry("path").or_insert_with(|| json!(d.id));
        }
        Kind::Network => {
            let Some((cidr, ports)) = d.id.rsplit_once(':') else {
                return Err(entity_err(
                    d.kind,
                    &d.id,
                    "expected ADDR[/PREFIX]:PORTS, e.g. 10.0.0.0/8:5432",
                ));
            };
            let cidr = cidr
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            d.attrs.entry("cidr").or_insert_with(|| json!(cidr));
            d.attrs.entry("ports").or_insert_with(|| json!(ports));
        }
        Kind::Workload => {
            if !d.attrs.contains_key("cgroup") {
                return Err(entity_err(
                    d.kind,
                    &d.id,
                    "cgroup: required, e.g. \"system.slice/backup.service\"",
                ));
            }
        }
        Kind::User | Kind::Group => {}
    }
    Ok(())
}

/// The nearest listed tree (`/a/b/`) strictly containing `path`.
fn enclosing_tree(path: &str, exists: impl Fn(&Key) -> bool) -> Option<String> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut end = trimmed.len();
    while let Some(i) = trimmed[..end].rfind('/') {
        let tree = &trimmed[..=i];
        if exists(&(Kind::Path, tree.to_owned())) {
            return Some(tree.to_owned());
        }
        end = i;
    }
    None
}

/// Networks sit in every listed network that contains them (address and
/// ports), as paths sit in their trees: a policy on `10.9.0.0/16:*` is a
/// policy on `10.9.1.1/32:5432` too.
fn add_network_nesting(by_key: &mut BTreeMap<Key, EntityDef>) -> Result<(), DirectoryError> {
    let mut nets = Vec::new();
    for d in by_key.values().filter(|d| d.kind == Kind::Network) {
        let p = NetPattern::parse(&d.id).map_err(|e| entity_err(d.kind, &d.id, e.to_string()))?;
        nets.push((d.key(), p));
    }
    for (key, inner) in &nets {
        let outer: Vec<Key> = nets
            .iter()
            .filter(|(k, p)| k != key && p != inner && p.contains(inner))
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(d) = by_key.get_mut(key) {
            for parent in outer {
                if !d.parents.contains(&parent) {
                    d.parents.push(parent);
                }
            }
        }
    }
    Ok(())
}

fn add_path_nesting(by_key: &mut BTreeMap<Key, EntityDef>) {
    let nesting: Vec<(Key, String)> = by_key
        .values()
        .filter(|d| matches!(d.kind, Kind::Path | Kind::Executable))
        .filter_map(|d| enclosing_tree(&d.id, |k| by_key.contains_key(k)).map(|t| (d.key(), t)))
        .collect();
    for (key, tree) in nesting {
        if let Some(d) = by_key.get_mut(&key) {
            let parent = (Kind::Path, tree);
            if !d.parents.contains(&parent) {
                d.parents.push(parent);
            }
        }
    }
}

fn ancestors(
    by_key: &BTreeMap<Key, EntityDef>,
    key: &Key,
) -> Result<BTreeSet<Key>, DirectoryError> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<Key> = by_key[key].parents.clone();
    while let Some(k) = stack.pop() {
        if k == *key {
            return Err(entity_err(
                key.0,
                &key.1,
                "is its own ancestor: the group hierarchy has a cycle",
            ));
        }
        if out.insert(k.clone())
            && let Some(d) = by_key.get(&k)
        {
            stack.extend(d.parents.iter().cloned());
        }
    }
    Ok(out)
}

fn to_cedar(def: &EntityDef, ancestors: &BTreeSet<Key>) -> Result<Entity, DirectoryError> {
    let key = def.key();
    let uid_json = |(k, id): &Key| json!({ "type": k.type_name(), "id": id });
    let json = json!({
        "uid": uid_json(&key),
        "attrs": Value::Object(def.attrs.clone()),
        "parents": ancestors.iter().map(uid_json).collect::<Vec<_>>(),
    });
    Entity::from_json_value(json, Some(schema()))
        .map_err(|e| entity_err(def.kind, &def.id, crate::policies::full_message(&e)))
}

/// The uids of a record's ancestors, for `in` checks.
pub fn ancestor_uids(r: &Record) -> HashSet<EntityUid> {
    r.ancestors.iter().map(uid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[groups.staff]
[groups.oncall]
parents = ["staff"]

[users.alice]
groups = ["oncall"]
department = "eng"
clearance = 3

[workloads.backup]
cgroup = "system.slice/backup.service"

[paths."/srv/"]
[paths."/srv/prod/"]
classification = "secret"
[paths."/srv/prod/db.conf"]
[executables."/srv/prod/bin/tool"]
[networks."10.0.0.0/8:5432"]
"#;

    #[test]
    fn groups_and_paths_close_over_their_ancestors() {
        let d = Directory::parse_toml(SAMPLE).unwrap();
        let alice = d.get(&(Kind::User, "alice".into())).unwrap();
        assert!(alice.ancestors.contains(&(Kind::Group, "staff".into())));
        let conf = d.get(&(Kind::Path, "/srv/prod/db.conf".into())).unwrap();
        assert!(conf.ancestors.contains(&(Kind::Path, "/srv/".into())));
        assert!(conf.ancestors.contains(&(Kind::Path, "/srv/prod/".into())));
        let tool = d
            .get(&(Kind::Executable, "/srv/prod/bin/tool".into()))
            .unwrap();
        assert!(tool.ancestors.contains(&(Kind::Path, "/srv/prod/".into())));
        let net = d.get(&(Kind::Network, "10.0.0.0/8:5432".into())).unwrap();
        assert_eq!(net.def.attrs["cidr"], "10.0.0.0/8");
        assert_eq!(net.def.attrs["ports"], "5432");
    }

    #[test]
    fn errors_name_the_entity_and_field() {
        let e = Directory::parse_toml("[users.bob]\ngroups = [\"opps\"]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "users.bob: groups[0]: no Group `opps` in the directory"
        );
        let e = Directory::parse_toml("[users.bob]\nclearance = \"high\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("users.bob: ") && e.to_string().contains("clearance"),
            "{e}"
        );
        let e = Directory::parse_toml("[users.bob]\nshoe_size = 9\n").unwrap_err();
        assert!(e.to_string().contains("shoe_size"), "{e}");
        let e = Directory::parse_toml("[servers.x]\n").unwrap_err();
        assert!(e.to_string().contains("unknown section `servers`"), "{e}");
        let e = Directory::parse_toml("[workloads.w]\nteam = \"a\"\n").unwrap_err();
        assert!(
            e.to_string().contains("workloads.w: cgroup: required"),
            "{e}"
        );
        let e =
            Directory::parse_toml("[groups.a]\nparents = [\"b\"]\n[groups.b]\nparents = [\"a\"]\n")
                .unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }

    #[test]
    fn cedar_json_is_accepted_too() {
        let d = Directory::parse_json(
            r#"[{"uid":{"type":"User","id":"alice"},"attrs":{"department":"eng"},"parents":[{"type":"Group","id":"ops"}]},
                {"uid":{"type":"Group","id":"ops"},"attrs":{},"parents":[]}]"#,
        )
        .unwrap();
        assert!(
            d.get(&(Kind::User, "alice".into()))
                .unwrap()
                .ancestors
                .contains(&(Kind::Group, "ops".into()))
        );
    }

    #[test]
    fn a_stand_in_inherits_its_tree() {
        let d = Directory::parse_toml(SAMPLE).unwrap();
        let r = d.resource_for(Kind::Path, "/srv/prod/logs/").unwrap();
        assert_eq!(r.def.attrs["classification"], "secret");
        assert_eq!(r.def.attrs["path"], "/srv/prod/logs/");
        assert!(r.ancestors.contains(&(Kind::Path, "/srv/".into())));
    }
}
