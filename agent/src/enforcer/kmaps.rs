//! The kernel maps: loading (pinned or not), the typed handles user space
//! holds on them, and its reads and writes.

use std::{fs, io};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key},
};
use ward_abi::{
    CgroupPath, Config, ExplainSlot, FileKey, Guard, Held, InodeKey, KEY_HEADER_BITS,
    ManagedCgroup, NetKey, NetRule, ObjectIds, Op, Rule, maps,
};

use super::{
    EnforcerConfig, ProgramStats, Stats,
    error::{EnforcerError, map_err},
    objects::{ObjectChange, Objects},
    table::{Classes, ObjectKey, Slot, Subject, Value},
};
use crate::{btf::KernelOffsets, ebpf};

/// Maps that outlive the agent when a pin directory is configured.
const PERSISTENT: [&str; 22] = [
    maps::CONFIG,
    maps::MANAGED_CGROUPS,
    maps::CGROUP_PATHS,
    maps::CGROUP_MISSED,
    maps::GUARD,
    maps::SUBJECT_CACHE,
    maps::OBJECTS,
    maps::FILE_RULES[0],
    maps::FILE_RULES[1],
    maps::NET_RULES[0],
    maps::NET_RULES[1],
    maps::CLASSES[0],
    maps::CLASSES[1],
    maps::EVENTS,
    maps::EVENTS_LOST,
    // Counted by whichever agent's programs decide.
    maps::DECISIONS,
    // Held uses outlive a restart: a use begun under the old agent still
    // ends at its deadline.
    maps::RULES_EPOCH,
    maps::HELD_FILES,
    maps::HELD_SOCKS,
    maps::HELD_COUNT,
    // Every program that reads or invalidates the walk cache must share
    // one cache and one generation, whichever agent attached it.
    maps::WALK_CACHE,
    maps::FS_GENERATION,
];

