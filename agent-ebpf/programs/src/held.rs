//! Use in progress: a permission ends for uses already under way.
//!
//! A decision that lets a managed caller open a protected file, or connect
//! to a protected destination, is remembered against the open file or the
//! socket ([`Held`]). Each later read, write, send or receive through it
//! asks [`recall`]: the answer stands while the rules are unchanged (the
//! agent bumps an epoch after every change) and the allow's deadline has
//! not passed, on the kernel's clock. Otherwise the hook decides again for
//! the subjects that opened it, and remembers that. So expiry needs no
//! agent, and revoke, release, a new forbid or a closed time window reach
//! the held use at its next call.

use aya_ebpf::maps::HashMap;
use ward_abi::{HELD_ALLOWED, HELD_DENIED, Held, NEVER, decision::Subjects};

use crate::maps::{WARD_HELD_COUNT, WARD_RULES_EPOCH, WARD_SUBJECT_SCRATCH};

/// What a decision says about a use that goes on.
#[derive(Clone, Copy)]
pub struct Outcome {
    pub allow: bool,
    /// 0 when the object is not protected (nothing to remember); else the
    /// boot-clock deadline of the allow ([`NEVER`] for a standing one).
    pub until: u64,
}

impl Outcome {
    pub const UNPROTECTED: Outcome = Outcome {
        allow: true,
        until: 0,
    };
    pub const DENY: Outcome = Outcome {
        allow: false,
        until: 0,
    };
}

/// The epoch to record with a decision: read before deciding, so that a
/// decision that raced a change is taken again.
#[inline(always)]
pub fn epoch() -> u64 {
    match WARD_RULES_EPOCH.get(0) {
        // SAFETY: an aligned u64 in a map value, read in one load.
        Some(e) => unsafe { core::ptr::read_volatile(e) },
        None => 0,
    }
}

/// Adds `delta` to a held count, atomically.
#[inline(always)]
fn add(slot: u32, delta: i64) {
    if let Some(p) = WARD_HELD_COUNT.get_ptr_mut(slot) {
        // SAFETY: an aligned u64 in a map value that lives for the program.
        unsafe { crate::atomic_add(p, delta) };
    }
}

/// Whether the map behind `slot` holds anything: the common case is a
/// host with no held use, where the use hooks stop here.
#[inline(always)]
pub fn any(slot: u32) -> bool {
    match WARD_HELD_COUNT.get(slot) {
        // SAFETY: an aligned u64 in a map value, read in one load.
        Some(c) => unsafe { core::ptr::read_volatile(c) != 0 },
        None => false,
    }
}

/// Remembers an allowed use of a protected object. `false` when it cannot
/// be remembered (the map is full): the caller must refuse the use, since
/// nothing could end it.
#[inline(always)]
pub fn remember(
    map: &HashMap<u64, Held>,
    slot: u32,
    key: u64,
    who: &Subjects,
    epoch: u64,
    outcome: Outcome,
    dest: Option<([u8; 16], u16, u16)>,
) -> bool {
    let (addr, port, family) = dest.unwrap_or(([0; 16], 0, 0));
    let held = Held {
        who: *who,
        epoch,
        until: outcome.until,
        addr,
        port,
        family,
        state: HELD_ALLOWED,
    };
    // SAFETY: a lookup with a key on the stack.
    let fresh = unsafe { map.get(&key) }.is_none();
    if map.insert(&key, &held, 0).is_err() {
        return false;
    }
    if fresh {
        add(slot, 1);
    }
    true
}

/// Forgets the use of a file or socket being freed.
#[inline(always)]
pub fn forget(map: &HashMap<u64, Held>, slot: u32, key: u64) {
    if !any(slot) {
        return;
    }
    // SAFETY: a lookup with a key on the stack; removing only what is
    // there keeps a lock off every free.
    if unsafe { map.get(&key) }.is_none() {
        return;
    }
    if map.remove(&key).is_ok() {
        add(slot, -1);
    }
}

/// What memory says of a use.
pub enum Recall {
    /// Not a held use: decided when it began, or not ward's.
    NotHeld,
    /// The last decision stands.
    Stands(bool),
    /// Decide again, for the entry's subjects, and [`settle`] it with the
    /// epoch read (again) before deciding. Only the entry: more, carried
    /// through every caller's inlined frame, took 6.1's `socket_sendmsg`
    /// past the 512-byte stack.
    Decide(*mut Held),
}

/// What memory says of the use `key`. The cheap questions come first: a
/// host with nothing held stops at one array read, and the clock is read
/// only for a held use.
#[inline(always)]
pub fn recall(map: &HashMap<u64, Held>, slot: u32, key: u64, now: impl FnOnce() -> u64) -> Recall {
    if !any(slot) {
        return Recall::NotHeld;
    }
    let Some(held) = map.get_ptr_mut(&key) else {
        return Recall::NotHeld;
    };
    let epoch = epoch();
    let now = now();
    // SAFETY: a live map value; concurrent users of one file on other CPUs
    // may settle it too, each with a whole decision.
    let h = unsafe { &*held };
    if h.epoch == epoch {
        if h.state == HELD_DENIED {
            return Recall::Stands(false);
        }
        if now < h.until {
            return Recall::Stands(true);
        }
    }
    Recall::Decide(held)
}

/// A held use's subjects, copied into this CPU's subject slot, where the
/// task-context hooks decide from (`None`: fail closed). Not for programs
/// that may run in softirq: one can interrupt a hook on the same CPU
/// mid-decision, and must not overwrite the slot that hook is reading.
#[inline(always)]
pub fn subjects_in_slot(held: *mut Held) -> Option<&'static Subjects> {
    let scratch = WARD_SUBJECT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, a map value that lives for the program, and
    // the live held entry recall returned.
    unsafe {
        *scratch = (*held).who;
        Some(&*scratch)
    }
}

/// Records a new decision on a held use.
#[inline(always)]
pub fn settle(held: *mut Held, epoch: u64, outcome: Outcome) {
    // SAFETY: the live map value `recall` returned.
    unsafe {
        (*held).epoch = epoch;
        if outcome.allow {
            (*held).state = HELD_ALLOWED;
            // No longer protected: it holds until the rules change.
            (*held).until = if outcome.until == 0 {
                NEVER
            } else {
                outcome.until
            };
        } else {
            (*held).state = HELD_DENIED;
        }
    }
}
