//! The schema ward ships (`policy/ward.cedarschema`).
//!
//! Its context holds only what the agent can observe when it compiles, so
//! validating a policy against it is also the check that the kernel can
//! enforce it: a condition on anything else fails with its position.

use std::sync::OnceLock;

use cedar_policy::Schema;

use crate::directory::Kind;

/// The schema text, as shipped and documented in the README.
pub const SOURCE: &str = include_str!("../ward.cedarschema");

/// Context attributes the agent fills in.
pub const CONTEXT_ATTRS: &[&str] = &["hour", "minute_of_day", "day_of_week", "host", "posture"];

/// The type of an entity attribute in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Long,
    Bool,
}

/// Entity attributes and their types, as `ward.cedarschema` declares them
/// (a test holds the two together): what a directory source converts its
/// values to.
const ATTRIBUTES: &[(Kind, &str, AttrType)] = &[
    (Kind::User, "department", AttrType::String),
    (Kind::User, "clearance", AttrType::Long),
    (Kind::User, "title", AttrType::String),
    (Kind::Workload, "cgroup", AttrType::String),
    (Kind::Workload, "team", AttrType::String),
    (Kind::Workload, "service", AttrType::String),
    (Kind::Path, "path", AttrType::String),
    (Kind::Path, "classification", AttrType::String),
    (Kind::Path, "owner", AttrType::String),
    (Kind::Path, "department", AttrType::String),
    (Kind::Executable, "path", AttrType::String),
    (Kind::Executable, "classification", AttrType::String),
    (Kind::Executable, "owner", AttrType::String),
    (Kind::Executable, "department", AttrType::String),
    (Kind::Network, "cidr", AttrType::String),
    (Kind::Network, "ports", AttrType::String),
    (Kind::Network, "classification", AttrType::String),
    (Kind::Network, "owner", AttrType::String),
    (Kind::Network, "department", AttrType::String),
];

/// The type the schema gives `attr` of `kind`, if it has that attribute.
pub fn attribute_type(kind: Kind, attr: &str) -> Option<AttrType> {
    ATTRIBUTES
        .iter()
        .find(|(k, a, _)| *k == kind && *a == attr)
        .map(|(_, _, t)| *t)
}

/// The parsed schema. It is part of the build, so it always parses.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::from_cedarschema_str(SOURCE)
            .map(|(s, _warnings)| s)
            .expect("ward.cedarschema is checked by the crate's tests")
    })
}

#[cfg(test)]
mod tests {
    /// Every attribute the table lists is declared with that type, and
    /// every attribute the schema declares is listed.
    #[test]
    fn the_attribute_table_is_the_schema() {
        use super::{ATTRIBUTES, AttrType, SOURCE};
        let mut declared = Vec::new();
        let mut entity = None;
        for line in SOURCE.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            if let Some(rest) = line.strip_prefix("entity ") {
                entity = rest
                    .split_whitespace()
                    .next()
                    .map(|n| n.trim_end_matches(';').to_owned());
                continue;
            }
            if line.starts_with('}') {
                entity = None;
                continue;
            }
            if let (Some(e), Some((name, ty))) = (&entity, line.split_once(':')) {
                let name = name.trim().trim_end_matches('?').to_owned();
                let ty = ty.trim().trim_end_matches(',').to_owned();
                declared.push((e.clone(), name, ty));
            }
        }
        let listed: Vec<(String, String, String)> = ATTRIBUTES
            .iter()
            .map(|(k, a, t)| {
                let t = match t {
                    AttrType::String => "String",
                    AttrType::Long => "Long",
                    AttrType::Bool => "Bool",
                };
                (k.type_name().to_owned(), (*a).to_owned(), t.to_owned())
            })
            .collect();
        let mut declared_sorted = declared.clone();
        declared_sorted.sort();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        assert_eq!(listed_sorted, declared_sorted);
    }

    #[test]
    fn the_shipped_schema_parses() {
        let s = super::schema();
        assert_eq!(s.actions().count(), 7);
    }
}
