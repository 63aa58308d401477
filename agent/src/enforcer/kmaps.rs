//! The kernel maps: loading (pinned or not), and typed reads and writes.

use std::{fs, io};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapError, PerCpuArray, lpm_trie::Key},
};
use ward_abi::{Config, KEY_HEADER_BITS, ManagedCgroup, NetKey, PathKey, Rule, maps};

use super::{
    EnforcerConfig, ProgramStats, Stats,
    error::{EnforcerError, map_err},
    table::{ObjectKey, Slot},
};
use crate::{btf::KernelOffsets, ebpf};

/// Maps that outlive the agent when a pin directory is configured.
const PERSISTENT: [&str; 9] = [
    maps::CONFIG,
    maps::MANAGED_CGROUPS,
    maps::SUBJECT_CACHE,
    maps::PATH_RULES[0],
    maps::PATH_RULES[1],
    maps::NET_RULES[0],
    maps::NET_RULES[1],
    maps::EVENTS,
    maps::EVENTS_LOST,
];

/// Loads the object with configured sizes; reuses pinned maps when an
/// earlier agent left them. Returns whether it adopted them.
pub fn load(
    offsets: &KernelOffsets,
    config: &EnforcerConfig,
) -> Result<(Ebpf, bool), EnforcerError> {
    let mut loader = ebpf::loader(offsets);
    for name in maps::PATH_RULES {
        loader.map_max_entries(name, config.max_path_rules);
    }
    for name in maps::NET_RULES {
        loader.map_max_entries(name, config.max_net_rules);
    }
    loader.map_max_entries(maps::MANAGED_CGROUPS, config.max_cgroups);
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

pub fn set_managed(ebpf: &mut Ebpf, id: u64, managed: bool, max: u32) -> Result<(), EnforcerError> {
    {
        let mut m: HashMap<_, u64, ManagedCgroup> = map(ebpf, maps::MANAGED_CGROUPS)?;
        let r = if managed {
            m.insert(id, ManagedCgroup::default(), 0)
        } else {
            m.remove(&id)
        };
        match r {
            Err(e) if is_full(&e) => {
                return Err(EnforcerError::Full {
                    name: maps::MANAGED_CGROUPS,
                    max,
                });
            }
            Err(MapError::KeyNotFound) => {}
            r => r.map_err(map_err(maps::MANAGED_CGROUPS))?,
        }
    }
    // Cached ancestor walks are now stale.
    let mut c = read_config(ebpf)?;
    c.cgroup_generation = c.cgroup_generation.wrapping_add(1);
    write_config(ebpf, &c)
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

fn path_key(slot: &Slot, path: &super::PathPattern) -> Key<PathKey> {
    let (bits, mut key) = path.lpm_key();
    key.subject = slot.subject.raw();
    key.op = slot.op as u32;
    Key::new(KEY_HEADER_BITS + bits, key)
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

/// Sets (or, with `None`, removes) one slot in generation `generation`.
pub fn put(
    ebpf: &mut Ebpf,
    generation: u32,
    slot: &Slot,
    rule: Option<Rule>,
    config: &EnforcerConfig,
) -> Result<(), EnforcerError> {
    let g = generation as usize & 1;
    let (name, max, result) = match &slot.object {
        ObjectKey::Path(p) => {
            let name = maps::PATH_RULES[g];
            let mut trie: LpmTrie<_, PathKey, Rule> = map(ebpf, name)?;
            let key = path_key(slot, p);
            let r = match rule {
                Some(rule) => trie.insert(&key, rule, 0),
                None => trie.remove(&key),
            };
            (name, config.max_path_rules, r)
        }
        ObjectKey::Net { addr, prefix_bits } => {
            let name = maps::NET_RULES[g];
            let mut trie: LpmTrie<_, NetKey, Rule> = map(ebpf, name)?;
            let key = net_key(slot, *addr, *prefix_bits);
            let r = match rule {
                Some(rule) => trie.insert(&key, rule, 0),
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
    values: &[(Slot, Rule)],
    config: &EnforcerConfig,
) -> Result<(), EnforcerError> {
    clear_generation(ebpf, generation)?;
    for (slot, rule) in values {
        put(ebpf, generation, slot, Some(*rule), config)?;
    }
    Ok(())
}

pub fn clear_generation(ebpf: &mut Ebpf, generation: u32) -> Result<(), EnforcerError> {
    let g = generation as usize & 1;
    clear::<PathKey>(ebpf, maps::PATH_RULES[g])?;
    clear::<NetKey>(ebpf, maps::NET_RULES[g])
}

fn clear<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), EnforcerError> {
    let mut trie: LpmTrie<_, K, Rule> = map(ebpf, name)?;
    let keys: Vec<Key<K>> = trie.keys().filter_map(Result::ok).collect();
    for k in keys {
        match trie.remove(&k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(())
}

/// Removes every entry a rule or grant id produced from the live
/// generation; returns how many.
pub fn remove_rule_id(ebpf: &mut Ebpf, rule_id: u64) -> Result<usize, EnforcerError> {
    let g = read_config(ebpf)?.active as usize & 1;
    Ok(remove_by_id::<PathKey>(ebpf, maps::PATH_RULES[g], rule_id)?
        + remove_by_id::<NetKey>(ebpf, maps::NET_RULES[g], rule_id)?)
}

fn remove_by_id<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    id: u64,
) -> Result<usize, EnforcerError> {
    let mut trie: LpmTrie<_, K, Rule> = map(ebpf, name)?;
    let doomed: Vec<Key<K>> = trie
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, r)| r.rule_id == id)
        .map(|(k, _)| k)
        .collect();
    for k in &doomed {
        trie.remove(k).map_err(map_err(name))?;
    }
    Ok(doomed.len())
}

fn count<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<usize, EnforcerError> {
    let trie: LpmTrie<_, K, Rule> = map(ebpf, name)?;
    Ok(trie.keys().filter(Result::is_ok).count())
}

pub fn stats(ebpf: &mut Ebpf) -> Result<Stats, EnforcerError> {
    let g = read_config(ebpf)?.active as usize & 1;
    let path_rules = count::<PathKey>(ebpf, maps::PATH_RULES[g])?;
    let net_rules = count::<NetKey>(ebpf, maps::NET_RULES[g])?;
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
    let programs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let name = p.name_as_str()?.to_owned();
            name.starts_with("ward_").then(|| ProgramStats {
                name,
                run_count: p.run_count(),
                run_time_ns: p.run_time().as_nanos() as u64,
            })
        })
        .collect();
    Ok(Stats {
        path_rules,
        net_rules,
        managed_cgroups,
        events_lost,
        programs,
    })
}

/// What the kernel's own lookup returns for one subject key: the same key
/// the hooks build (a path with its NUL, or a full IPv4-mapped address).
pub fn lookup(
    ebpf: &mut Ebpf,
    subject: u64,
    op: ward_abi::Op,
    object: &super::Probe,
) -> Result<Option<Rule>, EnforcerError> {
    let g = read_config(ebpf)?.active as usize & 1;
    match object {
        super::Probe::Path(path) => {
            let name = maps::PATH_RULES[g];
            let trie: LpmTrie<_, PathKey, Rule> = map(ebpf, name)?;
            let bytes = path.as_bytes();
            let mut key = PathKey::zeroed();
            let len = bytes.len().min(ward_abi::PATH_MAX_LEN - 1);
            key.path[..len].copy_from_slice(&bytes[..len]);
            key.subject = subject;
            key.op = op as u32;
            let key = Key::new(KEY_HEADER_BITS + (len as u32 + 1) * 8, key);
            not_found_is_none(trie.get(&key, 0), name)
        }
        super::Probe::Addr(addr) => {
            let name = maps::NET_RULES[g];
            let trie: LpmTrie<_, NetKey, Rule> = map(ebpf, name)?;
            let ip = match addr.ip() {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            let key = Key::new(
                KEY_HEADER_BITS + 128,
                NetKey {
                    subject,
                    op: op as u32,
                    addr: ip,
                },
            );
            let rule = not_found_is_none(trie.get(&key, 0), name)?;
            Ok(rule.filter(|r| (r.port_first..=r.port_last).contains(&addr.port())))
        }
    }
}

fn not_found_is_none(
    r: Result<Rule, MapError>,
    name: &'static str,
) -> Result<Option<Rule>, EnforcerError> {
    match r {
        Ok(rule) => Ok(Some(rule)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(s)) if s.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(map_err(name)(e)),
    }
}
