//! Files and executables. Each hook says which operation it needs on which
//! dentry; [`check`] and the one walk in [`dentry`] say whether.
//!
//! - read/write/exec by opening: `file_open` (the open's mode);
//! - exec: `bprm_check_security`, and mapping a file's code executable
//!   (`mmap_file`, `file_mprotect`): the dynamic loader's route;
//! - write, meaning every change: creating, linking, unlinking, renaming
//!   (both ends), mkdir/rmdir/mknod/symlink, attributes (`inode_setattr`:
//!   truncate, chmod, chown, utimes), xattrs and ACLs.

use core::ptr::null_mut;

use aya_ebpf::{
    bindings::inode,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{fexit, lsm},
    programs::{FExitContext, LsmContext},
};
use ward_abi::{
    Config, EACCES, EVENT_NAMES, HELD_FILES_SLOT, MAX_CHAIN, Op,
    decision::{FileDecision, Subjects, file_precheck},
};

use crate::{
    dentry,
    events::{Object, report},
    held::{self, Outcome, Recall},
    maps::{WARD_DECISION_SCRATCH, WARD_EXPLAIN, WARD_HELD_FILES, WARD_SUBJECT_SCRATCH, config},
    rodata, steps, subject, walk_cache,
};

/// `offsetof(struct file, f_path)`, from the kernel's BTF.
#[unsafe(no_mangle)]
static F_PATH_OFF: u64 = 0;
/// `offsetof(struct file, f_mode)`.
#[unsafe(no_mangle)]
static F_MODE_OFF: u64 = 0;
/// `offsetof(struct file, f_inode)`.
#[unsafe(no_mangle)]
static F_INODE_OFF: u64 = 0;
/// `offsetof(struct file, f_flags)`.
#[unsafe(no_mangle)]
static F_FLAGS_OFF: u64 = 0;
/// `offsetof(struct linux_binprm, file)`.
#[unsafe(no_mangle)]
static BPRM_FILE_OFF: u64 = 0;
/// `offsetof(struct vm_area_struct, vm_file)`.
#[unsafe(no_mangle)]
static VM_FILE_OFF: u64 = 0;
/// `offsetof(struct unix_sock, path)`: where a unix socket is bound.
#[unsafe(no_mangle)]
static UNIX_PATH_OFF: u64 = 0;

// include/linux/fs.h and mman.h; part of the kernel ABI BPF LSM programs see.
const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
const FMODE_EXEC: u32 = 0x20;
/// The open flag execve's open carries (`__FMODE_EXEC`); the f_mode bit is
/// not set on every kernel, so both are checked.
const O_FMODE_EXEC: u32 = 0x20;
const PROT_EXEC: u64 = 0x4;
// include/linux/fs.h: file_permission's mask.
const MAY_WRITE: i32 = 0x2;
const MAY_APPEND: i32 = 0x8;

const ALLOW: i32 = 0;
const DENY: i32 = -EACCES;

/// `offsetof(struct file, private_data)`.
#[unsafe(no_mangle)]
static F_PRIVATE_DATA_OFF: u64 = 0;

/// The dentry a `struct file *` is decided on: its own, even when it was
/// opened under another filesystem's path (see `dentry::of_file`).
#[inline(always)]
fn file_dentry(file: usize) -> usize {
    // SAFETY: a probe read of the file's f_inode; failure reads as 0.
    let inode = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel((file + rodata(&F_INODE_OFF)) as *const u64)
            .unwrap_or(0)
    } as usize;
    dentry::of_file(dentry::of_path(file + rodata(&F_PATH_OFF)), inode)
}

const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// The file whose code a mapping or an exec runs: for an overlayfs file,
/// the real file under it (its `private_data`), which is what the
/// protection is on; otherwise the file itself.
#[inline(always)]
fn code_file(file: usize) -> (usize, bool) {
    if !dentry::on_fs(
        dentry::of_path(file + rodata(&F_PATH_OFF)),
        OVERLAYFS_SUPER_MAGIC,
    ) {
        return (file, false);
    }
    // SAFETY: a probe read of the overlay file's private_data.
    let real = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel((file + rodata(&F_PRIVATE_DATA_OFF)) as *const u64)
            .unwrap_or(0)
    } as usize;
    (real, true)
}

