//! Kernel decisions, decoded, as an async stream.

use std::{
    net::{IpAddr, Ipv6Addr},
    os::fd::AsRawFd,
};

use aya::maps::{Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use ward_abi::{Event, Op, event_kind};

use super::error::EnforcerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Deny,
    AllowByGrant,
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
    /// `read`, `write`, `exec` or `connect`.
    pub op: &'static str,
    pub kind: EventKind,
    /// A path, or `addr:port`.
    pub object: String,
    pub rule_id: u64,
}

impl KernelEvent {
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: length checked; Event is plain data, read unaligned.
        let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let object = if e.family == 0 {
            let end = e
                .object
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(e.object.len());
            String::from_utf8_lossy(&e.object[..end]).into_owned()
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&e.object[..16]);
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
        })
    }
}

fn op_name(raw: u32) -> &'static str {
    match Op::from_raw(raw) {
        Some(Op::Read) => "read",
        Some(Op::Write) => "write",
        Some(Op::Exec) => "exec",
        Some(Op::Connect) => "connect",
        None => "unknown",
    }
}

/// Async reader of the kernel's event ring buffer (needs a tokio runtime).
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    pub(super) fn new(map: Map) -> Result<Self, EnforcerError> {
        let ring = RingBuf::try_from(map).map_err(super::error::map_err(ward_abi::maps::EVENTS))?;
        // SAFETY: the ring buffer owns its fd and AsyncFd owns the ring
        // buffer, so the fd stays open for as long as it is registered.
        let ring =
            unsafe { AsyncFd::register(ring) }.map_err(|e| EnforcerError::Events(e.into()))?;
        Ok(EventStream { ring })
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
                if let Some(event) = KernelEvent::decode(&item) {
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
