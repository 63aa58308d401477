//! Kernel decisions, decoded, as an async stream.

use std::{
    net::{IpAddr, Ipv6Addr},
    os::fd::AsRawFd,
};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use ward_abi::{Event, Op, event_kind};

use super::error::EnforcerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Deny,
    AllowByGrant,
    /// A managed subject's attempt on ward itself, refused.
    Tamper,
}

/// One decision the kernel made on a protected object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelEvent {
    /// Boot-clock ns.
    pub time_boot_ns: u64,
    pub pid: u32,
    pub uid: u32,
    /// Audit login uid, if the process has one (LSM hooks only).
    pub login_uid: Option<u32>,
    pub cgroup: u64,
    /// `read`, `write`, `exec` or `connect`; for [`EventKind::Tamper`],
    /// what was tried (`signal`, `bpf-map`, ...).
    pub op: &'static str,
    pub kind: EventKind,
    /// A path, or `addr:port`. For files, the path of the protecting
    /// object in the agent's mount namespace followed by the names the
    /// kernel saw below it (see [`KernelEvent::name_files`]), whatever
    /// name the caller used.
    pub object: String,
    pub rule_id: u64,
    /// Files: the id of the object that protects it, and the names from
    /// that object down to the file (at most the last few, `…` above).
    #[serde(skip)]
    pub file: Option<FileObject>,
}

/// Where a file event's file lies: below object `object_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    pub object_id: u32,
    /// Names from the object down to the file.
    pub below: Vec<String>,
    /// Some names between the object and `below` were not carried.
    pub elided: bool,
    pub dev: u32,
    pub ino: u64,
}

impl KernelEvent {
    /// Fills in a file event's path from the name of its object.
    pub fn name_files(&mut self, object_name: impl FnOnce(u32) -> Option<String>) {
        let Some(f) = &self.file else {
            return;
        };
        let base = if f.object_id == 0 {
            // The walk did not reach the root: no object to start from.
            "(too deep to walk)".to_owned()
        } else {
            object_name(f.object_id).unwrap_or_else(|| format!("(object {})", f.object_id))
        };
        let mut path = base.trim_end_matches('/').to_owned();
        if f.elided {
            path.push_str("/…");
        }
        for n in &f.below {
            path.push('/');
            path.push_str(n);
        }
        if path.is_empty() {
            path.push('/');
        }
        self.object = path;
    }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl KernelEvent {
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: length checked; Event is plain data, read unaligned.
        let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if e.kind == event_kind::TAMPER {
            let (op, object) = tamper(e.op, e.rule_id);
            return Some(KernelEvent {
                time_boot_ns: e.time_ns,
                pid: e.pid,
                uid: e.uid,
                login_uid: (e.login_uid != ward_abi::LOGIN_UID_UNSET).then_some(e.login_uid),
                cgroup: e.cgroup,
                op,
                kind: EventKind::Tamper,
                object,
                rule_id: 0,
                file: None,
            });
        }
        let file = (e.family == 0).then(|| {
            let carried = (e.levels as usize).min(ward_abi::EVENT_NAMES);
            let mut below: Vec<String> = e.names[..carried].iter().map(|n| cstr(n)).collect();
            below.reverse();
            FileObject {
                object_id: e.object_id,
                below,
                elided: e.levels as usize > ward_abi::EVENT_NAMES,
                dev: e.dev,
                ino: e.ino,
            }
        });
        let object = if e.family == 0 {
            String::new() // named by name_files(), which knows the objects
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&e.names[0][..16]);
            let v6 = Ipv6Addr::from(a);
            let ip = match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            };
            match ip {
                IpAddr::V4(v4) => format!("{v4}:{}", e.port),
                IpAddr::V6(v6) => format!("[{v6}]:{}", e.port),
            }
        };
        Some(KernelEvent {
            time_boot_ns: e.time_ns,
            pid: e.pid,
            uid: e.uid,
            login_uid: (e.login_uid != ward_abi::LOGIN_UID_UNSET).then_some(e.login_uid),
            cgroup: e.cgroup,
            op: op_name(e.op),
            kind: if e.kind == event_kind::ALLOW_BY_GRANT {
                EventKind::AllowByGrant
            } else {
                EventKind::Deny
            },
            object,
            rule_id: e.rule_id,
            file,
        })
    }
}

/// What a tamper event says was tried, and on what.
fn tamper(what: u32, detail: u64) -> (&'static str, String) {
    use ward_abi::tamper as t;
    match what {
        t::BPF_MAP => ("bpf-map", "one of ward's BPF maps".into()),
        t::BPF_PROG => ("bpf-prog", "one of ward's BPF programs".into()),
        t::BPF_LINK => ("bpf-link", format!("a BPF link (bpf command {detail})")),
        t::SIGNAL => ("signal", format!("wardd (signal {detail})")),
        t::PTRACE => ("ptrace", format!("wardd (ptrace mode {detail:#x})")),
        t::UMOUNT => (
            "umount",
            format!("the filesystem of ward's pins (dev {detail:#x})"),
        ),
        t::MODULE => ("module", "a kernel module load".into()),
        t::KEXEC => ("kexec", "a kexec kernel load".into()),
        t::BPF_LOAD => (
            "bpf-load",
            format!("loading or attaching a BPF program (bpf command {detail})"),
        ),
        t::LOGINUID => ("loginuid", "its own audit login uid".into()),
        t::CGROUP_ESCAPE => ("cgroup-escape", "leaving its managed cgroup".into()),
        _ => ("unknown", format!("tamper {what} ({detail})")),
    }
}

pub(crate) fn op_name(raw: u32) -> &'static str {
    Op::from_raw(raw).map_or("unknown", Op::name)
}

/// Async reader of the kernel's event ring buffer (needs a tokio runtime).
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    names: super::objects::ObjectNames,
}

impl EventStream {
    pub(super) fn new(
        ring: RingBuf<MapData>,
        names: super::objects::ObjectNames,
    ) -> Result<Self, EnforcerError> {
        // SAFETY: the ring buffer owns its fd and AsyncFd owns the ring
        // buffer, so the fd stays open for as long as it is registered.
        let ring =
            unsafe { AsyncFd::register(ring) }.map_err(|e| EnforcerError::Events(e.into()))?;
        Ok(EventStream { ring, names })
    }

    /// The next decision; waits until there is one.
    pub async fn next(&mut self) -> Result<KernelEvent, EnforcerError> {
        loop {
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .map_err(EnforcerError::Events)?;
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if let Some(mut event) = KernelEvent::decode(&item) {
                    let names = self.names.read().ok();
                    event.name_files(|id| Some(names.as_ref()?.get(&id)?.as_str().to_owned()));
                    return Ok(event);
                }
            }
            guard.clear_ready();
        }
    }

    /// Drops every event already in the ring, without waiting; returns how
    /// many. The benchmarks drain between timed chunks, so the kernel's
    /// side of event delivery is timed with room in the ring, as in wardd.
    pub fn discard_pending(&mut self) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        n
    }

    pub fn raw_fd(&self) -> i32 {
        self.ring.get_ref().as_raw_fd()
    }
}