/// The inode of a `struct file *` that the hook got from the kernel, as a
/// BTF pointer (what inode storage is found through; see `walk_cache`).
#[inline(always)]
fn file_inode(file: *const u8) -> *mut inode {
    // SAFETY: `file` is a trusted BTF pointer of the hook's; the offset is
    // the kernel's own, so this loads the `f_inode` pointer field.
    unsafe { *(file.add(rodata(&F_INODE_OFF)) as *const *mut inode) }
}

/// The caller, if managed: everyone else is decided here, before any walk.
///
/// The subjects are kept in a per-CPU slot and read back from there: what
/// the verifier reads from a map is a range, not the exact value of every
/// path through the subject walk, so the paths merge before the decision
/// (on 6.1 they did not, and the decision was verified for each).
#[inline(always)]
fn managed() -> Option<(&'static Config, &'static Subjects)> {
    let config = config()?; // not configured yet: nothing is managed
    let who = subject::current::<true>(config)?;
    let slot = WARD_SUBJECT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, a map value that lives for the program.
    unsafe {
        *slot = who;
        Some((config, &*slot))
    }
}

/// Decides `op` (and then `also`, if given) on `dentry` for a managed
/// caller. One walk serves both; it fills this CPU's decision slot.
/// `inode`: the dentry's inode as a BTF pointer, to find and keep the walk
/// in its cache; null to walk without it.
/// `audit_allow`: report an allow by a grant (each new use is audited; a
/// held use decided again is not, or every read would be).
#[inline(always)]
fn decide_dentry(
    config: &Config,
    who: &Subjects,
    dentry: usize,
    inode: *mut inode,
    op: Op,
    also: Option<Op>,
    audit_allow: bool,
) -> Outcome {
    let Some(decision) = WARD_DECISION_SCRATCH.get_ptr_mut(0) else {
        return Outcome::DENY; // managed, and we cannot decide: fail closed
    };
    // SAFETY: this CPU's slot, a map value that lives for the program.
    let chain = unsafe { core::ptr::addr_of_mut!((*decision).chain) };
    dentry::walk(dentry, inode, chain);
    // SAFETY: as above.
    let chain = unsafe { &*chain };
    if chain.complete != 0 && chain.len == 0 {
        return Outcome::UNPROTECTED; // nothing on the route to the root is an object
    }
    let first = decide_op(config, who, dentry, decision, op, audit_allow);
    match also {
        Some(second) if first.allow => {
            let then = decide_op(config, who, dentry, decision, second, audit_allow);
            Outcome {
                allow: then.allow,
                until: match (first.until, then.until) {
                    (0, u) | (u, 0) => u,
                    (a, b) => a.min(b),
                },
            }
        }
        _ => first,
    }
}

#[inline(always)]
fn decide_op(
    config: &Config,
    who: &Subjects,
    dentry: usize,
    decision: *mut FileDecision,
    op: Op,
    audit_allow: bool,
) -> Outcome {
    // SAFETY: this CPU's slot (see decide_dentry).
    let chain = unsafe { &(*decision).chain };
    let verdict = match file_precheck(chain) {
        Err(deny) => deny,
        Ok(None) => return Outcome::UNPROTECTED,
        Ok(Some(())) => {
            // SAFETY: helper without arguments.
            let now = unsafe { bpf_ktime_get_boot_ns() };
            match steps::decide_file(
                decision,
                who,
                op,
                now,
                config.active,
                config.classed_active(),
            ) {
                Some(v) => v,
                None => return Outcome::UNPROTECTED,
            }
        }
    };
    crate::events::count(&verdict, op as u32);
    let outcome = Outcome {
        allow: verdict.allow,
        until: verdict.decided.expires_ns,
    };
    if verdict.allow && !audit_allow {
        return outcome;
    }
    // SAFETY: as above; the decision no longer writes the chain.
    let chain = unsafe { &(*decision).chain };
    let at = dentry::bounded::<{ MAX_CHAIN - 1 }>(verdict.protected_at as usize);
    let (object_id, levels) = if chain.complete != 0 {
        (
            chain.ids.get(at).copied().unwrap_or(0),
            chain.levels.get(at).copied().unwrap_or(0),
        )
    } else {
        (0, EVENT_NAMES as u32)
    };
    let object = Object::File {
        dentry,
        key: dentry::identity(dentry),
        object_id,
        levels,
    };
    report(&verdict, who, op as u32, object);
    outcome
}

#[inline(always)]
fn code(allow: bool) -> i32 {
    if allow { ALLOW } else { DENY }
}

