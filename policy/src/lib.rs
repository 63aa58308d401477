//! ward's Cedar layer.
//!
//! Operators write Cedar policies about *attributes* of users, workloads,
//! paths, executables and networks. This crate loads those policies and the
//! attribute directory, checks them against ward's schema, and compiles the
//! decisions into a table the agent hands to the kernel:
//!
//! - [`schema`]: the schema ward ships, and what the compiler can see;
//! - [`directory`]: users, groups, workloads and protected resources;
//! - [`policies`]: policy files, checked with file, line and column;
//! - [`footprint`]: what each policy reads, so equal inputs are compiled once;
//! - [`clock`]: local time and the instants where time-based decisions change;
//! - [`compile`]: the decision table, full and incremental;
//! - [`eligibility`]: the `request` action: who may be granted what, for how long;
//! - [`net`]: network destinations (`ADDR/PREFIX:PORTS`) and how they nest.

pub mod clock;
pub mod compile;
pub mod directory;
pub mod eligibility;
pub mod footprint;
pub mod net;
pub mod policies;
pub mod schema;

pub use clock::{Clock, Env, LocalTime};
pub use compile::{Change, Compiler, Decision, Effect, Outcome, Stats, Update};
pub use directory::{Directory, DirectoryError, EntityDef, Key, Kind};
pub use eligibility::{Eligibility, GrantCheck, Terms, approvals_for};
pub use policies::{Policies, PolicyError, Position};

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

    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Exec => "exec",
            Action::Connect => "connect",
        }
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

    pub fn uid(self) -> cedar_policy::EntityUid {
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

/// Loads policy files and a directory (if any), every error in the
/// message, one per line: what the agent and the coordinator both read.
pub fn load_sources(
    files: &[std::path::PathBuf],
    directory: Option<&std::path::Path>,
) -> Result<(Policies, Directory), String> {
    let policies = Policies::load(files).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let directory = match directory {
        Some(d) => Directory::load(d).map_err(|e| e.to_string())?,
        None => Directory::default(),
    };
    Ok((policies, directory))
}
