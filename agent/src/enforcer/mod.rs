//! The kernel enforcement engine.
//!
//! It loads ward's programs, attaches them (or adopts the ones a previous
//! agent pinned), and keeps the kernel's decision maps equal to the table
//! user space wants: policy entries and class memberships from
//! [`Enforcer::apply_with`] plus grants from [`Enforcer::grant`].
//!
//! Rule and class maps come in two generations. `apply` fills the idle one and flips
//! [`ward_abi::Config::active`] in one store, so no lookup ever sees a
//! half-built table; grants and revocations edit the live generation entry
//! by entry, each edit atomic on its own.

mod attach;
mod bpf_sys;
mod bpffs;
mod cgroup_link;
mod clock;
mod error;
mod events;
mod hook_mode;
mod kmaps;
mod netns;
mod objects;
mod path;
mod table;
mod teardown;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
    path::PathBuf,
};

use aya::Ebpf;
use ward_abi::{Config, MAX_UID_RANGES, ManagedCgroup, UidRange};

pub use clock::{boot_ns, wall_minus_boot_ns};
pub use error::EnforcerError;
pub use events::{EventKind, EventStream, KernelEvent};
pub use hook_mode::{Chosen, HookMode};
pub use path::{PathPattern, PathPatternError};
pub use table::{Classes, Entry, Expiry, Object, Subject, TableError};
pub use teardown::{
    Handle as TeardownHandle, Teardown, log_outcome as log_teardown, probe as teardown_probe,
};
pub use ward_policy::{NetPattern, NetPatternError};

use crate::btf::KernelOffsets;
use table::{BaseRules, Grants, Slot};

/// An incremental edit of the base entries: entries to remove and to add,
/// and subjects whose class changes (`None`: it leaves every class).
#[derive(Debug, Default)]
pub struct BaseEdit {
    pub remove: Vec<Entry>,
    pub add: Vec<Entry>,
    pub classes: Vec<(Subject, Option<u32>)>,
}

/// The live generation's classes as the hooks read them, for explain:
/// considered only where the kernel considers them.
struct KernelClasses<F> {
    lookup: F,
    in_use: bool,
}

impl<F: FnMut(u64) -> u64> ward_abi::decision::Classes for KernelClasses<F> {
    fn class_of(&mut self, subject: u64) -> u64 {
        (self.lookup)(subject)
    }

    fn in_use(&self) -> bool {
        self.in_use
    }
}

/// Only uids and workloads are given classes.
fn check_classes<'a>(mut subjects: impl Iterator<Item = &'a Subject>) -> Result<(), TableError> {
    match subjects.find(|s| !s.classable()) {
        Some(s) => Err(TableError::NotClassable { subject: *s }),
        None => Ok(()),
    }
}

/// Which hooks to attach.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// LSM `file_open`, `bprm_check_security`, `socket_connect`.
    pub lsm: bool,
    /// Attach cgroup `connect4`/`connect6` to this cgroup (v2 directory):
    /// network enforcement on kernels without BPF LSM.
    pub cgroup_connect: Option<PathBuf>,
}

/// Sizes and places; in `wardd` these come from its config file.
#[derive(Debug, Clone)]
pub struct EnforcerConfig {
    /// Where maps and links are pinned, e.g. `/sys/fs/bpf/ward`. With
    /// `None` nothing outlives the `Enforcer`.
    pub pin_dir: Option<PathBuf>,
    pub max_path_rules: u32,
    /// Listed inodes: protected trees and files, grant objects, and the
    /// roots of mounts inside protected trees.
    pub max_objects: u32,
    pub max_net_rules: u32,
    pub max_cgroups: u32,
    /// Uids and workloads with a principal class (each generation).
    pub max_principals: u32,
    /// Uses in progress of protected objects that the kernel tracks, each
    /// of open files and of connections: one more is refused.
    pub max_held: u32,
    /// Managed uid ranges, inclusive; at most [`MAX_UID_RANGES`].
    pub uid_ranges: Vec<(u32, u32)>,
    pub hooks: Hooks,
}

impl Default for EnforcerConfig {
    fn default() -> Self {
        EnforcerConfig {
            pin_dir: None,
            max_path_rules: 65536,
            max_objects: 16384,
            max_net_rules: 16384,
            max_cgroups: 4096,
            max_principals: 16384,
            max_held: 65536,
            uid_ranges: Vec::new(),
            hooks: Hooks {
                lsm: true,
                cgroup_connect: None,
            },
        }
    }
}

