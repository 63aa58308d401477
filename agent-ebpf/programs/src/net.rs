//! Network: LSM `socket_connect`, sends and receives, and cgroup
//! `connect4`/`connect6`/`sendmsg4`/`sendmsg6` for kernels without BPF LSM.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, maps::LpmTrie};
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, lsm},
    maps::lpm_trie::Key,
    programs::{LsmContext, SkBuffContext, SockAddrContext, SockContext},
};
use ward_abi::{
    Config, ECONNRESET, EPERM, HELD_SOCKS_SLOT, NetKey, NetRule, Op,
    decision::{
        Found, MostSpecific, NetLookup, Subjects, applicable_net_rule, unspecified_dest,
        unspecified_dest4,
    },
};

use crate::{
    events::{Object, report},
    held::{self, Outcome, Recall},
    maps::{WARD_HELD_SOCKS, WARD_NET_RULES_0, WARD_NET_RULES_1, WARD_SUBJECT_SCRATCH, config},
    rodata, steps, subject,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;

/// `offsetof(struct socket, sk)`, from the kernel's BTF.
#[unsafe(no_mangle)]
static SOCKET_SK_OFF: u64 = 0;
/// `offsetof(struct socket, type)`.
#[unsafe(no_mangle)]
static SOCKET_TYPE_OFF: u64 = 0;
/// `offsetof(struct msghdr, msg_name)`.
#[unsafe(no_mangle)]
static MSG_NAME_OFF: u64 = 0;
/// `offsetof(struct msghdr, msg_namelen)`.
#[unsafe(no_mangle)]
static MSG_NAMELEN_OFF: u64 = 0;
/// `offsetof(struct sock, __sk_common.skc_rcv_saddr)`.
#[unsafe(no_mangle)]
static SK_RCV_SADDR_OFF: u64 = 0;

/// The destination of a connect, IPv4 mapped into IPv6.
#[derive(Clone, Copy)]
struct Dest {
    addr: [u8; 16],
    /// Host byte order.
    port: u16,
    family: u16,
}

/// The decision for a connect (or a send with an address) by the caller.
/// `LOGIN`: see [`subject::current`]. The destination is read only for
/// managed callers (`None`: not an address ward decides on), so everyone
/// else pays for the subject check alone. Returns the subjects decided
/// for, to remember a connection by.
#[inline(always)]
fn check_connect<const LOGIN: bool>(
    dest: impl FnOnce() -> Option<Dest>,
) -> (Outcome, Option<(&'static Subjects, Dest)>) {
    let Some(config) = config() else {
        return (Outcome::UNPROTECTED, None);
    };
    let Some(who) = subject::current::<LOGIN>(config) else {
        return (Outcome::UNPROTECTED, None);
    };
    // Through a per-CPU slot, as in `file::managed`: paths merge before
    // the decision instead of each being verified through it.
    let Some(slot) = WARD_SUBJECT_SCRATCH.get_ptr_mut(0) else {
        return (Outcome::DENY, None); // managed, and we cannot decide: fail closed
    };
    // SAFETY: this CPU's slot, a map value that lives for the program.
    let who = unsafe {
        *slot = who;
        &*slot
    };
    let Some(dest) = dest() else {
        return (Outcome::UNPROTECTED, None);
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let outcome = decide_dest(config, who, &dest, now, Report::All);
    (outcome, Some((who, dest)))
}

/// Which decisions become events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Report {
    /// Every decision: a new connection is audited.
    All,
    /// Ends only: a held connection decided again.
    Denials,
    /// None: a look-ahead, which decides nothing that happens.
    Nothing,
}

/// Decides a destination for `who` as of `now` (boot clock).
#[inline(always)]
fn decide_dest(config: &Config, who: &Subjects, dest: &Dest, now: u64, events: Report) -> Outcome {
    let rules: &LpmTrie<NetKey, NetRule> = if config.active == 0 {
        &WARD_NET_RULES_0
    } else {
        &WARD_NET_RULES_1
    };
    let verdict = steps::decide(
        who,
        now,
        dest.port,
        &mut NetRules {
            rules,
            addr: dest.addr,
            port: dest.port,
        },
        config.active,
        config.classed_active(),
    );
    let Some(verdict) = verdict else {
        return Outcome::UNPROTECTED;
    };
    if events != Report::Nothing {
        crate::events::count(&verdict, Op::Connect as u32);
    }
    if events == Report::All || (events == Report::Denials && !verdict.allow) {
        let object = Object::Addr {
            addr: &dest.addr,
            port: dest.port,
            family: dest.family,
        };
        report(&verdict, who, Op::Connect as u32, object);
    }
    Outcome {
        allow: verdict.allow,
        until: verdict.decided.expires_ns,
    }
}

/// Per subject, the most specific rule that covers the port, from one
/// generation's trie.
struct NetRules<'a> {
    rules: &'a LpmTrie<NetKey, NetRule>,
    addr: [u8; 16],
    port: u16,
}

impl MostSpecific for NetRules<'_> {
    #[inline(always)]
    fn most_specific(&mut self, subject: u64) -> Option<Found> {
        applicable_net_rule(
            self.port,
            &mut SubjectNetRules {
                rules: self.rules,
                addr: self.addr,
                subject,
            },
        )
    }
}

