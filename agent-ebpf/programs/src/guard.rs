//! Self-protection: a managed subject (root with a managed login uid
//! included) cannot switch ward off. Its files and pins are protected
//! objects like any other (the agent lists them); these hooks cover what
//! is not a file: ward's BPF objects, the daemon process, the pin
//! filesystem's mount, and the kernel itself (modules, kexec).
//!
//! Every check starts with what is cheapest and rarest (the command, the
//! target), so hooks that everyone hits (`bpf`, `task_kill`) cost
//! unmanaged callers a compare or two.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_loop, bpf_probe_read_kernel,
    },
    macros::lsm,
    programs::LsmContext,
};
use ward_abi::{
    Config, EPERM, Guard, LOGIN_UID_UNSET, MAX_CGROUP_DEPTH, MAX_CGROUP_SUBJECTS,
    decision::Subjects, tamper,
};

use crate::{
    dentry::sb_dev,
    events::report_tamper,
    maps::{WARD_GUARD, WARD_MANAGED_CGROUPS, config},
    rodata, subject, verdict,
};

/// `offsetof(struct task_struct, tgid)`.
#[unsafe(no_mangle)]
static TASK_TGID_OFF: u64 = 0;
/// `offsetof(struct bpf_map, name)`.
#[unsafe(no_mangle)]
static MAP_NAME_OFF: u64 = 0;
/// `offsetof(struct bpf_prog, aux)`.
#[unsafe(no_mangle)]
static PROG_AUX_OFF: u64 = 0;
/// `offsetof(struct bpf_prog_aux, name)`.
#[unsafe(no_mangle)]
static PROG_AUX_NAME_OFF: u64 = 0;
/// `offsetof(struct vfsmount, mnt_sb)`.
#[unsafe(no_mangle)]
static MNT_SB_OFF: u64 = 0;

/// `enum bpf_cmd`: what a managed subject may not do with bpf(): load a
/// program (an fmod_ret program on `security_bpf_map` returning 1 would
/// skip every LSM, ward's refusals included; a tracing program could
/// `bpf_send_signal` wardd), attach one, or detach or replace a link.
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_ATTACH: i32 = 8;
const BPF_PROG_DETACH: i32 = 9;
const BPF_RAW_TRACEPOINT_OPEN: i32 = 17;
const BPF_LINK_CREATE: i32 = 28;
const BPF_LINK_UPDATE: i32 = 29;
const BPF_LINK_DETACH: i32 = 34;
/// `enum kernel_read_file_id` / `kernel_load_data_id` (same order).
const READING_MODULE: i32 = 2;
const READING_KEXEC_IMAGE: i32 = 3;
const READING_KEXEC_INITRAMFS: i32 = 4;

fn guard() -> Option<&'static Guard> {
    WARD_GUARD.get(0)
}

/// Refuses (and reports) `what` if the caller is managed and is not wardd
/// itself; allows everyone else.
#[inline(always)]
fn refuse_managed(what: u32, detail: u64) -> i32 {
    let Some(config) = config() else {
        return 0;
    };
    let me = (bpf_get_current_pid_tgid() >> 32) as u32;
    if guard().is_some_and(|g| g.daemon_tgid != 0 && g.daemon_tgid == me) {
        return 0;
    }
    let Some(who) = managed(config) else {
        return 0;
    };
    report_tamper(&who, what, detail);
    verdict(false, EPERM)
}

