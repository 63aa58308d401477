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
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use cedar_policy::Entity;
use serde_json::{Map, Value, json};

use crate::{net::NetPattern, policies::Position, schema::schema};

/// The entity types of ward's schema.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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

/// An entity's identity: its type and id. Shown as the directory's TOML
/// names it: `users.alice`, `paths."/srv/prod/"`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct EntityKey {
    pub kind: Kind,
    pub id: String,
}

impl EntityKey {
    pub fn new(kind: Kind, id: impl Into<String>) -> EntityKey {
        EntityKey {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (section, id) = (self.kind.section(), &self.id);
        if id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            write!(f, "{section}.{id}")
        } else {
            write!(f, "{section}.{id:?}")
        }
    }
}

/// One entity as written in the directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityDef {
    pub kind: Kind,
    pub id: String,
    /// Declared parents (groups); path nesting is added on load.
    pub parents: Vec<EntityKey>,
    pub attrs: Map<String, Value>,
}

impl EntityDef {
    pub fn key(&self) -> EntityKey {
        EntityKey::new(self.kind, self.id.clone())
    }
}

/// An entity, checked against the schema, with every ancestor.
#[derive(Debug, Clone)]
pub struct Record {
    pub def: EntityDef,
    pub ancestors: BTreeSet<EntityKey>,
    /// What Cedar evaluates: attributes, and ancestors as parents.
    pub(crate) cedar: Entity,
}

/// What is wrong in the directory, and where, as data: the file (absent
/// for text parsed without one), then the position, section, item or
/// entity and field, as far as each is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The file cannot be read.
    #[error("{}: {message}", .path.display())]
    Read { path: PathBuf, message: String },
    /// Not TOML, or not Cedar's entities JSON; `position` is where the
    /// parser stopped, when it says.
    #[error("{}{message}", InFile(.path))]
    Syntax {
        path: Option<PathBuf>,
        position: Option<Position>,
        message: String,
    },
    /// A TOML section that is not one of the entity kinds' (`Kind::section`).
    #[error(
        "{}unknown section `{section}`; expected users, groups, workloads, paths, executables or networks",
        InFile(.path)
    )]
    UnknownSection {
        path: Option<PathBuf>,
        section: String,
    },
    /// A TOML section that is not a table of entries.
    #[error("{}`{section}` must be a table of entries", InFile(.path))]
    NotATable {
        path: Option<PathBuf>,
        section: String,
    },
    /// An entities-JSON uid that is not one of ward's entities; `item` is
    /// where it is, e.g. `[2].uid` or `[2].parents[0]`.
    #[error(
        "{}{item}: expected {{\"type\": one of User, Group, Workload, Path, Executable, Network, \"id\": ...}}, got {got}",
        InFile(.path)
    )]
    NotAnEntity {
        path: Option<PathBuf>,
        item: String,
        got: String,
    },
    /// One entity is wrong; `field` is the attribute (`cgroup`,
    /// `groups[0]`) when the problem is in one.
    #[error("{}{entity}: {}{message}", InFile(.path), InField(.field))]
    Entity {
        path: Option<PathBuf>,
        entity: EntityKey,
        field: Option<String>,
        message: String,
    },
}

impl DirectoryError {
    /// The file the error is in, if the directory came from one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DirectoryError::Read { path, .. } => Some(path),
            DirectoryError::Syntax { path, .. }
            | DirectoryError::UnknownSection { path, .. }
            | DirectoryError::NotATable { path, .. }
            | DirectoryError::NotAnEntity { path, .. }
            | DirectoryError::Entity { path, .. } => path.as_deref(),
        }
    }

    /// The entity the error is about, if it is about one.
    pub fn entity(&self) -> Option<&EntityKey> {
        match self {
            DirectoryError::Entity { entity, .. } => Some(entity),
            _ => None,
        }
    }

    fn in_file(mut self, file: &Path) -> DirectoryError {
        match &mut self {
            DirectoryError::Read { .. } => {}
            DirectoryError::Syntax { path, .. }
            | DirectoryError::UnknownSection { path, .. }
            | DirectoryError::NotATable { path, .. }
            | DirectoryError::NotAnEntity { path, .. }
            | DirectoryError::Entity { path, .. } => *path = Some(file.to_owned()),
        }
        self
    }
}

/// `PATH: `, or nothing without a file.
struct InFile<'a>(&'a Option<PathBuf>);

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{}: ", p.display()),
            None => Ok(()),
        }
    }
}

/// `FIELD: `, or nothing.
struct InField<'a>(&'a Option<String>);

impl fmt::Display for InField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(field) => write!(f, "{field}: "),
            None => Ok(()),
        }
    }
}