/// One subject's entries in the trie, a prefix length at a time.
struct SubjectNetRules<'a> {
    rules: &'a LpmTrie<NetKey, NetRule>,
    addr: [u8; 16],
    subject: u64,
}

impl NetLookup for SubjectNetRules<'_> {
    #[inline(always)]
    fn entry(&mut self, bits: u32) -> Option<&NetRule> {
        let key = Key::new(
            bits,
            NetKey {
                subject: self.subject,
                op: Op::Connect as u32,
                addr: self.addr,
            },
        );
        self.rules.get(&key)
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

/// `struct socket *` -> its `struct sock *`, the key of a held connection.
/// Probe-read, so it is a number to the verifier (a direct load gives a
/// BTF pointer it will not offset before a null check).
#[inline(always)]
pub fn sock_of(socket: *const u8) -> u64 {
    // SAFETY: a probe read of the socket's `sk` field.
    unsafe { bpf_probe_read_kernel(socket.add(rodata(&SOCKET_SK_OFF)) as *const u64).unwrap_or(0) }
}

/// Remembers an allowed connection to a protected destination; `false`
/// (refuse it) when it cannot be remembered.
#[inline(always)]
fn hold(sk: u64, epoch: u64, outcome: Outcome, decided: Option<(&'static Subjects, Dest)>) -> bool {
    match decided {
        Some((who, dest)) if outcome.allow && outcome.until != 0 => held::remember(
            &WARD_HELD_SOCKS,
            HELD_SOCKS_SLOT,
            sk,
            who,
            epoch,
            outcome,
            Some((dest.addr, dest.port, dest.family)),
        ),
        _ => outcome.allow,
    }
}

#[lsm(hook = "socket_connect")]
pub fn ward_socket_connect(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    let socket: *const u8 = ctx.arg(0);
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let epoch = held::epoch();
    let sk = sock_of(socket);
    let (outcome, decided) = check_connect::<true>(|| read_dest(address, addrlen, sk));
    crate::verdict(hold(sk, epoch, outcome, decided), EPERM)
}

/// Whether a held connection may still be used; decides again when the
/// rules changed or its allow's deadline passed.
#[inline(always)]
pub(crate) fn held_use(sk: u64) -> bool {
    // SAFETY: helper without arguments.
    held_use_as_of(sk, || unsafe { bpf_ktime_get_boot_ns() }, false)
}

/// [`held_use`] as of `now`; with `look_ahead`, it records nothing and
/// reports nothing: what the connection's next use would be told at `now`
/// if no rule changes before then.
#[inline(always)]
pub(crate) fn held_use_as_of(sk: u64, now: impl Fn() -> u64, look_ahead: bool) -> bool {
    match held::recall(&WARD_HELD_SOCKS, HELD_SOCKS_SLOT, sk, &now) {
        Recall::NotHeld => true,
        Recall::Stands(allow) => allow,
        Recall::Decide(entry) => {
            let (epoch, now) = (held::epoch(), now());
            let Some(who) = held::subjects_in_slot(entry) else {
                return false;
            };
            let events = if look_ahead {
                Report::Nothing
            } else {
                Report::Denials
            };
            let outcome = decide_held(entry, who, now, events);
            if !look_ahead {
                held::settle(entry, epoch, outcome);
            }
            outcome.allow
        }
    }
}

/// A held connection's destination decided again for `who`.
#[inline(always)]
fn decide_held(entry: *mut ward_abi::Held, who: &Subjects, now: u64, events: Report) -> Outcome {
    let Some(config) = config() else {
        return Outcome::DENY;
    };
    // SAFETY: the live map value recall found.
    let dest = unsafe {
        Dest {
            addr: (*entry).addr,
            port: (*entry).port,
            family: (*entry).family,
        }
    };
    decide_dest(config, who, &dest, now, events)
}

/// `socket_sendmsg(sock, msg, size)`. A send that carries an address is
/// decided like a connect to it: unconnected UDP, and TCP Fast Open
/// (which opens the connection without `socket_connect`, so it is then
/// held like one). Every send on a held connection checks it.
#[lsm(hook = "socket_sendmsg")]
pub fn ward_socket_sendmsg(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    let socket: *const u8 = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    // SAFETY: `msg` is the hook's BTF pointer to the kernel's msghdr, and
    // the offsets are the kernel's own: plain loads of `msg_name` (a
    // `void *`, a number to the verifier) and `msg_namelen`, not probe-read
    // helper calls, since every send of the host comes here. The address
    // it points at is the kernel's copy of the caller's.
    let (name, namelen) = unsafe {
        (
            *(msg.add(rodata(&MSG_NAME_OFF)) as *const u64),
            *(msg.add(rodata(&MSG_NAMELEN_OFF)) as *const i32),
        )
    };
    let addressed = name != 0 && namelen > 0;
    // Nothing held on the host and no address: no read of the socket.
    let held = held::any(HELD_SOCKS_SLOT);
    let sk = if addressed || held {
        sock_of(socket)
    } else {
        0
    };
    if addressed {
        let epoch = held::epoch();
        let (outcome, decided) =
            check_connect::<true>(|| read_dest(name as *const u8, namelen, sk));
        // SAFETY: as in sock_of, the u16 `type` field.
        let kind = unsafe { *(socket.add(rodata(&SOCKET_TYPE_OFF)) as *const u16) };
        let allowed = if kind == SOCK_STREAM {
            hold(sk, epoch, outcome, decided)
        } else {
            outcome.allow // each datagram is decided on its own
        };
        if !allowed {
            return crate::verdict(false, EPERM);
        }
    }
    crate::verdict(!held || held_use(sk), ECONNRESET)
}

/// `socket_recvmsg(sock, msg, size, flags)`: every receive on a held
/// connection checks it.
#[lsm(hook = "socket_recvmsg")]
pub fn ward_socket_recvmsg(ctx: LsmContext) -> i32 {
    let earlier: i32 = ctx.arg(4);
    if earlier != 0 {
        return earlier;
    }
    let socket: *const u8 = ctx.arg(0);
    // Nothing held on the host: no read of the socket.
    crate::verdict(
        !held::any(HELD_SOCKS_SLOT) || held_use(sock_of(socket)),
        ECONNRESET,
    )
}

/// `sk_free_security(sk)`: a freed socket is no longer held.
#[lsm(hook = "sk_free_security")]
pub fn ward_sk_free(ctx: LsmContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    held::forget(&WARD_HELD_SOCKS, HELD_SOCKS_SLOT, sk);
    0
}

/// The destination of an LSM `socket_connect` or a send's address, or
/// `None` for unix sockets, AF_UNSPEC disconnects and short addresses.
/// `0.0.0.0` and `::` are where Linux sends them: the socket's bound IPv4
/// address or loopback, and loopback.
#[inline(always)]
fn read_dest(address: *const u8, addrlen: i32, sk: u64) -> Option<Dest> {
    // SAFETY: reads of kernel memory through the probe-read helper, which
    // fails cleanly rather than faulting.
    let family = unsafe { bpf_probe_read_kernel(address as *const u16) }.ok()?;
    match family {
        AF_INET if addrlen >= 8 => {
            let head = unsafe { bpf_probe_read_kernel(address as *const [u8; 8]) }.ok()?;
            let ip = [head[4], head[5], head[6], head[7]];
            Some(Dest {
                addr: unspecified_dest4(ip, || bound_v4(sk)),
                port: u16::from_be_bytes([head[2], head[3]]),
                family: 4,
            })
        }
        AF_INET6 if addrlen >= 24 => {
            let sa = unsafe { bpf_probe_read_kernel(address as *const SockaddrIn6) }.ok()?;
            Some(Dest {
                addr: unspecified_dest(sa.addr, || bound_v4(sk)),
                port: u16::from_be(sa.port_be),
                family: 6,
            })
        }
        _ => None,
    }
}

/// The socket's bound IPv4 address (0.0.0.0 if none).
#[inline(always)]
pub(crate) fn bound_v4(sk: u64) -> [u8; 4] {
    // SAFETY: a probe read of the socket's bound IPv4 address.
    unsafe { bpf_probe_read_kernel((sk as usize + rodata(&SK_RCV_SADDR_OFF)) as *const [u8; 4]) }
        .unwrap_or([0; 4])
}

/// A cgroup hook's IPv4 destination; 0.0.0.0 as in [`unspecified_dest`],
/// from the socket's bound address.
#[inline(always)]
fn cgroup_dest4(ctx: &SockAddrContext) -> Option<Dest> {
    // SAFETY: the context is the kernel's bpf_sock_addr for this call.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    let bound = || {
        // SAFETY: `sk` is the context's socket, always set in these hooks.
        unsafe { (*(*ctx.sock_addr).__bindgen_anon_1.sk).src_ip4 }.to_ne_bytes()
    };
    Some(Dest {
        addr: unspecified_dest4(ip.to_ne_bytes(), bound),
        port: u16::from_be(port as u16),
        family: 4,
    })
}

#[inline(always)]
fn cgroup_dest6(ctx: &SockAddrContext) -> Option<Dest> {
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
        addr: unspecified_dest(addr, || [0; 4]),
        port: u16::from_be(port as u16),
        family: 6,
    })
}

