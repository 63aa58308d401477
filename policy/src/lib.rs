//! ward's Cedar layer.
//!
//! Operators write Cedar policies about *attributes* of users, workloads,
//! paths, executables and networks. This crate loads those policies and the
//! attribute directory, checks them against ward's schema, and compiles the
//! decisions into a table the agent hands to the kernel. As in Cedar
//! itself, validation and evaluation are apart:
//!
//! - validation: [`Policies`] are parsed and checked against ward's schema
//!   (every [`PolicyError`] located by file, [`Position`] and policy id);
//!   a [`Directory`] of users, groups, workloads and protected resources is
//!   checked entity by entity (a [`DirectoryError`] names the file and the
//!   [`EntityKey`] and field); [`load_sources`] does both ([`LoadError`]);
//! - evaluation: a [`Compiler`] turns checked policies and a directory into
//!   [`Decision`]s, full and incremental ([`Update`]), at a [`Clock`]'s time
//!   and a host's [`Env`]; and decides `request` [`Eligibility`] for grants.
//!
//! Cedar's own types stay inside: nothing here takes or returns one.

mod clock;
mod compile;
mod directory;
mod eligibility;
pub mod fixture;
mod footprint;
mod net;
mod ops;
mod people;
mod policies;
mod schema;

pub use clock::{Clock, Env, FixedOffset, Local, LocalTime};
pub use compile::{
    Change, Compiler, Decision, Delta, Effect, Moved, Outcome, RowChange, Stats, Update,
};
pub use directory::{Directory, DirectoryError, EntityDef, EntityKey, Kind, Record};
pub use eligibility::{Eligibility, GrantCheck, Terms, approvals_for};
pub use net::{NetPattern, NetPatternError};
pub use people::People;
pub use policies::{Policies, PolicyError, PolicyInfo, Position};
pub use schema::{AttrType, attribute_type};

/// The operations the kernel decides, as Cedar actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Exec,
    Connect,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Exec, Action::Connect];

    /// The Cedar action id: the operation's name.
    pub fn name(self) -> &'static str {
        ward_abi::Op::from(self).name()
    }

    /// The actions that apply to a resource kind.
    pub fn for_kind(kind: Kind) -> &'static [Action] {
        match kind {
            Kind::Path => &[Action::Read, Action::Write],
            Kind::Executable => &[Action::Exec],
            Kind::Network => &[Action::Connect],
            Kind::User | Kind::Group | Kind::Workload => &[],
        }
    }

    pub(crate) fn uid(self) -> cedar_policy::EntityUid {
        action_uid(self.name())
    }
}

pub(crate) fn action_uid(name: &str) -> cedar_policy::EntityUid {
    cedar_policy::EntityUid::from_type_name_and_id(
        "Action".parse().expect("`Action` is a valid type name"),
        cedar_policy::EntityId::new(name),
    )
}

/// The modification time of each source file, to notice edits.
pub fn stamps<'a>(
    paths: impl IntoIterator<Item = &'a std::path::Path>,
) -> Vec<Option<std::time::SystemTime>> {
    paths
        .into_iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Why [`load_sources`] refused the sources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The policy files do not read or check: every error, each located
    /// by file, position and policy id; shown one per line.
    #[error("{}", PolicyErrors(.0))]
    Policies(Vec<PolicyError>),
    /// The directory does not read or check.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// Errors one per line.
struct PolicyErrors<'a>(&'a [PolicyError]);

impl std::fmt::Display for PolicyErrors<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Loads policy files and a directory (if any): what the agent and the
/// coordinator both read. The policies are checked first; the directory
/// is read only when they pass.
pub fn load_sources(
    files: &[std::path::PathBuf],
    directory: Option<&std::path::Path>,
) -> Result<(Policies, Directory), LoadError> {
    load_sources_with(files, directory, Vec::new())
}

/// [`load_sources`], with the directory file's entities joined by `extra`
/// from another source (LDAP's people and groups).
pub fn load_sources_with(
    files: &[std::path::PathBuf],
    directory: Option<&std::path::Path>,
    extra: Vec<EntityDef>,
) -> Result<(Policies, Directory), LoadError> {
    let policies = Policies::load(files).map_err(LoadError::Policies)?;
    let directory = Directory::load_with(directory, extra)?;
    Ok((policies, directory))
}