/// Loads the object with configured sizes; reuses pinned maps when an
/// earlier agent left them. Returns the object (its programs, and the maps
/// only the kernel touches), the maps user space reads and writes, taken
/// from it once, and whether it adopted pinned maps.
pub fn load(
    offsets: &KernelOffsets,
    config: &EnforcerConfig,
) -> Result<(Ebpf, KernelMaps, bool), EnforcerError> {
    let mut loader = ebpf::loader(offsets);
    for name in maps::FILE_RULES {
        loader.map_max_entries(name, config.max_path_rules);
    }
    loader.map_max_entries(maps::OBJECTS, config.max_objects);
    for name in maps::NET_RULES {
        loader.map_max_entries(name, config.max_net_rules);
    }
    for name in maps::CLASSES {
        loader.map_max_entries(name, config.max_principals);
    }
    loader.map_max_entries(maps::MANAGED_CGROUPS, config.max_cgroups);
    loader.map_max_entries(maps::CGROUP_PATHS, config.max_cgroups);
    loader.map_max_entries(maps::HELD_FILES, config.max_held);
    loader.map_max_entries(maps::HELD_SOCKS, config.max_held);
    let mut adopted = false;
    if let Some(dir) = &config.pin_dir {
        super::bpffs::ensure(dir)?;
        let dir = dir.join("maps");
        fs::create_dir_all(&dir).map_err(|source| EnforcerError::Pin {
            path: dir.clone(),
            source,
        })?;
        adopted = dir.join(maps::CONFIG).exists();
        for name in PERSISTENT {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(ebpf::OBJECT)?;
    let kernel_maps = KernelMaps::take(&mut ebpf)?;
    Ok((ebpf, kernel_maps, adopted))
}

/// Takes map `name` out of `ebpf` as its typed handle.
fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, EnforcerError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let m = ebpf.take_map(name).ok_or(EnforcerError::MissingMap(name))?;
    M::try_from(m).map_err(map_err(name))
}

/// Every map user space reads or writes, as a typed handle that owns its
/// descriptor: taken from the object once, right after load, so a missing
/// or mistyped map fails the load, not its first use. The programs were
/// relocated against these descriptors at load; they work on while the
/// handles live (the [`Ebpf`] keeps the programs and the maps only the
/// kernel touches). Errors name the map, as its `maps::` constant.
pub struct KernelMaps {
    config: Array<MapData, Config>,
    managed_cgroups: HashMap<MapData, u64, ManagedCgroup>,
    cgroup_paths: HashMap<MapData, CgroupPath, ManagedCgroup>,
    cgroup_missed: PerCpuArray<MapData, u64>,
    guard: Array<MapData, Guard>,
    objects: HashMap<MapData, InodeKey, ObjectIds>,
    /// By generation, as [`maps::FILE_RULES`].
    file_rules: [HashMap<MapData, FileKey, Rule>; 2],
    /// By generation, as [`maps::NET_RULES`].
    net_rules: [LpmTrie<MapData, NetKey, NetRule>; 2],
    /// By generation, as [`maps::CLASSES`]: subject -> class subject.
    classes: [HashMap<MapData, u64, u64>; 2],
    explain: Array<MapData, ExplainSlot>,
    /// Until [`KernelMaps::take_events`] hands it to the one event stream.
    events: Option<RingBuf<MapData>>,
    events_lost: PerCpuArray<MapData, u64>,
    decisions: PerCpuArray<MapData, u64>,
    rules_epoch: Array<MapData, u64>,
    /// For the teardown pass (its map iterator walks it).
    pub(super) held_socks: HashMap<MapData, u64, Held>,
    /// Read here and by the teardown pass.
    pub(super) held_count: Array<MapData, u64>,
    /// Set by the teardown pass only.
    pub(super) teardown_as_of: Array<MapData, u64>,
}

impl KernelMaps {
    fn take(ebpf: &mut Ebpf) -> Result<Self, EnforcerError> {
        Ok(KernelMaps {
            config: take(ebpf, maps::CONFIG)?,
            managed_cgroups: take(ebpf, maps::MANAGED_CGROUPS)?,
            cgroup_paths: take(ebpf, maps::CGROUP_PATHS)?,
            cgroup_missed: take(ebpf, maps::CGROUP_MISSED)?,
            guard: take(ebpf, maps::GUARD)?,
            objects: take(ebpf, maps::OBJECTS)?,
            file_rules: [
                take(ebpf, maps::FILE_RULES[0])?,
                take(ebpf, maps::FILE_RULES[1])?,
            ],
            net_rules: [
                take(ebpf, maps::NET_RULES[0])?,
                take(ebpf, maps::NET_RULES[1])?,
            ],
            classes: [take(ebpf, maps::CLASSES[0])?, take(ebpf, maps::CLASSES[1])?],
            explain: take(ebpf, maps::EXPLAIN)?,
            events: Some(take(ebpf, maps::EVENTS)?),
            events_lost: take(ebpf, maps::EVENTS_LOST)?,
            decisions: take(ebpf, maps::DECISIONS)?,
            rules_epoch: take(ebpf, maps::RULES_EPOCH)?,
            held_socks: take(ebpf, maps::HELD_SOCKS)?,
            held_count: take(ebpf, maps::HELD_COUNT)?,
            teardown_as_of: take(ebpf, maps::TEARDOWN_AS_OF)?,
        })
    }

    pub fn read_config(&self) -> Result<Config, EnforcerError> {
        self.config.get(&0, 0).map_err(map_err(maps::CONFIG))
    }

    pub fn write_config(&mut self, config: &Config) -> Result<(), EnforcerError> {
        self.config.set(0, config, 0).map_err(map_err(maps::CONFIG))
    }

    /// The live generation's index (into [`maps::FILE_RULES`] and
    /// [`maps::NET_RULES`]).
    fn active(&self) -> Result<usize, EnforcerError> {
        Ok(self.read_config()?.active as usize & 1)
    }

    /// Tells held uses that the rules changed: each is decided again at its
    /// next use. Called after every change is in place, never before.
    pub fn bump_epoch(&mut self) -> Result<(), EnforcerError> {
        let a = &mut self.rules_epoch;
        let e = a.get(&0, 0).map_err(map_err(maps::RULES_EPOCH))?;
        a.set(0, e.wrapping_add(1), 0)
            .map_err(map_err(maps::RULES_EPOCH))
    }

    /// Held open files and connections.
    pub fn held(&self) -> Result<(u64, u64), EnforcerError> {
        let get = |slot| {
            self.held_count
                .get(&slot, 0)
                .map_err(map_err(maps::HELD_COUNT))
        };
        Ok((
            get(ward_abi::HELD_FILES_SLOT)?,
            get(ward_abi::HELD_SOCKS_SLOT)?,
        ))
    }

    /// Lists cgroup `id` under workload `key` (or forgets it).
    pub fn set_managed(
        &mut self,
        id: u64,
        value: Option<ManagedCgroup>,
        max: u32,
    ) -> Result<(), EnforcerError> {
        let m = &mut self.managed_cgroups;
        let r = match value {
            Some(v) => m.insert(id, v, 0),
            None => m.remove(&id),
        };
        full_or(r, maps::MANAGED_CGROUPS, max)?;
        self.bump_cgroup_generation()
    }

    /// Cached ancestor walks are stale after any change to the managed set.
    fn bump_cgroup_generation(&mut self) -> Result<(), EnforcerError> {
        let mut c = self.read_config()?;
        c.cgroup_generation = c.cgroup_generation.wrapping_add(1);
        self.write_config(&c)
    }

    /// Follows (or stops following) a cgroup path: a cgroup created there
    /// is listed under `value` by the kernel.
    pub fn set_path(
        &mut self,
        path: &CgroupPath,
        value: Option<ManagedCgroup>,
        max: u32,
    ) -> Result<(), EnforcerError> {
        let m = &mut self.cgroup_paths;
        let r = match value {
            Some(v) => m.insert(path, v, 0),
            None => m.remove(path),
        };
        full_or(r, maps::CGROUP_PATHS, max)
    }

    /// Cgroups created at a followed path that the kernel could not list.
    pub fn cgroups_missed(&self) -> Result<u64, EnforcerError> {
        let v = self
            .cgroup_missed
            .get(&0, 0)
            .map_err(map_err(maps::CGROUP_MISSED))?;
        Ok(v.iter().sum())
    }

    pub fn write_guard(&mut self, guard: &Guard) -> Result<(), EnforcerError> {
        self.guard.set(0, guard, 0).map_err(map_err(maps::GUARD))
    }

    /// Applies changes to the object map. Puts come before the rules that
    /// name them are written; removals after the rules are gone.
    pub fn apply_objects(
        &mut self,
        changes: &[ObjectChange],
        config: &EnforcerConfig,
    ) -> Result<(), EnforcerError> {
        let m = &mut self.objects;
        for c in changes {
            let r = match c {
                ObjectChange::Put(k, v) => m.insert(k, v, 0),
                ObjectChange::Remove(k) => m.remove(k),
            };
            match r {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) if is_full(&e) => {
                    return Err(EnforcerError::Full {
                        name: maps::OBJECTS,
                        max: config.max_objects,
                    });
                }
                Err(e) => return Err(map_err(maps::OBJECTS)(e)),
            }
        }
        Ok(())
    }

    /// Makes the kernel's object map hold exactly what the registry says:
    /// after adopting an earlier agent's pins, entries for patterns this
    /// agent no longer has go.
    pub fn reconcile_objects(&mut self, objects: &Objects) -> Result<(), EnforcerError> {
        let m = &mut self.objects;
        let stale: Vec<InodeKey> = m
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| objects.kernel_entry(k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            match objects.kernel_entry(&k) {
                Some(v) => m.insert(k, v, 0),
                None => m.remove(&k),
            }
            .map_err(map_err(maps::OBJECTS))?;
        }
        Ok(())
    }

    /// Sets (or, with `None`, removes) one slot in generation `generation`.
    /// A path slot's object is listed first, so the rule never names an
    /// object the kernel cannot find.
    pub fn put(
        &mut self,
        generation: u32,
        slot: &Slot,
        value: Option<Value>,
        config: &EnforcerConfig,
        objects: &mut Objects,
    ) -> Result<(), EnforcerError> {
        let g = generation as usize & 1;
        let (name, max, result) = match &slot.object {
            ObjectKey::Path(p) => {
                let (object, changes) = objects.ensure(p);
                self.apply_objects(&changes, config)?;
                let m = &mut self.file_rules[g];
                let key = FileKey {
                    subject: slot.subject.raw(),
                    op: slot.op as u32,
                    object,
                };
                let r = match value {
                    Some(Value::File(rule)) => m.insert(key, rule, 0),
                    Some(Value::Net(_)) => return Err(mismatch(slot)),
                    None => m.remove(&key),
                };
                (maps::FILE_RULES[g], config.max_path_rules, r)
            }
            ObjectKey::Net { addr, prefix_bits } => {
                let trie = &mut self.net_rules[g];
                let key = net_key(slot, *addr, *prefix_bits);
                let r = match value {
                    Some(Value::Net(rule)) => trie.insert(&key, rule, 0),
                    Some(Value::File(_)) => return Err(mismatch(slot)),
                    None => trie.remove(&key),
                };
                (maps::NET_RULES[g], config.max_net_rules, r)
            }
        };
        match result {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) if is_full(&e) => Err(EnforcerError::Full { name, max }),
            Err(MapError::SyscallError(s)) if s.io_error.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Sets (or, with `None`, removes) one subject's class in generation
    /// `generation`: one update, so a caller is decided by its old class
    /// or its new one, never by neither.
    pub fn put_class(
        &mut self,
        generation: u32,
        subject: Subject,
        class: Option<u32>,
        config: &EnforcerConfig,
    ) -> Result<(), EnforcerError> {
        let g = generation as usize & 1;
        let key = subject.raw();
        let result = match class {
            Some(c) => self.classes[g].insert(key, ward_abi::subject::class(c), 0),
            None => self.classes[g].remove(&key),
        };
        let name = maps::CLASSES[g];
        match result {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) if is_full(&e) => Err(EnforcerError::Full {
                name,
                max: config.max_principals,
            }),
            Err(MapError::SyscallError(s)) if s.io_error.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Fills an idle generation from scratch: its rules and its classes.
    pub fn fill_generation(
        &mut self,
        generation: u32,
        values: &[(Slot, Value)],
        classes: &Classes,
        config: &EnforcerConfig,
        objects: &mut Objects,
    ) -> Result<(), EnforcerError> {
        self.clear_generation(generation)?;
        for (slot, value) in values {
            self.put(generation, slot, Some(*value), config, objects)?;
        }
        for (subject, class) in classes {
            self.put_class(generation, *subject, Some(*class), config)?;
        }
        Ok(())
    }

    pub fn clear_generation(&mut self, generation: u32) -> Result<(), EnforcerError> {
        let g = generation as usize & 1;
        remove_where(&mut self.file_rules[g], maps::FILE_RULES[g], |_| true)?;
        remove_where(&mut self.net_rules[g], maps::NET_RULES[g], |_| true)?;
        let m = &mut self.classes[g];
        let keys: Vec<u64> = m.keys().filter_map(Result::ok).collect();
        for k in keys {
            match m.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(maps::CLASSES[g])(e)),
            }
        }
        Ok(())
    }

    /// The live generation's class of `subject` (a raw subject), 0 if
    /// none, as the hooks look it up.
    pub fn class_of(&self, subject: u64) -> Result<u64, EnforcerError> {
        let g = self.active()?;
        Ok(not_found_is_none(self.classes[g].get(&subject, 0), maps::CLASSES[g])?.unwrap_or(0))
    }

    /// Removes every entry a rule or grant id produced from the live
    /// generation; returns how many.
    pub fn remove_rule_id(&mut self, rule_id: u64) -> Result<usize, EnforcerError> {
        let g = self.active()?;
        let by_id = |r: &Rule| r.rule_id == rule_id;
        Ok(
            remove_where(&mut self.file_rules[g], maps::FILE_RULES[g], by_id)?
                + remove_where(&mut self.net_rules[g], maps::NET_RULES[g], by_id)?,
        )
    }

    pub fn stats(&self) -> Result<Stats, EnforcerError> {
        let g = self.active()?;
        let path_rules = self.file_rules[g].len();
        let objects = self.objects.keys().filter(Result::is_ok).count();
        let net_rules = self.net_rules[g].len();
        let classed_subjects = self.classes[g].keys().filter(Result::is_ok).count();
        let managed_cgroups = self.managed_cgroups.keys().filter(Result::is_ok).count();
        let events_lost = self
            .events_lost
            .get(&0, 0)
            .map(|v| v.iter().sum())
            .map_err(map_err(maps::EVENTS_LOST))?;
        let decisions = {
            let mut out = Vec::new();
            for op in [Op::Read, Op::Write, Op::Exec, Op::Connect] {
                for (outcome, name) in [
                    (ward_abi::DECIDED_DENY, "deny"),
                    (ward_abi::DECIDED_ALLOW_BY_GRANT, "allow_by_grant"),
                    (ward_abi::DECIDED_ALLOW_BY_POLICY, "allow_by_policy"),
                ] {
                    let n: u64 = self
                        .decisions
                        .get(&ward_abi::decision_slot(op as u32, outcome), 0)
                        .map(|v| v.iter().sum())
                        .map_err(map_err(maps::DECISIONS))?;
                    out.push(super::Decisions {
                        op: super::events::op_name(op as u32),
                        outcome: name,
                        n,
                    });
                }
            }
            out
        };
        let (held_files, held_sockets) = self.held()?;
        let programs = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|p| {
                let name = p.name_as_str()?.to_owned();
                name.starts_with("ward_").then(|| ProgramStats {
                    name,
                    verified_insns: p.verified_instruction_count(),
                    run_count: p.run_count(),
                    run_time_ns: p.run_time().as_nanos() as u64,
                })
            })
            .collect();
        Ok(Stats {
            path_rules,
            objects,
            net_rules,
            classed_subjects,
            managed_cgroups,
            events_lost,
            decisions,
            held_files,
            held_sockets,
            programs,
        })
    }

    /// The live generation's rule for one file key, as the hooks look it up.
    pub fn file_rule(&self, key: &FileKey) -> Result<Option<Rule>, EnforcerError> {
        let g = self.active()?;
        not_found_is_none(self.file_rules[g].get(key, 0), maps::FILE_RULES[g])
    }

    /// The live generation's longest-prefix network entry for `subject` at
    /// `addr`, with a key of `bits` bits.
    fn net_rule(
        &self,
        subject: u64,
        addr: [u8; 16],
        bits: u32,
    ) -> Result<Option<NetRule>, EnforcerError> {
        let g = self.active()?;
        let key = Key::new(
            bits,
            NetKey {
                subject,
                op: ward_abi::Op::Connect as u32,
                addr,
            },
        );
        not_found_is_none(self.net_rules[g].get(&key, 0), maps::NET_RULES[g])
    }

    /// The workload key a cgroup id is listed under (managed, or a subject
    /// inside a managed subtree); 0 when it is not listed.
    pub fn cgroup_listed(&self, id: u64) -> Result<u64, EnforcerError> {
        match self.managed_cgroups.get(&id, 0) {
            Ok(v) => Ok(v.key),
            Err(MapError::KeyNotFound) => Ok(0),
            Err(MapError::SyscallError(s)) if s.io_error.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(map_err(maps::MANAGED_CGROUPS)(e)),
        }
    }

    pub fn write_explain(&mut self, slot: &ExplainSlot) -> Result<(), EnforcerError> {
        self.explain.set(0, slot, 0).map_err(map_err(maps::EXPLAIN))
    }

    pub fn read_explain(&self) -> Result<ExplainSlot, EnforcerError> {
        self.explain.get(&0, 0).map_err(map_err(maps::EXPLAIN))
    }

    /// The event ring buffer, for the one event stream; `None` once taken.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}