/// A cgroup hook's socket, the key of a held connection: the kernel's
/// `struct sock *` behind the context's `bpf_sock`.
#[inline(always)]
fn cgroup_sock(ctx: &SockAddrContext) -> u64 {
    // SAFETY: `sk` is the context's socket, always set in these hooks.
    unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk as u64 }
}

/// Connects where the kernel has no BPF LSM. An allowed connection to a
/// protected destination is held, as under the LSM, so that the agent's
/// teardown resets it when its permission ends (no send or receive hook
/// checks it here).
#[cgroup_sock_addr(connect4)]
pub fn ward_connect4(ctx: SockAddrContext) -> i32 {
    let epoch = held::epoch();
    let (outcome, decided) = check_connect::<false>(|| cgroup_dest4(&ctx));
    i32::from(hold(cgroup_sock(&ctx), epoch, outcome, decided))
}

#[cgroup_sock_addr(connect6)]
pub fn ward_connect6(ctx: SockAddrContext) -> i32 {
    let epoch = held::epoch();
    let (outcome, decided) = check_connect::<false>(|| cgroup_dest6(&ctx));
    i32::from(hold(cgroup_sock(&ctx), epoch, outcome, decided))
}

/// cgroup `sock_release`, where the kernel has no BPF LSM: a closed
/// socket is no longer held.
#[cgroup_sock(sock_release)]
pub fn ward_sock_release(ctx: SockContext) -> i32 {
    held::forget(&WARD_HELD_SOCKS, HELD_SOCKS_SLOT, ctx.sock as u64);
    1
}

