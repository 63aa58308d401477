//! Who is calling, and is ward managing them?

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task,
    bpf_get_current_uid_gid, bpf_probe_read_kernel,
};
use ward_abi::{
    Config, LOGIN_UID_UNSET, MAX_CGROUP_DEPTH, MAX_UID_RANGES, NO_OFFSET, SubjectCacheEntry,
    subject,
};

/// `offsetof(struct task_struct, loginuid)`, from the kernel's BTF.
#[unsafe(no_mangle)]
static LOGINUID_OFF: u64 = NO_OFFSET;

use crate::maps::{WARD_MANAGED_CGROUPS, WARD_SUBJECT_CACHE};

/// A managed caller, as the subjects its rules may be written for.
pub struct Subjects {
    pub uid: u32,
    /// Audit login uid, [`LOGIN_UID_UNSET`] if none or not read.
    pub login_uid: u32,
    pub cgroup: u64,
    /// [`subject::uid`] if the uid is in a managed range, else 0.
    pub by_uid: u64,
    /// [`subject::uid`] of the login uid if it differs from the uid and is
    /// in a managed range, else 0: `sudo` does not shed the human's rules.
    pub by_login: u64,
    /// [`subject::cgroup`] of the deepest managed ancestor cgroup, else 0.
    pub by_cgroup: u64,
}

/// `None` for unmanaged callers: the common case, decided with the config
/// and one cache lookup. `LOGIN` reads the audit login uid; only tracing-
/// class programs (LSM) may, so cgroup programs pass `false`.
#[inline(always)]
pub fn current<const LOGIN: bool>(config: &Config) -> Option<Subjects> {
    let uid = bpf_get_current_uid_gid() as u32;
    // The login uid only matters when uid ranges are managed; skip its two
    // helper calls on every other open.
    let login_uid = if LOGIN && config.uid_ranges_len > 0 {
        login_uid()
    } else {
        LOGIN_UID_UNSET
    };
    let by_login =
        if login_uid != LOGIN_UID_UNSET && login_uid != uid && uid_managed(config, login_uid) {
            subject::uid(login_uid)
        } else {
            0
        };
    // SAFETY: helpers without pointer arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let by_cgroup = managed_ancestor(config, cgroup);
    let by_uid = if uid_managed(config, uid) {
        subject::uid(uid)
    } else {
        0
    };
    if by_cgroup == 0 && by_uid == 0 && by_login == 0 {
        return None;
    }
    Some(Subjects {
        uid,
        login_uid,
        cgroup,
        by_uid,
        by_login,
        by_cgroup,
    })
}

#[inline(always)]
fn login_uid() -> u32 {
    // SAFETY: a read-only global; the verifier sees the loaded constant.
    let off = unsafe { core::ptr::read_volatile(&LOGINUID_OFF) };
    if off == NO_OFFSET {
        return LOGIN_UID_UNSET;
    }
    // SAFETY: probe-read of the current task's loginuid field, at the offset
    // the running kernel's BTF gave; a failed read yields "unset".
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(off as usize) as *const u32).unwrap_or(LOGIN_UID_UNSET)
    }
}

#[inline(always)]
fn uid_managed(config: &Config, uid: u32) -> bool {
    let mut i = 0;
    while i < MAX_UID_RANGES {
        if (i as u32) < config.uid_ranges_len {
            let r = &config.uid_ranges[i];
            if uid >= r.first && uid <= r.last {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// The deepest managed ancestor (or self), memoised per cgroup and
/// invalidated by the config's cgroup generation.
#[inline(always)]
fn managed_ancestor(config: &Config, cgroup: u64) -> u64 {
    // SAFETY: map lookups with keys on the stack.
    if let Some(hit) = unsafe { WARD_SUBJECT_CACHE.get(&cgroup) }
        && hit.generation == config.cgroup_generation
    {
        return hit.subject;
    }
    let mut found = 0u64;
    let mut level = 0;
    while level <= MAX_CGROUP_DEPTH {
        // SAFETY: helper without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        // SAFETY: as above.
        if unsafe { WARD_MANAGED_CGROUPS.get(&id) }.is_some() {
            found = subject::cgroup(id);
        }
        level += 1;
    }
    let entry = SubjectCacheEntry {
        generation: config.cgroup_generation,
        _pad: 0,
        subject: found,
    };
    // A full LRU evicts; a failed insert only costs a walk next time.
    let _ = WARD_SUBJECT_CACHE.insert(&cgroup, &entry, 0);
    found
}