/// Counters for `ward status` and the benchmarks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    /// Entries in the live generation of each rule family.
    pub path_rules: usize,
    /// Inodes listed as objects.
    pub objects: usize,
    pub net_rules: usize,
    /// Uids and workloads in a principal class.
    pub classed_subjects: usize,
    pub managed_cgroups: usize,
    /// Events dropped because the ring buffer was full.
    pub events_lost: u64,
    /// Decisions on protected objects since the maps were made (they are
    /// pinned), by operation and outcome.
    pub decisions: Vec<Decisions>,
    /// Uses in progress of protected objects the kernel will end: open
    /// files, and connections.
    pub held_files: u64,
    pub held_sockets: u64,
    /// Per program, from the kernel (`kernel.bpf_stats_enabled=1` for times).
    pub programs: Vec<ProgramStats>,
}

/// How many decisions of one operation had one outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decisions {
    /// `read`, `write`, `exec` or `connect`.
    pub op: &'static str,
    /// `deny`, `allow_by_grant` or `allow_by_policy`.
    pub outcome: &'static str,
    pub n: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramStats {
    pub name: String,
    /// Instructions the verifier processed to accept it (5.16+).
    pub verified_insns: Option<u32>,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// ward's programs, attached, and the maps they decide from.
pub struct Enforcer {
    /// The programs (and the maps only the kernel touches); kept alive for
    /// them and their links.
    ebpf: Ebpf,
    /// Every map user space reads or writes, taken from `ebpf` at load.
    maps: kmaps::KernelMaps,
    config: EnforcerConfig,
    /// Whether the programs were already attached by an earlier agent.
    adopted: bool,
    /// Every entry not from a grant: protections and the Cedar policy.
    base: BaseRules,
    /// The class of each classed uid and workload, as the live generation
    /// holds them.
    classes: Classes,
    grants: Grants,
    objects: objects::Objects,
    /// Followed cgroup paths (relative to the cgroup root) -> their keys.
    paths: std::collections::BTreeMap<String, u64>,
    /// Links that are not pinned: closing them detaches their programs.
    _links: Vec<OwnedFd>,
    /// Made at the first teardown pass.
    teardown: Option<teardown::Handle>,
    /// When (boot clock) connections were last ended at a rule change:
    /// the agent's teardown loop sweeps again shortly after, see
    /// [`Enforcer::connections_ended_at`].
    ended_at: u64,
    /// Writes to the rules, for look-ahead teardown passes.
    writes: teardown::RuleWrites,
}

impl Enforcer {
    /// Loads the object for the running kernel and attaches the hooks; with
    /// a pin directory holding an earlier agent's pins, adopts them
    /// instead, without a moment of enforcement lost.
    pub fn load(config: EnforcerConfig) -> Result<Self, EnforcerError> {
        if config.uid_ranges.len() > MAX_UID_RANGES {
            return Err(EnforcerError::TooManyUidRanges {
                given: config.uid_ranges.len(),
                max: MAX_UID_RANGES,
            });
        }
        let offsets = KernelOffsets::from_running_kernel()?;
        let (mut ebpf, mut maps, adopted) = kmaps::load(&offsets, &config)?;
        let mut kconfig = if adopted {
            maps.read_config()?
        } else {
            Config::default()
        };
        kconfig.uid_ranges = [UidRange::default(); MAX_UID_RANGES];
        for (slot, (first, last)) in kconfig.uid_ranges.iter_mut().zip(&config.uid_ranges) {
            *slot = UidRange {
                first: *first,
                last: *last,
            };
        }
        kconfig.uid_ranges_len = config.uid_ranges.len() as u32;
        maps.write_config(&kconfig)?;
        let links = attach::all(&mut ebpf, &config, &offsets)?;
        Ok(Enforcer {
            ebpf,
            maps,
            config,
            adopted,
            base: BaseRules::default(),
            classes: Classes::new(),
            grants: Grants::default(),
            objects: objects::Objects::default(),
            paths: Default::default(),
            _links: links,
            teardown: None,
            ended_at: 0,
            writes: teardown::RuleWrites::default(),
        })
    }

    /// True when this agent took over programs an earlier one pinned.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Enforces on processes in this cgroup and its descendants, with rules
    /// keyed by its id ([`Subject::Cgroup`]`(cgroup_id)`). This is the cgroup
    /// as it is now: one created again at the same path is a new cgroup.
    /// A daemon follows paths instead ([`Enforcer::manage_path`]).
    pub fn manage_cgroup(&mut self, cgroup_id: u64) -> Result<(), EnforcerError> {
        let value = ManagedCgroup {
            key: cgroup_id,
            ..Default::default()
        };
        self.maps
            .set_managed(cgroup_id, Some(value), self.config.max_cgroups)
    }

    /// Stops enforcing on this cgroup (its descendants too, unless listed).
    pub fn unmanage_cgroup(&mut self, cgroup_id: u64) -> Result<(), EnforcerError> {
        self.maps
            .set_managed(cgroup_id, None, self.config.max_cgroups)
    }

    /// Enforces on the cgroup at `rel` (relative to the cgroup v2 root
    /// `root`) and its descendants whenever it exists: now if it does, and
    /// every time it is created again, from inside the kernel's `mkdir`, so
    /// that no process ever runs in it unmanaged. Returns the workload key
    /// its rules name ([`Subject::Cgroup`]`(key)`).
    pub fn manage_path(&mut self, root: &std::path::Path, rel: &str) -> Result<u64, EnforcerError> {
        crate::cgroup::check_path(rel).map_err(|reason| EnforcerError::CgroupPath {
            path: rel.to_owned(),
            reason: reason.to_owned(),
        })?;
        let key = crate::cgroup::path_key(rel);
        if let Some((other, _)) = self
            .paths
            .iter()
            .find(|(p, k)| **k == key && p.as_str() != rel)
        {
            return Err(EnforcerError::CgroupPath {
                path: rel.to_owned(),
                reason: format!("its key collides with the followed path `{other}`"),
            });
        }
        let value = ManagedCgroup {
            key,
            flags: ward_abi::MANAGED_BY_PATH,
            _pad: 0,
        };
        // The path first: a cgroup created from here on is listed by the
        // kernel; one that already exists is listed below. Either way,
        // there is no moment in which it exists unlisted.
        let max = self.config.max_cgroups;
        self.maps
            .set_path(&crate::cgroup::kernel_path(rel), Some(value), max)?;
        let dir = root.join(rel);
        if let Ok(id) = crate::cgroup::cgroup_id(&dir) {
            self.maps.set_managed(id, Some(value), max)?;
            // Removed between the stat and the insert: its rmdir came too
            // early to forget it, so forget it here.
            if crate::cgroup::cgroup_id(&dir).ok() != Some(id) {
                self.maps.set_managed(id, None, max)?;
            }
        }
        self.paths.insert(rel.to_owned(), key);
        Ok(key)
    }

    /// The cgroup paths this enforcer follows, with their keys.
    pub fn managed_paths(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.paths
    }

    /// Whether the kernel's maps answer: one read of the live config, for
    /// health checks (unlike [`Enforcer::stats`], which walks every table).
    pub fn check(&mut self) -> Result<(), EnforcerError> {
        self.maps.read_config().map(drop)
    }

    /// Cgroups created at a followed path that the kernel could not list
    /// (its map was full): processes there ran unmanaged.
    pub fn cgroups_missed(&mut self) -> Result<u64, EnforcerError> {
        self.maps.cgroups_missed()
    }

    /// Names wardd's process to the self-protection hooks, and the
    /// filesystems of its pins with those they are mounted under: managed
    /// subjects may not signal or trace the one, nor unmount the others.
    pub fn guard(&mut self, daemon_tgid: u32) -> Result<(), EnforcerError> {
        use std::os::unix::fs::MetadataExt;
        let mut g = ward_abi::Guard {
            daemon_tgid,
            ..Default::default()
        };
        let mut devs: Vec<u32> = Vec::new();
        if let Some(pins) = &self.config.pin_dir {
            for dir in pins.ancestors() {
                if let Ok(m) = std::fs::metadata(dir) {
                    let dev = objects::kernel_dev(m.dev());
                    if !devs.contains(&dev) {
                        devs.push(dev);
                    }
                }
            }
        }
        if devs.len() > g.sb_devs.len() {
            tracing::warn!(
                pins = ?self.config.pin_dir,
                filesystems = devs.len(),
                "the pins sit under more filesystems than ward guards; the outermost are not guarded"
            );
        }
        for (slot, dev) in g.sb_devs.iter_mut().zip(&devs) {
            *slot = *dev;
        }
        self.maps.write_guard(&g)
    }

    /// Replaces the table's base entries (all but the grants) in one step,
    /// with no class memberships. On any error the previous table stays
    /// in force, untouched.
    pub fn apply(&mut self, base: &[Entry]) -> Result<(), EnforcerError> {
        self.apply_with(base, Classes::new())
    }

    /// Replaces the base entries and the class memberships together, in
    /// one generation swap: a renumbered set of classes never meets the
    /// other generation's rules. On any error the previous table stays in
    /// force, untouched.
    pub fn apply_with(&mut self, base: &[Entry], classes: Classes) -> Result<(), EnforcerError> {
        let _writing = self.writes.begin();
        check_classes(classes.keys())?;
        let base = table::index(base)?;
        let mut merged = base.clone();
        for entries in self.grants.values() {
            for e in entries {
                merged.entry(e.slot()?).or_default().push(e.clone());
            }
        }
        let mut values = Vec::with_capacity(merged.len());
        for (slot, entries) in &merged {
            if let Some(value) = table::combine(slot, entries)? {
                values.push((slot.clone(), value));
            }
        }
        let mut kconfig = self.maps.read_config()?;
        let idle = 1 - kconfig.active.min(1);
        // Filling empties the idle generation first. The generation this
        // flip retires is left as it is until the next apply: a program that
        // read `active` just before the flip may still be looking in it.
        self.maps
            .fill_generation(idle, &values, &classes, &self.config, &mut self.objects)?;
        // Whether the idle generation has classes, said before it is made
        // active, in a write of its own: a reader that sees the flip
        // below sees this too.
        let bit = 1 << idle;
        let classed = if classes.is_empty() {
            kconfig.classed & !bit
        } else {
            kconfig.classed | bit
        };
        if classed != kconfig.classed {
            kconfig.classed = classed;
            self.maps.write_config(&kconfig)?;
        }
        kconfig.active = idle;
        self.maps.write_config(&kconfig)?;
        self.maps.bump_epoch()?;
        self.base = BaseRules::new(base);
        self.classes = classes;
        // Objects no rule of the new table names go, after the flip.
        let used: BTreeSet<PathPattern> = values
            .iter()
            .filter_map(|(slot, _)| match &slot.object {
                table::ObjectKey::Path(p) => Some(p.clone()),
                table::ObjectKey::Net { .. } => None,
            })
            .collect();
        let gone = self.objects.retain(|p| used.contains(p));
        self.maps.apply_objects(&gone, &self.config)?;
        self.maps.reconcile_objects(&self.objects)?;
        self.rules_changed()?;
        for p in self.objects.unresolved() {
            tracing::warn!(path = %p, "path names nothing yet: not enforced until it exists");
        }
        tracing::info!(
            entries = values.len(),
            classed = self.classes.len(),
            generation = idle,
            "applied decision table"
        );
        Ok(())
    }

    /// Replaces base entries and grants together, in one step: how an agent
    /// rebuilds the table from its store on start. On any error the previous
    /// table stays in force, and so does the previous set of grants.
    pub fn replace(
        &mut self,
        base: &[Entry],
        classes: Classes,
        grants: BTreeMap<u64, Vec<Entry>>,
    ) -> Result<(), EnforcerError> {
        let previous = std::mem::replace(&mut self.grants, Grants::from_map(grants));
        let result = self.apply_with(base, classes);
        if result.is_err() {
            self.grants = previous;
        }
        result
    }

    /// Edits the base entries and class memberships of the live table:
    /// what an incremental recompile of the Cedar policy changed. In three
    /// steps, so that no caller is ever decided by a class the kernel has
    /// no rules for: the slots that gain entries (a new class's rows), then
    /// each membership (one update each), then the slots that only lose
    /// entries (an emptied class's rows). On any error the model is put
    /// back and the touched slots and memberships re-synced.
    pub fn update_base(&mut self, edit: &BaseEdit) -> Result<(), EnforcerError> {
        let _writing = self.writes.begin();
        check_classes(edit.classes.iter().map(|(s, _)| s))?;
        let mut removed = Vec::new();
        let mut removed_slots = BTreeSet::new();
        for e in &edit.remove {
            let slot = e.slot()?;
            removed.extend(self.base.remove(&slot, e));
            removed_slots.insert(slot);
        }
        let mut added = Vec::new();
        let mut added_slots = BTreeSet::new();
        for e in &edit.add {
            let slot = match e.slot() {
                Ok(s) => s,
                Err(err) => {
                    self.undo_base_edit(&removed, &added);
                    return Err(err.into());
                }
            };
            self.base.push(slot.clone(), e.clone());
            added.push(e.clone());
            added_slots.insert(slot);
        }
        let previous: Vec<(Subject, Option<u32>)> = edit
            .classes
            .iter()
            .map(|(s, _)| (*s, self.classes.get(s).copied()))
            .collect();
        for (subject, class) in &edit.classes {
            match class {
                Some(c) => self.classes.insert(*subject, *c),
                None => self.classes.remove(subject),
            };
        }
        let only_removed: BTreeSet<Slot> =
            removed_slots.difference(&added_slots).cloned().collect();
        let written = self
            .write_slots(&added_slots)
            .and_then(|()| self.write_classes(edit.classes.iter().map(|(s, _)| *s)))
            .and_then(|()| self.write_slots(&only_removed));
        if let Err(err) = written {
            self.undo_base_edit(&removed, &added);
            for (subject, class) in &previous {
                match class {
                    Some(c) => self.classes.insert(*subject, *c),
                    None => self.classes.remove(subject),
                };
            }
            let _ = self.write_classes(previous.iter().map(|(s, _)| *s));
            let _ = self.write_slots(&added_slots);
            let _ = self.write_slots(&only_removed);
            let _ = self.rules_changed();
            return Err(err);
        }
        self.rules_changed()?;
        tracing::debug!(
            removed = removed.len(),
            added = added.len(),
            classes = edit.classes.len(),
            "updated base entries"
        );
        Ok(())
    }

    /// Writes the model's class of each subject into the live generation,
    /// whose decisions consider classes from then on.
    fn write_classes(
        &mut self,
        subjects: impl Iterator<Item = Subject>,
    ) -> Result<(), EnforcerError> {
        let mut kconfig = self.maps.read_config()?;
        let active = kconfig.active;
        let bit = 1 << (active & 1);
        if !self.classes.is_empty() && kconfig.classed & bit == 0 {
            kconfig.classed |= bit;
            self.maps.write_config(&kconfig)?;
        }
        for s in subjects {
            let class = self.classes.get(&s).copied();
            self.maps.put_class(active, s, class, &self.config)?;
        }
        Ok(())
    }

    fn undo_base_edit(&mut self, removed: &[Entry], added: &[Entry]) {
        for e in added {
            if let Ok(slot) = e.slot() {
                self.base.remove(&slot, e);
            }
        }
        for e in removed {
            if let Ok(slot) = e.slot() {
                self.base.push(slot, e.clone());
            }
        }
    }

    /// Adds (or replaces) a grant's entries in the live table. Refused whole
    /// if any entry is invalid or the table is full.
    pub fn grant(&mut self, grant_id: u64, entries: Vec<Entry>) -> Result<(), EnforcerError> {
        let _writing = self.writes.begin();
        let mut touched = BTreeSet::new();
        for e in &entries {
            touched.insert(e.slot()?);
        }
        if let Some(old) = self.grants.get(&grant_id) {
            for e in old {
                touched.insert(e.slot()?);
            }
        }
        let previous = self.grants.insert(grant_id, entries);
        if let Err(e) = self.sync(&touched) {
            // Put the model back and re-sync so the kernel matches it again.
            match previous {
                Some(p) => self.grants.insert(grant_id, p),
                None => self.grants.remove(&grant_id),
            };
            let _ = self.sync(&touched);
            return Err(e);
        }
        Ok(())
    }

    /// Removes a grant: its access ends at once.
    pub fn revoke(&mut self, grant_id: u64) -> Result<bool, EnforcerError> {
        // Taking allows away only ends more: a teardown look-ahead taken
        // meanwhile still names connections that end (the pass after the
        // resets finds the rest), so it is not voided.
        let narrowing = self
            .grants
            .get(&grant_id)
            .is_some_and(|es| es.iter().all(|e| e.effect == ward_abi::Effect::Allow));
        let _writing = (!narrowing).then(|| self.writes.begin());
        let Some(entries) = self.grants.remove(&grant_id) else {
            // An adopted table may hold grants this process never saw.
            let removed = self.maps.remove_rule_id(grant_id)?;
            self.rules_changed()?;
            return Ok(removed > 0);
        };
        let touched = entries
            .iter()
            .map(Entry::slot)
            .collect::<Result<BTreeSet<Slot>, _>>()?;
        self.sync(&touched)?;
        Ok(true)
    }

    /// Writes the combined value of each slot into the live generation,
    /// then tells held uses (also after a partial write: what did land
    /// must reach them).
    fn sync(&mut self, slots: &BTreeSet<Slot>) -> Result<(), EnforcerError> {
        let written = self.write_slots(slots);
        let bumped = self.rules_changed();
        written.and(bumped)
    }

    fn write_slots(&mut self, slots: &BTreeSet<Slot>) -> Result<(), EnforcerError> {
        let active = self.maps.read_config()?.active;
        for slot in slots {
            let entries = self.base.at(slot).chain(self.grants.at(slot));
            let value = table::combine(slot, entries)?;
            self.maps
                .put(active, slot, value, &self.config, &mut self.objects)?;
        }
        Ok(())
    }

    /// Decisions as they happen. Only one stream exists per enforcer; call
    /// it inside a tokio runtime.
    pub fn events(&mut self) -> Result<EventStream, EnforcerError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EnforcerError::Events(std::io::Error::other(
                "the event stream needs a tokio runtime: call events() inside one",
            )));
        }
        let ring = self.maps.take_events().ok_or(EnforcerError::EventsTaken)?;
        EventStream::new(ring, self.objects.shared_names())
    }

    pub fn stats(&mut self) -> Result<Stats, EnforcerError> {
        self.maps.stats()
    }

    /// Tells held uses that the rules changed (each decides again at its
    /// next call), then resets the connections that change ended. A reset
    /// that fails is logged, not returned: the change is in force, and the
    /// connection still fails at its holder's next send or receive.
    fn rules_changed(&mut self) -> Result<(), EnforcerError> {
        self.maps.bump_epoch()?;
        self.end_connections_logged();
        Ok(())
    }

    /// When connections were last ended at a rule change (boot clock), or
    /// 0. A connect whose hook allowed it just before the rule went, and
    /// which the pass then did not find (its socket not yet hashed, its
    /// entry not yet held), would have its SYN dropped by the packet hooks
    /// and hang in SYN-SENT for two minutes of retransmits: a second pass
    /// a little later resets it, so it fails at once instead.
    pub fn connections_ended_at(&self) -> u64 {
        self.ended_at
    }

    /// [`Enforcer::end_connections`], with the outcome in the log.
    pub fn end_connections_logged(&mut self) {
        teardown::log_outcome(self.end_connections());
    }

    /// Resets every held TCP connection (in this agent's network
    /// namespace) whose permission has ended: the kernel's iterator names
    /// them with the decision every send and receive takes, and sock_diag
    /// aborts each.
    pub fn end_connections(&mut self) -> Result<Teardown, EnforcerError> {
        self.ended_at = boot_ns();
        if self.teardown.is_none() {
            // Made once something is held (the handle checks the count
            // itself from then on), so a kernel without the iterator says
            // so only when there is a connection to end.
            if self.maps.held()?.1 == 0 {
                return Ok(Teardown::default());
            }
            self.teardown = Some(teardown::Handle::new(
                &self.ebpf,
                &self.maps,
                self.writes.clone(),
            )?);
        }
        self.teardown
            .as_mut()
            .map_or(Ok(Teardown::default()), teardown::Handle::run)
    }

    /// A teardown handle with descriptors of its own, for a caller that
    /// runs it at deadlines without holding the enforcer.
    pub fn teardown_handle(&self) -> Result<teardown::Handle, EnforcerError> {
        teardown::Handle::new(&self.ebpf, &self.maps, self.writes.clone())
    }

    /// The next deadline after `after` (boot clock) of an allow to connect,
    /// from a grant or a policy time window: when a held connection may
    /// have to be reset.
    pub fn next_connect_deadline(&self, after: u64) -> Option<u64> {
        let (grants, policy) = (
            self.grants.next_connect_deadline(after),
            self.base.next_connect_deadline(after),
        );
        grants.into_iter().chain(policy).min()
    }
}

