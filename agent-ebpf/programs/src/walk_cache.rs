//! The walk's answer, kept on the inode it started from.
//!
//! A walk costs a `bpf_loop` step per level up to the filesystem's root.
//! What it finds (the chain of objects on the route) changes only when a
//! name changes or the listed objects do, so it is kept in the inode's
//! local storage, tagged with the rules epoch (bumped by the agent after
//! every change to the objects) and the fs generation, which the kernel
//! bumps:
//!
//! - before every rename (`inode_rename`) and after it (fexit of
//!   `vfs_rename`), so a walk that overlapped the move is stale; and
//!   while any rename is under way (counted up before, down after) the
//!   cache is neither read nor filled, so an fexit the kernel skipped (a
//!   tracing program does not run re-entrantly on one CPU) leaves the
//!   cache off rather than stale;
//! - whenever an inode gains a name (`d_instantiate`: creates, links,
//!   lookups), so a dentry freed and another made at its address for the
//!   same inode never inherits its chain.
//!
//! A cached chain is used only for the very dentry it was walked from, on
//! filesystems where names move only through `vfs_rename` (block-device
//! filesystems and tmpfs: no server renames behind the kernel's back), and
//! only if the walk reached that filesystem's root (a disconnected dentry,
//! from `open_by_handle_at`, is walked every time). Inode storage is freed
//! with the inode, so an entry never outlives what it describes.

use aya_ebpf::{
    bindings::inode,
    btf_maps::InodeStorage,
    helpers::{bpf_spin_lock, bpf_spin_unlock},
    macros::btf_map,
};
use ward_abi::{CachedWalk, Chain, FS_GENERATION_SLOT, RENAMES_IN_FLIGHT_SLOT};

use crate::{held, maps::WARD_FS_GENERATION};

#[btf_map]
static WARD_WALK_CACHE: InodeStorage<CachedWalk> = InodeStorage::new();

// include/uapi/linux/magic.h: the filesystems whose names move only by
// vfs_rename.
const EXT4_SUPER_MAGIC: u64 = 0xEF53;
const XFS_SUPER_MAGIC: u64 = 0x5846_5342;
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Whether walks on a filesystem of this magic may be cached.
#[inline(always)]
pub fn cacheable_fs(magic: u64) -> bool {
    matches!(
        magic,
        EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC | BTRFS_SUPER_MAGIC | TMPFS_MAGIC
    )
}

/// What a cached walk must match: read before the walk, so that anything
/// that changes during it makes the result stale on arrival.
#[derive(Clone, Copy)]
pub struct Tag {
    epoch: u64,
    fs_generation: u64,
    /// No rename was under way: the cache may be used.
    usable: bool,
}

/// One slot of the generation map, read in one load (`u64::MAX` when
/// missing: never usable).
#[inline(always)]
fn slot(i: u32) -> u64 {
    match WARD_FS_GENERATION.get(i) {
        // SAFETY: an aligned u64 in a map value, read in one load.
        Some(g) => unsafe { core::ptr::read_volatile(g) },
        None => u64::MAX,
    }
}

#[inline(always)]
pub fn tag() -> Tag {
    let fs_generation = slot(FS_GENERATION_SLOT);
    Tag {
        epoch: held::epoch(),
        fs_generation,
        usable: fs_generation != u64::MAX && slot(RENAMES_IN_FLIGHT_SLOT) == 0,
    }
}

/// Adds `delta` to a slot of the generation map, atomically.
#[inline(always)]
fn add(i: u32, delta: i64) {
    if let Some(p) = WARD_FS_GENERATION.get_ptr_mut(i) {
        // SAFETY: an aligned u64 in a map value that lives for the program.
        unsafe { crate::atomic_add(p, delta) };
    }
}

/// Bumps the fs generation: every cached walk is stale from here on.
#[inline(always)]
pub fn invalidate() {
    add(FS_GENERATION_SLOT, 1);
}

/// A rename begins: every cached walk is stale, and none is used or kept
/// until it ends.
#[inline(always)]
pub fn rename_begins() {
    add(RENAMES_IN_FLIGHT_SLOT, 1);
    invalidate();
}

