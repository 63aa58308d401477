//! The kernel enforcement engine: loads ward's programs, attaches them, and
//! fills the maps they decide from.

mod path;

use aya::{
    Btf, Ebpf,
    maps::{HashMap, LpmTrie, MapError, lpm_trie::Key},
    programs::{Lsm, ProgramError},
};
use ward_abi::{Effect, ManagedCgroup, PathKey, PathRule, maps, programs};

pub use path::{PathPattern, PathPatternError};

use crate::btf::{BtfError, KernelOffsets};

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("reading kernel layout: {0}")]
    Btf(#[from] BtfError),
    #[error("loading ward's eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("kernel BTF for program load: {0}")]
    KernelBtf(#[from] aya::BtfError),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("program `{0}` is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
}

/// What a protected-path entry decides, and which rule or grant produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    pub rule_id: u64,
}

/// ward's programs, loaded and attached. Dropping it detaches them.
pub struct Enforcer {
    ebpf: Ebpf,
}

impl Enforcer {
    /// Loads the object for the running kernel and attaches the LSM
    /// `file_open` program. Nothing is enforced until a cgroup is managed.
    pub fn load() -> Result<Self, EnforcerError> {
        let offsets = KernelOffsets::from_running_kernel()?;
        let mut ebpf = crate::ebpf::load(&offsets)?;
        let btf = Btf::from_sys_fs()?;
        attach_lsm(&mut ebpf, programs::FILE_OPEN, "file_open", &btf)?;
        Ok(Enforcer { ebpf })
    }

    /// Enforces on processes whose cgroup has this id.
    pub fn manage_cgroup(&mut self, cgroup_id: u64) -> Result<(), EnforcerError> {
        let mut managed: HashMap<_, u64, ManagedCgroup> = self.map(maps::MANAGED_CGROUPS)?;
        managed
            .insert(cgroup_id, ManagedCgroup::default(), 0)
            .map_err(map_err(maps::MANAGED_CGROUPS))
    }

    /// Protects a path (a file, or a subtree ending in `/`) with a decision.
    pub fn protect_path(
        &mut self,
        pattern: &PathPattern,
        decision: Decision,
    ) -> Result<(), EnforcerError> {
        let mut trie: LpmTrie<_, PathKey, PathRule> = self.map(maps::PROTECTED_PATHS)?;
        let (bits, data) = pattern.lpm_key();
        let rule = PathRule {
            effect: decision.effect as u32,
            _pad: 0,
            rule_id: decision.rule_id,
        };
        trie.insert(&Key::new(bits, data), rule, 0)
            .map_err(map_err(maps::PROTECTED_PATHS))
    }

    fn map<'a, T>(&'a mut self, name: &'static str) -> Result<T, EnforcerError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(EnforcerError::MissingMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> EnforcerError {
    move |source| EnforcerError::Map { name, source }
}

/// Loads and attaches one LSM program of the object.
pub(crate) fn attach_lsm(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: &str,
    btf: &Btf,
) -> Result<(), EnforcerError> {
    let program: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or(EnforcerError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EnforcerError::Program { name, source })?;
    program
        .load(hook, btf)
        .map_err(|source| EnforcerError::Program { name, source })?;
    program
        .attach()
        .map_err(|source| EnforcerError::Program { name, source })?;
    Ok(())
}