impl Enforcer {
    /// Re-resolves every listed path: one that appeared, was replaced by
    /// a new inode, or had a filesystem mounted inside it; with
    /// `scan_links`, also files in trees that gained a second name.
    /// Returns how many kernel entries changed.
    pub fn refresh_objects(&mut self, scan_links: bool) -> Result<usize, EnforcerError> {
        // Not a rule write for the teardown look-ahead: objects are files,
        // and it names connections.
        let changes = self.objects.refresh(scan_links);
        self.maps.apply_objects(&changes, &self.config)?;
        if !changes.is_empty() {
            // A new inode under a name changes what a held file's walk finds.
            self.rules_changed()?;
        }
        Ok(changes.len())
    }
}

/// What `explain` asks about: a path, walked by the kernel itself, or a
/// destination.
#[derive(Debug, Clone)]
pub enum Probe {
    Path(String),
    Addr(std::net::SocketAddr),
}

/// Who `explain` asks about, as the kernel would see the caller.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub uid: Option<u32>,
    /// The audit login uid; `None` is "never logged in".
    pub login_uid: Option<u32>,
    /// The caller's cgroup v2 directory.
    pub cgroup: Option<PathBuf>,
}

/// The kernel's answer for one (caller, operation, object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `None`: ward does not manage the caller.
    pub subjects: Option<ward_abi::decision::Subjects>,
    /// `None`: nothing protects the object (or the caller is unmanaged).
    pub verdict: Option<ward_abi::decision::Verdict>,
    /// The object as the kernel's walk saw it (files only).
    pub chain: Option<ward_abi::Chain>,
}

