//! Decisions reported to user space.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_buf,
};
use ward_abi::{Event, PATH_MAX_LEN, event_kind};

use crate::{
    decide::Verdict,
    maps::{WARD_EVENTS, WARD_EVENTS_LOST},
    subject::Subjects,
};

/// What the event is about.
pub enum Object<'a> {
    Path(&'a [u8; PATH_MAX_LEN]),
    Addr {
        addr: &'a [u8; 16],
        port: u16,
        family: u16,
    },
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
            Object::Path(path) => {
                (*event).port = 0;
                (*event).family = 0;
                let _ = bpf_probe_read_kernel_buf(path.as_ptr(), &mut (&mut *event).object);
            }
            Object::Addr { addr, port, family } => {
                (*event).port = port;
                (*event).family = family;
                let object = &mut (&mut *event).object;
                object[..16].copy_from_slice(addr);
                object[16] = 0;
            }
        }
    }
    entry.submit(0);
}
