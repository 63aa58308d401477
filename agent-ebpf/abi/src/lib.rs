//! Kernel ABI of ward: the `#[repr(C)]` types, map names and global names
//! that the eBPF programs (`ward-ebpf`) and user space (`ward-agent`) share.
//!
//! This is the single definition. Both sides compile against it, so a layout
//! change cannot reach one side only.
//!
//! # The decision model
//!
//! A *subject* is a managed caller seen as a uid ([`subject::uid`]) or as
//! the managed cgroup it runs in ([`subject::cgroup`]). Rules live in LPM
//! tries keyed by `(subject, op, object)`. Entries whose subject is
//! [`subject::PROTECTED`] mark an object as protected: a managed subject
//! may touch a protected object only through a matching, unexpired allow.
#![no_std]

/// Longest path, in bytes including the terminating NUL, that the kernel side
/// resolves with `bpf_d_path` and matches against protected prefixes. An
/// LPM trie key holds at most 256 data bytes (the kernel's
/// `LPM_DATA_SIZE_MAX`), and the subject and operation take 12 of them.
/// Managed callers are denied paths longer than this on protected trees.
pub const PATH_MAX_LEN: usize = 256 - 12;

/// Deepest cgroup level whose ancestors are checked for being managed.
pub const MAX_CGROUP_DEPTH: i32 = 16;

/// How many managed uid ranges the config holds.
pub const MAX_UID_RANGES: usize = 4;

/// errno returned to a caller that ward denies.
pub const EACCES: i32 = 13;
/// errno returned to a denied connect.
pub const EPERM: i32 = 1;

/// A layout global for a field this kernel does not have.
pub const NO_OFFSET: u64 = u64::MAX;

/// The audit login uid of a task that never logged in.
pub const LOGIN_UID_UNSET: u32 = u32::MAX;

/// Expiry meaning "never" (a standing rule).
pub const NEVER: u64 = u64::MAX;

/// Names of the maps, exactly as the `#[map]` statics in `ward-ebpf` are named.
pub mod maps {
    /// u32 0 -> [`super::Config`].
    pub const CONFIG: &str = "WARD_CONFIG";
    /// cgroup id (u64) -> [`super::ManagedCgroup`]: workloads ward enforces on.
    pub const MANAGED_CGROUPS: &str = "WARD_MANAGED_CGROUPS";
    /// cgroup id -> [`super::SubjectCacheEntry`]: the ancestor walk, memoised.
    pub const SUBJECT_CACHE: &str = "WARD_SUBJECT_CACHE";
    /// The two generations of path rules: [`super::PathKey`] -> [`super::Rule`].
    pub const PATH_RULES: [&str; 2] = ["WARD_PATH_RULES_0", "WARD_PATH_RULES_1"];
    /// The two generations of network rules: [`super::NetKey`] -> [`super::Rule`].
    pub const NET_RULES: [&str; 2] = ["WARD_NET_RULES_0", "WARD_NET_RULES_1"];
    /// Ring buffer of [`super::Event`].
    pub const EVENTS: &str = "WARD_EVENTS";
    /// Per-CPU u64 at index 0: events lost because the ring buffer was full.
    pub const EVENTS_LOST: &str = "WARD_EVENTS_LOST";
}

/// Names of the read-only globals that user space sets before load.
pub mod globals {
    /// `offsetof(struct file, f_path)` on the running kernel, read from BTF.
    pub const F_PATH_OFF: &str = "F_PATH_OFF";
    /// `offsetof(struct file, f_mode)`.
    pub const F_MODE_OFF: &str = "F_MODE_OFF";
    /// `offsetof(struct linux_binprm, file)`.
    pub const BPRM_FILE_OFF: &str = "BPRM_FILE_OFF";
    /// `offsetof(struct task_struct, loginuid)`, or [`super::NO_OFFSET`]
    /// on kernels built without audit.
    pub const LOGINUID_OFF: &str = "LOGINUID_OFF";
}

/// Names of the programs in the object, and the hooks they attach to.
pub mod programs {
    /// LSM `file_open`: read, write (and the open of an executable).
    pub const FILE_OPEN: &str = "ward_file_open";
    /// LSM `bprm_check_security`: exec.
    pub const EXEC: &str = "ward_bprm_check";
    /// LSM `socket_connect`: IPv4 and IPv6 connect.
    pub const SOCKET_CONNECT: &str = "ward_socket_connect";
    /// cgroup `connect4`, for kernels without BPF LSM.
    pub const CONNECT4: &str = "ward_connect4";
    /// cgroup `connect6`, for kernels without BPF LSM.
    pub const CONNECT6: &str = "ward_connect6";
    /// An LSM `file_open` program that allows everything: `ward doctor` loads
    /// it to learn whether this kernel accepts BPF LSM programs at all.
    pub const PROBE_LSM: &str = "ward_probe_lsm";
    /// An LSM `socket_connect` program that passes on the earlier verdict:
    /// the benchmarks' empty-program floor for connect.
    pub const PROBE_LSM_CONNECT: &str = "ward_probe_lsm_connect";
    /// A cgroup `connect4` program that allows everything, for the same probe.
    pub const PROBE_CONNECT4: &str = "ward_probe_connect4";
}