impl Explanation {
    pub fn allowed(&self) -> bool {
        self.verdict.is_none_or(|v| v.allow)
    }
}

impl Enforcer {
    /// Decides with the kernel's own decision function, maps and clock:
    /// the subjects are resolved as the hooks resolve them, a file is
    /// walked by the kernel's own walk (the agent stats it while a probe
    /// program records what the walk found), and the verdict comes from
    /// `ward_abi::decision`, compiled into the hooks too.
    pub fn explain(
        &mut self,
        caller: &Caller,
        op: ward_abi::Op,
        object: &Probe,
    ) -> Result<Explanation, EnforcerError> {
        let subjects = self.subjects(caller)?;
        let Some(who) = subjects else {
            return Ok(Explanation {
                subjects,
                verdict: None,
                chain: None,
            });
        };
        let now = boot_ns();
        let classed = self.maps.read_config()?.classed_active() != 0;
        match object {
            Probe::Addr(addr) => {
                let mut err = None;
                let mapped = match addr.ip() {
                    std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    std::net::IpAddr::V6(v6) => v6.octets(),
                };
                // As from an unbound socket: 0.0.0.0 is 127.0.0.1.
                let dest = ward_abi::decision::unspecified_dest(mapped, || [0; 4]);
                let port = addr.port();
                let class_err = std::cell::RefCell::new(None);
                let verdict = ward_abi::decision::decide(
                    &who,
                    now,
                    port,
                    &mut |subject| {
                        let mut lookup = kmaps::NetLookup {
                            maps: &self.maps,
                            subject,
                            addr: dest,
                            last: None,
                            err: None,
                        };
                        let found = ward_abi::decision::applicable_net_rule(port, &mut lookup);
                        err = err.take().or(lookup.err);
                        found
                    },
                    &mut KernelClasses {
                        lookup: |subject| self.kernel_class(subject, &class_err),
                        in_use: classed,
                    },
                );
                if let Some(e) = err.or(class_err.into_inner()) {
                    return Err(e);
                }
                Ok(Explanation {
                    subjects,
                    verdict,
                    chain: None,
                })
            }
            Probe::Path(_) if !self.config.hooks.lsm => Err(EnforcerError::Explain(
                "files and executables are not enforced on this host (no BPF LSM): \
                 there is no kernel decision to explain"
                    .into(),
            )),
            Probe::Path(path) => {
                let chain = self.kernel_walk(path)?;
                let err = std::cell::RefCell::new(None);
                let verdict = ward_abi::decision::decide_file(
                    &chain,
                    &who,
                    op,
                    now,
                    |key| match self.maps.file_rule(key) {
                        Ok(r) => r,
                        Err(e) => {
                            *err.borrow_mut() = Some(e);
                            None
                        }
                    },
                    &mut KernelClasses {
                        lookup: |subject| self.kernel_class(subject, &err),
                        in_use: classed,
                    },
                );
                if let Some(e) = err.into_inner() {
                    return Err(e);
                }
                Ok(Explanation {
                    subjects,
                    verdict,
                    chain: Some(chain),
                })
            }
        }
    }