fn full_or(r: Result<(), MapError>, name: &'static str, max: u32) -> Result<(), EnforcerError> {
    match r {
        Err(e) if is_full(&e) => Err(EnforcerError::Full { name, max }),
        Err(MapError::KeyNotFound) => Ok(()),
        r => r.map_err(map_err(name)),
    }
}

fn is_full(e: &MapError) -> bool {
    let errno = match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    matches!(
        errno,
        Some(libc::ENOSPC) | Some(libc::E2BIG) | Some(libc::ENOMEM)
    )
}

fn net_key(slot: &Slot, addr: [u8; 16], prefix_bits: u32) -> Key<NetKey> {
    Key::new(
        KEY_HEADER_BITS + prefix_bits,
        NetKey {
            subject: slot.subject.raw(),
            op: slot.op as u32,
            addr,
        },
    )
}

/// A value of the other kind than its slot's (never made by
/// [`super::table::combine`]).
fn mismatch(slot: &Slot) -> EnforcerError {
    EnforcerError::Table(super::table::TableError::OpMismatch {
        op: slot.op,
        object: format!("{:?}", slot.object),
    })
}

/// The two kinds of rule map (the file rules' hash, the network rules'
/// trie), so that clearing, removing by id and counting are written once.
trait RuleMap {
    type Key;
    type Value: Ranges;
    fn entries(&self) -> Vec<(Self::Key, Self::Value)>;
    fn len(&self) -> usize;
    fn delete(&mut self, key: &Self::Key) -> Result<(), MapError>;
    fn replace(&mut self, key: &Self::Key, value: Self::Value) -> Result<(), MapError>;
}

