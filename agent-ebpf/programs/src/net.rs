//! Network: LSM `socket_connect`, and cgroup `connect4`/`connect6` for
//! kernels without BPF LSM.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, maps::LpmTrie};
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{cgroup_sock_addr, lsm},
    maps::lpm_trie::Key,
    programs::{LsmContext, SockAddrContext},
};
use ward_abi::{
    EPERM, KEY_HEADER_BITS, NetKey, Op, Rule,
    decision::{Found, MostSpecific},
};

use crate::{
    events::{Object, report},
    maps::{WARD_NET_RULES_0, WARD_NET_RULES_1, WARD_SUBJECT_SCRATCH, config},
    steps, subject,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The destination of a connect, IPv4 mapped into IPv6.
struct Dest {
    addr: [u8; 16],
    /// Host byte order.
    port: u16,
    family: u16,
}

fn v4_mapped(ip_be: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&ip_be);
    a
}

/// true = allow. `LOGIN`: see [`subject::current`]. The destination is
/// read only for managed callers (`None`: not an address ward decides on),
/// so everyone else pays for the subject check alone.
#[inline(always)]
fn check_connect<const LOGIN: bool>(dest: impl FnOnce() -> Option<Dest>) -> bool {
    let Some(config) = config() else {
        return true;
    };
    let Some(who) = subject::current::<LOGIN>(config) else {
        return true;
    };
    // Through a per-CPU slot, as in `file::managed`: paths merge before
    // the decision instead of each being verified through it.
    let Some(slot) = WARD_SUBJECT_SCRATCH.get_ptr_mut(0) else {
        return false; // managed, and we cannot decide: fail closed
    };
    // SAFETY: this CPU's slot, a map value that lives for the program.
    let who = unsafe {
        *slot = who;
        &*slot
    };
    let Some(dest) = dest() else {
        return true;
    };
    let rules: &LpmTrie<NetKey, Rule> = if config.active == 0 {
        &WARD_NET_RULES_0
    } else {
        &WARD_NET_RULES_1
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let verdict = steps::decide(
        who,
        now,
        dest.port,
        &mut NetRules {
            rules,
            addr: dest.addr,
        },
    );
    let Some(verdict) = verdict else {
        return true;
    };
    let object = Object::Addr {
        addr: &dest.addr,
        port: dest.port,
        family: dest.family,
    };
    report(&verdict, who, Op::Connect as u32, object);
    verdict.allow
}

/// The longest-prefix rule per subject, from one generation's trie.
struct NetRules<'a> {
    rules: &'a LpmTrie<NetKey, Rule>,
    addr: [u8; 16],
}

impl MostSpecific for NetRules<'_> {
    #[inline(always)]
    fn most_specific(&mut self, subject: u64) -> Option<Found> {
        let key = Key::new(
            KEY_HEADER_BITS + 128,
            NetKey {
                subject,
                op: Op::Connect as u32,
                addr: self.addr,
            },
        );
        self.rules
            .get(&key)
            .map(|rule| Found { rule: *rule, at: 0 })
    }
}

/// Kernel `struct sockaddr_in6` prefix; `sockaddr_in` shares family+port.
#[repr(C)]
struct SockaddrIn6 {
    family: u16,
    port_be: u16,
    flowinfo: u32,
    addr: [u8; 16],
}

#[lsm(hook = "socket_connect")]
pub fn ward_socket_connect(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    if check_connect::<true>(|| read_dest(address, addrlen)) {
        0
    } else {
        -EPERM
    }
}

/// The destination of an LSM `socket_connect`, or `None` for unix
/// sockets, AF_UNSPEC disconnects and short addresses.
#[inline(always)]
fn read_dest(address: *const u8, addrlen: i32) -> Option<Dest> {
    // SAFETY: reads of kernel memory through the probe-read helper, which
    // fails cleanly rather than faulting.
    let family = unsafe { bpf_probe_read_kernel(address as *const u16) }.ok()?;
    match family {
        AF_INET if addrlen >= 8 => {
            let head = unsafe { bpf_probe_read_kernel(address as *const [u8; 8]) }.ok()?;
            Some(Dest {
                addr: v4_mapped([head[4], head[5], head[6], head[7]]),
                port: u16::from_be_bytes([head[2], head[3]]),
                family: 4,
            })
        }
        AF_INET6 if addrlen >= 24 => {
            let sa = unsafe { bpf_probe_read_kernel(address as *const SockaddrIn6) }.ok()?;
            Some(Dest {
                addr: sa.addr,
                port: u16::from_be(sa.port_be),
                family: 6,
            })
        }
        _ => None,
    }
}

#[cgroup_sock_addr(connect4)]
pub fn ward_connect4(ctx: SockAddrContext) -> i32 {
    let dest = || {
        // SAFETY: the context is the kernel's bpf_sock_addr for this connect.
        let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
        Some(Dest {
            addr: v4_mapped(ip.to_ne_bytes()),
            port: u16::from_be(port as u16),
            family: 4,
        })
    };
    if check_connect::<false>(dest) { 1 } else { 0 }
}

#[cgroup_sock_addr(connect6)]
pub fn ward_connect6(ctx: SockAddrContext) -> i32 {
    let dest = || {
        // SAFETY: as above.
        let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip6, (*ctx.sock_addr).user_port) };
        let mut addr = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let w = ip[i].to_ne_bytes();
            addr[i * 4..i * 4 + 4].copy_from_slice(&w);
            i += 1;
        }
        Some(Dest {
            addr,
            port: u16::from_be(port as u16),
            family: 6,
        })
    };
    if check_connect::<false>(dest) { 1 } else { 0 }
}
