//! Who is calling, and is ward managing them?

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_uid_gid,
    generated::bpf_get_current_task_btf,
};
use ward_abi::{
    Config, LOGIN_UID_UNSET, MAX_CGROUP_DEPTH, MAX_CGROUP_SUBJECTS, NO_OFFSET, SubjectCacheEntry,
    decision::listed_ancestors, subject,
};

/// `offsetof(struct task_struct, loginuid)`, from the kernel's BTF.
#[unsafe(no_mangle)]
static LOGINUID_OFF: u64 = NO_OFFSET;

use crate::maps::{WARD_MANAGED_CGROUPS, WARD_SUBJECT_CACHE, WARD_UNMANAGED_L1};

pub use ward_abi::decision::Subjects;

/// `None` for unmanaged callers: the common case, decided with the config,
/// one helper call and one per-CPU read when no uid ranges are managed.
/// `LOGIN` reads the audit login uid; only tracing-class programs (LSM)
/// may, so cgroup programs pass `false`.
#[inline(always)]
pub fn current<const LOGIN: bool>(config: &Config) -> Option<Subjects> {
    // SAFETY: helper without pointer arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let by_cgroup = managed_ancestors(config, cgroup);
    let uids_managed = config.uid_ranges_len > 0;
    if by_cgroup[0] == 0 && !uids_managed {
        return None;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    // The login uid only matters when uid ranges are managed.
    let login_uid = if LOGIN && uids_managed {
        login_uid()
    } else {
        LOGIN_UID_UNSET
    };
    Subjects::resolve(config, uid, login_uid, cgroup, by_cgroup)
}

/// The current task's audit login uid. Only tracing-class programs (LSM)
/// may call this: it reads the task through its BTF pointer, one load
/// instead of a probe-read helper on every managed check.
#[inline(always)]
pub fn login_uid() -> u32 {
    // SAFETY: a read-only global; the verifier sees the loaded constant.
    let off = unsafe { core::ptr::read_volatile(&LOGINUID_OFF) };
    if off == NO_OFFSET {
        return LOGIN_UID_UNSET;
    }
    // SAFETY: `current` as a trusted BTF pointer; the offset is the running
    // kernel's own `loginuid` (a kuid_t: one u32), so this loads that field.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        if task.is_null() {
            return LOGIN_UID_UNSET;
        }
        *(task.add(off as usize) as *const u32)
    }
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

const UNMANAGED: [u64; MAX_CGROUP_SUBJECTS] = [0; MAX_CGROUP_SUBJECTS];

/// The listed ancestors (and self), deepest first, memoised per cgroup and
/// invalidated by the config's cgroup generation. The last result is also
/// kept per CPU in one word (cgroup, generation, and whether the cgroup is
/// itself the only one listed), so a task that keeps calling from the same
/// cgroup skips the hash lookup.
#[inline(always)]
fn managed_ancestors(config: &Config, cgroup: u64) -> [u64; MAX_CGROUP_SUBJECTS] {
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
            return UNMANAGED;
        }
        if word == tag | L1_SELF_MANAGED {
            let mut only_self = UNMANAGED;
            only_self[0] = subject::cgroup(cgroup);
            return only_self;
        }
    }
    // SAFETY: map lookups with keys on the stack.
    if let Some(hit) = unsafe { WARD_SUBJECT_CACHE.get(&cgroup) }
        && hit.generation == generation
    {
        remember(l1, tag, cgroup, &hit.subjects);
        return hit.subjects;
    }
    let (found, deepest) = listed_ancestors(
        MAX_CGROUP_DEPTH,
        // SAFETY: helper without pointer arguments.
        |level| unsafe { bpf_get_current_ancestor_cgroup_id(level) },
        // SAFETY: a map lookup with a key on the stack.
        |id| unsafe { WARD_MANAGED_CGROUPS.get(&id) }.map(|m| m.key),
    );
    // A task moved to another cgroup between the id read and the walk got
    // the other cgroup's answer: right for this call, wrong to remember
    // under `cgroup` (a managed cgroup could be cached as unmanaged).
    if deepest != cgroup {
        return found;
    }
    let entry = SubjectCacheEntry {
        generation,
        _pad: 0,
        subjects: found,
    };
    // A full LRU evicts; a failed insert only costs a walk next time.
    let _ = WARD_SUBJECT_CACHE.insert(&cgroup, &entry, 0);
    remember(l1, tag, cgroup, &found);
    found
}

/// Keeps a result in this CPU's L1 slot, if one word can say it:
/// unmanaged, or managed as itself alone. The tag carries the generation
/// read *before* the walk, so a result that raced a change of the managed
/// set is stale on arrival and never matches.
#[inline(always)]
fn remember(l1: Option<*mut u64>, tag: u64, cgroup: u64, found: &[u64; MAX_CGROUP_SUBJECTS]) {
    let word = if found[0] == 0 {
        tag
    } else if found[0] == subject::cgroup(cgroup) && found[1] == 0 {
        tag | L1_SELF_MANAGED
    } else {
        return; // several listed, or through an ancestor: the LRU keeps that
    };
    if tag != 0
        && let Some(l1) = l1
    {
        // SAFETY: this CPU's slot; an aligned u64 is written in one store.
        unsafe { core::ptr::write_volatile(l1, word) };
    }
}
