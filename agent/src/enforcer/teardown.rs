//! Active teardown: a connection whose permission has ended is reset, so
//! that the peer sees it end at the deadline (or at the revoke), not only
//! when the holder next sends or receives.
//!
//! The kernel names the connections ([`ward_abi::programs::HELD_ENDED`],
//! an iterator over the held connections that takes the same decision as
//! every send and receive); this module resets each with sock_diag's
//! `SOCK_DESTROY` (`CONFIG_INET_DIAG_DESTROY`), which aborts the socket: a
//! reset to the peer, `ECONNABORTED` to the holder. The cookie in each
//! request makes the kernel refuse a socket that merely reuses the
//! addresses. A [`Handle`] owns its own descriptors for the program and
//! the maps, so wardd's deadline timer runs it without the engine's lock.

use std::{
    fs::File,
    io::{self, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr as InetAddr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf,
    maps::{Array, IterableMap, Map, MapData},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use ward_abi::{EndedConn, HELD_SOCKS_SLOT, maps, programs};

use super::{
    EnforcerError,
    bpf_sys::{Attr, BPF_ITER_CREATE, BPF_LINK_CREATE, BPF_TRACE_ITER, bpf},
    error::map_err,
    kmaps::KernelMaps,
};

/// Runs the teardown iterator and resets what it names.
pub struct Handle {
    program: OwnedFd,
    /// The held-connection map, for the map iterator; `None` with the TCP
    /// iterator.
    over: Option<OwnedFd>,
    counts: Array<MapData, u64>,
    as_of: Array<MapData, u64>,
    writes: RuleWrites,
    resetters: Resetters,
}

/// Every handle of the process sets the kernel's as-of time for the pass
/// it runs: one pass at a time.
static PASS: Mutex<()> = Mutex::new(());

/// Counts the enforcer's writes to the rules that may allow more (a
/// policy, a grant): odd while one is under way. A look-ahead stands only
/// while the count is what it was. Revoking a grant's allows is not
/// counted: it can only end more.
#[derive(Clone, Default)]
pub struct RuleWrites(Arc<AtomicU64>);

impl RuleWrites {
    /// Marks a write under way until the guard drops.
    pub fn begin(&self) -> RuleWrite {
        self.0.fetch_add(1, Ordering::SeqCst);
        RuleWrite(self.0.clone())
    }

    /// The count, if no write is under way.
    fn settled(&self) -> Option<u64> {
        let n = self.0.load(Ordering::SeqCst);
        n.is_multiple_of(2).then_some(n)
    }
}

/// A write to the rules under way; see [`RuleWrites`].
pub struct RuleWrite(Arc<AtomicU64>);

impl Drop for RuleWrite {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a look-ahead pass found: the connections whose permission ends
/// at `at`, if the rules do not change before then.
pub struct Foreseen {
    at: u64,
    writes: u64,
    ending: Vec<EndedConn>,
}

impl Foreseen {
    /// The connections it named.
    pub fn ending(&self) -> &[EndedConn] {
        &self.ending
    }
}

fn err(what: &str) -> impl FnOnce(io::Error) -> EnforcerError + '_ {
    move |e| EnforcerError::Teardown(format!("{what}: {e}"))
}

/// A descriptor of its own on `map`.
fn own_fd(map: &MapData, name: &'static str) -> Result<OwnedFd, EnforcerError> {
    map.fd().as_fd().try_clone_to_owned().map_err(err(name))
}

/// A u64 array map, on a descriptor of its own.
fn u64_array(
    array: &Array<MapData, u64>,
    name: &'static str,
) -> Result<Array<MapData, u64>, EnforcerError> {
    let data = MapData::from_fd(own_fd(array.map(), name)?).map_err(map_err(name))?;
    Array::try_from(Map::Array(data)).map_err(map_err(name))
}

impl Handle {
    /// A handle on the loaded iterator (the map iterator, else the TCP
    /// one) and the held-connection maps, with descriptors of its own.
    /// `Err` when neither iterator is loaded.
    pub fn new(
        ebpf: &Ebpf,
        kmaps: &KernelMaps,
        writes: RuleWrites,
    ) -> Result<Handle, EnforcerError> {
        let loaded = |name: &'static str| {
            ebpf.program(name)
                .and_then(|p| p.fd().ok())
                .and_then(|fd| fd.as_fd().try_clone_to_owned().ok())
        };
        let (program, over) = match loaded(programs::HELD_ENDED) {
            Some(p) => (p, Some(own_fd(kmaps.held_socks.map(), maps::HELD_SOCKS)?)),
            None => (
                loaded(programs::TCP_ENDED).ok_or_else(|| {
                    EnforcerError::Teardown("neither teardown iterator is loaded".into())
                })?,
                None,
            ),
        };
        Ok(Handle {
            program,
            over,
            counts: u64_array(&kmaps.held_count, maps::HELD_COUNT)?,
            as_of: u64_array(&kmaps.teardown_as_of, maps::TEARDOWN_AS_OF)?,
            writes,
            resetters: Resetters::default(),
        })
    }

    /// Resets every held TCP connection (of this agent's network
    /// namespace) whose permission has ended. Nothing to do, and no
    /// iteration, while no connection is held.
    pub fn run(&mut self) -> Result<Teardown, EnforcerError> {
        let ended = self.pass(0)?;
        self.reset(&ended)
    }

    /// A look-ahead, taken before `deadline` (boot clock): the held
    /// connections whose permission will have ended then, unless the
    /// rules change first. `None` while the rules are being written.
    pub fn foresee(&mut self, deadline: u64) -> Result<Option<Foreseen>, EnforcerError> {
        let Some(writes) = self.writes.settled() else {
            return Ok(None);
        };
        let ending = self.pass(deadline.max(1))?;
        // Sockets in the namespaces they are in, made now, not at the
        // deadline.
        self.resetters.prepare(&ending);
        Ok(Some(Foreseen {
            at: deadline,
            writes,
            ending,
        }))
    }

    /// At the deadline of `foreseen`: resets what it named, if no rule was
    /// written since, then makes a whole pass for what it could not know
    /// (a connection made since, a rule written). Before the deadline, or
    /// after a write, only the whole pass: never an early reset.
    pub fn reset_foreseen(&mut self, foreseen: Foreseen) -> Result<Teardown, EnforcerError> {
        self.reset_foreseen_then(foreseen, || ())
    }

    /// Whether no rule that may allow more was written since `foreseen`
    /// was taken: what it names still ends at its deadline.
    pub fn stands(&self, foreseen: &Foreseen) -> bool {
        self.writes.settled() == Some(foreseen.writes)
    }

    /// [`Handle::reset_foreseen`], calling `before_sweep` between the
    /// foreseen resets and the whole pass (wardd lowers its priority
    /// there: the pass is not urgent).
    pub fn reset_foreseen_then(
        &mut self,
        foreseen: Foreseen,
        before_sweep: impl FnOnce(),
    ) -> Result<Teardown, EnforcerError> {
        let stands = super::boot_ns() >= foreseen.at && self.stands(&foreseen);
        if !stands {
            return self.run();
        }
        let started = super::boot_ns();
        let mut done = self.reset(&foreseen.ending)?;
        tracing::debug!(
            late_us = (super::boot_ns() - foreseen.at) / 1000,
            took_us = (super::boot_ns() - started) / 1000,
            reset = done.reset,
            "foreseen connections reset"
        );
        before_sweep();
        let mut rest = self.pass(0)?;
        rest.retain(|c| !foreseen.ending.contains(c));
        let rest = self.reset(&rest)?;
        done.reset += rest.reset;
        done.gone += rest.gone;
        done.failed.extend(rest.failed);
        Ok(done)
    }

    /// Runs the iterator as of `as_of` (0: now) and returns what it named.
    fn pass(&mut self, as_of: u64) -> Result<Vec<EndedConn>, EnforcerError> {
        let held = self
            .counts
            .get(&HELD_SOCKS_SLOT, 0)
            .map_err(map_err(maps::HELD_COUNT))?;
        if held == 0 {
            return Ok(Vec::new());
        }
        // Every pass sets its own as-of time, under the lock.
        let _one = PASS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.as_of
            .set(0, as_of, 0)
            .map_err(map_err(maps::TEARDOWN_AS_OF))?;
        let mut file = iterator(self.program.as_fd(), self.over.as_ref().map(|m| m.as_fd()))
            .map_err(err("creating the iterator"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(err("running the iterator"))?;
        Ok(parse(&bytes))
    }

    fn reset(&mut self, ended: &[EndedConn]) -> Result<Teardown, EnforcerError> {
        Ok(self.resetters.reset_all(ended))
    }
}

/// A sock_diag socket per network namespace that held connections are
/// in: wardd's own, and each other one (a container's) met so far.
#[derive(Default)]
struct Resetters {
    by_netns: std::collections::HashMap<u64, Resetter>,
}

/// Namespaces kept at most; past it the cache starts again (namespaces
/// come and go with containers).
const MAX_NAMESPACES: usize = 256;

impl Resetters {
    /// The resetter for namespace `netns` (0, unknown: wardd's own).
    fn get(&mut self, netns: u64) -> io::Result<&mut Resetter> {
        let own = super::netns::own();
        let netns = Self::key(netns);
        if !self.by_netns.contains_key(&netns) {
            if self.by_netns.len() >= MAX_NAMESPACES {
                self.by_netns.clear();
            }
            let r = if netns == own {
                Resetter::open()?
            } else {
                let ns = super::netns::open(netns)?;
                super::netns::make_in(&ns, Resetter::open)?
            };
            self.by_netns.insert(netns, r);
        }
        Ok(self.by_netns.get_mut(&netns).expect("inserted above"))
    }

    /// The namespace a record's socket is in: an unread one (0) is
    /// wardd's own.
    fn key(netns: u64) -> u64 {
        if netns == 0 {
            super::netns::own()
        } else {
            netns
        }
    }

    /// Makes the sockets `ended` will need, ahead of the resets.
    fn prepare(&mut self, ended: &[EndedConn]) {
        for c in ended {
            if let Err(e) = self.get(c.netns) {
                tracing::warn!(netns = c.netns, error = %e, "no sock_diag socket in a held connection's network namespace yet");
            }
        }
    }

    /// Resets every connection in `ended`, each in its own namespace.
    fn reset_all(&mut self, ended: &[EndedConn]) -> Teardown {
        let mut t = Teardown::default();
        for c in ended {
            let done = self.get(c.netns).and_then(|r| r.reset(c));
            match done {
                Ok(true) => t.reset += 1,
                Ok(false) => t.gone += 1,
                Err(e) => {
                    // A namespace that went away, or a socket gone bad:
                    // made again next time.
                    self.by_netns.remove(&Self::key(c.netns));
                    t.failed.push(format!(
                        "{} (network namespace {}): {e}",
                        describe(c),
                        c.netns
                    ));
                }
            }
        }
        t
    }
}

/// Logs what a teardown pass did: resets at info, failures loudly.
pub fn log_outcome(outcome: Result<Teardown, EnforcerError>) {
    match outcome {
        Ok(t) => {
            if t.reset > 0 {
                tracing::info!(reset = t.reset, gone = t.gone, "ended connections reset");
            }
            for why in &t.failed {
                tracing::error!(connection = %why, "could not reset an ended connection; it fails at its next send or receive");
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            "could not look for ended connections; they fail at their next send or receive, but their peers are not reset"
        ),
    }
}

/// An iterator instance of `program` (over the elements of `map`, for a
/// map iterator): a link, then a readable file (each read runs the
/// program).
fn iterator(program: BorrowedFd<'_>, map: Option<BorrowedFd<'_>>) -> io::Result<File> {
    // union bpf_iter_link_info: { map: { map_fd u32 } }, 16 bytes.
    let info: [u32; 4] = [map.map_or(0, |m| m.as_raw_fd() as u32), 0, 0, 0];
    let mut attr: Attr = [0; 16];
    // link_create: prog_fd u32, target_fd u32, attach_type u32, flags u32,
    // iter_info u64, iter_info_len u32.
    attr[0] = u64::from(program.as_raw_fd() as u32);
    attr[1] = u64::from(BPF_TRACE_ITER);
    if map.is_some() {
        attr[2] = info.as_ptr() as u64;
        attr[3] = std::mem::size_of_val(&info) as u64;
    }
    let link = bpf(BPF_LINK_CREATE, &attr)?;
    // SAFETY: a new fd the kernel returned, owned by nothing else.
    let link = unsafe { OwnedFd::from_raw_fd(link) };
    let mut attr: Attr = [0; 16];
    // iter_create: link_fd u32, flags u32.
    attr[0] = u64::from(link.as_raw_fd() as u32);
    let iter = bpf(BPF_ITER_CREATE, &attr)?;
    // SAFETY: as above; the iterator keeps the link's program alive.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(iter) }))
}

/// `SOCK_DESTROY` in `<linux/sock_diag.h>`.
const SOCK_DESTROY: u16 = 21;
/// An `idiag_cookie` that matches any socket.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// What one teardown pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Teardown {
    /// Connections reset.
    pub reset: usize,
    /// Connections already gone by the time they were reset (closed, or
    /// reset by the holder's own failed call).
    pub gone: usize,
    /// Connections that could not be reset, with why. They still fail at
    /// their holder's next send or receive.
    pub failed: Vec<String>,
}

/// Parses the iterator's output: whole [`EndedConn`] records.
pub fn parse(bytes: &[u8]) -> Vec<EndedConn> {
    const LEN: usize = std::mem::size_of::<EndedConn>();
    bytes
        .chunks_exact(LEN)
        .map(|c| {
            // SAFETY: EndedConn is plain old data of exactly LEN bytes, and
            // the read is unaligned.
            unsafe { std::ptr::read_unaligned(c.as_ptr() as *const EndedConn) }
        })
        .collect()
}

/// A sock_diag socket for `SOCK_DESTROY` requests.
pub struct Resetter {
    socket: Socket,
    seq: u32,
}

impl Resetter {
    pub fn open() -> io::Result<Resetter> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Resetter { socket, seq: 0 })
    }

    /// Resets one connection; `Ok(false)` when no such socket exists (any
    /// more).
    pub fn reset(&mut self, c: &EndedConn) -> io::Result<bool> {
        let (family, src, dst) = match c.family {
            2 => (AF_INET, v4(&c.src), v4(&c.dst)),
            10 => (AF_INET6, v6(&c.src), v6(&c.dst)),
            f => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("address family {f}"),
                ));
            }
        };
        let cookie = if c.cookie == 0 {
            NO_COOKIE
        } else {
            c.cookie.to_ne_bytes()
        };
        let request = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: c.sport,
                destination_port: c.dport,
                source_address: src,
                destination_address: dst,
                interface_id: 0,
                cookie,
            },
        };
        match self.request(request) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends one `SOCK_DESTROY` and waits for the kernel's answer.
    fn request(&mut self, request: InetRequest) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
        packet.finalize();
        // The crate knows sock_diag's dump request; a destroy request has
        // the same body under another message type.
        packet.header.message_type = SOCK_DESTROY;
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answer = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut &mut answer[..], 0)?;
            let reply = <NetlinkMessage<SockDiagMessage>>::deserialize(&answer[..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if reply.header.sequence_number != self.seq {
                continue; // an answer to an earlier request that timed out
            }
            return match reply.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => Ok(()),
                    Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                },
                _ => Ok(()),
            };
        }
    }
}

