//! Decisions reported to user space.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use ward_abi::{Event, InodeKey, decision::Verdict, event_kind};

use crate::{
    dentry,
    maps::{WARD_DECISIONS, WARD_EVENTS, WARD_EVENTS_LOST},
    subject::Subjects,
};

/// What the event is about.
pub enum Object<'a> {
    /// A file: the dentry touched, its identity, the protecting object and
    /// how far below it the dentry is.
    File {
        dentry: usize,
        key: InodeKey,
        object_id: u32,
        levels: u32,
    },
    Addr {
        addr: &'a [u8; 16],
        port: u16,
        family: u16,
    },
}

/// Counts a decision on a protected object, by operation and outcome.
#[inline(always)]
pub fn count(verdict: &Verdict, op: u32) {
    let outcome = if !verdict.allow {
        ward_abi::DECIDED_DENY
    } else if verdict.by_grant {
        ward_abi::DECIDED_ALLOW_BY_GRANT
    } else {
        ward_abi::DECIDED_ALLOW_BY_POLICY
    };
    if let Some(n) = WARD_DECISIONS.get_ptr_mut(ward_abi::decision_slot(op, outcome)) {
        // SAFETY: this CPU's slot; no other writer on this CPU meanwhile.
        unsafe { *n += 1 };
    }
}

/// Reports denies and allows-by-grant; plain allows are not events.
#[inline(always)]
pub fn report(verdict: &Verdict, who: &Subjects, op: u32, object: Object<'_>) {
    let kind = if !verdict.allow {
        event_kind::DENY
    } else if verdict.by_grant {
        event_kind::ALLOW_BY_GRANT
    } else {
        return;
    };
    let Some(mut entry) = WARD_EVENTS.reserve::<Event>(0) else {
        if let Some(lost) = WARD_EVENTS_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot; no other writer on this CPU meanwhile.
            unsafe { *lost += 1 };
        }
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved ring buffer slot of size_of::<Event>().
    unsafe {
        (*event).time_ns = bpf_ktime_get_boot_ns();
        (*event).cgroup = who.cgroup;
        (*event).rule_id = verdict.rule_id;
        (*event).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*event).uid = who.uid;
        (*event).kind = kind;
        (*event).op = op;
        (*event).login_uid = who.login_uid;
        match object {
            Object::File {
                dentry,
                key,
                object_id,
                levels,
            } => {
                (*event).port = 0;
                (*event).family = 0;
                (*event).object_id = object_id;
                (*event).levels = levels;
                (*event).ino = key.ino;
                (*event).dev = key.dev;
                (*event)._pad = 0;
                dentry::names(dentry, &mut (&mut *event).names, levels);
            }
            Object::Addr { addr, port, family } => {
                (*event).port = port;
                (*event).family = family;
                (*event).object_id = 0;
                (*event).levels = 0;
                (*event).ino = 0;
                (*event).dev = 0;
                (*event)._pad = 0;
                let names = &mut (&mut *event).names;
                names[0][..16].copy_from_slice(addr);
                names[0][16] = 0;
                names[1][0] = 0;
                names[2][0] = 0;
                names[3][0] = 0;
            }
        }
    }
    entry.submit(0);
}

/// Reports a refused attempt on ward itself: `what` is a
/// [`ward_abi::tamper`] code, `detail` its argument.
#[inline(always)]
pub fn report_tamper(who: &Subjects, what: u32, detail: u64) {
    let Some(mut entry) = WARD_EVENTS.reserve::<Event>(0) else {
        if let Some(lost) = WARD_EVENTS_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot; no other writer on this CPU meanwhile.
            unsafe { *lost += 1 };
        }
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved ring buffer slot of size_of::<Event>().
    unsafe {
        (*event).time_ns = bpf_ktime_get_boot_ns();
        (*event).cgroup = who.cgroup;
        (*event).rule_id = detail;
        (*event).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*event).uid = who.uid;
        (*event).kind = event_kind::TAMPER;
        (*event).op = what;
        (*event).login_uid = who.login_uid;
        (*event).port = 0;
        (*event).family = 0;
        (*event).object_id = 0;
        (*event).levels = 0;
        (*event).ino = 0;
        (*event).dev = 0;
        (*event)._pad = 0;
        let names = &mut (&mut *event).names;
        names[0][0] = 0;
        names[1][0] = 0;
        names[2][0] = 0;
        names[3][0] = 0;
    }
    entry.submit(0);
}
