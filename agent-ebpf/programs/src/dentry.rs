//! What a file *is*: the one walk every file hook funnels into.
//!
//! A name depends on the caller's root and mount namespace; a dentry's
//! parents do not. The walk goes from the object up `d_parent` to its
//! filesystem's root and collects the objects (listed inodes) it meets, so
//! a bind mount, a chroot, a new mount namespace, a hard link or a rename
//! all lead to the same answer. Mounts below a protected tree are listed
//! by the agent as objects of their own (their root inode), so the walk
//! never needs to cross a mount, whose parent is namespace-relative.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use ward_abi::{Chain, EVENT_NAME_LEN, EVENT_NAMES, InodeKey, MAX_CHAIN, MAX_WALK_DEPTH};

use crate::{maps::WARD_OBJECTS, rodata, walk_cache};

/// Layout of the dentry, inode and super block on the running kernel, from
/// its BTF (see `ward_abi::globals`).
#[unsafe(no_mangle)]
static PATH_DENTRY_OFF: u64 = 0;
#[unsafe(no_mangle)]
static D_PARENT_OFF: u64 = 0;
#[unsafe(no_mangle)]
static D_INODE_OFF: u64 = 0;
#[unsafe(no_mangle)]
static D_SB_OFF: u64 = 0;
#[unsafe(no_mangle)]
static D_NAME_OFF: u64 = 0;
#[unsafe(no_mangle)]
static I_INO_OFF: u64 = 0;
#[unsafe(no_mangle)]
static S_DEV_OFF: u64 = 0;
/// `offsetof(struct super_block, s_root)`.
#[unsafe(no_mangle)]
static S_ROOT_OFF: u64 = 0;

/// Reads a kernel pointer or scalar at `base + off`; 0 when unreadable.
#[inline(always)]
fn read_u64(base: usize, off: usize) -> u64 {
    // SAFETY: a probe read checks the address; failure yields 0.
    unsafe { bpf_probe_read_kernel((base + off) as *const u64).unwrap_or(0) }
}

#[inline(always)]
fn read_u32(base: usize, off: usize) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + off) as *const u32).unwrap_or(0) }
}

/// The dentry of a `struct path *`.
#[inline(always)]
pub fn of_path(path: usize) -> usize {
    read_u64(path, rodata(&PATH_DENTRY_OFF)) as usize
}

/// `offsetof(struct inode, i_dentry)`, `offsetof(struct dentry, d_u.d_alias)`.
#[unsafe(no_mangle)]
static I_DENTRY_OFF: u64 = 0;
#[unsafe(no_mangle)]
static D_ALIAS_OFF: u64 = 0;

/// The dentry to decide an open file on: its path's, unless that dentry is
/// not the file's inode's. overlayfs (before 6.6) opens the file under it
/// under the overlay's path: then an alias of the inode itself, a dentry
/// in the filesystem the file lives in. 0 if it has none (a deny for
/// managed callers).
#[inline(always)]
pub fn of_file(path_dentry: usize, inode: usize) -> usize {
    if inode == 0 || path_dentry == 0 {
        return path_dentry;
    }
    if read_u64(path_dentry, rodata(&D_INODE_OFF)) as usize == inode {
        return path_dentry;
    }
    let first = read_u64(inode, rodata(&I_DENTRY_OFF)) as usize;
    if first == 0 {
        return 0;
    }
    first - rodata(&D_ALIAS_OFF)
}

/// The parent of a dentry (a negative dentry's parent is the directory it
/// would be created in).
#[inline(always)]
pub fn parent(dentry: usize) -> usize {
    read_u64(dentry, rodata(&D_PARENT_OFF)) as usize
}

/// `offsetof(struct super_block, s_magic)`.
#[unsafe(no_mangle)]
static S_MAGIC_OFF: u64 = 0;

