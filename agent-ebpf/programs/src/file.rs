//! Files and executables: LSM `file_open` and `bprm_check_security`.

use core::ffi::c_char;

use aya_ebpf::{
    bindings::path, helpers::bpf_d_path, macros::lsm, maps::lpm_trie::Key, programs::LsmContext,
};
use ward_abi::{EACCES, KEY_HEADER_BITS, Op, PATH_MAX_LEN, PathKey};

use crate::{
    decide::decide,
    events::{Object, report},
    maps::{WARD_PATH_RULES_0, WARD_PATH_RULES_1, WARD_PATH_SCRATCH, config},
    subject,
};

/// `offsetof(struct file, f_path)`, from the kernel's BTF.
#[unsafe(no_mangle)]
static F_PATH_OFF: u64 = 0;
/// `offsetof(struct file, f_mode)`.
#[unsafe(no_mangle)]
static F_MODE_OFF: u64 = 0;
/// `offsetof(struct linux_binprm, file)`.
#[unsafe(no_mangle)]
static BPRM_FILE_OFF: u64 = 0;

// include/linux/fs.h; part of the kernel ABI that BPF LSM programs see.
const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
const FMODE_EXEC: u32 = 0x20;

const ALLOW: i32 = 0;
const DENY: i32 = -EACCES;

#[inline(always)]
fn rodata(v: &u64) -> usize {
    // SAFETY: a read-only global; the verifier sees the loaded constant.
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[lsm(hook = "file_open")]
pub fn ward_file_open(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return earlier;
    }
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is the hook's trusted BTF pointer; the offset is the
    // kernel's own, so this reads the u32 f_mode field.
    let mode = unsafe { *(file.add(rodata(&F_MODE_OFF)) as *const u32) };
    // Opening an executable for exec is decided as exec, here and in
    // bprm_check_security, so exec-only access works.
    let (op, also) = if mode & FMODE_EXEC != 0 {
        (Op::Exec, None)
    } else {
        match (mode & FMODE_WRITE != 0, mode & FMODE_READ != 0) {
            (true, true) => (Op::Write, Some(Op::Read)),
            (true, false) => (Op::Write, None),
            (false, true) => (Op::Read, None),
            (false, false) => return ALLOW,
        }
    };
    check_file(file, op, also)
}

#[lsm(hook = "bprm_check_security")]
pub fn ward_bprm_check(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(1);
    if earlier != 0 {
        return earlier;
    }
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: reads the `file` pointer field of the trusted linux_binprm.
    let file = unsafe { *(bprm.add(rodata(&BPRM_FILE_OFF)) as *const *const u8) };
    if file.is_null() {
        return ALLOW;
    }
    check_file(file, Op::Exec, None)
}

/// Decides `op` (and then `also`, if given) on `file`: the caller and the
/// path are resolved once for both.
#[inline(always)]
fn check_file(file: *const u8, op: Op, also: Option<Op>) -> i32 {
    let Some(config) = config() else {
        return ALLOW; // not configured yet: nothing is managed
    };
    let Some(who) = subject::current::<true>(config) else {
        return ALLOW;
    };
    // From here the caller is managed: anything we cannot resolve is denied,
    // never waved through.
    let Some(key) = WARD_PATH_SCRATCH.get_ptr_mut(0) else {
        return DENY;
    };
    // SAFETY: `key` is this CPU's scratch slot; `file` a BTF pointer whose
    // f_path the kernel's offset names; bpf_d_path checks what it reads.
    let key: &mut Key<PathKey> = unsafe { &mut *key };
    let len = unsafe {
        let f_path = file.add(rodata(&F_PATH_OFF)) as *mut path;
        let buf = core::ptr::addr_of_mut!(key.data.path) as *mut c_char;
        bpf_d_path(f_path, buf, PATH_MAX_LEN as u32)
    };
    if len <= 0 || len > PATH_MAX_LEN as i64 {
        return DENY;
    }
    // The length counts the NUL, so exact-file rules (stored with their NUL)
    // match only the file itself.
    key.prefix_len = KEY_HEADER_BITS + (len as u32) * 8;
    let first = decide_op(key, &who, config, op);
    match also {
        Some(second) if first == ALLOW => decide_op(key, &who, config, second),
        _ => first,
    }
}

#[inline(always)]
fn decide_op(
    key: &mut Key<PathKey>,
    who: &subject::Subjects,
    config: &ward_abi::Config,
    op: Op,
) -> i32 {
    key.data.op = op as u32;
    let verdict = if config.active == 0 {
        decide(&WARD_PATH_RULES_0, key, who, 0)
    } else {
        decide(&WARD_PATH_RULES_1, key, who, 0)
    };
    let Some(verdict) = verdict else {
        return ALLOW;
    };
    report(&verdict, who, op as u32, Object::Path(&key.data.path));
    if verdict.allow { ALLOW } else { DENY }
}
