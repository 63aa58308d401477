//! Drives the shared decision (`ward_abi::decision::Deciding`) over a
//! caller's subjects from a `bpf_loop` callback: the verifier checks one
//! subject's step once, instead of every combination of outcomes over all
//! of them.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use ward_abi::decision::{Deciding, MostSpecific, SUBJECT_SLOTS, Subjects, Verdict};

struct Loop<'a, M> {
    who: &'a Subjects,
    rules: &'a mut M,
    deciding: Deciding,
}

extern "C" fn step<M: MostSpecific>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Loop` that `decide` passed to bpf_loop.
    let l = unsafe { &mut *(ctx as *mut Loop<'_, M>) };
    let subject = l.who.slot(index as usize);
    if subject == 0 {
        return 0;
    }
    let found = l.rules.most_specific(subject);
    i64::from(l.deciding.consider(subject, found))
}

/// `ward_abi::decision::decide`, with its subject loop run by bpf_loop.
#[inline(always)]
pub fn decide<M: MostSpecific>(
    who: &Subjects,
    now: u64,
    port: u16,
    rules: &mut M,
) -> Option<Verdict> {
    let protection = rules.most_specific(ward_abi::subject::PROTECTED)?;
    let deciding = Deciding::new(protection, now, port)?;
    let mut l = Loop {
        who,
        rules,
        deciding,
    };
    // SAFETY: bpf_loop calls `step` with a pointer to `l`, which outlives
    // the call.
    unsafe {
        bpf_loop(
            SUBJECT_SLOTS as u32,
            step::<M> as *mut c_void,
            (&mut l as *mut Loop<'_, M>).cast(),
            0,
        );
    }
    Some(l.deciding.verdict())
}