/// Whether the caller is managed, decided as [`subject::current`] does
/// (its uid or login uid in a managed range, or a listed cgroup on its
/// route to the root), with the ancestor walk under `bpf_loop` so that
/// eight rarely-run hooks do not each cost the verifier the unrolled walk.
/// Returns the subjects with `by_cgroup` holding only whether any cgroup
/// is listed (all a refusal needs).
#[inline(always)]
fn managed(config: &Config) -> Option<Subjects> {
    // SAFETY: helper without pointer arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let mut listed = 0u64;
    // SAFETY: bpf_loop calls `ancestor_listed` with a pointer to `listed`,
    // which outlives the call.
    unsafe {
        bpf_loop(
            (MAX_CGROUP_DEPTH + 1) as u32,
            ancestor_listed as *mut c_void,
            (&mut listed as *mut u64).cast(),
            0,
        );
    }
    let uid = bpf_get_current_uid_gid() as u32;
    let login = if config.uid_ranges_len > 0 {
        subject::login_uid()
    } else {
        LOGIN_UID_UNSET
    };
    let mut by_cgroup = [0u64; MAX_CGROUP_SUBJECTS];
    by_cgroup[0] = listed;
    Subjects::resolve(config, uid, login, cgroup, by_cgroup)
}

/// One level of the caller's cgroup ancestry: stops at the first listed
/// one (or past the caller's own cgroup).
extern "C" fn ancestor_listed(level: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: helper without pointer arguments.
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    if id == 0 {
        return 1;
    }
    // SAFETY: a map lookup with a key on the stack.
    match unsafe { WARD_MANAGED_CGROUPS.get(&id) } {
        Some(m) => {
            // SAFETY: `ctx` is the u64 `managed` passed to bpf_loop.
            unsafe { *(ctx as *mut u64) = ward_abi::subject::cgroup(m.key) };
            1
        }
        None => 0,
    }
}

/// The first five bytes of a kernel object name at `name`.
#[inline(always)]
fn name_prefix(name: *const u8) -> [u8; 5] {
    // SAFETY: a probe-read of a fixed-size char array in a live object; a
    // failed read yields zeros, which match no prefix.
    unsafe { bpf_probe_read_kernel(name as *const [u8; 5]).unwrap_or([0; 5]) }
}

/// ward's maps are named `WARD_*`; a map someone else names so is only
/// refused to managed subjects, never widened.
#[lsm(hook = "bpf_map")]
pub fn ward_bpf_map(ctx: LsmContext) -> i32 {
    let map: *const u8 = ctx.arg(0);
    // SAFETY: an offset into the hook's `struct bpf_map *`.
    let name = name_prefix(unsafe { map.add(rodata(&MAP_NAME_OFF)) });
    if &name != b"WARD_" {
        return 0;
    }
    refuse_managed(tamper::BPF_MAP, 0)
}

/// ward's programs are named `ward_*`.
#[lsm(hook = "bpf_prog")]
pub fn ward_bpf_prog(ctx: LsmContext) -> i32 {
    let prog: *const u8 = ctx.arg(0);
    // SAFETY: probe-reads through the hook's `struct bpf_prog *`.
    let aux: *const u8 = unsafe {
        bpf_probe_read_kernel(prog.add(rodata(&PROG_AUX_OFF)) as *const *const u8)
            .unwrap_or(core::ptr::null())
    };
    if aux.is_null() {
        return 0;
    }
    // SAFETY: an offset into the program's aux.
    let name = name_prefix(unsafe { aux.add(rodata(&PROG_AUX_NAME_OFF)) });
    if &name != b"ward_" {
        return 0;
    }
    refuse_managed(tamper::BPF_PROG, 0)
}

/// A link fd can be had from a pin without any hook seeing the link, so
/// detaching and replacing are refused to managed subjects for every link;
/// so are loading and attaching programs, which could override any LSM.
#[lsm(hook = "bpf")]
pub fn ward_bpf(ctx: LsmContext) -> i32 {
    let cmd: i32 = ctx.arg(0);
    let what = match cmd {
        BPF_LINK_UPDATE | BPF_LINK_DETACH | BPF_PROG_DETACH => tamper::BPF_LINK,
        BPF_PROG_LOAD | BPF_PROG_ATTACH | BPF_RAW_TRACEPOINT_OPEN | BPF_LINK_CREATE => {
            tamper::BPF_LOAD
        }
        _ => return 0,
    };
    refuse_managed(what, cmd as u64)
}