/// The whole check for one dentry.
#[inline(always)]
fn check(dentry: usize, op: Op, also: Option<Op>) -> i32 {
    let Some((config, who)) = managed() else {
        return ALLOW;
    };
    code(decide_dentry(config, who, dentry, null_mut(), op, also, true).allow)
}

/// Exec of a file's code: on the real file under an overlayfs one (a
/// mapping or an exec of the overlay file runs the real file's code).
/// Unmanaged callers stop before any of it.
#[inline(always)]
fn check_code(file: *const u8) -> i32 {
    let Some((config, who)) = managed() else {
        return ALLOW;
    };
    let (dentry, inode) = match code_file(file as usize) {
        // The path's dentry: with the inode, the walk finds the file's own.
        (_, false) => (
            dentry::of_path(file as usize + rodata(&F_PATH_OFF)),
            file_inode(file),
        ),
        // No real file: a walk of nothing, a deny.
        (0, true) => (0, null_mut()),
        (real, true) => (file_dentry(real), null_mut()),
    };
    code(decide_dentry(config, who, dentry, inode, Op::Exec, None, true).allow)
}

/// A change that touches two names (link, rename): both must be writable.
#[inline(always)]
fn check_write_both(a: usize, b: usize) -> i32 {
    let Some((config, who)) = managed() else {
        return ALLOW;
    };
    if !decide_dentry(config, who, a, null_mut(), Op::Write, None, true).allow {
        return DENY;
    }
    code(decide_dentry(config, who, b, null_mut(), Op::Write, None, true).allow)
}

/// A use of an open file (read, write, map): if the file is held, whether
/// its permission still holds, deciding `op` again when it must.
#[inline(always)]
fn held_use(file: usize, op: Op) -> i32 {
    // SAFETY: helper without arguments.
    let now = || unsafe { bpf_ktime_get_boot_ns() };
    match held::recall(&WARD_HELD_FILES, HELD_FILES_SLOT, file as u64, now) {
        Recall::NotHeld => ALLOW,
        Recall::Stands(allow) => code(allow),
        Recall::Decide(entry) => {
            let epoch = held::epoch();
            let (Some(config), Some(who)) = (config(), held::subjects_in_slot(entry)) else {
                return DENY;
            };
            let outcome =
                decide_dentry(config, who, file_dentry(file), null_mut(), op, None, false);
            held::settle(entry, epoch, outcome);
            code(outcome.allow)
        }
    }
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
    // SAFETY: as above, the u32 f_flags field.
    let flags = unsafe { *(file.add(rodata(&F_FLAGS_OFF)) as *const u32) };
    // Opening an executable for exec is decided as exec, here and in
    // bprm_check_security, so exec-only access works. A directory opened
    // for reading is a listing, decided as read.
    let (op, also) = if mode & FMODE_EXEC != 0 || flags & O_FMODE_EXEC != 0 {
        (Op::Exec, None)
    } else {
        match (mode & FMODE_WRITE != 0, mode & FMODE_READ != 0) {
            (true, true) => (Op::Write, Some(Op::Read)),
            (true, false) => (Op::Write, None),
            (false, true) => (Op::Read, None),
            (false, false) => return ALLOW,
        }
    };
    let Some((config, who)) = managed() else {
        return ALLOW;
    };
    // A managed process (root after sudo too) may not rewrite its login
    // uid: clearing it would shed management.
    let dentry = dentry::of_path(file as usize + rodata(&F_PATH_OFF));
    if op == Op::Write && dentry::is_proc_loginuid(dentry) {
        crate::events::report_tamper(who, ward_abi::tamper::LOGINUID, 0);
        return -(ward_abi::EPERM);
    }
    let epoch = held::epoch();
    // The path's dentry: with the inode, the walk finds the file's own.
    let outcome = decide_dentry(config, who, dentry, file_inode(file), op, also, true);
    if !outcome.allow {
        return DENY;
    }
    // An exec is over when it returns; a read or write open goes on, and
    // its permission is checked again at every use of the file.
    if outcome.until == 0 || op == Op::Exec {
        return ALLOW;
    }
    let key = file as u64;
    code(held::remember(
        &WARD_HELD_FILES,
        HELD_FILES_SLOT,
        key,
        who,
        epoch,
        outcome,
        None,
    ))
}

/// `file_permission(file, mask)`: every read and write through an open
/// file (read/write and their vector, positional, splice, sendfile and
/// copy_file_range forms, and directory listing), whoever holds it now.
#[lsm(hook = "file_permission")]
pub fn ward_file_permission(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return earlier;
    }
    let file: usize = ctx.arg(0);
    let mask: i32 = ctx.arg(1);
    let op = if mask & (MAY_WRITE | MAY_APPEND) != 0 {
        Op::Write
    } else {
        Op::Read
    };
    held_use(file, op)
}

