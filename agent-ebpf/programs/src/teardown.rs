//! Active teardown: an iterator over the held connections
//! (`iter/bpf_map_elem` on `WARD_HELD_SOCKS`) that names each one whose
//! permission has ended (the deadline passed, or a revoke, release, forbid
//! or policy change took it away), so that the agent can reset it with
//! sock_diag's `SOCK_DESTROY`: the peer gets a reset, the holder an error
//! on its next call. The decision is [`net::held_use`], the one every send
//! and receive on the connection takes, so the iterator never ends a
//! connection the hooks would still allow, nor spares one they would not.
//! It visits held connections only, so a pass costs microseconds however
//! many sockets the host has.
//!
//! A look-ahead pass (the agent sets [`WARD_TEARDOWN_AS_OF`]) names what
//! will have ended at a coming deadline and changes nothing, so that at
//! the deadline itself the agent only resets.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel, generated::bpf_seq_write};
use ward_abi::{EndedConn, NO_OFFSET};

use crate::{maps::WARD_TEARDOWN_AS_OF, net, rodata};

/// `offsetof(struct sock_common, ...)`, from the kernel's BTF.
#[unsafe(no_mangle)]
static SKC_DADDR_OFF: u64 = 0;
#[unsafe(no_mangle)]
static SKC_DPORT_OFF: u64 = 0;
#[unsafe(no_mangle)]
static SKC_NUM_OFF: u64 = 0;
#[unsafe(no_mangle)]
static SKC_FAMILY_OFF: u64 = 0;
#[unsafe(no_mangle)]
static SKC_V6_DADDR_OFF: u64 = 0;
#[unsafe(no_mangle)]
static SKC_V6_RCV_SADDR_OFF: u64 = 0;
/// `offsetof(struct sock_common, skc_cookie)`.
#[unsafe(no_mangle)]
static SKC_COOKIE_OFF: u64 = 0;
/// `offsetof(struct sock, sk_protocol)`, or [`NO_OFFSET`] where it is a
/// bitfield (before 5.6): then every held socket is offered as TCP.
#[unsafe(no_mangle)]
static SK_PROTOCOL_OFF: u64 = 0;

/// `offsetof(struct sock_common, skc_net)` and `offsetof(struct net,
/// ns.inum)`.
#[unsafe(no_mangle)]
static SKC_NET_OFF: u64 = 0;
#[unsafe(no_mangle)]
static NET_NS_INUM_OFF: u64 = 0;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The kernel's `struct bpf_iter_meta` (prefix).
#[repr(C)]
pub struct IterMeta {
    pub seq: *mut c_void,
}

/// The kernel's `struct bpf_iter__bpf_map_elem`: the context of an
/// `iter/bpf_map_elem` program.
#[repr(C)]
pub struct IterMapElem {
    pub meta: *const IterMeta,
    pub map: *const c_void,
    /// The held socket's key (its `struct sock *`), null at the end.
    pub key: *const u64,
    pub value: *mut c_void,
}

/// The kernel's `struct bpf_iter__tcp`: the context of an `iter/tcp` program.
#[repr(C)]
pub struct IterTcp {
    pub meta: *const IterMeta,
    pub sk_common: *mut c_void,
    pub uid: u32,
}

/// Reads a field of the socket at `off`; `None` if it cannot.
#[inline(always)]
fn field<T>(sk: u64, off: &u64) -> Option<T> {
    // SAFETY: a probe read, which fails cleanly rather than faulting.
    unsafe { bpf_probe_read_kernel((sk as usize + rodata(off)) as *const T) }.ok()
}

/// One call per held connection, then one with no key at the end.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_map_elem")]
pub extern "C" fn ward_held_ended(ctx: *const IterMapElem) -> i32 {
    // SAFETY: the iterator's context, as the kernel lays it out.
    let (meta, at) = unsafe { ((*ctx).meta, (*ctx).key) };
    if at.is_null() {
        return 0;
    }
    // SAFETY: the element's 8-byte key.
    let key = unsafe { *at };
    if !still_allowed(key) {
        report_ended(meta, key);
    }
    0
}

