//! Active teardown: a TCP socket iterator that names every held connection
//! whose permission has ended (the deadline passed, or a revoke, release,
//! forbid or policy change took it away), so that the agent can reset it
//! with sock_diag's `SOCK_DESTROY`: the peer gets a reset, the holder an
//! error on its next call. The decision is [`net::held_use`], the one every
//! send and receive on the connection takes, so the iterator never ends a
//! connection the hooks would still allow, nor spares one they would not.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_socket_cookie, bpf_seq_write},
};
use ward_abi::{EndedConn, NO_OFFSET};

use crate::{net, rodata};

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

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The kernel's `struct bpf_iter_meta` (prefix).
#[repr(C)]
pub struct IterMeta {
    pub seq: *mut c_void,
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

/// One call per socket in the agent's network namespace (listening,
/// established, time-wait and request sockets alike), then one with no
/// socket at the end.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn ward_tcp_ended(ctx: *const IterTcp) -> i32 {
    // SAFETY: the iterator's context, as the kernel lays it out.
    let (meta, sk) = unsafe { ((*ctx).meta, (*ctx).sk_common) };
    if sk.is_null() {
        return 0;
    }
    let key = sk as u64;
    if net::held_use(key) {
        return 0; // not held, or still allowed
    }
    let Some(family) = field::<u16>(key, &SKC_FAMILY_OFF) else {
        return 0;
    };
    let mut ended = EndedConn {
        // SAFETY: the context's socket, non-null.
        cookie: unsafe { bpf_get_socket_cookie(sk) },
        sport: field::<u16>(key, &SKC_NUM_OFF).unwrap_or(0),
        dport: u16::from_be(field::<u16>(key, &SKC_DPORT_OFF).unwrap_or(0)),
        family,
        ..EndedConn::default()
    };
    match family {
        AF_INET => {
            let Some(dst) = field::<[u8; 4]>(key, &SKC_DADDR_OFF) else {
                return 0;
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
                return 0;
            };
            ended.dst = dst;
            ended.src = src;
        }
        _ => return 0,
    }
    // SAFETY: the iterator's seq_file, and a record on the stack.
    unsafe {
        bpf_seq_write(
            (*meta).seq as *mut _,
            &ended as *const EndedConn as *const c_void,
            core::mem::size_of::<EndedConn>() as u32,
        );
    }
    0
}