/// `file_free_security(file)`: a freed file is no longer held.
#[lsm(hook = "file_free_security")]
pub fn ward_file_free(ctx: LsmContext) -> i32 {
    let file: usize = ctx.arg(0);
    held::forget(&WARD_HELD_FILES, HELD_FILES_SLOT, file as u64);
    0
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
    check_code(file)
}

/// `mmap_file(file, reqprot, prot, flags)`: a file's code mapped
/// executable runs without execve (`ld.so /path/tool`, a loader of one's
/// own). Anonymous mappings have no file and are not ward's business.
#[lsm(hook = "mmap_file")]
pub fn ward_mmap_file(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return earlier;
    }
    let file: usize = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    if file == 0 {
        return ALLOW;
    }
    // A mapping reads the open file: none after its permission ended. (A
    // shared writable one needs a file opened for write, decided then; a
    // private writable one writes only its own copy.)
    let held = held_use(file, Op::Read);
    if held != ALLOW || prot & PROT_EXEC == 0 {
        return held;
    }
    check_code(file as *const u8)
}

/// `file_mprotect(vma, reqprot, prot)`: making a file mapping executable
/// after the fact.
#[lsm(hook = "file_mprotect")]
pub fn ward_file_mprotect(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    let vma: usize = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    // SAFETY: a probe read of the vma's vm_file pointer.
    let file = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel((vma + rodata(&VM_FILE_OFF)) as *const u64)
            .unwrap_or(0)
    } as usize;
    if file == 0 {
        return ALLOW;
    }
    // Changing a mapping of a held file is a use of it, as mapping it is.
    let held = held_use(file, Op::Read);
    if held != ALLOW || prot & PROT_EXEC == 0 {
        return held;
    }
    check(file_dentry(file), Op::Exec, None)
}

/// Connecting to a unix socket bound to a path writes to that socket file
/// (Unix permissions ask for write too), so a protected socket file, or one
/// in a protected tree, needs write: PostgreSQL's `.s.PGSQL.5432` reaches
/// the same server as its TCP port. Abstract and unbound sockets have no
/// file and are not ward's business.
#[inline(always)]
fn check_unix_peer(unix_sock: usize) -> i32 {
    if unix_sock == 0 {
        return ALLOW;
    }
    let d = dentry::of_path(unix_sock + rodata(&UNIX_PATH_OFF));
    if d == 0 {
        return ALLOW;
    }
    check(d, Op::Write, None)
}

/// `unix_stream_connect(sock, other, newsk)`: `other` is the listener.
#[lsm(hook = "unix_stream_connect")]
pub fn ward_unix_stream_connect(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    check_unix_peer(ctx.arg(1))
}

/// `unix_may_send(sock, other)`: a datagram to a bound unix socket.
#[lsm(hook = "unix_may_send")]
pub fn ward_unix_may_send(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return earlier;
    }
    let other: usize = ctx.arg(1);
    check_unix_peer(crate::net::sock_of(other as *const u8) as usize)
}

/// One write hook: `$dentry` is the index of the dentry parameter and
/// `$ret` the index of the earlier verdict (the parameter count).
macro_rules! write_hook {
    ($name:ident, $hook:literal, $dentry:literal, $ret:literal) => {
        #[lsm(hook = $hook)]
        pub fn $name(ctx: LsmContext) -> i32 {
            let earlier: i32 = ctx.arg($ret);
            if earlier != 0 {
                return earlier;
            }
            check(ctx.arg::<usize>($dentry), Op::Write, None)
        }
    };
}

// (dir, dentry, mode): a new file, also O_CREAT.
write_hook!(ward_inode_create, "inode_create", 1, 3);
// (dir, dentry)
write_hook!(ward_inode_unlink, "inode_unlink", 1, 2);
// (dir, dentry, old_name)
write_hook!(ward_inode_symlink, "inode_symlink", 1, 3);
// (dir, dentry, mode)
write_hook!(ward_inode_mkdir, "inode_mkdir", 1, 3);
// (dir, dentry)
write_hook!(ward_inode_rmdir, "inode_rmdir", 1, 2);
// (dir, dentry, mode, dev)
write_hook!(ward_inode_mknod, "inode_mknod", 1, 4);
// (idmap or user_namespace, dentry, name, value, size, flags)
write_hook!(ward_inode_setxattr, "inode_setxattr", 1, 6);
// (idmap or user_namespace, dentry, name)
write_hook!(ward_inode_removexattr, "inode_removexattr", 1, 3);
// (idmap, dentry, acl_name, kacl), 6.2+: POSIX ACLs no longer pass
// through inode_setxattr.
write_hook!(ward_inode_set_acl, "inode_set_acl", 1, 4);
// (idmap, dentry, acl_name), 6.2+.
write_hook!(ward_inode_remove_acl, "inode_remove_acl", 1, 3);

