//! Cedar policy in the agent: sources watched for changes, compiled by
//! `ward_policy`, and turned into kernel entries.
//!
//! A source that fails to load or compile is refused whole: the previous
//! table keeps enforcing, and the error is logged, audited, and shown by
//! `ward policy show`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ward_abi::{Effect, Op};
use ward_policy::{
    Action, Clock, Compiler, Delta, Directory, Eligibility, EntityKey, Env, GrantCheck, Kind,
    Policies, Update,
};

use super::{classes::HeldClasses, config::PolicySection, grant, users};
use crate::{
    cgroup,
    enforcer::{BaseEdit, Classes, Entry, Expiry, NetPattern, Object, PathPattern, Subject},
};

/// Why policy sources were refused: the previous table keeps enforcing.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Sources(#[from] ward_policy::LoadError),
    /// A directory resource the kernel cannot match.
    #[error("{resource}: {source}")]
    Resource {
        resource: EntityKey,
        source: ResourceError,
    },
    /// `[policy.ldap]` could not be read (by `wardd --check-config`; the
    /// daemon keeps the last good read instead).
    #[error("policy.ldap: {0}")]
    Ldap(String),
}

/// Why a directory resource is no kernel object.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error(transparent)]
    Path(#[from] crate::enforcer::PathPatternError),
    #[error(transparent)]
    Net(#[from] ward_policy::NetPatternError),
    #[error("not a resource")]
    NotAResource,
}

/// Why policy does not let a grant be compiled.
#[derive(Debug, thiserror::Error)]
pub enum Ineligible {
    #[error(
        "{} for {} on {object} is over the maximum of {} set by {}",
        humantime::format_duration(*asked), op.name(), humantime::format_duration(*max),
        policies.join(", ")
    )]
    TooLong {
        op: Op,
        object: String,
        asked: Duration,
        max: Duration,
        policies: Vec<String>,
    },
    /// No `request` permit applies (or a `request` forbid does).
    #[error("{0}")]
    NoPermit(String),
    #[error(
        "{} on {object} is forbidden by {}; no grant overrides a forbid",
        op.name(), policies.join(", ")
    )]
    Forbidden {
        op: Op,
        object: String,
        policies: Vec<String>,
    },
    #[error(transparent)]
    Directory(#[from] ward_policy::DirectoryError),
}

/// Kernel rule ids from policy: this plus an index into [`Names`].
pub const POLICY_BASE: u64 = 1 << 61;

/// Every source file's modification time, to notice edits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps(Vec<Option<SystemTime>>);

impl Stamps {
    fn of(paths: &[PathBuf]) -> Stamps {
        Stamps(ward_policy::stamps(paths.iter().map(PathBuf::as_path)))
    }
}

/// Names for the kernel rule ids policy entries carry.
#[derive(Debug, Default)]
struct Names {
    ids: HashMap<String, u64>,
    list: Vec<String>,
}

impl Names {
    fn id(&mut self, name: String) -> u64 {
        let next = POLICY_BASE + self.list.len() as u64;
        *self.ids.entry(name.clone()).or_insert_with(|| {
            self.list.push(name);
            next
        })
    }

    fn name(&self, id: u64) -> Option<&str> {
        let i = id.checked_sub(POLICY_BASE)? as usize;
        self.list.get(i).map(String::as_str)
    }
}

/// The compiled Cedar policy as the kernel holds it: the directory's
/// protections and each class's entries, and the class of each uid and
/// workload.
#[derive(Debug, Default)]
pub struct PolicyTable {
    pub entries: Vec<Entry>,
    pub classes: Classes,
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    /// Swap the whole policy table (class ids are new).
    Full(PolicyTable),
    /// Edit the live table.
    Delta(BaseEdit),
}

impl Reload {
    /// Entries and memberships written, for the audit record.
    pub fn size(&self) -> usize {
        match self {
            Reload::Unchanged => 0,
            Reload::Full(t) => t.entries.len() + t.classes.len(),
            Reload::Delta(e) => e.remove.len() + e.add.len() + e.classes.len(),
        }
    }
}

