//! Management follows cgroup paths: a cgroup created at a managed path is
//! listed here, inside `mkdir`, before the kernel makes it visible
//! (`cgroup_mkdir` traces ahead of `kernfs_activate`), so no process can
//! ever run in it unmanaged. systemd recreates a unit's cgroup on every
//! (re)start; the rules follow, because they name the path's key.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use ward_abi::{CGROUP_PATH_LEN, MANAGED_BY_PATH};

use crate::{
    maps::{
        WARD_CGROUP_MISSED, WARD_CGROUP_PATH_SCRATCH, WARD_CGROUP_PATHS, WARD_GUARD,
        WARD_MANAGED_CGROUPS,
    },
    rodata,
};

/// `offsetof(struct cgroup, kn)`, from the kernel's BTF.
#[unsafe(no_mangle)]
static CGROUP_KN_OFF: u64 = 0;
/// `offsetof(struct kernfs_node, id)`.
#[unsafe(no_mangle)]
static KN_ID_OFF: u64 = 0;

/// `offsetof(struct cgroup, root)`.
#[unsafe(no_mangle)]
static CGROUP_ROOT_OFF: u64 = 0;
/// `offsetof(struct cgroup_root, hierarchy_id)`.
#[unsafe(no_mangle)]
static HIERARCHY_ID_OFF: u64 = 0;

/// The id of `struct cgroup *cgrp` on the v2 hierarchy (its kernfs
/// node's), 0 if unreadable or on a v1 hierarchy: v1 cgroups are created
/// at the same paths on hybrid hosts, and their ids are numbers from
/// another kernfs, which could equal a v2 id.
#[inline(always)]
fn cgroup_id(cgrp: *const u8) -> u64 {
    // SAFETY: probe-reads of the traced cgroup's root at BTF offsets.
    let on_v2 = unsafe {
        let root: *const u8 = bpf_probe_read_kernel(cgrp.add(rodata(&CGROUP_ROOT_OFF)) as *const _)
            .unwrap_or(core::ptr::null());
        // The default (v2) hierarchy is hierarchy 0, as /proc/PID/cgroup
        // prints it ("0::/...").
        !root.is_null()
            && bpf_probe_read_kernel(root.add(rodata(&HIERARCHY_ID_OFF)) as *const i32) == Ok(0)
    };
    if !on_v2 {
        return 0;
    }
    // SAFETY: probe-reads of the traced cgroup at BTF offsets; a failed
    // read yields 0, never a valid id.
    unsafe {
        let kn: *const u8 = bpf_probe_read_kernel(cgrp.add(rodata(&CGROUP_KN_OFF)) as *const _)
            .unwrap_or(core::ptr::null());
        if kn.is_null() {
            return 0;
        }
        bpf_probe_read_kernel(kn.add(rodata(&KN_ID_OFF)) as *const u64).unwrap_or(0)
    }
}

/// `cgroup:cgroup_mkdir(struct cgroup *cgrp, const char *path)`.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn ward_cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    let cgrp: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let Some(scratch) = WARD_CGROUP_PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, zeroed word by word (a byte loop
    // costs the verifier 8x), then filled with the NUL-terminated path; a
    // path that does not fit is truncated and matches nothing (the agent
    // refuses to follow such paths).
    unsafe {
        let words = scratch as *mut u64;
        let mut i = 0;
        while i < CGROUP_PATH_LEN / 8 {
            *words.add(i) = 0;
            i += 1;
        }
        if bpf_probe_read_kernel_str_bytes(path, &mut (*scratch).path).is_err() {
            return 0;
        }
        let Some(managed) = WARD_CGROUP_PATHS.get(&*scratch) else {
            return 0;
        };
        let id = cgroup_id(cgrp);
        if id == 0 {
            return 0; // a v1 hierarchy's cgroup: ward decides on v2 ids only
        }
        let mut entry = *managed;
        entry.flags |= MANAGED_BY_PATH;
        if WARD_MANAGED_CGROUPS.insert(&id, &entry, 0).is_err() {
            // Cannot fail mkdir from here: count it, and the agent says so.
            if let Some(missed) = WARD_CGROUP_MISSED.get_ptr_mut(0) {
                *missed += 1;
            }
        }
    }
    0
}

/// `cgroup:cgroup_rmdir(struct cgroup *cgrp, const char *path)`: a cgroup
/// listed by path is forgotten with it.
#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn ward_cgroup_rmdir(ctx: BtfTracePointContext) -> i32 {
    let cgrp: *const u8 = ctx.arg(0);
    let id = cgroup_id(cgrp);
    if id == 0 {
        return 0;
    }
    // SAFETY: a lookup and a delete with keys on the stack.
    unsafe {
        if let Some(m) = WARD_MANAGED_CGROUPS.get(&id)
            && m.flags & MANAGED_BY_PATH != 0
        {
            let _ = WARD_MANAGED_CGROUPS.remove(&id);
        }
    }
    0
}

/// `sched_process_exit(struct task_struct *p)`: when wardd's main thread
/// exits, its tgid stops being exempt from the guard hooks, before the pid
/// can be given to anyone else.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn ward_daemon_exit(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let Some(guard) = WARD_GUARD.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the guard map's value; probe-reads of the exiting task.
    unsafe {
        let daemon = (*guard).daemon_tgid;
        if daemon == 0 {
            return 0;
        }
        let pid: u32 =
            bpf_probe_read_kernel(task.add(rodata(&TASK_PID_OFF)) as *const u32).unwrap_or(0);
        if pid == daemon {
            (*guard).daemon_tgid = 0;
        }
    }
    0
}

/// `offsetof(struct task_struct, pid)`.
#[unsafe(no_mangle)]
static TASK_PID_OFF: u64 = 0;