const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// Whether `dentry` is a process's `loginuid` file in procfs: writing it
/// is how a process changes (or clears) its audit login uid.
#[inline(always)]
pub fn is_proc_loginuid(dentry: usize) -> bool {
    let sb = read_u64(dentry, rodata(&D_SB_OFF)) as usize;
    if sb == 0 || read_u64(sb, rodata(&S_MAGIC_OFF)) != PROC_SUPER_MAGIC {
        return false;
    }
    let name = read_u64(dentry, rodata(&D_NAME_OFF)) as *const u8;
    // SAFETY: a probe-read of the dentry's name; a failed read matches nothing.
    let bytes = unsafe { bpf_probe_read_kernel(name as *const [u8; 9]).unwrap_or([0; 9]) };
    &bytes == b"loginuid\0"
}

/// Whether `dentry` is on a filesystem of this magic.
#[inline(always)]
pub fn on_fs(dentry: usize, magic: u64) -> bool {
    let sb = read_u64(dentry, rodata(&D_SB_OFF)) as usize;
    sb != 0 && read_u64(sb, rodata(&S_MAGIC_OFF)) == magic
}

/// The kernel `s_dev` of a `struct super_block *`.
#[inline(always)]
pub fn sb_dev(sb: usize) -> u32 {
    read_u32(sb, rodata(&S_DEV_OFF))
}

/// The identity of a dentry's inode; `ino` 0 for a negative dentry.
#[inline(always)]
pub fn identity(dentry: usize) -> InodeKey {
    let sb = read_u64(dentry, rodata(&D_SB_OFF)) as usize;
    let dev = if sb == 0 { 0 } else { sb_dev(sb) };
    let inode = read_u64(dentry, rodata(&D_INODE_OFF)) as usize;
    let ino = if inode == 0 {
        0
    } else {
        read_u64(inode, rodata(&I_INO_OFF))
    };
    InodeKey { dev, _pad: 0, ino }
}

/// `i & MASK`, applied to the very register that indexes memory: LLVM
/// drops a plain mask after a bounds check and re-loads the unmasked
/// value, which the verifier then cannot bound.
#[inline(always)]
pub fn bounded<const MASK: usize>(i: usize) -> usize {
    let mut v = i;
    // SAFETY: one ALU instruction on a register.
    unsafe { core::arch::asm!("{v} &= {m}", v = inout(reg) v, m = const MASK) };
    v
}

/// Adds an object to the chain; false when it does not fit.
#[inline(always)]
fn push(chain: &mut Chain, id: u32, level: u32) -> bool {
    if id == 0 {
        return true;
    }
    if chain.len as usize >= MAX_CHAIN {
        return false;
    }
    let i = bounded::<{ MAX_CHAIN - 1 }>(chain.len as usize);
    // get_mut, not indexing: LLVM cannot see through the asm, and a
    // bounds check must not be a panic (the verifier rejects those).
    if let (Some(slot), Some(at)) = (chain.ids.get_mut(i), chain.levels.get_mut(i)) {
        *slot = id;
        *at = level;
        // Laundered, so the verifier keeps a range, not each exact length.
        chain.len = bounded::<{ 2 * MAX_CHAIN - 1 }>(i + 1) as u32;
    }
    true
}

/// The walk's state between steps (on the caller's stack, small: the
/// callback's frame shares the 512 bytes). The chain it fills is map
/// memory, never copied.
#[repr(C, align(8))]
struct Walk {
    dentry: usize,
    chain: *mut Chain,
    dev: u32,
    reached_root: u32,
    overflow: u32,
    _pad: u32,
}

/// A dentry's super block, or 0.
#[inline(always)]
fn super_block(dentry: usize) -> usize {
    read_u64(dentry, rodata(&D_SB_OFF)) as usize
}