/// A map value as the rules it holds: one for a file, one per port range
/// for a network.
trait Ranges: Sized {
    /// The value without the rules `doomed` picks (`None` when none is
    /// left), and how many went.
    fn without(self, doomed: &impl Fn(&Rule) -> bool) -> (Option<Self>, usize);
}

impl Ranges for Rule {
    fn without(self, doomed: &impl Fn(&Rule) -> bool) -> (Option<Self>, usize) {
        if doomed(&self) {
            (None, 1)
        } else {
            (Some(self), 0)
        }
    }
}

impl Ranges for NetRule {
    fn without(mut self, doomed: &impl Fn(&Rule) -> bool) -> (Option<Self>, usize) {
        let used = (self.len as usize).min(self.ranges.len());
        let kept: Vec<Rule> = self.ranges[..used]
            .iter()
            .filter(|r| !doomed(r))
            .copied()
            .collect();
        let gone = used - kept.len();
        if kept.is_empty() {
            return (None, gone);
        }
        self.ranges[..kept.len()].copy_from_slice(&kept);
        self.len = kept.len() as u32;
        (Some(self), gone)
    }
}

impl RuleMap for HashMap<MapData, FileKey, Rule> {
    type Key = FileKey;
    type Value = Rule;
    fn entries(&self) -> Vec<(FileKey, Rule)> {
        self.iter().filter_map(Result::ok).collect()
    }
    fn len(&self) -> usize {
        self.keys().filter(Result::is_ok).count()
    }
    fn delete(&mut self, key: &FileKey) -> Result<(), MapError> {
        self.remove(key)
    }
    fn replace(&mut self, key: &FileKey, value: Rule) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
}