/// `file_send_sigiotask(tsk, fown, sig)`: a signal by `F_SETOWN`/`F_SETSIG`
/// and I/O, which never passes `task_kill`. wardd asks for none, so none
/// reaches it, whoever arranged it.
#[lsm(hook = "file_send_sigiotask")]
pub fn ward_file_send_sigiotask(ctx: LsmContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    if !is_daemon(task) {
        return 0;
    }
    let sig: i32 = ctx.arg(2);
    if let Some(config) = config()
        && let Some(who) = managed(config)
    {
        report_tamper(&who, tamper::SIGNAL, sig as u64);
    }
    verdict(false, EPERM)
}

/// The tgid of a `struct task_struct *`, 0 if unreadable.
#[inline(always)]
fn tgid(task: *const u8) -> u32 {
    // SAFETY: a probe-read of a live task's tgid at its BTF offset.
    unsafe { bpf_probe_read_kernel(task.add(rodata(&TASK_TGID_OFF)) as *const u32).unwrap_or(0) }
}

#[inline(always)]
fn is_daemon(task: *const u8) -> bool {
    match guard() {
        Some(g) if g.daemon_tgid != 0 => tgid(task) == g.daemon_tgid,
        _ => false,
    }
}

/// `task_kill(p, info, sig, cred)`: no signal from a managed subject
/// reaches wardd (signal 0, the existence probe, does).
#[lsm(hook = "task_kill")]
pub fn ward_task_kill(ctx: LsmContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let sig: i32 = ctx.arg(2);
    if sig == 0 || !is_daemon(task) {
        return 0;
    }
    refuse_managed(tamper::SIGNAL, sig as u64)
}

/// `ptrace_access_check(child, mode)`: attach, /proc/PID/mem, pidfd_getfd,
/// process_vm_*.
#[lsm(hook = "ptrace_access_check")]
pub fn ward_ptrace_access_check(ctx: LsmContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    if !is_daemon(task) {
        return 0;
    }
    let mode: u32 = ctx.arg(1);
    refuse_managed(tamper::PTRACE, u64::from(mode))
}

/// `sb_umount(mnt, flags)`: the pins' filesystem, and those it is mounted
/// under (a lazy unmount of `/sys` takes `/sys/fs/bpf` with it).
#[lsm(hook = "sb_umount")]
pub fn ward_sb_umount(ctx: LsmContext) -> i32 {
    let mnt: *const u8 = ctx.arg(0);
    let Some(g) = guard() else {
        return 0;
    };
    // SAFETY: a probe-read of the mount's superblock pointer.
    let sb: *const u8 = unsafe {
        bpf_probe_read_kernel(mnt.add(rodata(&MNT_SB_OFF)) as *const *const u8)
            .unwrap_or(core::ptr::null())
    };
    if sb.is_null() {
        return 0;
    }
    let dev = sb_dev(sb as usize);
    if dev == 0 || !g.sb_devs.contains(&dev) {
        return 0;
    }
    refuse_managed(tamper::UMOUNT, u64::from(dev))
}

#[inline(always)]
fn kernel_load(id: i32) -> i32 {
    match id {
        READING_MODULE => refuse_managed(tamper::MODULE, id as u64),
        READING_KEXEC_IMAGE | READING_KEXEC_INITRAMFS => refuse_managed(tamper::KEXEC, id as u64),
        _ => 0,
    }
}

/// `kernel_read_file(file, id, contents)`: finit_module, kexec_file_load.
#[lsm(hook = "kernel_read_file")]
pub fn ward_kernel_read_file(ctx: LsmContext) -> i32 {
    kernel_load(ctx.arg(1))
}

/// `kernel_load_data(id, contents)`: init_module, kexec_load.
#[lsm(hook = "kernel_load_data")]
pub fn ward_kernel_load_data(ctx: LsmContext) -> i32 {
    kernel_load(ctx.arg(0))
}