/// The same over every TCP socket of the agent's network namespace, for
/// kernels that refuse the map iterator: one call per socket (listening,
/// established, time-wait and request sockets alike), then one with none.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn ward_tcp_ended(ctx: *const IterTcp) -> i32 {
    // SAFETY: the iterator's context, as the kernel lays it out.
    let (meta, sk) = unsafe { ((*ctx).meta, (*ctx).sk_common) };
    if sk.is_null() {
        return 0;
    }
    let key = sk as u64;
    if !still_allowed(key) {
        report_ended(meta, key);
    }
    0
}

/// The held connection's decision, now or, in a look-ahead pass, as of
/// the agent's [`WARD_TEARDOWN_AS_OF`].
#[inline(always)]
fn still_allowed(key: u64) -> bool {
    // SAFETY: an aligned u64 in a map value, read in one load.
    let as_of = WARD_TEARDOWN_AS_OF
        .get(0)
        .map_or(0, |t| unsafe { core::ptr::read_volatile(t) });
    let look_ahead = as_of != 0;
    // SAFETY: helper without arguments.
    let now = || {
        if look_ahead {
            as_of
        } else {
            unsafe { bpf_ktime_get_boot_ns() }
        }
    };
    net::held_use_as_of(key, now, look_ahead)
}

/// Writes the held connection `key`, whose permission has ended, to the
/// iterator's output, if it is TCP.
#[inline(always)]
fn report_ended(meta: *const IterMeta, key: u64) {
    if rodata(&SK_PROTOCOL_OFF) as u64 != NO_OFFSET
        && field::<u16>(key, &SK_PROTOCOL_OFF) != Some(u16::from(net::IPPROTO_TCP))
    {
        return; // a UDP socket: its sends fail, and there is no peer to reset
    }
    let Some(family) = field::<u16>(key, &SKC_FAMILY_OFF) else {
        return;
    };
    let mut ended = EndedConn {
        // 0 when nobody asked for it yet: the agent then matches by
        // addresses alone, which name one live socket.
        cookie: field::<u64>(key, &SKC_COOKIE_OFF).unwrap_or(0),
        sport: field::<u16>(key, &SKC_NUM_OFF).unwrap_or(0),
        dport: u16::from_be(field::<u16>(key, &SKC_DPORT_OFF).unwrap_or(0)),
        family,
        netns: netns_of(key),
        ..EndedConn::default()
    };
    match family {
        AF_INET => {
            let Some(dst) = field::<[u8; 4]>(key, &SKC_DADDR_OFF) else {
                return;
            };
            let src = net::bound_v4(key);
            ended.dst[..4].copy_from_slice(&dst);
            ended.src[..4].copy_from_slice(&src);
        }
        AF_INET6 if rodata(&SKC_V6_DADDR_OFF) as u64 != NO_OFFSET => {
            let (Some(dst), Some(src)) = (
                field::<[u8; 16]>(key, &SKC_V6_DADDR_OFF),
                field::<[u8; 16]>(key, &SKC_V6_RCV_SADDR_OFF),
            ) else {
                return;
            };
            ended.dst = dst;
            ended.src = src;
        }
        _ => return,
    }
    // SAFETY: the iterator's seq_file, and a record on the stack.
    unsafe {
        bpf_seq_write(
            (*meta).seq as *mut _,
            &ended as *const EndedConn as *const c_void,
            core::mem::size_of::<EndedConn>() as u32,
        );
    }
}

/// The inode number of the socket's network namespace, 0 if unreadable.
#[inline(always)]
fn netns_of(sk: u64) -> u64 {
    let net = field::<u64>(sk, &SKC_NET_OFF).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    field::<u32>(net, &NET_NS_INUM_OFF).map_or(0, u64::from)
}
