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

use crate::maps::{WARD_MANAGED_CGROUPS, WARD_SUBJECT_CACHE, WARD_UNMANAGED_L1};

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

/// `None` for unmanaged callers: the common case, decided with the config,
/// one helper call and one per-CPU read when no uid ranges are managed.
/// `LOGIN` reads the audit login uid; only tracing-class programs (LSM)
/// may, so cgroup programs pass `false`.
#[inline(always)]
pub fn current<const LOGIN: bool>(config: &Config) -> Option<Subjects> {
    // SAFETY: helper without pointer arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let by_cgroup = managed_ancestor(config, cgroup);
    let uids_managed = config.uid_ranges_len > 0;
    if by_cgroup == 0 && !uids_managed {
        return None;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    // The login uid only matters when uid ranges are managed.
    let login_uid = if LOGIN && uids_managed {
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
    let by_uid = if uids_managed && uid_managed(config, uid) {
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

/// Set in an L1 word when the cgroup is itself managed (the common case of
/// a service directly in its managed cgroup); clear when it is unmanaged.
const L1_SELF_MANAGED: u64 = 1 << 31;

/// The L1 tag of `cgroup` in `generation`, without the managed bit; 0
/// (never a valid tag: cgroup ids start above 0) when the id does not fit
/// in 31 bits.
#[inline(always)]
fn l1_tag(cgroup: u64, generation: u32) -> u64 {
    if cgroup == 0 || cgroup >= L1_SELF_MANAGED {
        return 0;
    }
    (u64::from(generation) << 32) | cgroup
}

/// The deepest managed ancestor (or self), memoised per cgroup and
/// invalidated by the config's cgroup generation. The last result is also
/// kept per CPU in one word (cgroup, generation, and whether the cgroup is
/// itself managed), so a task that keeps calling from the same cgroup
/// skips the hash lookup.
#[inline(always)]
fn managed_ancestor(config: &Config, cgroup: u64) -> u64 {
    // Read once, before the walk: every result below is tagged with the
    // generation it was computed in, so one that raced a change of the
    // managed set is stale on arrival. (A second read after the walk could
    // tag a pre-change result with the post-change generation.)
    // SAFETY: a field of the live config map value.
    let generation = unsafe { core::ptr::read_volatile(&config.cgroup_generation) };
    let tag = l1_tag(cgroup, generation);
    let l1 = WARD_UNMANAGED_L1.get_ptr_mut(0);
    if let Some(l1) = l1
        && tag != 0
    {
        // SAFETY: this CPU's slot; an aligned u64 is read in one load.
        let word = unsafe { core::ptr::read_volatile(l1) };
        if word == tag {
            return 0;
        }
        if word == tag | L1_SELF_MANAGED {
            return subject::cgroup(cgroup);
        }
    }
    // SAFETY: map lookups with keys on the stack.
    if let Some(hit) = unsafe { WARD_SUBJECT_CACHE.get(&cgroup) }
        && hit.generation == generation
    {
        remember(l1, tag, cgroup, hit.subject);
        return hit.subject;
    }
    let mut found = 0u64;
    let mut deepest = 0u64;
    let mut level = 0;
    while level <= MAX_CGROUP_DEPTH {
        // SAFETY: helper without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        deepest = id;
        // SAFETY: as above.
        if unsafe { WARD_MANAGED_CGROUPS.get(&id) }.is_some() {
            found = subject::cgroup(id);
        }
        level += 1;
    }
    // A task moved to another cgroup between the id read and the walk got
    // the other cgroup's answer: right for this call, wrong to remember
    // under `cgroup` (a managed cgroup could be cached as unmanaged).
    if deepest != cgroup {
        return found;
    }
    let entry = SubjectCacheEntry {
        generation,
        _pad: 0,
        subject: found,
    };
    // A full LRU evicts; a failed insert only costs a walk next time.
    let _ = WARD_SUBJECT_CACHE.insert(&cgroup, &entry, 0);
    remember(l1, tag, cgroup, found);
    found
}

/// Keeps a result in this CPU's L1 slot, if one word can say it:
/// unmanaged, or managed as itself. The tag carries the generation read
/// *before* the walk, so a result that raced a change of the managed set
/// is stale on arrival and never matches.
#[inline(always)]
fn remember(l1: Option<*mut u64>, tag: u64, cgroup: u64, found: u64) {
    let word = if found == 0 {
        tag
    } else if found == subject::cgroup(cgroup) {
        tag | L1_SELF_MANAGED
    } else {
        return; // managed through an ancestor: the LRU keeps that
    };
    if tag != 0
        && let Some(l1) = l1
    {
        // SAFETY: this CPU's slot; an aligned u64 is written in one store.
        unsafe { core::ptr::write_volatile(l1, word) };
    }
}