fn entity_err(kind: Kind, id: &str, message: impl Into<String>) -> DirectoryError {
    DirectoryError::Entity {
        path: None,
        entity: EntityKey::new(kind, id),
        field: None,
        message: message.into(),
    }
}

fn field_err(
    kind: Kind,
    id: &str,
    field: impl Into<String>,
    message: impl Into<String>,
) -> DirectoryError {
    DirectoryError::Entity {
        path: None,
        entity: EntityKey::new(kind, id),
        field: Some(field.into()),
        message: message.into(),
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
    records: BTreeMap<EntityKey, Record>,
}

impl Directory {
    /// Reads a `.toml` directory or, for `.json`, Cedar's entities format.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        Directory::load_with(Some(path), Vec::new())
    }

    /// The file's entities (if a file is named) and `extra`, from another
    /// source (LDAP's people and groups), checked together: an entity both
    /// list is an error naming it.
    pub fn load_with(
        path: Option<&Path>,
        extra: Vec<EntityDef>,
    ) -> Result<Directory, DirectoryError> {
        let Some(path) = path else {
            return Directory::from_defs(extra);
        };
        let text = std::fs::read_to_string(path).map_err(|e| DirectoryError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut defs = if path.extension().is_some_and(|e| e == "json") {
            parse_json(&text)
        } else {
            parse_toml(&text)
        }
        .map_err(|e| e.in_file(path))?;
        defs.extend(extra);
        Directory::from_defs(defs).map_err(|e| e.in_file(path))
    }

    /// Checks each entity, leaving out those the schema or the hierarchy
    /// refuses (and references to them) instead of refusing all: for a
    /// source where one bad entry must not stop the rest. Returns the
    /// entities kept and why each other was left out.
    pub fn check_each(mut defs: Vec<EntityDef>) -> (Vec<EntityDef>, Vec<DirectoryError>) {
        let mut refused = Vec::new();
        // Each round leaves one entity out, so this ends.
        for _ in 0..=defs.len() {
            let e = match Directory::from_defs(defs.clone()) {
                Ok(_) => return (defs, refused),
                Err(e) => e,
            };
            let Some(key) = e.entity().cloned() else {
                refused.push(e);
                return (Vec::new(), refused);
            };
            defs.retain(|d| d.key() != key);
            for d in &mut defs {
                d.parents.retain(|p| *p != key);
            }
            refused.push(e);
        }
        (Vec::new(), refused)
    }

    pub fn parse_toml(text: &str) -> Result<Directory, DirectoryError> {
        Directory::from_defs(parse_toml(text)?)
    }

    pub fn parse_json(text: &str) -> Result<Directory, DirectoryError> {
        Directory::from_defs(parse_json(text)?)
    }

    /// Checks every entity against the schema and closes the hierarchy.
    pub fn from_defs(defs: Vec<EntityDef>) -> Result<Directory, DirectoryError> {
        let mut by_key: BTreeMap<EntityKey, EntityDef> = BTreeMap::new();
        for mut d in defs {
            fill_implied_attrs(&mut d)?;
            let key = d.key();
            if by_key.insert(key.clone(), d).is_some() {
                return Err(entity_err(key.kind, &key.id, "listed twice"));
            }
        }
        add_path_nesting(&mut by_key);
        add_network_nesting(&mut by_key)?;
        for d in by_key.values() {
            for (i, p) in d.parents.iter().enumerate() {
                if !by_key.contains_key(p) {
                    return Err(field_err(
                        d.kind,
                        &d.id,
                        format!("{}[{i}]", d.kind.parents_key()),
                        format!("no {} `{}` in the directory", p.kind.type_name(), p.id),
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

    pub fn get(&self, key: &EntityKey) -> Option<&Record> {
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
        if let Some(r) = self.records.get(&EntityKey::new(kind, object)) {
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
            let tree = &self.records[&EntityKey::new(Kind::Path, tree)];
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
    pub fn changed(&self, new: &Directory) -> BTreeSet<EntityKey> {
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

fn parse_toml(text: &str) -> Result<Vec<EntityDef>, DirectoryError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e: toml::de::Error| DirectoryError::Syntax {
            path: None,
            position: e.span().map(|s| Position::of_offset(text, s.start)),
            message: e.to_string(),
        })?;
    let mut defs = Vec::new();
    for (section, entries) in table {
        let Some(kind) = Kind::from_section(&section) else {
            return Err(DirectoryError::UnknownSection {
                path: None,
                section,
            });
        };
        let toml::Value::Table(entries) = entries else {
            return Err(DirectoryError::NotATable {
                path: None,
                section,
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
                        return Err(field_err(kind, &id, name, "must be a list of group names"));
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let toml::Value::String(g) = item else {
                            return Err(field_err(
                                kind,
                                &id,
                                format!("{name}[{i}]"),
                                "must be a group name",
                            ));
                        };
                        def.parents.push(EntityKey::new(Kind::Group, g));
                    }
                    continue;
                }
                let json = serde_json::to_value(&v)
                    .map_err(|e| field_err(kind, &id, &name, e.to_string()))?;
                def.attrs.insert(name, json);
            }
            defs.push(def);
        }
    }
    Ok(defs)
}

fn parse_json(text: &str) -> Result<Vec<EntityDef>, DirectoryError> {
    let items: Vec<Value> = serde_json::from_str(text).map_err(|e| DirectoryError::Syntax {
        path: None,
        position: (e.line() > 0).then(|| Position {
            line: e.line(),
            column: e.column().max(1),
        }),
        message: format!("not Cedar entities JSON: {e}"),
    })?;
    let key_of = |v: &Value, item: &str| -> Result<EntityKey, DirectoryError> {
        let ty = v.get("type").and_then(Value::as_str);
        let id = v.get("id").and_then(Value::as_str);
        match (ty.and_then(Kind::from_type_name), id) {
            (Some(k), Some(id)) => Ok(EntityKey::new(k, id)),
            _ => Err(DirectoryError::NotAnEntity {
                path: None,
                item: item.to_owned(),
                got: v.to_string(),
            }),
        }
    };
    let mut defs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let EntityKey { kind, id } = key_of(
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
                return Err(field_err(
                    d.kind,
                    &d.id,
                    "cgroup",
                    "required, e.g. \"system.slice/backup.service\"",
                ));
            }
        }
        Kind::User | Kind::Group => {}
    }
    Ok(())
}

/// The nearest listed tree (`/a/b/`) strictly containing `path`.
fn enclosing_tree(path: &str, exists: impl Fn(&EntityKey) -> bool) -> Option<String> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut end = trimmed.len();
    while let Some(i) = trimmed[..end].rfind('/') {
        let tree = &trimmed[..=i];
        if exists(&EntityKey::new(Kind::Path, tree)) {
            return Some(tree.to_owned());
        }
        end = i;
    }
    None
}

/// Networks sit in every listed network that contains them (address and
/// ports), as paths sit in their trees: a policy on `10.9.0.0/16:*` is a
/// policy on `10.9.1.1/32:5432` too.
fn add_network_nesting(by_key: &mut BTreeMap<EntityKey, EntityDef>) -> Result<(), DirectoryError> {
    let mut nets = Vec::new();
    for d in by_key.values().filter(|d| d.kind == Kind::Network) {
        let p = NetPattern::parse(&d.id).map_err(|e| entity_err(d.kind, &d.id, e.to_string()))?;
        nets.push((d.key(), p));
    }
    for (key, inner) in &nets {
        let outer: Vec<EntityKey> = nets
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

fn add_path_nesting(by_key: &mut BTreeMap<EntityKey, EntityDef>) {
    let nesting: Vec<(EntityKey, String)> = by_key
        .values()
        .filter(|d| matches!(d.kind, Kind::Path | Kind::Executable))
        .filter_map(|d| enclosing_tree(&d.id, |k| by_key.contains_key(k)).map(|t| (d.key(), t)))
        .collect();
    for (key, tree) in nesting {
        if let Some(d) = by_key.get_mut(&key) {
            let parent = EntityKey::new(Kind::Path, tree);
            if !d.parents.contains(&parent) {
                d.parents.push(parent);
            }
        }
    }
}

fn ancestors(
    by_key: &BTreeMap<EntityKey, EntityDef>,
    key: &EntityKey,
) -> Result<BTreeSet<EntityKey>, DirectoryError> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<EntityKey> = by_key[key].parents.clone();
    while let Some(k) = stack.pop() {
        if k == *key {
            return Err(entity_err(
                key.kind,
                &key.id,
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

fn to_cedar(def: &EntityDef, ancestors: &BTreeSet<EntityKey>) -> Result<Entity, DirectoryError> {
    let key = def.key();
    let uid_json = |k: &EntityKey| json!({ "type": k.kind.type_name(), "id": k.id });
    let json = json!({
        "uid": uid_json(&key),
        "attrs": Value::Object(def.attrs.clone()),
        "parents": ancestors.iter().map(uid_json).collect::<Vec<_>>(),
    });
    Entity::from_json_value(json, Some(schema()))
        .map_err(|e| entity_err(def.kind, &def.id, crate::policies::full_message(&e)))
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
        let alice = d.get(&EntityKey::new(Kind::User, "alice")).unwrap();
        assert!(
            alice
                .ancestors
                .contains(&EntityKey::new(Kind::Group, "staff"))
        );
        let conf = d
            .get(&EntityKey::new(Kind::Path, "/srv/prod/db.conf"))
            .unwrap();
        assert!(
            conf.ancestors
                .contains(&EntityKey::new(Kind::Path, "/srv/"))
        );
        assert!(
            conf.ancestors
                .contains(&EntityKey::new(Kind::Path, "/srv/prod/"))
        );
        let tool = d
            .get(&EntityKey::new(Kind::Executable, "/srv/prod/bin/tool"))
            .unwrap();
        assert!(
            tool.ancestors
                .contains(&EntityKey::new(Kind::Path, "/srv/prod/"))
        );
        let net = d
            .get(&EntityKey::new(Kind::Network, "10.0.0.0/8:5432"))
            .unwrap();
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
            d.get(&EntityKey::new(Kind::User, "alice"))
                .unwrap()
                .ancestors
                .contains(&EntityKey::new(Kind::Group, "ops"))
        );
    }

    #[test]
    fn a_stand_in_inherits_its_tree() {
        let d = Directory::parse_toml(SAMPLE).unwrap();
        let r = d.resource_for(Kind::Path, "/srv/prod/logs/").unwrap();
        assert_eq!(r.def.attrs["classification"], "secret");
        assert_eq!(r.def.attrs["path"], "/srv/prod/logs/");
        assert!(r.ancestors.contains(&EntityKey::new(Kind::Path, "/srv/")));
    }

    #[test]
    fn entity_keys_show_as_the_directory_names_them() {
        assert_eq!(
            EntityKey::new(Kind::User, "alice").to_string(),
            "users.alice"
        );
        assert_eq!(
            EntityKey::new(Kind::Path, "/srv/prod/").to_string(),
            "paths.\"/srv/prod/\""
        );
        // Ordered by kind, then id, as the compiled table is.
        assert!(EntityKey::new(Kind::User, "z") < EntityKey::new(Kind::Group, "a"));
        assert!(EntityKey::new(Kind::User, "a") < EntityKey::new(Kind::User, "b"));
    }

    #[test]
    fn errors_carry_their_location_as_data() {
        let e = Directory::parse_toml("[users.bob]\ngroups = [\"opps\"]\n").unwrap_err();
        assert_eq!(
            e,
            DirectoryError::Entity {
                path: None,
                entity: EntityKey::new(Kind::User, "bob"),
                field: Some("groups[0]".into()),
                message: "no Group `opps` in the directory".into(),
            }
        );
        assert_eq!(e.entity(), Some(&EntityKey::new(Kind::User, "bob")));
        let e = Directory::parse_toml("[workloads.w]\n").unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Entity { field: Some(f), .. } if f == "cgroup"),
            "{e:?}"
        );
        let e = Directory::parse_toml("[servers.x]\n").unwrap_err();
        assert_eq!(
            e,
            DirectoryError::UnknownSection {
                path: None,
                section: "servers".into()
            }
        );
        let e = Directory::parse_toml("users = 3\n").unwrap_err();
        assert_eq!(e.to_string(), "`users` must be a table of entries");
        let e = Directory::parse_toml("[users.a]\nx = \n").unwrap_err();
        let DirectoryError::Syntax {
            position: Some(p), ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(p.line, 2, "{e}");
        let e = Directory::parse_json("[\n  {\"uid\": }]").unwrap_err();
        let DirectoryError::Syntax {
            position: Some(p),
            message,
            ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(p.line, 2, "{e}");
        assert!(message.starts_with("not Cedar entities JSON: "), "{e}");
        let e = Directory::parse_json(r#"[{"uid":{"type":"Server","id":"x"}}]"#).unwrap_err();
        assert!(
            matches!(&e, DirectoryError::NotAnEntity { item, .. } if item == "[0].uid"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("[0].uid: expected {\"type\": one of User"),
            "{e}"
        );
    }

    #[test]
    fn a_loaded_directory_names_its_file_in_every_error() {
        let dir = std::env::temp_dir().join(format!("ward-policy-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        let e = Directory::load(&missing).unwrap_err();
        assert!(matches!(&e, DirectoryError::Read { path, .. } if *path == missing));
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", missing.display())),
            "{e}"
        );

        let file = dir.join("dir.toml");
        std::fs::write(&file, "[users.bob]\ngroups = [\"opps\"]\n").unwrap();
        let e = Directory::load(&file).unwrap_err();
        assert_eq!(e.path(), Some(file.as_path()));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: users.bob: groups[0]: no Group `opps` in the directory",
                file.display()
            )
        );
        std::fs::write(&file, "[servers.x]\n").unwrap();
        let e = Directory::load(&file).unwrap_err();
        assert_eq!(e.path(), Some(file.as_path()));
        assert!(
            e.to_string()
                .starts_with(&format!("{}: unknown section `servers`", file.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