pub struct CedarPolicy {
    files: Vec<PathBuf>,
    directory_path: Option<PathBuf>,
    watched: Vec<PathBuf>,
    stamps: Stamps,
    compiler: Compiler,
    names: Names,
    subjects: HashMap<EntityKey, Option<Subject>>,
    /// The classes as the kernel holds them (since the last full table).
    held: HeldClasses,
    /// The user database as of the last full resolve (a passwd edit
    /// reloads everything).
    users: users::Snapshot,
    cgroup_root: Option<PathBuf>,
    /// Principals the kernel cannot be told about, and why.
    pub unresolved: Vec<String>,
    pub last_error: Option<String>,
    pub applied_at: SystemTime,
    /// How long the last reload or recompile took to read and compile the
    /// sources into a table or an edit (audited with the apply).
    pub compile_time: Duration,
    /// Cgroups of the directory's workloads, to be managed.
    /// The cgroup paths of the workloads the policy names: followed, so
    /// their rules hold whenever the cgroup exists.
    pub workload_paths: Vec<String>,
    /// People and groups from the last good LDAP read, joined to the
    /// directory file's entities on every reload.
    ldap_defs: Vec<EntityDef>,
}

use ward_policy::{EntityDef, load_sources_with};

/// The host, as policies see it.
pub fn host_env(
    labels: &std::collections::BTreeMap<String, String>,
    file_enforcement: bool,
) -> Env {
    Env {
        host: hostname(),
        labels: labels.clone(),
        file_enforcement,
        kernel: crate::kernel::release(),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

impl CedarPolicy {
    /// Loads the sources; `ldap_defs` are the people and groups an LDAP
    /// source last gave (none without one).
    pub fn load(
        section: &PolicySection,
        env: Env,
        cgroup_root: Option<PathBuf>,
        ldap_defs: Vec<EntityDef>,
    ) -> Result<CedarPolicy, PolicyError> {
        let (policies, directory) = load_sources_with(
            &section.files,
            section.directory.as_deref(),
            ldap_defs.clone(),
        )?;
        let mut watched = section.files.clone();
        watched.extend(section.directory.clone());
        // Users map to uids through the user database; notice its edits.
        watched.push(PathBuf::from("/etc/passwd"));
        watched.push(PathBuf::from("/etc/group"));
        let stamps = Stamps::of(&watched);
        let compiler = Compiler::new(policies, directory, env, &Clock::system());
        let mut engine = CedarPolicy {
            files: section.files.clone(),
            directory_path: section.directory.clone(),
            watched,
            stamps,
            compiler,
            names: Names::default(),
            subjects: HashMap::new(),
            held: HeldClasses::default(),
            users: users::Snapshot::default(),
            cgroup_root,
            unresolved: Vec::new(),
            last_error: None,
            applied_at: SystemTime::now(),
            compile_time: Duration::ZERO,
            workload_paths: Vec::new(),
            ldap_defs,
        };
        engine.resolve_subjects();
        Ok(engine)
    }

    /// The people and groups from the last good LDAP read.
    pub fn ldap_defs(&self) -> &[EntityDef] {
        &self.ldap_defs
    }

    /// A new LDAP read, applied like an edit of the directory file: an
    /// incremental update when only attributes and memberships changed.
    /// Refused whole (the previous directory stays) if the joined
    /// directory does not check, e.g. a name both sources list.
    pub fn set_ldap_defs(
        &mut self,
        defs: Vec<EntityDef>,
        env: &Env,
    ) -> Result<Reload, PolicyError> {
        let previous = std::mem::replace(&mut self.ldap_defs, defs);
        let stamps = Stamps::of(&self.watched);
        match self.reload(env, &stamps) {
            Ok(r) => {
                self.stamps = stamps;
                Ok(r)
            }
            Err(e) => {
                self.ldap_defs = previous;
                Err(e)
            }
        }
    }

    /// Uids and workloads the kernel holds a class for.
    pub fn classed_principals(&self) -> usize {
        self.held.members().len()
    }

    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// The whole table: protection for every directory resource, the
    /// entries of every class with a member the kernel knows, and each
    /// such member's class.
    pub fn table(&mut self) -> Result<PolicyTable, PolicyError> {
        let mut out = Vec::new();
        for key in self.compiler.resources().to_vec() {
            let object = object_of(&key)?;
            let rule_id = self.names.id(format!("directory resource {key}"));
            // An executable is read-protected too: a copy of its code is
            // its code.
            let also_read = (key.kind == Kind::Executable).then_some(Op::Read);
            let ops = Action::for_kind(key.kind).iter().map(|a| Op::from(*a));
            for op in ops.chain(also_read) {
                out.push(Entry {
                    subject: Subject::Protected,
                    op,
                    object: object.clone(),
                    effect: Effect::Deny,
                    expires: Expiry::Never,
                    rule_id,
                    from_grant: false,
                });
            }
        }
        let mut held = HeldClasses::default();
        for (principal, class) in self.compiler.memberships() {
            if let Some(subject) = self.subjects.get(principal).copied().flatten() {
                held.set(subject, Some(class));
            }
        }
        for class in held.classes() {
            let entries = self.class_entries(class)?;
            out.extend(entries.iter().cloned());
            held.hold(class, entries);
        }
        let classes = held.members().clone();
        self.held = held;
        Ok(PolicyTable {
            entries: out,
            classes,
        })
    }

    /// One class's entries, from its compiled row.
    fn class_entries(&mut self, class: u32) -> Result<Vec<Entry>, PolicyError> {
        let row: Vec<(Action, EntityKey, ward_policy::Outcome)> = self
            .compiler
            .class_row(class)
            .map(|(a, r, o)| (a, r.clone(), o.clone()))
            .collect();
        row.iter()
            .map(|(action, resource, outcome)| {
                self.entry(Subject::Class(class), *action, resource, outcome)
            })
            .collect()
    }

    fn entry(
        &mut self,
        subject: Subject,
        action: Action,
        resource: &EntityKey,
        outcome: &ward_policy::Outcome,
    ) -> Result<Entry, PolicyError> {
        let effect = Effect::from(outcome.effect);
        let verb = match effect {
            Effect::Allow => "permitted by",
            Effect::Deny => "forbidden by",
        };
        let ids = outcome
            .reason
            .iter()
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>();
        let plural = if ids.len() > 1 { "policies" } else { "policy" };
        let rule_id = self
            .names
            .id(format!("{verb} Cedar {plural} {}", ids.join(", ")));
        Ok(Entry {
            subject,
            op: Op::from(action),
            object: object_of(resource)?,
            effect,
            expires: outcome
                .until
                .map_or(Expiry::Never, |t| Expiry::AtBootNs(grant::to_boot_ns(t))),
            rule_id,
            from_grant: false,
        })
    }

    /// An incremental recompile as the smallest kernel edit. Principals
    /// that changed class first: a class gets its entries when its first
    /// member joins (from its row as compiled now) and loses them when its
    /// last leaves. Then row changes of the classes held before this edit
    /// (a class whose entries were just computed has them already).
    fn class_edit(&mut self, delta: &Delta) -> Result<BaseEdit, PolicyError> {
        let mut edit = BaseEdit::default();
        let mut fresh = std::collections::BTreeSet::new();
        for m in &delta.moved {
            if !self.subjects.contains_key(&m.principal) {
                let s = self.resolve(&m.principal);
                self.subjects.insert(m.principal.clone(), s);
            }
            let Some(subject) = self.subjects.get(&m.principal).copied().flatten() else {
                continue;
            };
            let to = self.compiler.class_of(&m.principal);
            if self.held.class_of(subject) == to {
                continue;
            }
            if let Some(t) = to
                && !self.held.holds(t)
            {
                let entries = self.class_entries(t)?;
                edit.add.extend(entries.iter().cloned());
                self.held.hold(t, entries);
                fresh.insert(t);
            }
            edit.remove.extend(self.held.set(subject, to));
            edit.classes.push((subject, to));
        }
        for r in &delta.rows {
            if fresh.contains(&r.class) || !self.held.holds(r.class) {
                continue;
            }
            let subject = Subject::Class(r.class);
            let old = match &r.old {
                Some(o) => Some(self.entry(subject, r.action, &r.resource, o)?),
                None => None,
            };
            let new = match &r.new {
                Some(n) => Some(self.entry(subject, r.action, &r.resource, n)?),
                None => None,
            };
            self.held.edit(r.class, old.as_ref(), new.as_ref());
            edit.remove.extend(old);
            edit.add.extend(new);
        }
        Ok(edit)
    }

    /// The kernel subject of every principal the directory lists.
    fn resolve_subjects(&mut self) {
        self.users = users::Snapshot::read();
        self.subjects.clear();
        self.unresolved.clear();
        self.workload_paths.clear();
        let keys: Vec<EntityKey> = self.compiler.principals().cloned().collect();
        for key in keys {
            let subject = self.resolve(&key);
            self.subjects.insert(key, subject);
        }
    }

    fn resolve(&mut self, key: &EntityKey) -> Option<Subject> {
        match key.kind {
            Kind::User => match self.users.uid(&key.id) {
                Some(uid) => Some(Subject::Uid(uid)),
                None => {
                    self.unresolved.push(format!(
                        "users.{}: no such user in the user database",
                        key.id
                    ));
                    None
                }
            },
            Kind::Workload => {
                let path = self
                    .compiler
                    .directory()
                    .get(key)
                    .and_then(|r| r.def.attrs.get("cgroup"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let usable = match (&self.cgroup_root, cgroup::check_path(&path)) {
                    (None, _) => Err("there is no cgroup v2 hierarchy on this host"),
                    (Some(_), r) => r,
                };
                match usable {
                    Ok(()) => {
                        let key = cgroup::path_key(&path);
                        self.workload_paths.push(path);
                        Some(Subject::Cgroup(key))
                    }
                    Err(why) => {
                        self.unresolved
                            .push(format!("workloads.{}: cgroup `{path}`: {why}", key.id));
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// Re-reads sources that changed since the last look. On an error the
    /// compiler is untouched, so the previous table keeps enforcing.
    pub fn reload_if_changed(&mut self, env: &Env) -> Result<Reload, PolicyError> {
        let stamps = Stamps::of(&self.watched);
        let env_changed = env != self.compiler.env();
        if stamps == self.stamps && !env_changed {
            return Ok(Reload::Unchanged);
        }
        let result = self.reload(env, &stamps);
        self.stamps = stamps;
        result
    }

    /// Re-reads every source now (`ward policy apply`).
    pub fn reload_now(&mut self, env: &Env) -> Result<Reload, PolicyError> {
        let stamps = Stamps::of(&self.watched);
        let result = self.reload(env, &stamps);
        self.stamps = stamps;
        result
    }

    fn reload(&mut self, env: &Env, stamps: &Stamps) -> Result<Reload, PolicyError> {
        let started = std::time::Instant::now();
        let r = self.reload_timed(env, stamps);
        self.compile_time = started.elapsed();
        r
    }

    fn reload_timed(&mut self, env: &Env, stamps: &Stamps) -> Result<Reload, PolicyError> {
        let (policies, directory) = load_sources_with(
            &self.files,
            self.directory_path.as_deref(),
            self.ldap_defs.clone(),
        )
        .inspect_err(|e| {
            self.last_error = Some(e.to_string());
        })?;
        let clock = Clock::system();
        let policies_same = policies_equal(&policies, self.compiler.policies());
        let users_changed =
            stamps.0[stamps.0.len() - 2..] != self.stamps.0[self.stamps.0.len() - 2..];
        let result = if policies_same && *env == *self.compiler.env() && !users_changed {
            match self.compiler.set_directory(directory, &clock) {
                Update::Full => {
                    self.resolve_subjects();
                    Reload::Full(self.table()?)
                }
                // Should an edit fail half-way (a resource the kernel
                // cannot match), the whole table is rebuilt instead, so
                // what is held never drifts from what was written.
                Update::Delta(delta) => match self.class_edit(&delta) {
                    Ok(edit) => Reload::Delta(edit),
                    Err(e) => {
                        tracing::warn!(error = %e, "incremental policy edit failed; rebuilding the table");
                        Reload::Full(self.table()?)
                    }
                },
            }
        } else {
            let previous = std::mem::replace(
                &mut self.compiler,
                Compiler::new(policies, directory, env.clone(), &clock),
            );
            self.resolve_subjects();
            match self.table() {
                Ok(t) => Reload::Full(t),
                Err(e) => {
                    self.compiler = previous;
                    self.resolve_subjects();
                    self.last_error = Some(e.to_string());
                    return Err(e);
                }
            }
        };
        self.last_error = None;
        self.applied_at = SystemTime::now();
        Ok(result)
    }

    /// At a time boundary: recompile everything for the new time.
    pub fn recompile_now(&mut self) -> Result<PolicyTable, PolicyError> {
        let started = std::time::Instant::now();
        self.compiler.recompile(&Clock::system());
        self.applied_at = SystemTime::now();
        let table = self.table();
        self.compile_time = started.elapsed();
        table
    }

    pub fn next_boundary(&self) -> Option<SystemTime> {
        self.compiler.next_boundary()
    }

    pub fn rule_name(&self, id: u64) -> Option<&str> {
        self.names.name(id)
    }

    /// Whether a grant may be compiled: each target must be eligible by the
    /// `request` action, within its cap, and not under a forbid.
    pub fn check_grant(
        &self,
        grantee: &grant::Grantee,
        targets: &[(Op, Object)],
        duration: Duration,
    ) -> Result<(), Ineligible> {
        for (op, object, eligibility) in self.eligibility(grantee, targets) {
            match eligibility? {
                Eligibility::Eligible {
                    max: Some(max),
                    policies,
                    ..
                } if duration > max => {
                    // Clients compute deadlines a little before we see them.
                    let asked = Duration::from_secs((duration.as_millis() as u64 + 500) / 1000);
                    return Err(Ineligible::TooLong {
                        op,
                        object: object.to_string(),
                        asked,
                        max,
                        policies,
                    });
                }
                Eligibility::Eligible { .. } => {}
                Eligibility::NotEligible { reason } => return Err(Ineligible::NoPermit(reason)),
                Eligibility::Forbidden { policies } => {
                    return Err(Ineligible::Forbidden {
                        op,
                        object: object.to_string(),
                        policies,
                    });
                }
            }
        }
        Ok(())
    }

    /// The forbid policies a grant's target falls under now, if any.
    pub fn forbidding(&self, grantee: &grant::Grantee, targets: &[(Op, Object)]) -> Option<String> {
        self.eligibility(grantee, targets)
            .find_map(|(_, _, e)| match e {
                Ok(Eligibility::Forbidden { policies }) => Some(policies.join(", ")),
                _ => None,
            })
    }

    /// Each grant target with what policy says of it now.
    fn eligibility<'a>(
        &'a self,
        grantee: &grant::Grantee,
        targets: &'a [(Op, Object)],
    ) -> impl Iterator<
        Item = (
            Op,
            &'a Object,
            Result<Eligibility, ward_policy::DirectoryError>,
        ),
    > + 'a {
        let clock = Clock::system();
        let principal = principal_key(grantee);
        targets.iter().map(move |(op, object)| {
            let check = GrantCheck {
                principal: principal.clone(),
                // A local operator's grant: nobody asked through ward.
                requester: None,
                action: Action::from(*op),
                object: object.to_string(),
            };
            (*op, object, self.compiler.eligibility(&check, &clock))
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn directory_path(&self) -> Option<&Path> {
        self.directory_path.as_deref()
    }
}

fn policies_equal(a: &Policies, b: &Policies) -> bool {
    a.info.len() == b.info.len()
        && a.info
            .iter()
            .zip(&b.info)
            .all(|((ia, pa), (ib, pb))| ia == ib && pa.text == pb.text && pa.file == pb.file)
}

fn principal_key(g: &grant::Grantee) -> EntityKey {
    match g {
        grant::Grantee::User { name: Some(n), .. } => EntityKey::new(Kind::User, n),
        grant::Grantee::User { uid, name: None } => EntityKey::new(Kind::User, format!("#{uid}")),
        grant::Grantee::Workload { path, .. } => EntityKey::new(Kind::Workload, path),
    }
}

/// A directory resource as a kernel object.
fn object_of(key: &EntityKey) -> Result<Object, PolicyError> {
    let object = match key.kind {
        Kind::Path | Kind::Executable => PathPattern::parse(&key.id)
            .map(Object::Path)
            .map_err(ResourceError::from),
        Kind::Network => NetPattern::parse(&key.id)
            .map(Object::Net)
            .map_err(ResourceError::from),
        _ => Err(ResourceError::NotAResource),
    };
    object.map_err(|source| PolicyError::Resource {
        resource: key.clone(),
        source,
    })
}

/// Checks that every directory resource is something the kernel can
/// match: `ward policy check --directory`.
pub fn check_resources(d: &Directory) -> Result<(), PolicyError> {
    for r in d.resources() {
        object_of(&r.def.key())?;
    }
    Ok(())
}

/// `wardd --check-config`: loads and compiles the policy sources exactly as
/// the agent would, without touching the kernel.
pub fn check_sources(
    section: &PolicySection,
    labels: &std::collections::BTreeMap<String, String>,
    read_ldap: bool,
) -> Result<String, PolicyError> {
    // Asked to, the LDAP server is read as the daemon will: then a server
    // it cannot reach or bind to fails the check. Otherwise the check
    // stays offline (packaging, config management dry runs).
    let (ldap_defs, ldap_said) = match &section.ldap {
        Some(source) if read_ldap => check_ldap(source)?,
        Some(source) => (
            Vec::new(),
            format!(
                "\nldap: {} not contacted (--read-ldap reads it)",
                source.url
            ),
        ),
        None => (Vec::new(), String::new()),
    };
    let (policies, directory) =
        ward_policy::load_sources_with(&section.files, section.directory.as_deref(), ldap_defs)?;
    check_resources(&directory)?;
    let n = policies.len();
    let c = Compiler::new(
        policies,
        directory,
        host_env(labels, true),
        &Clock::system(),
    );
    let s = c.stats();
    Ok(format!(
        "{n} policies; {} principals x {} resources: {} decisions{ldap_said}",
        s.principals, s.resources, s.decisions
    ))
}

/// One read of `source`: its entities, and what to say of it (how many
/// entries, and each refused one by DN and attribute).
fn check_ldap(source: &ward_ldap::LdapSource) -> Result<(Vec<EntityDef>, String), PolicyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PolicyError::Ldap(format!("starting a runtime: {e}")))?;
    let limit = source.timeout * 4;
    let fetched = runtime
        .block_on(async { tokio::time::timeout(limit, ward_ldap::fetch(source, &[])).await })
        .map_err(|_| {
            PolicyError::Ldap(format!(
                "{}: no answer in {}",
                source.url,
                humantime::format_duration(limit)
            ))
        })?
        .map_err(|e| PolicyError::Ldap(e.to_string()))?;
    let mut said = format!(
        "\nldap: {} users and {} groups read from {} in {} ms",
        fetched.users,
        fetched.groups,
        source.url,
        fetched.took.as_millis()
    );
    for b in &fetched.mapped.bad {
        said.push_str(&format!(
            "\nldap: entry refused: {} ({}): {}",
            b.dn, b.attribute, b.problem
        ));
    }
    Ok((fetched.mapped.defs, said))
}