/// Subject encodings: the kind in the top byte, the id below.
pub mod subject {
    /// Marks an object as protected for every managed subject.
    pub const PROTECTED: u64 = 0;
    const KIND_SHIFT: u32 = 56;
    const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;
    pub const KIND_UID: u64 = 1;
    pub const KIND_CGROUP: u64 = 2;

    pub const fn uid(uid: u32) -> u64 {
        (KIND_UID << KIND_SHIFT) | uid as u64
    }

    /// cgroup ids are kernfs inode numbers, far below 2^56.
    pub const fn cgroup(id: u64) -> u64 {
        (KIND_CGROUP << KIND_SHIFT) | (id & ID_MASK)
    }

    pub const fn kind(subject: u64) -> u64 {
        subject >> KIND_SHIFT
    }

    pub const fn id(subject: u64) -> u64 {
        subject & ID_MASK
    }
}

/// An operation ward decides.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Read = 1,
    Write = 2,
    Exec = 3,
    Connect = 4,
}

impl Op {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Op::Read),
            2 => Some(Op::Write),
            3 => Some(Op::Exec),
            4 => Some(Op::Connect),
            _ => None,
        }
    }
}

/// What a matching rule decides.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    Deny = 0,
    Allow = 1,
}

impl Effect {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Effect::Deny),
            1 => Some(Effect::Allow),
            _ => None,
        }
    }
}

/// [`Rule::flags`]: the entry comes from a JIT grant (its uses are audited).
pub const RULE_FROM_GRANT: u32 = 1;

/// Value of every rule trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// An [`Effect`] as u32.
    pub effect: u32,
    /// [`RULE_FROM_GRANT`], ...
    pub flags: u32,
    /// Boot-clock ns (`bpf_ktime_get_boot_ns`) after which an allow no
    /// longer applies; [`NEVER`] for standing rules.
    pub expires_ns: u64,
    /// Id of the rule or grant that produced this entry.
    pub rule_id: u64,
    /// Network rules: the inclusive port range; 0..=65535 for any port.
    pub port_first: u16,
    pub port_last: u16,
    pub _pad: u32,
}

/// Bytes of `subject` + `op` at the start of every rule key.
pub const KEY_HEADER_BITS: u32 = 96;

/// Data part of the LPM trie key of the path rule tries.
///
/// The header (`subject`, `op`) is always covered by the prefix in full, so
/// its byte order does not matter; paths are then matched bytewise by
/// longest prefix. A
/// subtree rule is stored with its trailing `/` and without the NUL, so
/// `/srv/prod/` never matches `/srv/production`; a rule for one file is
/// stored *with* its NUL, so `/etc/shadow` never matches `/etc/shadow-`.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub subject: u64,
    pub op: u32,
    pub path: [u8; PATH_MAX_LEN],
}

impl PathKey {
    pub const fn zeroed() -> Self {
        PathKey {
            subject: 0,
            op: 0,
            path: [0; PATH_MAX_LEN],
        }
    }
}

/// Data part of the LPM trie key of the network rule tries. IPv4 addresses
/// are stored IPv4-mapped (`::ffff:a.b.c.d`), so one trie serves both
/// families and a v4-mapped IPv6 connect meets the IPv4 rules.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetKey {
    pub subject: u64,
    pub op: u32,
    pub addr: [u8; 16],
}

/// A managed uid range, inclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

/// The single entry of [`maps::CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Which rule generation (0 or 1) lookups use. Flipping it swaps a whole
    /// table in one store.
    pub active: u32,
    /// Bumped whenever the managed cgroup set changes; stale
    /// [`SubjectCacheEntry`]s are ignored.
    pub cgroup_generation: u32,
    pub uid_ranges_len: u32,
    pub _pad: u32,
    pub uid_ranges: [UidRange; MAX_UID_RANGES],
}

/// Value of [`maps::MANAGED_CGROUPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagedCgroup {
    /// Reserved for per-workload flags; zero today.
    pub flags: u32,
}

/// Value of [`maps::SUBJECT_CACHE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubjectCacheEntry {
    pub generation: u32,
    pub _pad: u32,
    /// The deepest managed ancestor as a [`subject::cgroup`], or 0 if none.
    pub subject: u64,
}

/// [`Event::kind`].
pub mod event_kind {
    pub const DENY: u32 = 1;
    pub const ALLOW_BY_GRANT: u32 = 2;
}

/// One kernel decision, sent to user space over [`maps::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// Boot-clock ns.
    pub time_ns: u64,
    pub cgroup: u64,
    pub rule_id: u64,
    pub pid: u32,
    pub uid: u32,
    /// [`event_kind`].
    pub kind: u32,
    /// An [`Op`].
    pub op: u32,
    /// Network events: port, and 4 or 6 for the family (0 for files).
    pub port: u16,
    pub family: u16,
    /// Audit login uid (`u32::MAX` when unset or unknown).
    pub login_uid: u32,
    /// Files: the NUL-terminated path. Network: the 16-byte address.
    pub object: [u8; PATH_MAX_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without pointers; any bit pattern is a
    // valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::ManagedCgroup {}
    unsafe impl aya::Pod for super::SubjectCacheEntry {}
    unsafe impl aya::Pod for super::PathKey {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::Event {}
}
