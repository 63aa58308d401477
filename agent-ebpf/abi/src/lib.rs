//! Kernel ABI of ward: the `#[repr(C)]` types, map names and global names
//! that the eBPF programs (`ward-ebpf`) and user space (`ward-agent`) share.
//!
//! This is the single definition. Both sides compile against it, so a layout
//! change cannot reach one side only.
#![no_std]

/// Longest path, in bytes including the terminating NUL, that the kernel side
/// resolves with `bpf_d_path` and matches against protected prefixes.
pub const PATH_MAX_LEN: usize = 256;

/// errno returned to a caller that ward denies.
pub const EACCES: i32 = 13;

/// Names of the maps, exactly as the `#[map]` statics in `ward-ebpf` are named.
pub mod maps {
    /// cgroup id (u64) -> [`super::ManagedCgroup`]: subjects ward enforces on.
    pub const MANAGED_CGROUPS: &str = "WARD_MANAGED_CGROUPS";
    /// LPM trie of [`super::PathKey`] -> [`super::PathRule`]: protected paths.
    pub const PROTECTED_PATHS: &str = "WARD_PROTECTED_PATHS";
}

/// Names of the read-only globals that user space sets before load.
pub mod globals {
    /// `offsetof(struct file, f_path)` on the running kernel, read from BTF.
    pub const F_PATH_OFF: &str = "F_PATH_OFF";
}

/// Names of the programs in the object.
pub mod programs {
    /// The enforcing LSM `file_open` program.
    pub const FILE_OPEN: &str = "ward_file_open";
    /// An LSM `file_open` program that allows everything: `ward doctor` loads
    /// it to learn whether this kernel accepts BPF LSM programs at all.
    pub const PROBE_LSM: &str = "ward_probe_lsm";
    /// A cgroup `connect4` program that allows everything, for the same probe.
    pub const PROBE_CONNECT4: &str = "ward_probe_connect4";
}

/// What a matching rule decides.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Value of [`maps::MANAGED_CGROUPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagedCgroup {
    /// Reserved for per-subject flags; zero today.
    pub flags: u32,
}

/// Data part of the LPM trie key of [`maps::PROTECTED_PATHS`].
///
/// Paths are matched bytewise by longest prefix. A rule for a subtree is
/// stored with a trailing `/` and without the NUL, so `/srv/prod/` never
/// matches `/srv/production`. A rule for one file is stored *with* its NUL,
/// so `/etc/shadow` never matches `/etc/shadow-`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub path: [u8; PATH_MAX_LEN],
}

impl PathKey {
    pub const fn zeroed() -> Self {
        PathKey {
            path: [0; PATH_MAX_LEN],
        }
    }
}

/// Value of [`maps::PROTECTED_PATHS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// An [`Effect`] as u32.
    pub effect: u32,
    pub _pad: u32,
    /// Id of the rule or grant that produced this entry, for audit and explain.
    pub rule_id: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with no padding holes that carry meaning
    // and no pointers; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::ManagedCgroup {}
    unsafe impl aya::Pod for super::PathKey {}
    unsafe impl aya::Pod for super::PathRule {}
}
