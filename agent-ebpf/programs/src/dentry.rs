//! What a file *is*: the one walk every file hook funnels into.
//!
//! A name depends on the caller's root and mount namespace; a dentry's
//! parents do not. The walk goes from the object up `d_parent` to its
//! filesystem's root and collects the objects (listed inodes) it meets, so
//! a bind mount, a chroot, a new mount namespace, a hard link or a rename
//! all lead to the same answer. Mounts below a protected tree are listed
//! by the agent as objects of their own (their root inode), so the walk
//! never needs to cross a mount, whose parent is namespace-relative.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use ward_abi::{Chain, EVENT_NAME_LEN, EVENT_NAMES, InodeKey, MAX_CHAIN, MAX_WALK_DEPTH};

use crate::maps::WARD_OBJECTS;

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

#[inline(always)]
fn rodata(v: &u64) -> usize {
    // SAFETY: a read-only global; the verifier sees the loaded constant.
    unsafe { core::ptr::read_volatile(v) as usize }
}

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

/// The parent of a dentry (a negative dentry's parent is the directory it
/// would be created in).
#[inline(always)]
pub fn parent(dentry: usize) -> usize {
    read_u64(dentry, rodata(&D_PARENT_OFF)) as usize
}

/// The identity of a dentry's inode; `ino` 0 for a negative dentry.
#[inline(always)]
pub fn identity(dentry: usize) -> InodeKey {
    let sb = read_u64(dentry, rodata(&D_SB_OFF)) as usize;
    let dev = if sb == 0 {
        0
    } else {
        read_u32(sb, rodata(&S_DEV_OFF))
    };
    let inode = read_u64(dentry, rodata(&D_INODE_OFF)) as usize;
    let ino = if inode == 0 {
        0
    } else {
        read_u64(inode, rodata(&I_INO_OFF))
    };
    InodeKey { dev, _pad: 0, ino }
}

/// Adds an object to the chain; false when it does not fit.
#[inline(always)]
fn push(chain: &mut Chain, id: u32, level: u32) -> bool {
    if id == 0 {
        return true;
    }
    let i = chain.len as usize;
    if i >= MAX_CHAIN {
        return false;
    }
    chain.ids[i] = id;
    chain.levels[i] = level;
    chain.len += 1;
    true
}

/// Walks from `dentry` to its filesystem's root, collecting the objects on
/// the way, deepest first. `complete` stays 0 if the root was not reached.
#[inline(always)]
pub fn walk(dentry: usize) -> Chain {
    let mut chain = Chain::default();
    if dentry == 0 {
        return chain; // incomplete: decided as a deny for managed callers
    }
    let dev = identity(dentry).dev;
    let mut d = dentry;
    let mut level = 0u32;
    let mut reached_root = false;
    let mut overflow = false;
    while level < MAX_WALK_DEPTH {
        let inode = read_u64(d, rodata(&D_INODE_OFF)) as usize;
        if inode != 0 {
            let key = InodeKey {
                dev,
                _pad: 0,
                ino: read_u64(inode, rodata(&I_INO_OFF)),
            };
            // SAFETY: a map lookup with a key on the stack.
            if let Some(ids) = unsafe { WARD_OBJECTS.get(&key) } {
                // An exact-file rule is about the inode itself, never
                // about what lies below it.
                if level == 0 && !push(&mut chain, ids.exact, level) {
                    overflow = true;
                }
                if !push(&mut chain, ids.tree, level) {
                    overflow = true; // more nesting than we decide on: fail closed
                }
            }
        }
        let up = parent(d);
        if up == 0 || up == d {
            reached_root = true;
            break;
        }
        d = up;
        level += 1;
    }
    chain.complete = u32::from(reached_root && !overflow);
    chain
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
