//! Every map of the object. Sizes here are defaults; user space sets the
//! real ones from its config before load.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use ward_abi::{
    CgroupPath, Config, ExplainSlot, FileKey, Guard, Held, InodeKey, ManagedCgroup, NetKey,
    NetRule, ObjectIds, Rule, SubjectCacheEntry,
    decision::{FileDecision, Subjects},
};

#[map]
pub static WARD_CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub static WARD_MANAGED_CGROUPS: HashMap<u64, ManagedCgroup> = HashMap::with_max_entries(4096, 0);

#[map]
pub static WARD_CGROUP_PATHS: HashMap<CgroupPath, ManagedCgroup> =
    HashMap::with_max_entries(1024, 0);

#[map]
pub static WARD_CGROUP_MISSED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Scratch for a cgroup path being matched (too big for the stack).
#[map]
pub static WARD_CGROUP_PATH_SCRATCH: PerCpuArray<CgroupPath> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static WARD_GUARD: Array<Guard> = Array::with_max_entries(1, 0);

#[map]
pub static WARD_SUBJECT_CACHE: LruHashMap<u64, SubjectCacheEntry> =
    LruHashMap::with_max_entries(16384, 0);

/// Per CPU: the last caller cgroup, the cgroup generation it was resolved
/// in, and whether it is itself managed (see [`crate::subject`]). One u64,
/// so a preempted writer can never leave a half-written entry behind.
#[map]
pub static WARD_UNMANAGED_L1: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Inodes that rules are about; shared by both generations (ids are
/// stable while an inode is listed, and a listed inode without rules
/// decides nothing).
#[map]
pub static WARD_OBJECTS: HashMap<InodeKey, ObjectIds> = HashMap::with_max_entries(16384, 0);

#[map]
pub static WARD_FILE_RULES_0: HashMap<FileKey, Rule> = HashMap::with_max_entries(65536, 0);
#[map]
pub static WARD_FILE_RULES_1: HashMap<FileKey, Rule> = HashMap::with_max_entries(65536, 0);

/// The two generations of class memberships (subject -> class subject),
/// beside the rules they go with.
#[map]
pub static WARD_CLASSES_0: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);
#[map]
pub static WARD_CLASSES_1: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// The class of `subject` in generation `active`, 0 if it has none.
#[inline(always)]
pub fn class_of(active: u32, subject: u64) -> u64 {
    // SAFETY: map lookups with a key on the stack.
    unsafe {
        if active == 0 {
            WARD_CLASSES_0.get(&subject).copied().unwrap_or(0)
        } else {
            WARD_CLASSES_1.get(&subject).copied().unwrap_or(0)
        }
    }
}

/// The classes of one generation, for the shared decision.
pub struct ClassMap {
    pub active: u32,
    /// 1 when classes are in use.
    pub classed: u32,
}

impl ward_abi::decision::Classes for ClassMap {
    #[inline(always)]
    fn class_of(&mut self, subject: u64) -> u64 {
        class_of(self.active, subject)
    }

    #[inline(always)]
    fn in_use(&self) -> bool {
        self.classed != 0
    }
}

/// Per CPU: the file decision in progress (too big for the stack beside
/// a bpf_loop callback's frame).
#[map]
pub static WARD_DECISION_SCRATCH: PerCpuArray<FileDecision> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU: the managed caller's subjects (see `file::managed`).
#[map]
pub static WARD_SUBJECT_SCRATCH: PerCpuArray<Subjects> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static WARD_EXPLAIN: Array<ExplainSlot> = Array::with_max_entries(1, 0);

#[map]
pub static WARD_NET_RULES_0: LpmTrie<NetKey, NetRule> = LpmTrie::with_max_entries(16384, 0);
#[map]
pub static WARD_NET_RULES_1: LpmTrie<NetKey, NetRule> = LpmTrie::with_max_entries(16384, 0);

#[map]
pub static WARD_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

#[map]
pub static WARD_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static WARD_DECISIONS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(ward_abi::DECISION_SLOTS, 0);

/// The live config; `None` only if user space never wrote it, which the
/// agent does before attaching anything.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    WARD_CONFIG.get(0)
}

/// Bumped by the agent after every change to rules or objects.
#[map]
pub static WARD_RULES_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// See [`ward_abi::maps::FS_GENERATION`].
#[map]
pub static WARD_FS_GENERATION: Array<u64> = Array::with_max_entries(2, 0);

/// Open files of protected objects (`struct file *` -> Held). A plain
/// hash, not an LRU: an evicted entry would be a use nobody ends.
#[map]
pub static WARD_HELD_FILES: HashMap<u64, Held> = HashMap::with_max_entries(65536, 0);

/// Connections to protected destinations (`struct sock *` -> Held).
#[map]
pub static WARD_HELD_SOCKS: HashMap<u64, Held> = HashMap::with_max_entries(65536, 0);

/// Entries in each held map ([`ward_abi::HELD_FILES_SLOT`],
/// [`ward_abi::HELD_SOCKS_SLOT`]), so that hooks skip an empty one.
#[map]
pub static WARD_HELD_COUNT: Array<u64> = Array::with_max_entries(2, 0);

/// See [`ward_abi::maps::TEARDOWN_AS_OF`].
#[map]
pub static WARD_TEARDOWN_AS_OF: Array<u64> = Array::with_max_entries(1, 0);