/// Mounting on a protected file or directory changes what every name of
/// it shows (a policy file replaced by a bind mount, a tree hidden by a
/// tmpfs): a write to it. `sb_mount(dev_name, path, type, flags, data)`.
#[lsm(hook = "sb_mount")]
pub fn ward_sb_mount(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(5);
    if earlier != 0 {
        return earlier;
    }
    check(dentry::of_path(ctx.arg::<usize>(1)), Op::Write, None)
}

/// `move_mount(from_path, to_path)`: the new mount point, as for sb_mount.
#[lsm(hook = "move_mount")]
pub fn ward_move_mount(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return earlier;
    }
    check(dentry::of_path(ctx.arg::<usize>(1)), Op::Write, None)
}

/// `inode_link(old_dentry, dir, new_dentry)`: another name for a file is a
/// change to it, and to the tree the name lands in.
#[lsm(hook = "inode_link")]
pub fn ward_inode_link(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    check_write_both(ctx.arg(0), ctx.arg(2))
}

/// `inode_rename(old_dir, old_dentry, new_dir, new_dentry)`: out of, into
/// and inside a tree, and `RENAME_EXCHANGE` (the new dentry is then
/// positive and is itself moved).
///
/// Whoever renames, every cached walk is stale from here (and again once
/// the move is done: [`ward_rename_done`]).
#[lsm(hook = "inode_rename")]
pub fn ward_inode_rename(ctx: LsmContext) -> i32 {
    walk_cache::rename_begins();
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return earlier;
    }
    check_write_both(ctx.arg(1), ctx.arg(3))
}

/// fexit of `vfs_rename`: the move is done (or failed); a walk that ran
/// while it was under way is stale.
#[fexit(function = "vfs_rename")]
pub fn ward_rename_done(_ctx: FExitContext) -> i32 {
    walk_cache::rename_ends();
    0
}

/// `d_instantiate(dentry, inode)`: an inode gains a name (a create, a
/// link, a lookup). A dentry made at a freed one's address for the same
/// inode must not inherit its cached walk. Decides nothing.
#[lsm(hook = "d_instantiate")]
pub fn ward_d_instantiate(_ctx: LsmContext) -> i32 {
    walk_cache::invalidate();
    0
}

/// `inode_setattr(idmap, dentry, attr)` (6.8+): truncate and ftruncate,
/// chmod, chown, utimes.
#[lsm(hook = "inode_setattr")]
pub fn ward_inode_setattr(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    check(ctx.arg(1), Op::Write, None)
}

/// `inode_setattr(dentry, attr)`, before the idmap parameter arrived in
/// 6.8. The agent attaches whichever matches the kernel's BTF: a context
/// offset must be a constant, so one program cannot serve both.
#[lsm(hook = "inode_setattr")]
pub fn ward_inode_setattr_nomap(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(2);
    if earlier != 0 {
        return earlier;
    }
    check(ctx.arg(0), Op::Write, None)
}

/// `inode_getattr(path)`, attached only while `ward explain` runs: when the
/// agent's own thread stats the object it asks about, record what the
/// kernel's walk finds for it. Decides nothing.
#[lsm(hook = "inode_getattr")]
pub fn ward_explain_getattr(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(1);
    let Some(slot) = WARD_EXPLAIN.get_ptr_mut(0) else {
        return earlier;
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the map's one slot; only the explaining thread writes it.
    unsafe {
        if (*slot).tid != tid || (*slot).done != 0 {
            return earlier;
        }
        let d = dentry::of_path(ctx.arg::<usize>(0));
        let key = dentry::identity(d);
        // Never from the cache: explain shows what a walk finds now.
        dentry::walk(d, null_mut(), core::ptr::addr_of_mut!((*slot).chain));
        (*slot).dev = key.dev;
        (*slot).ino = key.ino;
        (*slot).done = 1;
    }
    earlier
}