/// A rename ended (or failed): stale again, and one fewer under way.
#[inline(always)]
pub fn rename_ends() {
    invalidate();
    // Not below zero: a rename that passed `inode_rename` before it was
    // attached ends here without having counted up. (Two ends racing
    // past this check can still wrap it: that only turns the cache off.)
    if slot(RENAMES_IN_FLIGHT_SLOT) != 0 {
        add(RENAMES_IN_FLIGHT_SLOT, -1);
    }
}

/// Words in a [`Chain`].
const CHAIN_WORDS: usize = core::mem::size_of::<Chain>() / 8;
const _: () = assert!(core::mem::size_of::<Chain>() == CHAIN_WORDS * 8);

/// Copies a chain word by word, inline: under a spin lock the verifier
/// allows no calls, and a plain assignment may become one to `memcpy`.
///
/// # Safety
/// Both point to 8-aligned chains in map memory.
#[inline(always)]
unsafe fn copy_chain(from: *const Chain, to: *mut Chain) {
    let (from, to) = (from as *const u64, to as *mut u64);
    let mut i = 0;
    while i < CHAIN_WORDS {
        // SAFETY: within both chains (the caller's promise).
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
        i += 1;
    }
}

/// Copies the cached chain of `dentry` into `chain` if it is there and
/// still stands; false otherwise. `inode` is the dentry's inode as a BTF
/// pointer (inode storage is found through it); null skips the cache.
///
/// Read without the lock, as a seqlock: writers (under the lock) make
/// `seq` odd while they write, so a read that saw the same even `seq`
/// before and after saw one whole entry. x86's loads are not reordered
/// with one another, and every access here is volatile (ward is built for
/// x86_64 hosts).
#[inline(always)]
pub fn recall(inode: *mut inode, dentry: usize, tag: Tag, chain: *mut Chain) -> bool {
    if inode.is_null() || !tag.usable {
        return false;
    }
    // SAFETY: a BTF pointer to the inode, from the hook's own arguments.
    let entry = unsafe { WARD_WALK_CACHE.get_ptr_mut(inode) };
    if entry.is_null() {
        return false;
    }
    // SAFETY: the storage value lives while the inode does, and the hook
    // holds a reference to it; `chain` is this CPU's scratch slot, which a
    // torn read may fill (the walk that follows a miss rewrites it).
    unsafe {
        let seq = core::ptr::addr_of!((*entry).seq);
        let before = core::ptr::read_volatile(seq);
        if before & 1 != 0 {
            return false; // being written: walk
        }
        let stands = core::ptr::read_volatile(core::ptr::addr_of!((*entry).epoch)) == tag.epoch
            && core::ptr::read_volatile(core::ptr::addr_of!((*entry).fs_generation))
                == tag.fs_generation
            && core::ptr::read_volatile(core::ptr::addr_of!((*entry).dentry)) == dentry as u64;
        if !stands {
            return false;
        }
        copy_chain(core::ptr::addr_of!((*entry).chain), chain);
        core::ptr::read_volatile(seq) == before
    }
}

/// Keeps a complete walk's chain on `inode`, tagged with what was read
/// before the walk began.
#[inline(always)]
pub fn remember(inode: *mut inode, dentry: usize, tag: Tag, chain: *const Chain) {
    // SAFETY: `chain` is this CPU's scratch slot, just walked into.
    if inode.is_null() || !tag.usable || unsafe { (*chain).complete } == 0 {
        return;
    }
    // SAFETY: as in `recall`; a failed allocation only costs a walk.
    let entry = unsafe { WARD_WALK_CACHE.get_or_insert_ptr_mut(inode, None) };
    if entry.is_null() {
        return;
    }
    // SAFETY: as in `recall`.
    unsafe {
        let lock = core::ptr::addr_of_mut!((*entry).lock).cast();
        bpf_spin_lock(lock);
        let seq = core::ptr::addr_of_mut!((*entry).seq);
        core::ptr::write_volatile(seq, core::ptr::read_volatile(seq).wrapping_add(1));
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*entry).epoch), tag.epoch);
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!((*entry).fs_generation),
            tag.fs_generation,
        );
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*entry).dentry), dentry as u64);
        copy_chain(chain, core::ptr::addr_of_mut!((*entry).chain));
        core::ptr::write_volatile(seq, core::ptr::read_volatile(seq).wrapping_add(1));
        bpf_spin_unlock(lock);
    }
}