/// Whether this kernel resets connections on request: destroys a
/// listening socket made for the purpose. `Err` says why not
/// (`EOPNOTSUPP`: built without `CONFIG_INET_DIAG_DESTROY`; `ENOENT`: no
/// `inet_diag`/`tcp_diag`).
pub fn probe() -> io::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let InetAddr::V4(local) = listener.local_addr()? else {
        return Err(io::Error::other("bound an IPv4 address, got another"));
    };
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&local.ip().octets());
    let probe = EndedConn {
        cookie: 0,
        src,
        dst: [0; 16],
        sport: local.port(),
        dport: 0,
        family: 2,
        _pad: 0,
        netns: 0,
    };
    match Resetter::open()?.reset(&probe)? {
        true => Ok(()),
        false => Err(io::Error::from_raw_os_error(libc::ENOENT)),
    }
}

fn v4(a: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
}

fn v6(a: &[u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(*a))
}

/// `src -> dst` of a record, for logs.
pub fn describe(c: &EndedConn) -> String {
    let (src, dst) = match c.family {
        2 => (v4(&c.src), v4(&c.dst)),
        _ => (v6(&c.src), v6(&c.dst)),
    };
    format!(
        "{} -> {}",
        InetAddr::new(src, c.sport),
        InetAddr::new(dst, c.dport)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_whole_and_a_torn_tail_is_dropped() {
        let c = EndedConn {
            cookie: 7,
            src: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 5432,
            family: 2,
            _pad: 0,
            netns: 4026531840,
        };
        let mut bytes = Vec::new();
        for _ in 0..2 {
            // SAFETY: plain old data viewed as bytes.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(
                    &c as *const EndedConn as *const u8,
                    std::mem::size_of::<EndedConn>(),
                )
            });
        }
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(parse(&bytes), vec![c, c]);
        assert_eq!(describe(&c), "127.0.0.1:40000 -> 10.0.0.5:5432");
    }
}
