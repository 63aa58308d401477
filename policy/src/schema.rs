//! The schema ward ships (`policy/ward.cedarschema`).
//!
//! Its context holds only what the agent can observe when it compiles, so
//! validating a policy against it is also the check that the kernel can
//! enforce it: a condition on anything else fails with its position.

use std::sync::OnceLock;

use cedar_policy::Schema;

/// The schema text, as shipped and documented in the README.
pub const SOURCE: &str = include_str!("../ward.cedarschema");

/// Context attributes the agent fills in.
pub const CONTEXT_ATTRS: &[&str] = &["hour", "minute_of_day", "day_of_week", "host", "posture"];

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
    #[test]
    fn the_shipped_schema_parses() {
        let s = super::schema();
        assert_eq!(s.actions().count(), 7);
    }
}