    /// The live generation's class of a raw subject, as the hooks read
    /// it; an error is kept in `err` and reads as no class.
    fn kernel_class(&self, subject: u64, err: &std::cell::RefCell<Option<EnforcerError>>) -> u64 {
        self.maps.class_of(subject).unwrap_or_else(|e| {
            *err.borrow_mut() = Some(e);
            0
        })
    }

    /// Whether processes in the cgroup at `rel` under `root` are (or, once
    /// it exists, will be) managed: it or an ancestor is a followed path,
    /// or it exists and it or an ancestor is listed.
    pub fn cgroup_managed(
        &mut self,
        root: &std::path::Path,
        rel: &str,
    ) -> Result<bool, EnforcerError> {
        let followed = self.paths.keys().any(|p| {
            rel == p
                || rel
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        if followed {
            return Ok(true);
        }
        let dir = root.join(rel);
        if !dir.exists() {
            return Ok(false);
        }
        let (by_cgroup, _) = self.listed_ancestors(&dir)?;
        Ok(by_cgroup[0] != 0)
    }

    /// The listed cgroups on `dir`'s route to the root, deepest first, as
    /// the kernel's subject walk finds them, and `dir`'s own id.
    fn listed_ancestors(
        &mut self,
        dir: &std::path::Path,
    ) -> Result<([u64; ward_abi::MAX_CGROUP_SUBJECTS], u64), EnforcerError> {
        let root = crate::cgroup::cgroup2_mount().ok();
        let mut ancestors = Vec::new();
        let mut at = dir.to_path_buf();
        loop {
            if let Ok(id) = crate::cgroup::cgroup_id(&at) {
                ancestors.push(id);
            }
            if root.as_deref() == Some(at.as_path()) || !at.pop() {
                break;
            }
        }
        ancestors.reverse(); // root first, as the kernel counts levels
        let mut listed_err = None;
        let (by_cgroup, _) = ward_abi::decision::listed_ancestors(
            ward_abi::MAX_CGROUP_DEPTH,
            |level| ancestors.get(level as usize).copied().unwrap_or(0),
            |id| match self.maps.cgroup_listed(id) {
                Ok(key) => (key != 0).then_some(key),
                Err(e) => {
                    listed_err = Some(e);
                    None
                }
            },
        );
        match listed_err {
            Some(e) => Err(e),
            None => Ok((by_cgroup, ancestors.last().copied().unwrap_or(0))),
        }
    }

    /// The caller's subjects, exactly as `subject.rs` resolves them.
    fn subjects(
        &mut self,
        caller: &Caller,
    ) -> Result<Option<ward_abi::decision::Subjects>, EnforcerError> {
        let config = self.maps.read_config()?;
        let (by_cgroup, cgroup) = match &caller.cgroup {
            Some(dir) => self.listed_ancestors(dir)?,
            None => ([0; ward_abi::MAX_CGROUP_SUBJECTS], 0),
        };
        let uid = caller.uid.unwrap_or(u32::MAX);
        let login = caller.login_uid.unwrap_or(ward_abi::LOGIN_UID_UNSET);
        Ok(ward_abi::decision::Subjects::resolve(
            &config, uid, login, cgroup, by_cgroup,
        ))
    }

    /// The probe program `kernel_walk` attaches while it asks.
    fn explain_program(&mut self) -> Result<&mut aya::programs::Lsm, EnforcerError> {
        let name = ward_abi::programs::EXPLAIN_GETATTR;
        self.ebpf
            .program_mut(name)
            .ok_or(EnforcerError::MissingProgram(name))?
            .try_into()
            .map_err(attach::program_err(name))
    }

    /// What the kernel's walk finds for `path`: the explain probe program
    /// is attached, this thread stats the path, and the walk it ran is read
    /// back. A path that does not exist is walked from its parent, as a
    /// creation would be.
    fn kernel_walk(&mut self, path: &str) -> Result<ward_abi::Chain, EnforcerError> {
        let name = ward_abi::programs::EXPLAIN_GETATTR;
        let link = self
            .explain_program()?
            .attach()
            .map_err(attach::program_err(name))?;
        let result = (|| {
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::gettid() } as u32;
            let mut target = std::path::PathBuf::from(path);
            let mut popped = 0u32;
            loop {
                let slot = ward_abi::ExplainSlot {
                    tid,
                    ..Default::default()
                };
                self.maps.write_explain(&slot)?;
                let stat = std::fs::metadata(&target);
                let slot = self.maps.read_explain()?;
                match stat {
                    Ok(_) if slot.done != 0 => return Ok((slot.chain, popped)),
                    Ok(_) => {
                        return Err(EnforcerError::Explain(format!(
                            "the kernel did not report its walk of {path}"
                        )));
                    }
                    Err(_) if target.pop() => popped += 1,
                    Err(e) => return Err(EnforcerError::Explain(format!("{path}: {e}"))),
                }
            }
        })();
        let clear = self.maps.write_explain(&ward_abi::ExplainSlot::default());
        self.explain_program()?
            .detach(link)
            .map_err(attach::program_err(name))?;
        clear?;
        let (chain, popped) = result?;
        Ok(below(&chain, popped, &self.objects))
    }
}

/// The chain a walk from an existing ancestor gives for a name `popped`
/// levels below it: the kernel walks a new name from its (negative)
/// dentry, so the ancestor's own exact-file rules do not apply to it, and
/// every level is deeper.
fn below(chain: &ward_abi::Chain, popped: u32, objects: &objects::Objects) -> ward_abi::Chain {
    if popped == 0 {
        return *chain;
    }
    let mut out = ward_abi::Chain {
        complete: chain.complete,
        ..Default::default()
    };
    for i in 0..(chain.len as usize).min(ward_abi::MAX_CHAIN) {
        let (id, level) = (chain.ids[i], chain.levels[i]);
        if level == 0 && matches!(objects.name(id), Some(PathPattern::File(_))) {
            continue;
        }
        let n = out.len as usize;
        out.ids[n] = id;
        out.levels[n] = level + popped;
        out.len += 1;
    }
    out
}

/// Loads and attaches one LSM program of an object (for `ward doctor`).
pub(crate) fn attach_lsm(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: &str,
    btf: &aya::Btf,
) -> Result<(), EnforcerError> {
    attach::lsm(ebpf, name, hook, btf, None).map(|_| ())
}