/// One level of the walk, as a `bpf_loop` callback: the verifier checks
/// it once instead of unrolling every level. 1 stops the loop.
///
/// The level is the loop's index, not a counter in the state: a counter
/// the verifier must track exactly makes every iteration a new state, and
/// it would verify the callback once per level.
extern "C" fn walk_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` that `walk` passed to bpf_loop, whose
    // `chain` points into a map value.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    let chain = unsafe { &mut *w.chain };
    let level = index as u32;
    let d = w.dentry;
    if d == 0 {
        return 1;
    }
    let inode = read_u64(d, rodata(&D_INODE_OFF)) as usize;
    if inode != 0 {
        let key = InodeKey {
            dev: w.dev,
            _pad: 0,
            ino: read_u64(inode, rodata(&I_INO_OFF)),
        };
        // SAFETY: a map lookup with a key on the stack.
        if let Some(ids) = unsafe { WARD_OBJECTS.get(&key) } {
            let (exact, tree) = (ids.exact, ids.tree);
            // An exact-file rule is about the inode itself, never about
            // what lies below it.
            if level == 0 && !push(chain, exact, level) {
                w.overflow = 1;
            }
            if !push(chain, tree, level) {
                w.overflow = 1; // more nesting than we decide on: fail closed
            }
        }
    }
    let up = parent(d);
    if up == 0 || up == d {
        w.reached_root = 1;
        return 1;
    }
    // Stays on the last dentry when the root is reached: `walk` compares
    // it with the super block's root.
    w.dentry = up;
    0
}

/// Walks from `dentry` to its filesystem's root, collecting the objects on
/// the way into `chain`, deepest first. `complete` stays 0 if the root was
/// not reached (or the objects did not fit).
///
/// `inode` is the dentry's inode as the hook's BTF pointer, or null: with
/// it, a walk already made from this dentry is taken from the inode's
/// cache while it stands (see [`walk_cache`]), and a new one is kept.
#[inline(always)]
pub fn walk(dentry: usize, inode: *mut aya_ebpf::bindings::inode, chain: *mut Chain) {
    // Read before anything else: a change from here on makes what this
    // walk finds stale on arrival.
    let tag = walk_cache::tag();
    if dentry != 0 && walk_cache::recall(inode, dentry, tag, chain) {
        return;
    }
    // Walked from the file's own dentry (see `of_file`); kept under that
    // one, so an open under another path never hits it and walks again.
    let dentry = if inode.is_null() {
        dentry
    } else {
        of_file(dentry, inode as usize)
    };
    // SAFETY: `chain` is a map value (a per-CPU slot) of the caller's.
    unsafe {
        (*chain).len = 0;
        (*chain).complete = 0;
    }
    if dentry == 0 {
        return; // incomplete: a deny for managed callers
    }
    let mut w = Walk {
        dentry,
        chain,
        dev: identity(dentry).dev,
        reached_root: 0,
        overflow: 0,
        _pad: 0,
    };
    // SAFETY: bpf_loop calls walk_step with a pointer to `w`, which lives
    // across the call.
    unsafe {
        bpf_loop(
            MAX_WALK_DEPTH,
            walk_step as *mut c_void,
            (&mut w as *mut Walk).cast(),
            0,
        );
        // Imprecise on purpose: a decision verified once for every length
        // is what blows the verifier's budget; the decision bounds its
        // loop itself.
        (*chain).len = bounded::<{ 2 * MAX_CHAIN - 1 }>((*chain).len as usize) as u32;
        (*chain).complete = u32::from(w.reached_root != 0 && w.overflow == 0);
    }
    if inode.is_null() || w.reached_root == 0 {
        return;
    }
    // Kept only for a walk that reached the filesystem's own root (not a
    // disconnected dentry's), on a filesystem whose names move only by
    // vfs_rename.
    let sb = super_block(dentry);
    if sb == 0
        || read_u64(sb, rodata(&S_ROOT_OFF)) as usize != w.dentry
        || !walk_cache::cacheable_fs(read_u64(sb, rodata(&S_MAGIC_OFF)))
    {
        return;
    }
    walk_cache::remember(inode, dentry, tag, chain);
}

/// The names from `dentry` up, leaf first, into `out`: what an event shows
/// below the protecting object.
#[inline(always)]
pub fn names(dentry: usize, out: &mut [[u8; EVENT_NAME_LEN]; EVENT_NAMES], levels: u32) {
    let mut d = dentry;
    let mut i = 0;
    while i < EVENT_NAMES {
        if i as u32 >= levels || d == 0 {
            out[i][0] = 0;
        } else {
            let name = read_u64(d, rodata(&D_NAME_OFF)) as *const u8;
            // SAFETY: a probe read of a NUL-terminated kernel string into a
            // buffer of fixed size; failure leaves it empty.
            if unsafe { bpf_probe_read_kernel_str_bytes(name, &mut out[i]) }.is_err() {
                out[i][0] = 0;
            }
            d = parent(d);
        }
        i += 1;
    }
}
