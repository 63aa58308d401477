//! Drives the shared decision (`ward_abi::decision::Deciding`) over a
//! caller's subjects from a `bpf_loop` callback: the verifier checks one
//! subject's step once, instead of every combination of outcomes over all
//! of them.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use ward_abi::{
    FileKey, Rule,
    decision::{DECISION_ROWS, Deciding, FileDecision, MostSpecific, Subjects, Verdict},
};

use crate::maps::{ClassMap, WARD_FILE_RULES_0, WARD_FILE_RULES_1};

struct Loop<'a, M> {
    who: &'a Subjects,
    rules: &'a mut M,
    classes: ClassMap,
    deciding: Deciding,
}

extern "C" fn step<M: MostSpecific>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Loop` that `decide` passed to bpf_loop.
    let l = unsafe { &mut *(ctx as *mut Loop<'_, M>) };
    let row = crate::dentry::bounded::<15>(index as usize);
    if row >= DECISION_ROWS {
        return 1;
    }
    let subject = l.who.row(row, &mut l.classes);
    if subject == 0 {
        return 0;
    }
    let found = l.rules.most_specific(subject);
    i64::from(l.deciding.consider(subject, found))
}

/// `ward_abi::decision::decide`, with its subject loop run by bpf_loop;
/// classes from generation `active`, if `classed`.
#[inline(always)]
pub fn decide<M: MostSpecific>(
    who: &Subjects,
    now: u64,
    port: u16,
    rules: &mut M,
    active: u32,
    classed: u32,
) -> Option<Verdict> {
    let protection = rules.most_specific(ward_abi::subject::PROTECTED)?;
    let deciding = Deciding::new(protection, now, port)?;
    let mut l = Loop {
        who,
        rules,
        classes: ClassMap { active, classed },
        deciding,
    };
    // DECISION_ROWS with classes, SUBJECT_SLOTS without: no branch.
    let rows = ward_abi::decision::SUBJECT_SLOTS << (classed & 1);
    // SAFETY: bpf_loop calls `step` with a pointer to `l`, which outlives
    // the call.
    unsafe {
        bpf_loop(
            rows as u32,
            step::<M> as *mut c_void,
            (&mut l as *mut Loop<'_, M>).cast(),
            0,
        );
    }
    Some(l.deciding.verdict())
}

/// The bpf_loop context: small, because the callback's frame and the
/// caller's share 512 bytes of stack; the decision itself lives in a
/// per-CPU scratch slot.
struct FileLoop {
    active: u32,
    classed: u32,
    decision: *mut FileDecision,
}

#[inline(always)]
fn file_rule(active: u32, key: &FileKey) -> Option<Rule> {
    // SAFETY: map lookups with a key on the stack.
    unsafe {
        if active == 0 {
            WARD_FILE_RULES_0.get(key).copied()
        } else {
            WARD_FILE_RULES_1.get(key).copied()
        }
    }
}

extern "C" fn file_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `FileLoop` that `decide_file` passed to
    // bpf_loop; its `decision` is this CPU's scratch slot.
    let l = unsafe { &mut *(ctx as *mut FileLoop) };
    let (active, classed) = (l.active, l.classed);
    // SAFETY: as above.
    let decision = unsafe { &mut *l.decision };
    let (row, at) = decision.position(index as u32);
    // Out of range ends the loop; what is in range is then bounded on the
    // registers themselves, since the step's own checks are on copies
    // LLVM may not reuse (see `dentry::bounded`).
    if row > DECISION_ROWS || at >= ward_abi::MAX_CHAIN {
        return 1;
    }
    let row = crate::dentry::bounded::<15>(row);
    let at = crate::dentry::bounded::<7>(at);
    i64::from(decision.step_at(
        row,
        at,
        |key| file_rule(active, key),
        &mut ClassMap { active, classed },
    ))
}

/// `ward_abi::decision::decide_file` for the chain already in `decision`
/// (this CPU's scratch slot), with its steps run by bpf_loop.
#[inline(always)]
pub fn decide_file(
    decision: *mut FileDecision,
    who: &Subjects,
    op: ward_abi::Op,
    now: u64,
    active: u32,
    classed: u32,
) -> Option<Verdict> {
    // SAFETY: this CPU's slot; BPF programs do not migrate mid-run.
    unsafe { (*decision).reset(who, op, now, classed) };
    let mut l = FileLoop {
        active,
        classed,
        decision,
    };
    // SAFETY: bpf_loop calls `file_step` with a pointer to `l`, which
    // outlives the call.
    unsafe {
        bpf_loop(
            (*decision).steps(),
            file_step as *mut c_void,
            (&mut l as *mut FileLoop).cast(),
            0,
        );
        (*decision).verdict()
    }
}