/// UDP sends with an address, where the kernel has no BPF LSM.
#[cgroup_sock_addr(sendmsg4)]
pub fn ward_sendmsg4(ctx: SockAddrContext) -> i32 {
    i32::from(check_connect::<false>(|| cgroup_dest4(&ctx)).0.allow)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn ward_sendmsg6(ctx: SockAddrContext) -> i32 {
    i32::from(check_connect::<false>(|| cgroup_dest6(&ctx)).0.allow)
}

/// Packets of held connections, where the kernel has no BPF LSM (cgroup
/// `skb` egress and ingress). Once a connection's permission has ended,
/// on the kernel's clock, nothing more of it leaves or arrives, whether or
/// not the agent is there to reset it: TCP data stays queued and
/// unacknowledged, a connected UDP socket's send fails with EPERM.
/// Resets pass, so that the agent's teardown (which sends one from the
/// held socket itself) and the peer can still end it.
#[cgroup_skb(egress)]
pub fn ward_skb_egress(ctx: SkBuffContext) -> i32 {
    held_packet(&ctx)
}

#[cgroup_skb(ingress)]
pub fn ward_skb_ingress(ctx: SkBuffContext) -> i32 {
    held_packet(&ctx)
}

/// 1 to pass the packet, 0 to drop it.
#[inline(always)]
fn held_packet(ctx: &SkBuffContext) -> i32 {
    // SAFETY: the context's socket, a pointer the verifier lets us read
    // as a number: the key the connect hooks held it by.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk } as u64;
    if sk == 0 {
        return 1;
    }
    i32::from(held_packet_allowed(sk) || is_tcp_reset(ctx))
}

/// [`held_use`] for a packet. A packet may be decided in softirq, where the
/// current task is nobody's and a hook interrupted on this CPU may be
/// mid-decision: the entry's own subjects are decided from (not this CPU's
/// subject slot), an allow is recorded, and nothing is reported. An end
/// stays undecided, for the agent's teardown pass to record and audit when
/// it resets the connection.
#[inline(always)]
fn held_packet_allowed(sk: u64) -> bool {
    // SAFETY: helper without arguments.
    let now = || unsafe { bpf_ktime_get_boot_ns() };
    match held::recall(&WARD_HELD_SOCKS, HELD_SOCKS_SLOT, sk, now) {
        Recall::NotHeld => true,
        Recall::Stands(allow) => allow,
        Recall::Decide(entry) => {
            let (epoch, now) = (held::epoch(), now());
            // SAFETY: the live map value recall found.
            let who = unsafe { &(*entry).who };
            let outcome = decide_held(entry, who, now, Report::Nothing);
            if outcome.allow {
                held::settle(entry, epoch, outcome);
            }
            outcome.allow
        }
    }
}

pub(crate) const IPPROTO_TCP: u8 = 6;
const TCP_RST: u8 = 0x04;

/// Whether the packet (from its network header on) is a TCP segment with
/// RST set. IPv6 extension headers are not followed: such a packet counts
/// as no reset, and a held connection's is dropped.
#[inline(always)]
fn is_tcp_reset(ctx: &SkBuffContext) -> bool {
    let Ok(first) = ctx.load::<u8>(0) else {
        return false;
    };
    let (proto, tcp) = match first >> 4 {
        4 => (ctx.load::<u8>(9), usize::from(first & 0x0f) * 4),
        6 => (ctx.load::<u8>(6), 40),
        _ => return false,
    };
    proto == Ok(IPPROTO_TCP) && ctx.load::<u8>(tcp + 13).is_ok_and(|f| f & TCP_RST != 0)
}
