//! File access: the LSM `file_open` hook.

use core::ffi::c_char;

use aya_ebpf::{
    bindings::path,
    helpers::{bpf_d_path, bpf_get_current_cgroup_id},
    macros::{lsm, map},
    maps::{HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::LsmContext,
};
use ward_abi::{EACCES, Effect, ManagedCgroup, PATH_MAX_LEN, PathKey, PathRule};

/// `offsetof(struct file, f_path)`, set by user space from the kernel's BTF.
#[unsafe(no_mangle)]
static F_PATH_OFF: u64 = 0;

#[map]
static WARD_MANAGED_CGROUPS: HashMap<u64, ManagedCgroup> = HashMap::with_max_entries(4096, 0);

#[map]
static WARD_PROTECTED_PATHS: LpmTrie<PathKey, PathRule> = LpmTrie::with_max_entries(65536, 0);

/// One path buffer per CPU: 260 bytes do not fit beside the rest on the
/// 512-byte BPF stack.
#[map]
static WARD_PATH_SCRATCH: PerCpuArray<Key<PathKey>> = PerCpuArray::with_max_entries(1, 0);

const ALLOW: i32 = 0;
const DENY: i32 = -EACCES;

#[lsm(hook = "file_open")]
pub fn ward_file_open(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return earlier;
    }
    let file: *const u8 = ctx.arg(0);
    decide_open(file)
}

#[inline(always)]
fn decide_open(file: *const u8) -> i32 {
    // SAFETY: a BPF helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: lookups in a map that only this object and user space write.
    if unsafe { WARD_MANAGED_CGROUPS.get(&cgroup) }.is_none() {
        return ALLOW;
    }
    // From here the caller is managed: anything we cannot resolve is denied,
    // never waved through.
    let Some(key) = WARD_PATH_SCRATCH.get_ptr_mut(0) else {
        return DENY;
    };
    // SAFETY: F_PATH_OFF is a constant to the verifier; `file` is the BTF
    // pointer the hook received, and bpf_d_path checks what it dereferences.
    let len = unsafe {
        let off = core::ptr::read_volatile(&F_PATH_OFF) as usize;
        let f_path = file.add(off) as *mut path;
        let buf = core::ptr::addr_of_mut!((*key).data.path) as *mut c_char;
        bpf_d_path(f_path, buf, PATH_MAX_LEN as u32)
    };
    if len <= 0 || len > PATH_MAX_LEN as i64 {
        return DENY;
    }
    // The length counts the NUL, so exact-file rules (stored with their NUL)
    // match only the file itself.
    // SAFETY: `key` points into the per-CPU scratch value.
    unsafe { (*key).prefix_len = (len as u32) * 8 };
    // SAFETY: as above.
    match unsafe { WARD_PROTECTED_PATHS.get(&*key) } {
        None => ALLOW,
        Some(rule) => match Effect::from_raw(rule.effect) {
            Some(Effect::Allow) => ALLOW,
            _ => DENY,
        },
    }
}
