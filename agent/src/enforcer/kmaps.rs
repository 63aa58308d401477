//! The kernel maps: loading (pinned or not), and typed reads and writes.

use std::{fs, io};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapError, PerCpuArray, lpm_trie::Key},
};
use ward_abi::{
    CgroupPath, Config, ExplainSlot, FileKey, Guard, InodeKey, KEY_HEADER_BITS, ManagedCgroup,
    NetKey, NetRule, ObjectIds, Op, Rule, maps,
};

use super::{
    EnforcerConfig, ProgramStats, Stats,
    error::{EnforcerError, map_err},
    objects::{ObjectChange, Objects},
    table::{ObjectKey, Slot, Value},
};
use crate::{btf::KernelOffsets, ebpf};

/// Maps that outlive the agent when a pin directory is configured.
const PERSISTENT: [&str; 20] = [
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
/// earlier agent left them. Returns whether it adopted them.
pub fn load(
    offsets: &KernelOffsets,
    config: &EnforcerConfig,
) -> Result<(Ebpf, bool), EnforcerError> {
    let mut loader = ebpf::loader(offsets);
    for name in maps::FILE_RULES {
        loader.map_max_entries(name, config.max_path_rules);
    }
    loader.map_max_entries(maps::OBJECTS, config.max_objects);
    for name in maps::NET_RULES {
        loader.map_max_entries(name, config.max_net_rules);
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
    Ok((loader.load(ebpf::OBJECT)?, adopted))
}

fn map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, EnforcerError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    let m = ebpf.map_mut(name).ok_or(EnforcerError::MissingMap(name))?;
    T::try_from(m).map_err(map_err(name))
}

pub fn read_config(ebpf: &mut Ebpf) -> Result<Config, EnforcerError> {
    let a: Array<_, Config> = map(ebpf, maps::CONFIG)?;
    a.get(&0, 0).map_err(map_err(maps::CONFIG))
}

pub fn write_config(ebpf: &mut Ebpf, config: &Config) -> Result<(), EnforcerError> {
    let mut a: Array<_, Config> = map(ebpf, maps::CONFIG)?;
    a.set(0, config, 0).map_err(map_err(maps::CONFIG))
}

/// Tells held uses that the rules changed: each is decided again at its
/// next use. Called after every change is in place, never before.
pub fn bump_epoch(ebpf: &mut Ebpf) -> Result<(), EnforcerError> {
    let mut a: Array<_, u64> = map(ebpf, maps::RULES_EPOCH)?;
    let e = a.get(&0, 0).map_err(map_err(maps::RULES_EPOCH))?;
    a.set(0, e.wrapping_add(1), 0)
        .map_err(map_err(maps::RULES_EPOCH))
}

/// Held open files and connections.
pub fn held(ebpf: &mut Ebpf) -> Result<(u64, u64), EnforcerError> {
    let a: Array<_, u64> = map(ebpf, maps::HELD_COUNT)?;
    let get = |slot| a.get(&slot, 0).map_err(map_err(maps::HELD_COUNT));
    Ok((
        get(ward_abi::HELD_FILES_SLOT)?,
        get(ward_abi::HELD_SOCKS_SLOT)?,
    ))
}

/// Lists cgroup `id` under workload `key` (or forgets it).
pub fn set_managed(
    ebpf: &mut Ebpf,
    id: u64,
    value: Option<ManagedCgroup>,
    max: u32,
) -> Result<(), EnforcerError> {
    {
        let mut m: HashMap<_, u64, ManagedCgroup> = map(ebpf, maps::MANAGED_CGROUPS)?;
        let r = match value {
            Some(v) => m.insert(id, v, 0),
            None => m.remove(&id),
        };
        full_or(r, maps::MANAGED_CGROUPS, max)?;
    }
    bump_cgroup_generation(ebpf)
}

/// Cached ancestor walks are stale after any change to the managed set.
fn bump_cgroup_generation(ebpf: &mut Ebpf) -> Result<(), EnforcerError> {
    let mut c = read_config(ebpf)?;
    c.cgroup_generation = c.cgroup_generation.wrapping_add(1);
    write_config(ebpf, &c)
}

fn full_or(r: Result<(), MapError>, name: &'static str, max: u32) -> Result<(), EnforcerError> {
    match r {
        Err(e) if is_full(&e) => Err(EnforcerError::Full { name, max }),
        Err(MapError::KeyNotFound) => Ok(()),
        r => r.map_err(map_err(name)),
    }
}

/// Follows (or stops following) a cgroup path: a cgroup created there is
/// listed under `value` by the kernel.
pub fn set_path(
    ebpf: &mut Ebpf,
    path: &CgroupPath,
    value: Option<ManagedCgroup>,
    max: u32,
) -> Result<(), EnforcerError> {
    let mut m: HashMap<_, CgroupPath, ManagedCgroup> = map(ebpf, maps::CGROUP_PATHS)?;
    let r = match value {
        Some(v) => m.insert(path, v, 0),
        None => m.remove(path),
    };
    full_or(r, maps::CGROUP_PATHS, max)
}

/// Cgroups created at a followed path that the kernel could not list.
pub fn cgroups_missed(ebpf: &mut Ebpf) -> Result<u64, EnforcerError> {
    let a: PerCpuArray<_, u64> = map(ebpf, maps::CGROUP_MISSED)?;
    let v = a.get(&0, 0).map_err(map_err(maps::CGROUP_MISSED))?;
    Ok(v.iter().sum())
}

pub fn write_guard(ebpf: &mut Ebpf, guard: &Guard) -> Result<(), EnforcerError> {
    let mut a: Array<_, Guard> = map(ebpf, maps::GUARD)?;
    a.set(0, guard, 0).map_err(map_err(maps::GUARD))
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

/// Applies changes to the object map. Puts come before the rules that
/// name them are written; removals after the rules are gone.
pub fn apply_objects(
    ebpf: &mut Ebpf,
    changes: &[ObjectChange],
    config: &EnforcerConfig,
) -> Result<(), EnforcerError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut m: HashMap<_, InodeKey, ObjectIds> = map(ebpf, maps::OBJECTS)?;
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
pub fn reconcile_objects(ebpf: &mut Ebpf, objects: &Objects) -> Result<(), EnforcerError> {
    let mut m: HashMap<_, InodeKey, ObjectIds> = map(ebpf, maps::OBJECTS)?;
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

/// Sets (or, with `None`, removes) one slot in generation `generation`.
/// A path slot's object is listed first, so the rule never names an
/// object the kernel cannot find.
pub fn put(
    ebpf: &mut Ebpf,
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
            apply_objects(ebpf, &changes, config)?;
            let name = maps::FILE_RULES[g];
            let mut m: HashMap<_, FileKey, Rule> = map(ebpf, name)?;
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
            (name, config.max_path_rules, r)
        }
        ObjectKey::Net { addr, prefix_bits } => {
            let name = maps::NET_RULES[g];
            let mut trie: LpmTrie<_, NetKey, NetRule> = map(ebpf, name)?;
            let key = net_key(slot, *addr, *prefix_bits);
            let r = match value {
                Some(Value::Net(rule)) => trie.insert(&key, rule, 0),
                Some(Value::File(_)) => return Err(mismatch(slot)),
                None => trie.remove(&key),
            };
            (name, config.max_net_rules, r)
        }
    };
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) if is_full(&e) => Err(EnforcerError::Full { name, max }),
        Err(MapError::SyscallError(s)) if s.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

/// Fills an idle generation from scratch.
pub fn fill_generation(
    ebpf: &mut Ebpf,
    generation: u32,
    values: &[(Slot, Value)],
    config: &EnforcerConfig,
    objects: &mut Objects,
) -> Result<(), EnforcerError> {
    clear_generation(ebpf, generation)?;
    for (slot, value) in values {
        put(ebpf, generation, slot, Some(*value), config, objects)?;
    }
    Ok(())
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

impl RuleMap for HashMap<&mut aya::maps::MapData, FileKey, Rule> {
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

impl RuleMap for LpmTrie<&mut aya::maps::MapData, NetKey, NetRule> {
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

pub fn clear_generation(ebpf: &mut Ebpf, generation: u32) -> Result<(), EnforcerError> {
    let g = generation as usize & 1;
    let (files, nets) = (maps::FILE_RULES[g], maps::NET_RULES[g]);
    remove_where(
        &mut map::<HashMap<_, FileKey, Rule>>(ebpf, files)?,
        files,
        |_| true,
    )?;
    remove_where(
        &mut map::<LpmTrie<_, NetKey, NetRule>>(ebpf, nets)?,
        nets,
        |_| true,
    )?;
    Ok(())
}

/// Removes every entry a rule or grant id produced from the live
/// generation; returns how many.
pub fn remove_rule_id(ebpf: &mut Ebpf, rule_id: u64) -> Result<usize, EnforcerError> {
    let g = read_config(ebpf)?.active as usize & 1;
    let (files, nets) = (maps::FILE_RULES[g], maps::NET_RULES[g]);
    let by_id = |r: &Rule| r.rule_id == rule_id;
    Ok(remove_where(
        &mut map::<HashMap<_, FileKey, Rule>>(ebpf, files)?,
        files,
        by_id,
    )? + remove_where(
        &mut map::<LpmTrie<_, NetKey, NetRule>>(ebpf, nets)?,
        nets,
        by_id,
    )?)
}

pub fn stats(ebpf: &mut Ebpf) -> Result<Stats, EnforcerError> {
    let g = read_config(ebpf)?.active as usize & 1;
    let path_rules = map::<HashMap<_, FileKey, Rule>>(ebpf, maps::FILE_RULES[g])?.len();
    let objects = {
        let m: HashMap<_, InodeKey, ObjectIds> = map(ebpf, maps::OBJECTS)?;
        m.keys().filter(Result::is_ok).count()
    };
    let net_rules = map::<LpmTrie<_, NetKey, NetRule>>(ebpf, maps::NET_RULES[g])?.len();
    let managed_cgroups = {
        let m: HashMap<_, u64, ManagedCgroup> = map(ebpf, maps::MANAGED_CGROUPS)?;
        m.keys().filter(Result::is_ok).count()
    };
    let events_lost = {
        let lost: PerCpuArray<_, u64> = map(ebpf, maps::EVENTS_LOST)?;
        lost.get(&0, 0)
            .map(|v| v.iter().sum())
            .map_err(map_err(maps::EVENTS_LOST))?
    };
    let decisions = {
        let counts: PerCpuArray<_, u64> = map(ebpf, maps::DECISIONS)?;
        let mut out = Vec::new();
        for op in [Op::Read, Op::Write, Op::Exec, Op::Connect] {
            for (outcome, name) in [
                (ward_abi::DECIDED_DENY, "deny"),
                (ward_abi::DECIDED_ALLOW_BY_GRANT, "allow_by_grant"),
                (ward_abi::DECIDED_ALLOW_BY_POLICY, "allow_by_policy"),
            ] {
                let n: u64 = counts
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
    let (held_files, held_sockets) = held(ebpf)?;
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
        managed_cgroups,
        events_lost,
        decisions,
        held_files,
        held_sockets,
        programs,
    })
}

/// The live generation's rule for one file key, as the hooks look it up.
pub fn file_rule(ebpf: &mut Ebpf, key: &FileKey) -> Result<Option<Rule>, EnforcerError> {
    let g = read_config(ebpf)?.active as usize & 1;
    let name = maps::FILE_RULES[g];
    let m: HashMap<_, FileKey, Rule> = map(ebpf, name)?;
    not_found_is_none(m.get(key, 0), name)
}

/// The live generation's network entries for one subject and address
/// (as the kernel keys it), one prefix length at a time, as
/// [`ward_abi::decision::applicable_net_rule`] walks them in the hooks.
/// The first error is kept in `err` (the walk then sees no entry).
pub struct NetLookup<'a> {
    pub ebpf: &'a mut Ebpf,
    pub subject: u64,
    pub addr: [u8; 16],
    pub last: Option<NetRule>,
    pub err: Option<EnforcerError>,
}

impl ward_abi::decision::NetLookup for NetLookup<'_> {
    fn entry(&mut self, bits: u32) -> Option<&NetRule> {
        self.last = match net_rule(self.ebpf, self.subject, self.addr, bits) {
            Ok(r) => r,
            Err(e) => {
                self.err.get_or_insert(e);
                None
            }
        };
        self.last.as_ref()
    }
}

/// The live generation's longest-prefix network entry for `subject` at
/// `addr`, with a key of `bits` bits.
fn net_rule(
    ebpf: &mut Ebpf,
    subject: u64,
    addr: [u8; 16],
    bits: u32,
) -> Result<Option<NetRule>, EnforcerError> {
    let g = read_config(ebpf)?.active as usize & 1;
    let name = maps::NET_RULES[g];
    let trie: LpmTrie<_, NetKey, NetRule> = map(ebpf, name)?;
    let key = Key::new(
        bits,
        NetKey {
            subject,
            op: ward_abi::Op::Connect as u32,
            addr,
        },
    );
    not_found_is_none(trie.get(&key, 0), name)
}

/// The workload key a cgroup id is listed under (managed, or a subject
/// inside a managed subtree); 0 when it is not listed.
pub fn cgroup_listed(ebpf: &mut Ebpf, id: u64) -> Result<u64, EnforcerError> {
    let m: HashMap<_, u64, ManagedCgroup> = map(ebpf, maps::MANAGED_CGROUPS)?;
    match m.get(&id, 0) {
        Ok(v) => Ok(v.key),
        Err(MapError::KeyNotFound) => Ok(0),
        Err(MapError::SyscallError(s)) if s.io_error.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(map_err(maps::MANAGED_CGROUPS)(e)),
    }
}

pub fn write_explain(ebpf: &mut Ebpf, slot: &ExplainSlot) -> Result<(), EnforcerError> {
    let mut a: Array<_, ExplainSlot> = map(ebpf, maps::EXPLAIN)?;
    a.set(0, slot, 0).map_err(map_err(maps::EXPLAIN))
}

pub fn read_explain(ebpf: &mut Ebpf) -> Result<ExplainSlot, EnforcerError> {
    let a: Array<_, ExplainSlot> = map(ebpf, maps::EXPLAIN)?;
    a.get(&0, 0).map_err(map_err(maps::EXPLAIN))
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