impl RuleMap for LpmTrie<MapData, NetKey, NetRule> {
    type Key = Key<NetKey>;
    type Value = NetRule;
    fn entries(&self) -> Vec<(Key<NetKey>, NetRule)> {
        self.iter().filter_map(Result::ok).collect()
    }
    fn len(&self) -> usize {
        self.keys().filter(Result::is_ok).count()
    }
    fn delete(&mut self, key: &Key<NetKey>) -> Result<(), MapError> {
        self.remove(key)
    }
    fn replace(&mut self, key: &Key<NetKey>, value: NetRule) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
}

/// Removes the rules `doomed` picks (an entry goes with its last one);
/// returns how many.
fn remove_where<M: RuleMap>(
    m: &mut M,
    name: &'static str,
    doomed: impl Fn(&Rule) -> bool,
) -> Result<usize, EnforcerError> {
    let mut removed = 0;
    for (key, value) in m.entries() {
        let (kept, gone) = value.without(&doomed);
        if gone == 0 {
            continue;
        }
        removed += gone;
        let r = match kept {
            Some(v) => m.replace(&key, v),
            None => m.delete(&key),
        };
        match r {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(removed)
}

/// The live generation's network entries for one subject and address
/// (as the kernel keys it), one prefix length at a time, as
/// [`ward_abi::decision::applicable_net_rule`] walks them in the hooks.
/// The first error is kept in `err` (the walk then sees no entry).
pub struct NetLookup<'a> {
    pub maps: &'a KernelMaps,
    pub subject: u64,
    pub addr: [u8; 16],
    pub last: Option<NetRule>,
    pub err: Option<EnforcerError>,
}

impl ward_abi::decision::NetLookup for NetLookup<'_> {
    fn entry(&mut self, bits: u32) -> Option<&NetRule> {
        self.last = match self.maps.net_rule(self.subject, self.addr, bits) {
            Ok(r) => r,
            Err(e) => {
                self.err.get_or_insert(e);
                None
            }
        };
        self.last.as_ref()
    }
}

fn not_found_is_none<V>(
    r: Result<V, MapError>,
    name: &'static str,
) -> Result<Option<V>, EnforcerError> {
    match r {
        Ok(rule) => Ok(Some(rule)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(s)) if s.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(map_err(name)(e)),
    }
}
